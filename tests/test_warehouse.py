"""The warehouse schema is created, versioned and migrated by the code."""
from __future__ import annotations

import duckdb
import pytest

from recon import warehouse
from recon.warehouse import SCHEMA_VERSION, WarehouseError, connect, current_version


def test_a_new_file_gets_every_table_and_the_current_version(tmp_path):
    con = connect(tmp_path / "w.duckdb")
    assert current_version(con) == SCHEMA_VERSION
    tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    for t in ("runs", "loaded_files", "channel_transactions", "channel_funds_movements", "bank_statement_lines",
              "platform_orders", "platform_expected_funds", "quarantine", "discrepancies", "matched_transactions",
              "settlement_batches", "settlement_lines", "settlement_items", "schema_version"):
        assert t in tables
    money = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'discrepancies' "
                        "AND column_name = 'difference'").fetchall()
    assert money == [("DECIMAL(18,2)",)]


def test_an_older_file_is_migrated_in_order_keeping_its_data(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(warehouse, "MIGRATIONS", warehouse.MIGRATIONS[:1])
    monkeypatch.setattr(warehouse, "SCHEMA_VERSION", 1)
    monkeypatch.setattr("recon.views.create_views", lambda con: None)   # the old code's views are not ours
    con = connect(path)
    con.execute("INSERT INTO runs (run_id, business_date, started_at, status) "
                "VALUES ('r1', DATE '2026-06-05', now(), 'succeeded')")
    con.close()
    monkeypatch.undo()
    con = connect(path)
    assert current_version(con) == SCHEMA_VERSION
    assert con.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]
    versions = [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
    assert versions == sorted(v for v, _, _ in warehouse.MIGRATIONS)


def test_matched_pairs_of_an_older_file_keep_their_statement_row_as_file_id_and_line(tmp_path, monkeypatch):
    """Migration 5 turns each pair's 'path:line' into file_id + line_no (paths may hold ':' themselves)."""
    path = tmp_path / "v4.duckdb"
    monkeypatch.setattr(warehouse, "MIGRATIONS", [m for m in warehouse.MIGRATIONS if m[0] <= 4])
    monkeypatch.setattr(warehouse, "SCHEMA_VERSION", 4)
    monkeypatch.setattr("recon.views.create_views", lambda con: None)
    con = connect(path)
    con.execute("INSERT INTO loaded_files (file_id, channel, business_date, kind, format, path, size_bytes, "
                "row_count, quarantined_count, status, loaded_at) VALUES "
                "('f0', 'wechat', DATE '2026-06-05', 'trade', 't', '/in/c:d/bill.csv', 0, 0, 0, 'superseded', now()), "
                "('f1', 'wechat', DATE '2026-06-05', 'trade', 't', '/in/c:d/bill.csv', 0, 0, 0, 'active', "
                "now() - INTERVAL 1 DAY)")
    for no, source in (("P1", "/in/c:d/bill.csv:12"), ("P2", "/in/gone.csv:7"), ("P3", None)):
        con.execute("INSERT INTO matched_transactions (business_date, channel, match_key, txn_type, order_no, amount, "
                    "currency, channel_source) VALUES (DATE '2026-06-05', 'wechat', ?, 'payment', ?, 1.00, 'CNY', ?)",
                    ["payment:" + no, no, source])
    con.close()
    monkeypatch.undo()
    con = connect(path)
    assert con.execute("SELECT order_no, file_id, line_no, outcome FROM matched_transactions ORDER BY 1").fetchall() \
        == [("P1", "f1", 12, "matched"), ("P2", None, 7, "matched"), ("P3", None, None, "matched")]
    columns = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'matched_transactions'").fetchall()]
    assert "channel_source" not in columns


def test_a_file_from_newer_code_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    connect(path).close()
    raw = duckdb.connect(str(path))
    raw.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    raw.close()
    with pytest.raises(WarehouseError, match="newer than this code"):
        connect(path)


def test_read_only_open_of_a_missing_warehouse_says_what_to_do(tmp_path):
    with pytest.raises(WarehouseError, match="run `recon run` first"):
        connect(tmp_path / "none.duckdb", read_only=True)


def test_insert_arrow_frees_the_rows_before_the_transaction_ends(tmp_path):
    """Loading a day holds one file's rows at a time, not every file's until COMMIT."""
    import gc
    from datetime import date

    import pyarrow as pa

    from recon.warehouse import insert_arrow, transaction

    con = connect(tmp_path / "w.duckdb")
    base = pa.total_allocated_bytes()
    rows = pa.table({"k": pa.array([f"P{i:09d}" for i in range(300_000)]),
                     "amount": pa.array([1] * 300_000, pa.decimal128(18, 2))})
    with transaction(con):
        con.execute("CREATE TABLE t (d DATE, k VARCHAR, amount DECIMAL(18,2))")
        insert_arrow(con, "INSERT INTO t SELECT ?, k, amount FROM _rows", rows, [date(2026, 6, 1)], name="_rows")
        held = pa.total_allocated_bytes() - base
        del rows
        gc.collect()
        after = pa.total_allocated_bytes() - base
        assert con.execute("SELECT count(*), sum(amount) FROM t").fetchone() == (300_000, 300_000)
    assert held > 1_000_000      # the rows were in memory while the caller held them
    assert after < 100_000       # and are gone once it lets go, with the transaction still open
    con.close()


def test_unordered_writes_is_for_the_block_and_this_session_only(tmp_path):
    from recon.warehouse import unordered_writes

    con = connect(tmp_path / "wh.duckdb")
    other = con.cursor()
    setting = "SELECT current_setting('preserve_insertion_order')"
    with unordered_writes(con):
        assert con.execute(setting).fetchone()[0] is False
        assert other.execute(setting).fetchone()[0] is True
    assert con.execute(setting).fetchone()[0] is True
    with pytest.raises(ZeroDivisionError):
        with unordered_writes(con):
            1 / 0
    assert con.execute(setting).fetchone()[0] is True
    # an INSERT … ORDER BY keeps its order without the promise (settlement items rely on it)
    con.execute("CREATE TABLE t (k INTEGER, v VARCHAR)")
    with unordered_writes(con):
        con.execute("INSERT INTO t SELECT (i * 7919) % 300000, 'x' || i FROM range(300000) r(i) ORDER BY 1")
    ks = [k for (k,) in con.execute("SELECT k FROM t").fetchall()]
    assert ks == sorted(ks) and len(ks) == 300000
    con.close()
