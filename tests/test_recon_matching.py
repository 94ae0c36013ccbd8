"""Single-day matching rules: the channel's id wins over the order number it printed, tolerance, day windows."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

from recon.config import parse_config
from recon.matching import reconcile_day
from recon.matching_window import channel_window
from recon.warehouse import connect, transaction

DAY = date(2026, 6, 10)


def make_cfg(**channel):
    return parse_config({
        "warehouse": "/tmp/unused.duckdb", "output_dir": "/tmp/x", "landing_dir": "/tmp/x",
        "channels": [{"name": "wechat", "fee_rate": "0.006", "statements": [
            {"kind": "trade", "format": "wechat_trade", "source": {"type": "folder", "path": "/tmp/x"}}], **channel}],
        "internal_source": {"url": "sqlite://"}})


def run(rows_p, rows_c, **channel):
    """rows_p: (order_no, txn_id, amount); rows_c: (txn_id, printed order no or None, amount, fee)."""
    con = connect(":memory:")
    con.execute("INSERT INTO loaded_files (file_id, channel, business_date, kind, format, path, size_bytes, row_count, "
                "quarantined_count, status, loaded_at) VALUES ('f', 'wechat', ?, 'trade', 't', 'f.csv', 0, 0, 0, "
                "'active', now())", [DAY])
    at = datetime(2026, 6, 10, 12, 0, 0)
    for no, txn, amount in rows_p:
        con.execute("INSERT INTO platform_orders VALUES (?, 'payment_orders', ?, 'payment', ?, NULL, 'wechat', ?, "
                    "'M1', ?, 'CNY', 'success', ?)", [DAY, no, no, txn, D(amount), at])
        con.execute("INSERT INTO platform_expected_funds VALUES (?, 'e', ?, 'wechat', ?, NULL, 'in', ?, 'CNY', ?)",
                    [DAY, no, no, D(amount), at])
    for i, (txn, printed, amount, fee) in enumerate(rows_c, 1):
        con.execute("INSERT INTO channel_transactions VALUES (?, 'wechat', 'f', ?, 'payment', ?, ?, NULL, NULL, NULL, "
                    "'success', 'CNY', ?, ?, NULL, ?, NULL, NULL)", [DAY, i, txn, printed, D(amount), D(fee), at])
    with transaction(con):
        summary = reconcile_day(con, make_cfg(**channel), DAY)
    breaks = set(con.execute("SELECT type, match_key FROM discrepancies").fetchall())
    matched = {k for (k,) in con.execute("SELECT match_key FROM matched_transactions").fetchall()}
    con.close()
    return summary, breaks, matched


def test_the_channels_transaction_id_wins_and_the_order_number_is_the_fallback():
    summary, breaks, matched = run(
        [("P1", "T1", "100.00"), ("P2", "T2", "50.00"), ("P3", None, "10.00")],
        [("T1", "WRONG-NO", "100.00", "0.60"),      # printed a wrong order number: the id still finds P1
         ("T2", None, "50.00", "0.30"),             # printed none: the id finds P2
         ("TX", "P3", "10.00", "0.06")])            # the platform has no id for P3: the order number finds it
    assert breaks == set() and summary.matched == 3
    assert matched == {"payment:P1", "payment:P2", "payment:P3"}


def test_an_unknown_id_without_an_order_number_is_missing_in_platform_under_the_channels_id():
    _, breaks, _ = run([], [("T9", None, "5.00", "0.03")])
    assert breaks == {("missing_in_platform", "payment:T9")}


def test_amount_tolerance_is_per_channel():
    rows_p = [("P1", "T1", "100.00"), ("P2", "T2", "100.00")]
    rows_c = [("T1", "P1", "100.03", "0.60"), ("T2", "P2", "100.06", "0.60")]
    _, strict, _ = run(rows_p, rows_c)
    assert strict == {("amount_mismatch", "payment:P1"), ("amount_mismatch", "payment:P2")}
    _, tolerant, matched = run(rows_p, rows_c, amount_tolerance="0.05")
    assert tolerant == {("amount_mismatch", "payment:P2")} and "payment:P1" in matched


def test_day_windows_follow_the_day_cut_in_the_channels_zone():
    cfg = parse_config({
        "warehouse": "/tmp/x.duckdb", "output_dir": "/tmp/x", "landing_dir": "/tmp/x",
        "channels": [{"name": n, "day_cut": cut, "timezone": tz, "statements": [
            {"kind": "trade", "format": "wechat_trade", "source": {"type": "folder", "path": "/x"}}]}
            for n, cut, tz in (("unionpay", "23:00", None), ("wechat", "00:00", None),
                               ("stripe", "00:00", "UTC"))],
        "internal_source": {"url": "sqlite://"}})
    sh, utc = ZoneInfo("Asia/Shanghai"), ZoneInfo("UTC")
    assert channel_window(cfg, cfg.channel("unionpay"), DAY) == (datetime(2026, 6, 9, 23, tzinfo=sh),
                                                                  datetime(2026, 6, 10, 23, tzinfo=sh))
    assert channel_window(cfg, cfg.channel("wechat"), DAY) == (datetime(2026, 6, 10, tzinfo=sh),
                                                                datetime(2026, 6, 11, tzinfo=sh))
    assert channel_window(cfg, cfg.channel("stripe"), DAY) == (datetime(2026, 6, 10, tzinfo=utc),
                                                                datetime(2026, 6, 11, tzinfo=utc))


def test_pairs_name_the_right_file_and_line_and_are_freed_after_matching():
    """The pairing joins small file numbers, not file ids: each pair must still name its own file and line."""
    con = connect(":memory:")
    at = datetime(2026, 6, 10, 12, 0, 0)
    for fid, path, status in (("zz", "later.csv", "active"), ("aa", "earlier.csv", "active"),
                              ("mm", "old.csv", "superseded")):
        con.execute("INSERT INTO loaded_files (file_id, channel, business_date, kind, format, path, size_bytes, "
                    "row_count, quarantined_count, status, loaded_at) VALUES (?, 'wechat', ?, 'trade', 't', ?, 0, 0, "
                    "0, ?, now())", [fid, DAY, path, status])
    for no, fid, line in (("P1", "zz", 7), ("P2", "aa", 3), ("P3", "mm", 1)):
        con.execute("INSERT INTO platform_orders VALUES (?, 'payment_orders', ?, 'payment', ?, NULL, 'wechat', NULL, "
                    "'M1', 10.00, 'CNY', 'success', ?)", [DAY, no, no, at])
        con.execute("INSERT INTO channel_transactions VALUES (?, 'wechat', ?, ?, 'payment', ?, ?, NULL, NULL, NULL, "
                    "'success', 'CNY', 10.00, 0.06, NULL, ?, NULL, NULL)", [DAY, fid, line, "T" + no, no, at])
    with transaction(con):
        summary = reconcile_day(con, make_cfg(), DAY)
    sources = {r[0]: r[1:] for r in con.execute(
        "SELECT m.order_no, m.file_id, m.line_no, lf.path FROM matched_transactions m JOIN loaded_files lf "
        "USING (file_id)").fetchall()}
    # the superseded file's row is not in play
    assert sources == {"P1": ("zz", 7, "later.csv"), "P2": ("aa", 3, "earlier.csv")}
    assert summary.matched == 2
    assert set(con.execute("SELECT type, order_no FROM discrepancies WHERE flow = 'information'").fetchall()) \
        == {("missing_in_channel", "P3")}
    left = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name LIKE 'info_%'")
    assert left.fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name IN "
                       "('info_pairs', 'info_sources')").fetchone()[0] == 0
    con.close()
