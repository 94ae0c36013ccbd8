"""Every real sample file (tests/data/real, see PROVENANCE.md) parses, with its own totals checked."""
from __future__ import annotations

import importlib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest

from loaders.base import FORMATS
from loaders.check import check_file, detect_format

importlib.import_module("loaders.formats")
REAL = Path(__file__).parent / "data" / "real"


def total(table, column, where=None):
    t = table if where is None else table.filter(where)
    s = pc.sum(t.column(column)).as_py()
    return Decimal("0.00") if s is None else s


def test_every_real_sample_parses_with_a_detected_format():
    files = sorted(p for p in REAL.rglob("*") if p.is_file() and p.suffix != ".md")
    assert len(files) == 5
    for path in files:
        fmt = detect_format(path)
        assert fmt is not None, path
        parsed = FORMATS[fmt].parse(path, {})
        assert parsed.rows.num_rows > 0 and not parsed.quarantine, path


def test_unionpay_sample_gives_the_rd_report_totals():
    parsed = FORMATS["unionpay_zm"].parse(REAL / "unionpay/802310048993424_20150905.zip", {})
    rows = parsed.rows
    assert rows.num_rows == 8
    assert total(rows, "amount") == Decimal("13227.00")
    assert total(rows, "fee") == Decimal("79.36")
    assert total(rows, "net") == Decimal("13147.64")
    assert parsed.footer.ok is True
    assert parsed.footer.declared_rows == 8 and parsed.footer.declared_amount == Decimal("13227.00")
    assert parsed.period == (date(2015, 9, 5), date(2015, 9, 6))
    first = rows.slice(0, 1).to_pylist()[0]
    # 4768.00 - 28.61 fee = 4739.39 settled (fields 7, 16, 17 of the first record)
    assert (first["amount"], first["fee"], first["net"]) == (Decimal("4768.00"), Decimal("28.61"), Decimal("4739.39"))
    assert first["channel_txn_id"] == "201509061122031906248" and first["merchant_order_no"] == "10078087"
    assert first["card_no_masked"] == "622609******0048"
    assert first["txn_time"] == datetime(2015, 9, 6, 11, 22, 3)
    assert set(rows.column("txn_type").to_pylist()) == {"payment"}


def test_wechat_fundflow_sample_is_reported_as_footer_mismatched():
    parsed = FORMATS["wechat_fundflow"].parse(REAL / "wechat/fundflowbill_basic_20210201.csv", {})
    assert parsed.rows.num_rows == 2
    assert parsed.footer.ok is False
    assert parsed.footer.declared_rows == 3 and parsed.footer.parsed_rows == 2
    assert "file says 3" in parsed.footer.message and "rows give 2" in parsed.footer.message
    assert set(parsed.rows.column("direction").to_pylist()) == {"out"}


def test_wechat_trade_sample():
    parsed = FORMATS["wechat_trade"].parse(REAL / "wechat/tradebill_all_20210128.csv", {})
    assert parsed.rows.num_rows == 3 and parsed.footer.ok is True
    assert total(parsed.rows, "amount") == Decimal("0.03")
    r = parsed.rows.slice(0, 1).to_pylist()[0]
    assert r["channel_txn_id"] == "4200000925202101284997714292" and r["merchant_order_no"] == "S20210128170702357723"
    assert r["channel_merchant_id"] == "1601959334" and r["description"] == "for testing"
    assert r["txn_time"] == datetime(2021, 1, 28, 17, 7, 11) and r["line_no"] == 2


@pytest.mark.parametrize("name", ["trade_bill_20260605.utf8.csv", "trade_bill_20260605.gbk.csv"])
def test_alipay_samples_utf8_and_gbk_give_the_same_rows(name):
    parsed = FORMATS["alipay_trade"].parse(REAL / "alipay" / name, {})
    utf8 = FORMATS["alipay_trade"].parse(REAL / "alipay/trade_bill_20260605.utf8.csv", {})
    assert parsed.rows.equals(utf8.rows)
    assert parsed.rows.num_rows == 3 and parsed.footer.ok is True
    assert parsed.period == (date(2026, 6, 5), date(2026, 6, 6))
    kinds = parsed.rows.column("txn_type").to_pylist()
    assert kinds == ["payment", "payment", "refund"]
    refund = parsed.rows.slice(2, 1).to_pylist()[0]
    assert refund["merchant_refund_no"] == "REF20260605001" and refund["net"] == Decimal("-0.02")
    assert "\t" not in refund["channel_txn_id"]


def test_check_file_on_the_unionpay_sample():
    report = check_file(REAL / "unionpay/802310048993424_20150905.zip")
    assert report["format"] == "unionpay_zm" and report["rows"] == 8 and report["footer_ok"] is True
    assert report["totals"] == {"CNY": {"gross": "13227.00", "fees": "79.36", "net": "13147.64"}}


def test_a_bank_title_line_past_the_csv_field_limit_is_a_file_error(tmp_path):
    from loaders.base import FORMATS, FileError

    path = tmp_path / "bank.csv"
    path.write_text('"' + "x" * 200_000 + '"\n日期,金额\n2026-06-05,1.00\n', encoding="utf-8")
    with pytest.raises(FileError, match=r"bank.csv, line 1: unreadable title line"):
        FORMATS["bank_csv"].parse(path, {})
