"""A big batch's transaction list is capped in the settlement workbook; the merchant statements list all."""
from __future__ import annotations

import csv

from openpyxl import load_workbook

from recon.pipeline import run_day
from recon.warehouse import connect
from reports.excel import write_settlement_report
from settlement.payout import write_payout_files
from tests.conftest import DEMO_DATE


def test_items_beyond_the_detail_limit_go_to_csv_with_a_note(demo_cfg, tmp_path):
    run_day(demo_cfg, DEMO_DATE)
    con = connect(demo_cfg.warehouse, read_only=True)
    total = con.execute("SELECT count(*) FROM settlement_items WHERE batch_id = 'STL-20260608'").fetchall()[0][0]
    path = write_settlement_report(con, demo_cfg, "STL-20260608", tmp_path, detail_rows=5)
    write_payout_files(con, demo_cfg, "STL-20260608", tmp_path)
    con.close()
    assert total == 8
    ws = load_workbook(path, read_only=True)["items"]
    rows = [r for r in ws.iter_rows(values_only=True)]
    assert len(rows) == 1 + 4 + 1                         # header, rows shown, the note
    assert rows[-1][0] == ("Only the first 4 of 8 rows are shown in this workbook; every transaction, fee and "
                           "deduction is in the merchant statements STL-20260608_statement_<merchant>.csv beside it.")
    assert not path.with_name(path.stem + "_items.csv").exists()
    statements = list(tmp_path.glob("STL-20260608_statement_*.csv"))
    listed = 0
    for st in statements:
        with open(st, encoding="utf-8-sig", newline="") as f:
            listed += sum(1 for row in csv.DictReader(f) if row["item_kind"] == "transaction")
    assert listed == total


def test_the_items_shown_are_the_first_in_order_whatever_the_cap(tmp_path):
    """The workbook reads only the leading (merchant, currency, trade date, channel) groups of a big
    batch; what it shows must still be exactly the first items of the whole batch in ORDER BY ALL order."""
    from datetime import datetime, timezone

    from recon.warehouse import transaction
    from tests.test_reports_excel import make_cfg

    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    with transaction(con):
        con.execute("INSERT INTO settlement_batches (batch_id, settlement_date, status, created_at) "
                    "VALUES ('B', DATE '2026-06-08', 'draft', ?)", [datetime(2026, 6, 8, tzinfo=timezone.utc)])
        # 600 items over 3 merchants x 2 currencies x 3 days x 2 channels, inserted in a scrambled order
        con.execute("""INSERT INTO settlement_items (batch_id, merchant_id, currency, trade_date, channel, txn_type,
            order_no, refund_no, amount, fee, net, item_kind, run_date)
            SELECT 'B', 'M' || (i * 7 % 3), CASE WHEN i % 5 = 0 THEN 'USD' ELSE 'CNY' END,
                   DATE '2026-06-01' + (i * 11 % 3)::INTEGER, CASE WHEN i % 2 = 0 THEN 'wechat' ELSE 'alipay' END,
                   CASE WHEN i % 9 = 0 THEN 'refund' ELSE 'payment' END, 'O' || (i * 37 % 600),
                   CASE WHEN i % 9 = 0 THEN 'R' || i END, 1.00 + i % 13, 0.01, 0.99 + i % 13, 'transaction',
                   DATE '2026-06-07' FROM range(600) r(i)""")
    cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                      "'settlement_items' ORDER BY ordinal_position").fetchall()]
    for cap in (2, 37, 100, 299, 601, 5000):
        path = write_settlement_report(con, cfg, "B", tmp_path / str(cap), detail_rows=cap)
        ws = load_workbook(path, read_only=True)["items"]
        got = [r for r in ws.iter_rows(min_row=2, values_only=True) if r[0] == "B"]
        shown = cap - 1 if cap < 600 else 600          # capped: one row is kept for the note
        want = con.execute(f"SELECT * FROM settlement_items WHERE batch_id = 'B' ORDER BY ALL LIMIT {shown}").fetchall()
        assert len(got) == shown
        key = [cols.index(c) for c in ("merchant_id", "currency", "trade_date", "channel", "txn_type", "order_no",
                                       "refund_no")]

        def norm(v):   # openpyxl reads a date cell back as a datetime
            return v.date() if isinstance(v, datetime) else v

        assert [tuple(norm(g[k]) for k in key) for g in got] == [tuple(w[k] for k in key) for w in want], cap
    con.close()
