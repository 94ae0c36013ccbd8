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
