"""Archived days (``recon archive``): only closed days move, later nights compute the same without them, the
snapshot still shows them, a restore brings back every row, and runs and statements that would need them refuse."""
from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml

from recon import archive, cli
from recon.config import load_config
from recon.errors import UserError
from recon.generate import generate_world
from recon.pipeline import load_day, run_day
from recon.resolution import resolve
from recon.status import status
from recon.warehouse import connect
from reports.excel import write_settlement_report
from reports.snapshot import publish_snapshot, snapshot_db_path
from settlement.engine import SettlementError, confirm_batch
from settlement.payout import write_payout_files
from tests.lock_holder import held_by_another_process

# Every table a night writes, and what of it to compare (resolved_at / recorded_at: the wall clock of resolve()).
COMPARED = {
    "discrepancies": "SELECT * EXCLUDE (resolved_at) FROM discrepancies",
    "discrepancy_resolutions": "SELECT * EXCLUDE (resolution_id, recorded_at) FROM discrepancy_resolutions",
    "matched_transactions": "SELECT * FROM matched_transactions",
    "settlement_items": "SELECT * FROM settlement_items",
    "settlement_lines": "SELECT * FROM settlement_lines",
    "settlement_holds": "SELECT * FROM settlement_holds",
    "settlement_reserves": "SELECT * FROM settlement_reserves",
    "unmatched_platform_rows": "SELECT * FROM unmatched_platform_rows",
    "unmatched_channel_rows": "SELECT * FROM unmatched_channel_rows",
}


def _days(world: Path) -> list[date]:
    return [date.fromisoformat(d) for d in json.loads((world / "world.json").read_text(encoding="utf-8"))["dates"]]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    return build_worlds(tmp_path_factory.mktemp("archive-worlds"))


def build_worlds(base: Path) -> dict[str, Path]:
    """Six generated days (from 2026-06-01) with a one-day guard window. ``open``: days 1-4 run, nothing resolved
    or confirmed. ``closed``: then every break of days 1-2 written off, day 4 rerun (the released holds settle)
    and every batch confirmed, so day 1 is closed; day 2 is not (day 3's held transactions still wait)."""
    opened = base / "open"
    generate_world(opened, orders=600, days=6, seed=5, break_rate=0.01, chunk_rows=1000)
    raw = yaml.safe_load((opened / "recon.yml").read_text(encoding="utf-8"))
    raw["settlement"] = {**raw.get("settlement", {}), "duplicate_lookback_days": 1}
    (opened / "recon.yml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    days = _days(opened)
    cfg = load_config(opened / "recon.yml")
    for d in days[:4]:
        run_day(cfg, d, report=False)
    closed = base / "closed"
    shutil.copytree(opened, closed)
    cfg = load_config(closed / "recon.yml")
    con = connect(cfg.warehouse)
    for (i,) in con.execute("SELECT discrepancy_id FROM discrepancies WHERE business_date <= ? "
                            "AND status IN ('open', 'pending') ORDER BY 1", [days[1]]).fetchall():
        resolve(con, i, by="finance", note="written off in the test", action="write_off", today=days[3])
    con.close()
    run_day(cfg, days[3], report=False)
    con = connect(cfg.warehouse)
    for (b,) in con.execute("SELECT batch_id FROM settlement_batches WHERE status = 'draft' "
                            "ORDER BY settlement_date").fetchall():
        confirm_batch(con, b, "finance")
    con.close()
    return {"open": opened, "closed": closed}


def _copy(worlds: dict[str, Path], which: str, dest: Path):
    shutil.copytree(worlds[which], dest)
    return load_config(dest / "recon.yml")


def _rows(cfg, sql: str, params=None, root: Path | None = None) -> list[tuple]:
    """The rows, sorted; with ``root``, that folder's path in texts (notes naming a statement file) as ``<w>``."""
    con = connect(cfg.warehouse, read_only=True)
    try:
        rows = con.execute(sql, params or []).fetchall()
    finally:
        con.close()
    if root is not None:
        rows = [tuple(v.replace(str(root), "<w>") if isinstance(v, str) else v for v in r) for r in rows]
    return sorted(rows, key=repr)


def _plan(cfg, before: date) -> dict[date, tuple[str, ...]]:
    con = connect(cfg.warehouse, read_only=True)
    try:
        return {st.business_date: st.blockers for st in archive.plan(con, cfg, before)}
    finally:
        con.close()


def _move(cfg, before: date):
    con = connect(cfg.warehouse)
    try:
        return archive.move(con, cfg, before)
    finally:
        con.close()


def test_the_plan_says_why_each_day_stays(worlds, tmp_path):
    days = _days(worlds["open"])
    plan = _plan(_copy(worlds, "open", tmp_path / "o"), days[4])
    assert list(plan) == days[:4]
    first = " | ".join(plan[days[0]])
    assert "break(s) still open or pending" in first
    assert "settlement item(s) in batches not confirmed yet (STL-" in first
    assert "matched transaction(s) not settled yet" in first
    assert f"within 1 day(s) of the latest reconciled day {days[3]}" in " | ".join(plan[days[2]])
    assert f"a transaction of {days[0]} still waits for settlement" in " | ".join(plan[days[1]])

    closed = _copy(worlds, "closed", tmp_path / "c")
    plan = _plan(closed, days[4])
    assert plan[days[0]] == ()
    assert plan[days[1]] == (f"a transaction of {days[2]} still waits for settlement, and its guard against "
                             f"paying twice reads the settled items back to {days[1]}",)
    assert plan[days[2]] and plan[days[3]]
    con = connect(closed.warehouse)                  # a later rerun of day 1 that failed (and rolled back)
    con.execute("INSERT INTO runs (run_id, business_date, started_at, status) VALUES ('r-failed', ?, now(), "
                "'failed')", [days[0]])
    con.close()
    assert _plan(closed, days[4])[days[0]] == ("its last run r-failed is failed",)


def test_archiving_a_closed_day_changes_nothing_the_next_nights_compute(worlds, tmp_path):
    days = _days(worlds["closed"])
    kept = _copy(worlds, "closed", tmp_path / "kept")
    moved = _copy(worlds, "closed", tmp_path / "moved")
    result, stays = _move(moved, days[4])
    assert [m["business_date"] for m in result] == [days[0]]
    assert [st.business_date for st in stays] == days[1:4]
    assert result[0]["tables"]["channel_transactions"] > 500 and result[0]["tables"]["settlement_items"] > 500
    for table, day_col in archive.ARCHIVED.items():
        assert _rows(moved, f"SELECT count(*) FROM {table} WHERE {day_col} = ?", [days[0]]) == [(0,)]
    for cfg in (kept, moved):
        for d in days[4:]:
            run_day(cfg, d, report=False)
    for table, sql in COMPARED.items():
        if table == "settlement_items":   # the kept warehouse still holds day 1's items; the other, its archive
            sql += f" WHERE trade_date <> DATE '{days[0]}'"
        if table == "matched_transactions":
            sql += f" WHERE business_date <> DATE '{days[0]}'"
        assert _rows(moved, sql, root=tmp_path / "moved") == _rows(kept, sql, root=tmp_path / "kept"), table


def test_a_restore_brings_back_every_row_and_empties_the_archive(worlds, tmp_path):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    before = {t: _rows(cfg, f"SELECT * FROM {t}") for t in archive.ARCHIVED}
    _move(cfg, days[4])
    folder = cfg.archive_path / "channel_transactions" / f"business_date={days[0]}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"channel={c}" for (c,) in set(r[1:2] for r in before["channel_transactions"] if r[0] == days[0]))
    assert main(["archive", "restore", "--config", str(cfg.config_path), "--date", str(days[0])]) == 0
    for t in archive.ARCHIVED:
        assert _rows(cfg, f"SELECT * FROM {t}") == before[t], t
    assert _rows(cfg, "SELECT count(*) FROM archived_days") == [(0,)]
    assert not folder.exists()
    run_day(cfg, days[1], report=False)          # within day 1's guard window again: allowed once restored


def test_runs_and_statements_that_need_an_archived_day_are_refused(worlds, tmp_path, capsys):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    _move(cfg, days[4])
    with pytest.raises(UserError, match=f"business date {days[0]} is archived: restore it first"):
        run_day(cfg, days[0], report=False)
    with pytest.raises(UserError, match=f"its run reads the days from {days[0]} on .*, and {days[0]} is archived"):
        run_day(cfg, days[1], report=False)
    with pytest.raises(UserError, match=f"business date {days[0]} is archived"):
        load_day(cfg, days[0])                       # the split path's first step (and the DAG's `load` task)
    assert _rows(cfg, "SELECT count(*) FROM runs WHERE business_date <= ? AND status <> 'succeeded'",
                 [days[1]]) == [(0,)]
    batch = _rows(cfg, "SELECT batch_ids[1] FROM archived_days")[0][0]
    con = connect(cfg.warehouse, read_only=True)
    try:
        with pytest.raises(LookupError, match=f"settlement batch {batch} holds items of archived days"):
            write_settlement_report(con, cfg, batch, tmp_path / "out")
        with pytest.raises(SettlementError, match=f"payout files of {batch}: its items of {days[0]} are archived"):
            write_payout_files(con, cfg, batch, tmp_path / "out")
    finally:
        con.close()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    run_day(cfg, days[2], report=False)          # outside the window: runs


def test_the_snapshot_keeps_showing_archived_days(worlds, tmp_path):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    publish_snapshot(cfg, days[3])
    sql = "SELECT * FROM {t} WHERE {c} = ?"
    before = {t: _rows(cfg, sql.format(t=t, c=c), [days[0]]) for t, c in archive.ARCHIVED.items()}
    _move(cfg, days[4])
    publish_snapshot(cfg, days[3])
    manifest = json.loads((cfg.snapshot_path / "manifest.json").read_text(encoding="utf-8"))
    assert all(str(days[0]) not in d for d in manifest["republished_days"].values())   # nothing rewritten
    fresh = cfg.model_copy(update={"snapshot_dir": tmp_path / "fresh"})
    publish_snapshot(fresh, days[3])                 # a new snapshot: its day-1 partitions come from the archive
    for c in (cfg, fresh):
        snap = duckdb.connect(str(snapshot_db_path(c)), read_only=True)
        try:
            for t, col in archive.ARCHIVED.items():
                got = sorted(snap.execute(sql.format(t=t, c=col), [days[0]]).fetchall(), key=repr)
                assert got == before[t] and (got or t == "bank_statement_lines"), t
            summary = ("SELECT bool_and(archived), sum(channel_transactions) FROM v_daily_summary "
                       "WHERE business_date = ?")
            assert snap.execute(summary, [days[0]]).fetchone() == (True, len(before["channel_transactions"]))
        finally:
            snap.close()
    assert _rows(cfg, summary, [days[0]]) == [(True, 0)]           # the live warehouse: counted out, and says so
    assert _rows(cfg, summary, [days[1]]) == [(False, len(_rows(cfg, sql.format(t="channel_transactions",
                                                                                 c="business_date"), [days[1]])))]


def test_a_file_that_does_not_read_back_the_same_archives_nothing(worlds, tmp_path, monkeypatch):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    real = archive._fingerprint

    def lossy(con, sql, columns):
        got = real(con, sql, columns)
        return {**got, "rows": got["rows"] - 1} if "read_parquet" in sql else got

    monkeypatch.setattr(archive, "_fingerprint", lossy)
    rows = _rows(cfg, "SELECT count(*) FROM channel_transactions")
    with pytest.raises(UserError, match="does not match the warehouse"):
        _move(cfg, days[4])
    assert _rows(cfg, "SELECT count(*) FROM channel_transactions") == rows
    assert _rows(cfg, "SELECT count(*) FROM archived_days") == [(0,)]
    assert not any(cfg.archive_path.rglob("*.parquet"))


def test_a_restore_with_a_file_missing_restores_nothing(worlds, tmp_path):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    _move(cfg, days[4])
    shutil.rmtree(cfg.archive_path / "settlement_items")
    assert main(["archive", "restore", "--config", str(cfg.config_path), "--date", str(days[0])]) == 1
    assert _rows(cfg, "SELECT count(*) FROM channel_transactions WHERE business_date = ?", [days[0]]) == [(0,)]
    assert _rows(cfg, "SELECT business_date FROM archived_days") == [(days[0],)]


def test_the_command_plans_moves_and_restores(worlds, tmp_path, capsys):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    conf = str(cfg.config_path)
    assert main(["archive", "plan", "--config", conf, "--before", str(days[4])]) == 0
    out = capsys.readouterr().out
    assert f"{days[0]}  closed: `recon archive move` would archive it" in out
    assert f"{days[1]}  stays: a transaction of {days[2]} still waits" in out
    assert main(["archive", "plan", "--config", conf]) == 0          # default: keep_days (1) before day 4
    assert f"{days[2]}  stays" not in capsys.readouterr().out
    assert status(cfg, today=days[3])["archive"]["ready"] == [days[0]]   # `recon status` says so too
    assert main(["archive", "move", "--config", conf, "--before", str(days[4])]) == 0
    out = capsys.readouterr().out
    assert f"{days[0]}: " in out and "1 day(s) archived" in out and "3 day(s) kept" in out
    assert "warehouse file: " in out and "free (" in out
    assert status(cfg, today=days[3])["archive"]["ready"] == []
    assert main(["archive", "plan", "--config", conf, "--before", str(days[1])]) == 0
    assert f"{days[0]}  archived (" in capsys.readouterr().out
    assert main(["report", "--config", conf, "--date", str(days[0]), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "discrepancy report: " in out and f"settlement reports: none; {days[0]} is archived" in out
    assert main(["archive", "restore", "--config", conf, "--date", str(days[1])]) == 1
    assert f"business date {days[1]} is not archived" in capsys.readouterr().err
    con = connect(cfg.warehouse)                     # a warehouse of the previous release, not migrated yet
    con.execute("DELETE FROM schema_version WHERE version = 7")
    con.close()
    assert main(["archive", "plan", "--config", conf]) == 1
    assert "has schema version 6, this code 7: the next run" in capsys.readouterr().err


def main(argv: list[str]) -> int:
    return cli.main(argv)


def test_a_column_added_after_archiving_reads_as_null_in_the_snapshot_and_on_restore(worlds, tmp_path):
    """A later migration adds a column: the snapshot republishes the table whole, the archived day's partitions
    from the archive's files with the new column empty; a restore fills it with its default."""
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    count = _rows(cfg, "SELECT count(*) FROM settlement_items WHERE trade_date = ?", [days[0]])[0][0]
    _move(cfg, days[4])
    con = connect(cfg.warehouse)
    con.execute("ALTER TABLE settlement_items ADD COLUMN later_note VARCHAR DEFAULT 'added later'")
    con.close()
    publish_snapshot(cfg, days[3])
    snap = duckdb.connect(str(snapshot_db_path(cfg)), read_only=True)
    try:
        assert snap.execute("SELECT count(*), count(later_note) FROM settlement_items WHERE trade_date = ?",
                            [days[0]]).fetchone() == (count, 0)
    finally:
        snap.close()
    assert main(["archive", "restore", "--config", str(cfg.config_path), "--date", str(days[0])]) == 0
    assert _rows(cfg, "SELECT count(*), min(later_note) FROM settlement_items WHERE trade_date = ?",
                 [days[0]]) == [(count, "added later")]


def test_the_snapshot_files_of_the_day_are_reused_when_they_read_back_the_same(worlds, tmp_path):
    """The published snapshot already holds the day's partitions: they are linked into the archive, not exported
    again, but only once they read back to the warehouse's rows; a table with a snapshot file that does not is
    exported from the warehouse instead."""
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")
    publish_snapshot(cfg, days[3])
    published = {t: cfg.snapshot_path / "parquet" / t / f"{c}={days[0]}" for t, c in archive.ARCHIVED.items()}
    tampered = next(published["platform_orders"].rglob("*.parquet"))      # 10 rows left, the manifest unchanged
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_parquet('{tampered}') LIMIT 10) TO '{tampered}.tmp' (FORMAT parquet)")
    con.close()
    tampered.with_name(tampered.name + ".tmp").replace(tampered)
    before = {t: _rows(cfg, f"SELECT * FROM {t} WHERE {c} = ?", [days[0]]) for t, c in archive.ARCHIVED.items()}
    _move(cfg, days[4])
    linked = {t: sorted(f.stat().st_ino == (cfg.archive_path / t / f.relative_to(published[t].parent)).stat().st_ino
                        for f in published[t].rglob("*.parquet")) for t in archive.ARCHIVED}
    assert linked.pop("platform_orders") == [False, False, False]
    assert linked.pop("bank_statement_lines") == []                        # no rows that day
    assert all(v and all(v) for v in linked.values()), linked
    assert main(["archive", "restore", "--config", str(cfg.config_path), "--date", str(days[0])]) == 0
    for t, c in archive.ARCHIVED.items():
        assert _rows(cfg, f"SELECT * FROM {t} WHERE {c} = ?", [days[0]]) == before[t], t


# ------------------------------------------------------------------ compacting the warehouse file
def _table_fingerprints(cfg) -> dict[str, tuple]:
    """Every table's rows (count and a hash of every row) and the resolution ids' sequence position."""
    con = connect(cfg.warehouse, read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                            "current_database() ORDER BY 1").fetchall()]
        out = {t: con.execute(f'SELECT count(*), sum(hash(x)::HUGEINT) FROM "{t}" x').fetchone() for t in tables}
        out["<sequences>"] = tuple(con.execute("SELECT sequence_name, last_value FROM duckdb_sequences() "
                                               "WHERE database_name = current_database() ORDER BY 1").fetchall())
        return out
    finally:
        con.close()


def _archived_and_fragmented(worlds, dest: Path):
    """The closed world with day 1 archived and days 3-4 rerun: deleted rows left free blocks behind."""
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", dest)
    _move(cfg, days[4])
    for d in days[2:4]:
        run_day(cfg, d, report=False)
    return cfg


def test_compact_gives_the_free_space_back_and_keeps_every_row(worlds, tmp_path, capsys):
    from recon.compact import space

    days = _days(worlds["closed"])
    cfg = _archived_and_fragmented(worlds, tmp_path / "c")
    kept = _archived_and_fragmented(worlds, tmp_path / "k")
    before, rows = space(cfg.warehouse), _table_fingerprints(cfg)
    assert before.free_blocks > 0
    conf = str(cfg.config_path)
    assert main(["compact", "--config", conf, "--dry-run"]) == 0
    assert f"{before.free_share:.0%} free" in capsys.readouterr().out
    assert main(["compact", "--config", conf, "--keep-old"]) == 0
    out = capsys.readouterr().out
    assert "copied and checked" in out and "done in" in out, out
    after = space(cfg.warehouse)
    assert after.free_blocks == 0 and after.file_bytes < before.file_bytes
    assert _table_fingerprints(cfg) == rows
    backup = cfg.warehouse.with_name(cfg.warehouse.name + ".before-compact")
    assert backup.stat().st_size == before.file_bytes
    leftovers = sorted(p.name for p in cfg.warehouse.parent.iterdir() if p.name.startswith(cfg.warehouse.name))
    assert leftovers == sorted([cfg.warehouse.name, backup.name])          # no .wal, no .compacting
    # the compacted warehouse carries on exactly like the one that was not compacted, resolution ids included
    for c in (cfg, kept):
        con = connect(c.warehouse)
        (open_break,) = con.execute("SELECT min(discrepancy_id) FROM discrepancies WHERE status = 'open'").fetchone()
        resolve(con, open_break, by="finance", note="after compacting", action="write_off", today=days[4])
        con.close()
        run_day(c, days[4], report=False)
    for table, sql in {**COMPARED, "discrepancy_resolutions":
                       "SELECT * EXCLUDE (recorded_at) FROM discrepancy_resolutions"}.items():
        assert _rows(cfg, sql, root=tmp_path / "c") == _rows(kept, sql, root=tmp_path / "k"), table

    # the next compaction removes, and names, the original kept last time and a copy a killed compaction left
    half = cfg.warehouse.with_name(cfg.warehouse.name + ".compacting")
    half.write_bytes(b"half a copy")
    con = connect(cfg.warehouse)                     # some free space to give back
    con.execute("CREATE TABLE scratch AS SELECT range AS n FROM range(500000)")
    con.execute("DROP TABLE scratch")
    con.execute("CHECKPOINT")
    con.close()
    assert main(["compact", "--config", conf]) == 0
    out = capsys.readouterr().out
    assert f"removed {half}: the unfinished copy of a compaction that did not end" in out, out
    assert f"removed {backup} (" in out and "the original an earlier `recon compact --keep-old` kept" in out
    assert not half.exists() and not backup.exists()


def test_compact_does_nothing_below_the_free_share_asked_for(worlds, tmp_path, capsys):
    cfg = _archived_and_fragmented(worlds, tmp_path / "c")
    inode = cfg.warehouse.stat().st_ino
    assert main(["compact", "--config", str(cfg.config_path), "--min-free", "0.99"]) == 0
    assert "not compacted: less than 99% is free" in capsys.readouterr().out
    assert cfg.warehouse.stat().st_ino == inode
    with pytest.raises(SystemExit, match="2"):
        main(["compact", "--config", str(cfg.config_path), "--min-free", "1.5"])
    assert "a share from 0 to below 1" in capsys.readouterr().err


def test_a_copy_that_differs_leaves_the_warehouse_as_it_was(worlds, tmp_path, monkeypatch):
    from recon import compact
    from recon.warehouse import WarehouseError

    cfg = _archived_and_fragmented(worlds, tmp_path / "c")
    inode, rows = cfg.warehouse.stat().st_ino, _table_fingerprints(cfg)
    real_verify = compact._verify

    def verify_a_damaged_copy(con, name):
        con.execute(f"DELETE FROM {compact.COPY_ALIAS}.main.channel_transactions WHERE rowid = "
                    f"(SELECT min(rowid) FROM {compact.COPY_ALIAS}.main.channel_transactions)")
        return real_verify(con, name)

    monkeypatch.setattr(compact, "_verify", verify_a_damaged_copy)
    with pytest.raises(WarehouseError, match="copy of table channel_transactions differs"):
        compact.compact(cfg.warehouse)
    assert cfg.warehouse.stat().st_ino == inode and _table_fingerprints(cfg) == rows
    assert sorted(p.name for p in cfg.warehouse.parent.iterdir() if p.name.startswith(cfg.warehouse.name)) \
        == [cfg.warehouse.name]


def test_a_copy_that_does_not_open_is_swapped_back(worlds, tmp_path, monkeypatch):
    from recon import compact
    from recon.warehouse import WarehouseError

    cfg = _archived_and_fragmented(worlds, tmp_path / "c")
    inode, rows = cfg.warehouse.stat().st_ino, _table_fingerprints(cfg)
    monkeypatch.setattr(compact, "current_version", lambda con: 0)
    with pytest.raises(WarehouseError, match="has schema version 0"):
        compact.compact(cfg.warehouse)
    assert cfg.warehouse.stat().st_ino == inode and _table_fingerprints(cfg) == rows
    assert sorted(p.name for p in cfg.warehouse.parent.iterdir() if p.name.startswith(cfg.warehouse.name)) \
        == [cfg.warehouse.name]


def test_compact_is_refused_while_another_process_holds_the_warehouse(worlds, tmp_path, capsys):
    cfg = _copy(worlds, "closed", tmp_path / "c")
    with held_by_another_process(cfg.warehouse):
        assert main(["compact", "--config", str(cfg.config_path)]) == 1
        assert f"cannot open warehouse {cfg.warehouse}" in capsys.readouterr().err
    assert not cfg.warehouse.with_name(cfg.warehouse.name + ".compacting").exists()


def test_the_plan_lists_what_an_unfinished_archive_attempt_left(worlds, tmp_path, capsys, monkeypatch):
    days = _days(worlds["closed"])
    cfg = _copy(worlds, "closed", tmp_path / "w")

    def dies(_con):
        raise KeyboardInterrupt("killed between the files and the transaction")

    monkeypatch.setattr(archive, "transaction", dies)
    with pytest.raises(KeyboardInterrupt):
        _move(cfg, days[4])
    monkeypatch.undo()
    (cfg.archive_path / ".staging-2026-06-01-1-deadbeef" / "channel_transactions").mkdir(parents=True)
    conf = str(cfg.config_path)
    assert main(["archive", "plan", "--config", conf, "--before", str(days[4])]) == 0
    out = capsys.readouterr().out
    folder = cfg.archive_path.resolve() / "channel_transactions" / f"business_date={days[0]}"
    assert f"{folder}: no record names it, and the warehouse still holds its rows; safe to delete" in out
    assert ".staging-2026-06-01-1-deadbeef: no record names it" in out
    assert f"{days[0]}  closed" in out                  # the day itself is still in the warehouse
    con = connect(cfg.warehouse)                        # as if the warehouse came back from an older backup
    con.execute("DELETE FROM channel_transactions WHERE business_date = ?", [days[0]])
    con.close()
    assert main(["archive", "plan", "--config", conf, "--before", str(days[4])]) == 0
    assert f"{folder}: no record names it, and the warehouse does NOT hold its rows" in capsys.readouterr().out
    _move(cfg, days[4])                                 # the next attempt replaces the files and records the day
    assert main(["archive", "plan", "--config", conf, "--before", str(days[4])]) == 0
    out = capsys.readouterr().out
    assert f"{folder}:" not in out and f"{days[0]}  archived (" in out


def test_compact_of_a_symlinked_warehouse_compacts_its_file_and_keeps_the_link(worlds, tmp_path):
    from recon.compact import compact, space

    cfg = _archived_and_fragmented(worlds, tmp_path / "c")
    real = tmp_path / "disk" / "warehouse.duckdb"
    real.parent.mkdir()
    shutil.move(cfg.warehouse, real)
    cfg.warehouse.symlink_to(real)
    rows = _table_fingerprints(cfg)
    assert compact(cfg.warehouse)["compacted"]
    assert cfg.warehouse.is_symlink() and cfg.warehouse.resolve() == real
    assert space(real).free_blocks == 0 and _table_fingerprints(cfg) == rows
    assert sorted(p.name for p in real.parent.iterdir()) == ["warehouse.duckdb"]
