"""The generic format: a new bank's statement described by a config block, not code."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from loaders.base import FORMATS, FileError
import loaders.formats  # noqa: F401


def parse(path, **opts):
    return FORMATS["generic"].parse(path, opts)


def test_delimited_gbk_with_title_and_trailer_lines_and_totals(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(("某银行对账单\r\n账号:6222020200112233445\r\n交易日期;对方户名;借方;贷方;摘要\r\n"
                      "2026-06-06;财付通支付科技有限公司;;1,099.40;微信结算\r\n"
                      "2026-06-06;某公司;5.00;;手续费 6222020200112233445\r\n"
                      "合计 总笔数:2 总金额:1094.40\r\n").encode("gbk"))
    parsed = parse(path, kind="bank", delimiter=";", skip_lines=2, skip_footer_lines=1,
                   columns={"value_date": "交易日期", "counterparty": "对方户名", "debit": "借方", "credit": "贷方",
                            "memo": "摘要"}, totals={"rows": "总笔数", "amount": "总金额"})
    rows = parsed.rows.to_pylist()
    assert [(r["line_no"], r["direction"], r["amount"], r["payer_channel"]) for r in rows] == [
        (4, "in", Decimal("1099.40"), "wechat"), (5, "out", Decimal("5.00"), None)]
    assert rows[1]["memo"] == "手续费 622202*********3445"          # account numbers masked
    assert parsed.footer.ok is True and parsed.kind == "bank"


def test_fixed_width_fen_with_sign_indicator_and_quarantine(tmp_path):
    path = tmp_path / "fw.txt"
    lines = ["20260606财付通      0000009940C", "20260606银联        000000010xD", "2026060?支付宝      0000000100C",
             "20260606支付宝      0000000100Q"]
    path.write_bytes("\n".join(lines).encode("gbk") + b"\n")
    parsed = parse(path, kind="bank", widths=[8, 12, 10, 1], header=False, amount_unit="fen", sign="indicator",
                   columns={"value_date": 1, "counterparty": 2, "amount": 3, "indicator": 4},
                   date_formats=["%Y%m%d"])
    assert [(r["counterparty"], r["amount"]) for r in parsed.rows.to_pylist()] == [("财付通", Decimal("99.40"))]
    assert [(q.line_no, q.field) for q in parsed.quarantine] == [(2, "amount"), (3, "value_date"), (4, "indicator")]
    assert all(q.raw_text for q in parsed.quarantine)


def test_trade_kind_with_type_mapping(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,order,type,amt,fee,time\nT1,O1,消费,100.00,0.60,2026-06-05 10:00:00\n"
                    "T1,O1,退货,-10.00,-0.06,2026-06-05 11:00:00\nT2,O2,冲正,1.00,0,2026-06-05 12:00:00\n",
                    encoding="utf-8")
    parsed = parse(path, kind="trade", txn_types={"消费": "payment", "退货": "refund"},
                   columns={"channel_txn_id": "id", "merchant_order_no": "order", "txn_type": "type", "amount": "amt",
                            "fee": "fee", "txn_time": "time"})
    rows = parsed.rows.to_pylist()
    assert [(r["txn_type"], r["amount"], r["fee"], r["net"]) for r in rows] == [
        ("payment", Decimal("100.00"), Decimal("0.60"), Decimal("99.40")),
        ("refund", Decimal("10.00"), Decimal("-0.06"), Decimal("-9.94"))]
    assert rows[0]["txn_time"] == datetime(2026, 6, 5, 10) and parsed.quarantine[0].field == "txn_type"


def test_config_mistakes_are_file_errors(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(FileError, match="options.kind"):
        parse(path, columns={"value_date": "a"})
    with pytest.raises(FileError, match="header has no column 'Date'"):
        parse(path, kind="bank", columns={"value_date": "Date", "amount": "b"})
    with pytest.raises(FileError, match="amount_unit"):
        parse(path, kind="bank", amount_unit="cents", columns={"value_date": "a", "amount": "b"})


def test_signed_amounts_and_totals_mismatch_is_reported(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("Date,Amount,Payer\n2026-06-06,250.00,Stripe Payments\n2026-06-06,-3.00,Bank fee\n"
                    "Total rows: 3\n", encoding="utf-8")
    parsed = parse(path, kind="bank", footer_prefix="Total", totals={"rows": "Total rows"},
                   columns={"value_date": "Date", "amount": "Amount", "counterparty": "Payer"})
    assert [(r["direction"], r["payer_channel"], r["value_date"]) for r in parsed.rows.to_pylist()] == [
        ("in", "stripe", date(2026, 6, 6)), ("out", None, date(2026, 6, 6))]
    assert parsed.footer.ok is False and "file says 3, rows give 2" in parsed.footer.message
