"""``recon check-file``: one file, no warehouse; text and --json output; exit codes; no tracebacks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

from loaders import writers as W
from recon.cli import main
from tests.formats_helpers import trade_rows

REAL = Path(__file__).parent / "data" / "real"


def run(capsys, *argv):
    code = main(["check-file", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_the_unionpay_sample(capsys):
    code, out, err = run(capsys, REAL / "unionpay/802310048993424_20150905.zip", "--json")
    assert code == 0 and err == ""
    report = json.loads(out)                          # exactly one JSON object
    assert report["format"] == "unionpay_zm" and report["rows"] == 8 and report["footer_ok"] is True
    assert report["totals"] == {"CNY": {"gross": "13227.00", "fees": "79.36", "net": "13147.64"}}
    assert report["errors"] == [] and report["period"] == ["2015-09-05", "2015-09-06"]


def test_text_output_and_exit_code_for_a_footer_mismatch(capsys):
    code, out, err = run(capsys, REAL / "wechat/fundflowbill_basic_20210201.csv")
    assert code == 1
    assert "format:    wechat_fundflow (detected)" in out
    assert "footer:    MISMATCH" in out and "file says 3, rows give 2" in out
    assert err.count("\n") == 1 and "file says 3, rows give 2" in err and "Traceback" not in err


def test_quarantined_rows_are_listed_with_line_field_and_reason(tmp_path, capsys):
    path = W.write_wechat_trade(trade_rows(5, seed=40, refunds=False), tmp_path / "t.csv")
    lines = path.read_text().split("\n")
    lines[3] = lines[3].replace("`SUCCESS", "`BOGUS")
    path.write_text("\n".join(lines))
    code, out, err = run(capsys, path, "--format", "wechat_trade", "--json")
    report = json.loads(out)
    assert report["rows"] == 4 and report["quarantined"] == 1
    assert report["errors"][0]["line"] == 4 and report["errors"][0]["field"] == "交易状态"
    assert "BOGUS" in report["errors"][0]["reason"] and "`BOGUS" in report["errors"][0]["raw"]
    assert report["footer_ok"] is False and code == 1
    code, out, _ = run(capsys, path)
    assert "line 4, field 交易状态: unknown status 'BOGUS'" in out


def test_multi_currency_totals(tmp_path, capsys):
    rows = trade_rows(12, seed=41, currencies=("USD", "EUR"))
    path = W.write_adyen_settlement(rows, tmp_path / "settlement_detail_report_batch_3.csv", batch=3)
    code, out, _ = run(capsys, path, "--json")
    report = json.loads(out)
    assert code == 0 and report["format"] == "adyen_settlement"
    for ccy in ("USD", "EUR"):
        mine = [r for r in rows if r["currency"] == ccy]
        assert report["totals"][ccy] == {
            "gross": str(sum(r["amount"] for r in mine if r["txn_type"] == "payment")),
            "fees": str(sum(r["fee"] for r in mine)), "net": str(sum(r["net"] for r in mine))}


def test_file_level_errors_are_one_line_on_stderr(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello\n")
    code, out, err = run(capsys, tmp_path / "x.txt")
    assert code == 1 and out == "" and err.count("\n") == 1 and "format not recognised" in err
    code, out, err = run(capsys, tmp_path / "missing.csv", "--json")
    assert code == 1 and json.loads(out)["error"].endswith("no such file") and "no such file" in err
    bad = tmp_path / "a.zip"
    W.write_alipay_trade(trade_rows(3, seed=42), bad, bill_date=date(2026, 6, 5))
    bad.write_bytes(bad.read_bytes()[:-40])
    code, out, err = run(capsys, bad, "--format", "alipay_trade")
    assert code == 1 and "a.zip" in err and err.count("\n") == 1


def test_generic_format_through_options(tmp_path, capsys):
    path = tmp_path / "bank.txt"
    path.write_bytes("20260606|财付通|99.40|C\n20260606|X|1.00|D\n".encode("gbk"))
    opts = {"kind": "bank", "delimiter": "|", "header": False, "quote": False, "sign": "indicator",
            "columns": {"value_date": 1, "counterparty": 2, "amount": 3, "indicator": 4},
            "date_formats": ["%Y%m%d"]}
    code, out, _ = run(capsys, path, "--format", "generic", "--options-json", json.dumps(opts), "--json")
    report = json.loads(out)
    assert code == 0 and report["rows"] == 2 and report["totals"] == {"CNY": {"gross": "99.40", "fees": "0.00",
                                                                              "net": "98.40"}}


def test_the_installed_command_runs(tmp_path):
    recon = shutil.which("recon") or str(Path(sys.executable).parent / "recon")
    proc = subprocess.run([recon, "check-file", str(REAL / "alipay/trade_bill_20260605.gbk.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "alipay_trade (detected)" in proc.stdout and "gross 9.91" in proc.stdout
