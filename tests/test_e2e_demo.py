"""The foundation end to end on the bundled demo day: exact breaks, exact settlement, idempotent, atomic."""
from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from recon import cli
from recon.pipeline import process_day, run_day
from recon.warehouse import connect
from tests.conftest import DEMO_DATE

# (flow, type, channel, match_key, platform_amount, channel_amount, difference) — see sample_files/README.md
EXPECTED_BREAKS = {
    ("information", "missing_in_channel", "wechat", "payment:P003", D("50.00"), None, D("-50.00")),
    ("information", "missing_in_platform", "alipay", "payment:A900", None, D("10.00"), D("10.00")),
    ("information", "status_mismatch", "wechat", "payment:P004", D("80.00"), D("80.00"), D("0.00")),
    ("information", "amount_mismatch", "wechat", "payment:P005", D("120.00"), D("121.00"), D("1.00")),
    ("information", "fee_mismatch", "wechat", "payment:P006", D("1.80"), D("2.00"), D("0.20")),
    ("information", "currency_mismatch", "wechat", "payment:P007", D("60.00"), D("60.00"), D("0.00")),
    ("information", "duplicate", "wechat", "payment:P008#2", None, D("40.00"), D("40.00")),
    ("funds", "long", "wechat", "P004", None, D("80.00"), D("80.00")),
    ("funds", "long", "wechat", "P005", D("120.00"), D("121.00"), D("1.00")),
    ("funds", "short", "wechat", "P003", D("50.00"), None, D("-50.00")),
    ("funds", "short", "wechat", "P006", D("300.00"), D("299.00"), D("-1.00")),
}

# merchant -> (gross, refunds, fees, net) for settlement date 2026-06-08 (Friday's trades pay on Monday)
EXPECTED_SETTLEMENT = {
    "M001": (D("899.90"), D("70.00"), D("5.40"), D("824.50")),
    "M002": (D("290.00"), D("0.00"), D("2.90"), D("287.10")),
}


def breaks(con):
    return set(con.execute(
        "SELECT flow, type, channel, match_key, platform_amount, channel_amount, difference FROM discrepancies"
    ).fetchall())


def settlement(con):
    rows = con.execute(
        "SELECT l.merchant_id, l.gross, l.refunds, l.fees, l.net FROM settlement_lines l "
        "JOIN settlement_batches b USING (batch_id) WHERE b.settlement_date = DATE '2026-06-08' ORDER BY 1"
    ).fetchall()
    return {m: (g, r, f, n) for m, g, r, f, n in rows}


def test_demo_day_finds_exactly_the_seeded_breaks_and_settles_to_the_fen(demo_cfg):
    result = run_day(demo_cfg, DEMO_DATE)
    assert result.matched == 8
    con = connect(demo_cfg.warehouse, read_only=True)
    assert breaks(con) == EXPECTED_BREAKS
    assert con.execute("SELECT DISTINCT status FROM discrepancies").fetchall() == [("open",)]
    assert settlement(con) == EXPECTED_SETTLEMENT
    held = con.execute("SELECT merchant_id, order_no, amount FROM settlement_holds ORDER BY order_no").fetchall()
    assert held == [("M001", "P005", D("120.00")), ("M002", "P006", D("300.00")), ("M001", "P007", D("60.00"))]
    files = con.execute("SELECT channel, kind, row_count, footer_ok FROM loaded_files ORDER BY 1, 2").fetchall()
    assert files == [("alipay", "trade", 5, True), ("wechat", "funds", 8, True), ("wechat", "trade", 9, True)]
    con.close()
    report = result.outputs["discrepancy_report"]
    assert report.endswith("recon_report_2026-06-05.xlsx")


def day_state(con):
    return (breaks(con), settlement(con),
            con.execute("SELECT discrepancy_id FROM discrepancies ORDER BY 1").fetchall(),
            con.execute("SELECT count(*) FROM channel_transactions").fetchall(),
            con.execute("SELECT count(*) FROM settlement_items").fetchall())


def test_running_the_same_day_twice_changes_nothing(demo_cfg):
    run_day(demo_cfg, DEMO_DATE)
    con = connect(demo_cfg.warehouse, read_only=True)
    first = day_state(con)
    con.close()
    run_day(demo_cfg, DEMO_DATE)
    con = connect(demo_cfg.warehouse, read_only=True)
    second = day_state(con)
    assert first == second and first[4] == [(8,)]
    assert con.execute("SELECT count(*), count(DISTINCT status) FROM runs").fetchall() == [(2, 1)]
    # each run records its stages' seconds, for comparing nights; v_runs shows them beside the run's wall time
    for (seconds,) in con.execute("SELECT summary->'seconds' FROM runs").fetchall():
        assert set(json.loads(seconds)) == {"load", "match", "settle"}
    for wall, *stages in con.execute("SELECT wall_seconds, load_seconds, match_seconds, settle_seconds "
                                     "FROM v_runs WHERE status = 'succeeded'").fetchall():
        assert all(s > 0 for s in stages) and wall >= sum(stages) - 0.01
    con.close()


TABLES = ("loaded_files", "channel_transactions", "channel_funds_movements", "platform_orders",
          "platform_expected_funds", "matched_transactions", "discrepancies", "settlement_lines", "settlement_items")


def snapshot(con):
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


@pytest.mark.parametrize("fail_in", [
    "settlement.engine.settle_day", "recon.pipeline.reconcile_day",
    "recon.pipeline.parse_fetched",    # in the thread that parses the next file
    "recon.pipeline.read_platform",    # in the thread that reads the platform database
])
def test_a_run_that_fails_halfway_leaves_the_warehouse_as_it_was(demo_cfg, monkeypatch, fail_in):
    run_day(demo_cfg, DEMO_DATE)
    con = connect(demo_cfg.warehouse)
    before = snapshot(con)
    con.execute("DELETE FROM matched_transactions")      # make the rerun's writes visible if they leaked

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    module, name = fail_in.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", boom)
    expected = snapshot(con)
    with pytest.raises(RuntimeError, match="injected failure"):
        process_day(demo_cfg, DEMO_DATE, con=con)
    assert snapshot(con) == expected
    assert expected != before
    status = con.execute("SELECT status, message FROM runs ORDER BY started_at DESC LIMIT 1").fetchall()
    assert status == [("failed", "injected failure")]
    assert not list(Path(demo_cfg.warehouse).parent.glob(".platform-*"))   # the staging folder is gone
    con.close()


def test_a_database_error_in_the_load_is_the_error_reported_and_the_session_is_reset(demo_cfg, monkeypatch):
    """An error inside DuckDB aborts the transaction; the load's setting must not hide it or outlive it."""
    import duckdb

    run_day(demo_cfg, DEMO_DATE)
    con = connect(demo_cfg.warehouse)
    before = snapshot(con)

    def bad_insert(con, staged, business_date):
        con.execute("INSERT INTO platform_orders (business_date, source_key) VALUES (?, 'x')", [business_date])

    monkeypatch.setattr("recon.pipeline.load_staged", bad_insert)
    with pytest.raises(duckdb.ConstraintException):        # not "Current transaction is aborted"
        process_day(demo_cfg, DEMO_DATE, con=con)
    assert snapshot(con) == before
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0] is True
    assert con.execute("SELECT status FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0] == "failed"
    con.close()


def test_cli_demo_runs_everything_and_prints_where_the_outputs_are(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert f"Excel report:  {tmp_path / 'demo' / 'reports' / '2026-06-05' / 'recon_report_2026-06-05.xlsx'}" in out
    assert f"DuckDB file:   {tmp_path / 'demo' / 'warehouse.duckdb'}" in out
    assert "missing_in_channel 1" in out and "short 2" in out
    assert (tmp_path / "demo" / "reports" / "2026-06-05" / "recon_report_2026-06-05.xlsx").exists()


def test_cli_run_fails_with_one_clear_line_when_a_statement_is_missing(tmp_path, capsys):
    from tests.conftest import demo_config
    cfg = demo_config(tmp_path)
    code = cli.main(["run", "--config", str(cfg.config_path), "--date", "2026-06-07"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 75
    assert len(err) == 1 and err[0].startswith("recon run: error: statement not available: wechat trade")


def test_an_unexpected_failure_is_one_line_too(tmp_path, capsys, monkeypatch):
    from tests.conftest import write_demo_config

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("settlement.engine.settle_day", boom)
    code = cli.main(["run", "--config", str(write_demo_config(tmp_path)), "--date", "2026-06-05"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["recon run: internal error: ZeroDivisionError: division by zero (set RECON_DEBUG=1 for the "
                   "traceback)"]
