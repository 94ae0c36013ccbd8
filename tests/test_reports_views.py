"""The analyst views: idempotent, and their numbers agree with the base tables."""
from __future__ import annotations

from decimal import Decimal

from recon.views import VIEWS, create_views
from recon.warehouse import connect
from tests.test_reports_excel import D, make_cfg, seed_carry_over, seed_day, seed_settlement


def test_views_are_idempotent_and_agree_with_the_tables(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D)
    seed_carry_over(con, D)
    seed_settlement(con, D)
    create_views(con)
    create_views(con)  # CREATE OR REPLACE: a second call changes nothing
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert set(VIEWS) <= names

    # v_discrepancies: every break once, direction from the sign (or the funds type)
    assert con.execute("SELECT count(*) FROM v_discrepancies").fetchone() == \
        con.execute("SELECT count(*) FROM discrepancies").fetchone()
    dirs = dict(con.execute("SELECT type, direction FROM v_discrepancies WHERE business_date = ? "
                            "AND type IN ('long', 'short', 'missing_in_channel', 'missing_in_platform')",
                            [D]).fetchall())
    assert dirs == {"long": "long", "short": "short", "missing_in_channel": "short", "missing_in_platform": "long"}

    # v_daily_summary: per channel counts
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT channel, files_loaded, statement_rows, quarantined_rows, footer_failures, channel_transactions, "
        "breaks, open_breaks FROM v_daily_summary WHERE business_date = ?", [D]).fetchall()}
    want_breaks = dict(con.execute("SELECT channel, count(*) FROM discrepancies WHERE business_date = ? "
                                   "GROUP BY 1", [D]).fetchall())
    assert rows["alipay"][:5] == (1, 3, 1, 1, 3) and rows["wechat"][:5] == (1, 3, 1, 0, 3)
    assert {ch: r[5] for ch, r in rows.items()} == want_breaks

    # v_channel_totals: statement money per channel
    tot = con.execute("SELECT channel_txn_count, channel_payments, channel_fees FROM v_channel_totals "
                      "WHERE business_date = ? AND channel = 'wechat' AND currency = 'CNY'", [D]).fetchone()
    assert tot == (3, Decimal("60.00"), Decimal("0.18"))

    # v_settlements: one row per line, with its batch
    assert con.execute("SELECT count(*), sum(payout), sum(carried_forward) FROM v_settlements").fetchone() == \
        (2, Decimal("59.64"), Decimal("4.97"))

    # aging, as of the latest succeeded run (D): carried breaks land in their buckets, resolved ones do not
    aging = {r[0]: r[1:] for r in con.execute(
        "SELECT age_bucket, break_count, as_of_date FROM v_open_breaks_aging WHERE channel = 'wechat'").fetchall()}
    open_today = con.execute("SELECT count(*) FROM discrepancies WHERE channel = 'wechat' AND business_date = ? "
                             "AND status IN ('open', 'pending')", [D]).fetchone()[0]
    assert aging["0-3 days"][0] == open_today + 1  # + C-2
    assert {b: v[0] for b, v in aging.items() if b != "0-3 days"} == {"4-7 days": 1, "8-14 days": 1, "31+ days": 1}
    assert {v[1] for v in aging.values()} == {D}
    ages = dict(con.execute("SELECT discrepancy_id, age_days FROM v_open_breaks WHERE discrepancy_id LIKE 'C-%'")
                .fetchall())
    assert ages == {"C-2": 2, "C-5": 5, "C-12": 12, "C-40": 40}
    con.close()


def test_views_work_on_an_empty_warehouse(tmp_path):
    con = connect(tmp_path / "empty.duckdb")
    create_views(con)
    for name in VIEWS:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 0
    con.close()
