"""Round trips: canonical rows -> loaders.writers (the channels' real layouts) -> parsers -> the same rows."""
from __future__ import annotations

import codecs
import gzip
import importlib
import zipfile
from datetime import date
from decimal import Decimal

import pytest

from loaders import writers as W
from loaders.base import FORMATS
from tests.formats_helpers import amount_total, bank_rows, funds_rows, parsed_rows, project, trade_rows

importlib.import_module("loaders.formats")
DAY = date(2026, 6, 5)


def parse(fmt, path, **opts):
    return FORMATS[fmt].parse(path, opts)


def assert_same(fmt, parsed, rows, fields=None):
    fields = fields or W.CARRIES[fmt]
    assert not parsed.quarantine, parsed.quarantine[:3]
    assert parsed_rows(parsed.rows, fields) == project(rows, fields)


@pytest.mark.parametrize("bill_type", ["ALL", "SUCCESS", "REFUND"])
@pytest.mark.parametrize("encoding,bom,newline,gz", [("utf-8", False, "\n", False), ("utf-8", True, "\r\n", False),
                                                     ("gbk", False, "\r\n", False), ("utf-8", False, "\n", True)])
def test_wechat_trade_round_trip(tmp_path, bill_type, encoding, bom, newline, gz):
    rows = trade_rows(40, seed=3, statuses=True)
    rows = [r for r in rows if (r["txn_type"] == "refund") == (bill_type == "REFUND")] if bill_type != "ALL" else rows
    path = W.write_wechat_trade(rows, tmp_path / "bill.csv", bill_type=bill_type, encoding=encoding, bom=bom,
                                newline=newline, gzip=gz)
    parsed = parse("wechat_trade", path)
    assert parsed.footer.ok is True, parsed.footer.message
    assert_same("wechat_trade", parsed, rows)
    assert parsed.meta["layout"] == bill_type
    assert parsed.rows.column("line_no").to_pylist() == list(range(2, len(rows) + 2))


@pytest.mark.parametrize("ascii_parens", [False, True])
def test_wechat_fundflow_round_trip(tmp_path, ascii_parens):
    rows = funds_rows(30, seed=4)
    path = W.write_wechat_fundflow(rows, tmp_path / "ff.csv", ascii_parens=ascii_parens)
    parsed = parse("wechat_fundflow", path)
    assert parsed.footer.ok is True
    assert_same("wechat_fundflow", parsed, rows)


def test_wechat_no_statement_and_header_only_are_empty_days(tmp_path):
    (tmp_path / "none.csv").write_text('{"code":"NO_STATEMENT_EXIST","message":"no bill"}')
    assert parse("wechat_trade", tmp_path / "none.csv").empty_day is True
    (tmp_path / "empty.csv").write_bytes(b"")
    assert parse("wechat_fundflow", tmp_path / "empty.csv").empty_day is True
    W.write_wechat_trade([], tmp_path / "head.csv")
    parsed = parse("wechat_trade", tmp_path / "head.csv")
    assert parsed.empty_day is True and parsed.rows.num_rows == 0 and parsed.footer.ok is True


@pytest.mark.parametrize("isv", [False, True])
def test_alipay_trade_zip_with_gbk_entry_names_round_trip(tmp_path, isv):
    rows = trade_rows(50, seed=5, mch="2088000000000001" if isv else None)
    path = W.write_alipay_trade(rows, tmp_path / "20887226827483540156_20260605.csv.zip", bill_date=DAY, isv=isv)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert all(not i.flag_bits & 0x800 for i in infos)
        names = [i.filename.encode("cp437").decode("gbk") for i in infos]
    assert names == ["20887226827483540156_20260605_业务明细.csv", "20887226827483540156_20260605_业务明细(汇总).csv"]
    parsed = parse("alipay_trade", path)
    assert parsed.footer.ok is True and "汇总" in parsed.footer.message
    assert parsed.period == (DAY, date(2026, 6, 6))
    fields = W.CARRIES["alipay_trade"] + (("channel_merchant_id",) if isv else ())
    assert_same("alipay_trade", parsed, rows, fields)
    assert parsed.meta["entry"] == names[0] and parsed.meta["encoding"] == "gb18030"


def test_alipay_bare_csv_utf8_round_trip(tmp_path):
    rows = trade_rows(20, seed=6, mch=None)
    path = W.write_alipay_trade(rows, tmp_path / "bill.csv", bill_date=DAY, as_zip=False, encoding="utf-8",
                                newline="\n")
    parsed = parse("alipay_trade", path)
    assert parsed.footer.ok is True
    assert_same("alipay_trade", parsed, rows)


def test_alipay_fund_bill_zip_round_trip(tmp_path):
    rows = funds_rows(25, seed=7)
    path = W.write_alipay_funds(rows, tmp_path / "funds.zip", bill_date=DAY)
    parsed = parse("alipay_funds", path)
    assert parsed.footer.ok is True and "汇总 支出金额(-元)" in parsed.footer.message
    assert_same("alipay_funds", parsed, rows)


def test_alipay_header_only_is_an_empty_day(tmp_path):
    path = W.write_alipay_trade([], tmp_path / "empty.zip", bill_date=DAY)
    parsed = parse("alipay_trade", path)
    assert parsed.empty_day is True and parsed.rows.num_rows == 0 and parsed.period == (DAY, date(2026, 6, 6))


def test_unionpay_zip_and_bare_file_round_trip(tmp_path):
    rows = trade_rows(30, seed=8, mch="802310048993424", card=True)
    for r in rows:
        r["description"] = None
    path = W.write_unionpay_zm(rows, tmp_path / "802310048993424_20260605.zip", clearing_date=DAY)
    parsed = parse("unionpay_zm", path)
    assert parsed.footer.ok is True, parsed.footer.message
    assert parsed.period == (DAY, date(2026, 6, 6))
    assert_same("unionpay_zm", parsed, rows)
    # a bare ZM file finds its RD report beside it
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            (tmp_path / info.filename).write_bytes(zf.read(info))
    bare = parse("unionpay_zm", tmp_path / "INN26060588ZM_802310048993424")
    assert bare.footer.ok is True and bare.rows.equals(parsed.rows)


def test_bank_csv_and_xlsx_round_trip(tmp_path):
    rows = bank_rows(30, seed=9)
    for fmt, writer, name in (("bank_csv", W.write_bank_csv, "s.csv"), ("bank_xlsx", W.write_bank_xlsx, "s.xlsx")):
        parsed = parse(fmt, writer(rows, tmp_path / name))
        assert_same(fmt, parsed, rows)
        assert parsed_rows(parsed.rows, ["payer_channel"]) == project(rows, ["payer_channel"])


def test_bank_csv_utf8_with_bom_and_payer_mapping_from_options(tmp_path):
    rows = bank_rows(10, seed=10)
    path = W.write_bank_csv(rows, tmp_path / "s.csv", encoding="utf-8", bom=True, newline="\n")
    parsed = parse("bank_csv", path, payer_channels={"tenpay": ["财付通"]})
    assert_same("bank_csv", parsed, rows)
    expected = ["tenpay" if r["payer_channel"] == "wechat" else None for r in rows]
    assert parsed.rows.column("payer_channel").to_pylist() == expected


def test_stripe_and_adyen_round_trip_multi_currency(tmp_path):
    rows = trade_rows(40, seed=11, currencies=("USD", "EUR", "JPY"), comma_ok=True, mch="DemoMerchantECOM")
    parsed = parse("stripe_payout", W.write_stripe_payout(rows, tmp_path / "stripe.csv"))
    assert_same("stripe_payout", parsed, rows)
    parsed = parse("adyen_settlement", W.write_adyen_settlement(rows, tmp_path / "adyen.csv", batch=7))
    assert parsed.footer.ok is True and "batch 7 USD" in parsed.footer.message
    assert_same("adyen_settlement", parsed, rows)


def test_line_numbers_are_exact_across_many_blocks(tmp_path):
    """A bill bigger than several read blocks, with broken rows spread through it."""
    rows = trade_rows(30_000, seed=12, refunds=False)
    path = W.write_wechat_trade(rows, tmp_path / "big.csv")
    lines = path.read_bytes().split(b"\n")
    broken = {5: b"`garbage", 7_777: lines[7_777].replace(b"`SUCCESS", b"`WHATEVER"),
              20_001: lines[20_001] + b",`extra,`col", 29_990: lines[29_990].replace(b"`CNY,`", b"`CNY,`1.2.3")}
    for i, v in broken.items():
        lines[i] = v
    path.write_bytes(b"\n".join(lines))
    parsed = parse("wechat_trade", path)
    assert [q.line_no for q in parsed.quarantine] == [i + 1 for i in sorted(broken)]
    assert [q.raw_text.encode() for q in parsed.quarantine] == [broken[i] for i in sorted(broken)]
    assert [q.field for q in parsed.quarantine] == [None, "交易状态", None, "应结订单金额"]
    got = parsed.rows.column("line_no").to_pylist()
    assert got == [n for n in range(2, 30_002) if n - 1 not in broken]
    ids = parsed.rows.column("channel_txn_id").to_pylist()
    assert ids == [rows[n - 2]["channel_txn_id"] for n in got]
    assert parsed.footer.ok is False and "4 row(s) quarantined" in parsed.footer.message


def test_quoted_value_spanning_lines_keeps_exact_line_numbers(tmp_path):
    rows = bank_rows(6, seed=13)
    rows[2]["memo"] = "two\nlines"
    path = W.write_bank_csv(rows, tmp_path / "s.csv", encoding="utf-8")
    strict = parse("bank_csv", path)          # by default a value spanning lines is a stray quote: quarantined
    assert [(q.line_no, q.reason[:30]) for q in strict.quarantine] == [(6, "a quoted value spans lines 6-7")]
    assert strict.footer.ok is False          # and the running balance no longer adds up
    parsed = parse("bank_csv", path, allow_multiline_values=True)
    assert not parsed.quarantine and parsed.footer.ok is True
    assert parsed.rows.column("line_no").to_pylist() == [4, 5, 6, 8, 9, 10]
    assert parsed.rows.column("memo").to_pylist()[2] == "two\nlines"
    assert amount_total(parsed.rows) == sum(r["amount"] for r in rows)


def test_full_width_and_ascii_headers_and_gzip_detection(tmp_path):
    rows = trade_rows(5, seed=14)
    path = W.write_alipay_trade(rows, tmp_path / "b.csv", bill_date=DAY, as_zip=False)
    text = path.read_bytes().decode("gbk").replace("（", "(").replace("）", ")")
    (tmp_path / "ascii.csv").write_bytes(text.encode("gbk"))
    assert parse("alipay_trade", tmp_path / "ascii.csv").rows.equals(parse("alipay_trade", path).rows)
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(codecs.BOM_UTF8 + text.encode("utf-8")))
    assert parse("alipay_trade", tmp_path / "b.csv.gz").rows.equals(parse("alipay_trade", path).rows)


def test_period_and_footer_declared_figures(tmp_path):
    rows = trade_rows(10, seed=15, refunds=False)
    path = W.write_alipay_trade(rows, tmp_path / "a.zip", bill_date=DAY)
    parsed = parse("alipay_trade", path)
    assert parsed.footer.declared_rows == 10 and parsed.footer.parsed_rows == 10
    assert parsed.footer.declared_amount == sum(r["amount"] for r in rows) == Decimal(parsed.footer.parsed_amount)


def test_a_bank_file_without_a_recognisable_header_is_a_file_error(tmp_path):
    from loaders.base import FileError
    (tmp_path / "x.csv").write_text("hello,world\n1,2\n", encoding="utf-8")
    with pytest.raises(FileError, match="no column header"):
        parse("bank_csv", tmp_path / "x.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    assert parse("bank_csv", tmp_path / "empty.csv").empty_day is True
    W.write_bank_csv([], tmp_path / "head.csv")
    assert parse("bank_csv", tmp_path / "head.csv").empty_day is True


def bare_unionpay_zm(rows, folder):
    """The ZM file (and its RD report beside it) of ``rows``, unpacked from the ZIP the writer makes."""
    W.write_unionpay_zm(rows, folder / "u.zip", clearing_date=DAY)
    with zipfile.ZipFile(folder / "u.zip") as zf:
        for info in zf.infolist():
            (folder / info.filename).write_bytes(zf.read(info))
    return folder / "INN26060588ZM_802310048993424"


def test_unionpay_broken_records_are_quarantined_in_place(tmp_path):
    rows = trade_rows(6, seed=16, mch="802310048993424", card=True)
    zm = bare_unionpay_zm(rows, tmp_path)
    recs = zm.read_bytes().split(b"\r\n")
    recs[1] = recs[1][:66] + b"00000000x800" + recs[1][78:]          # 交易金额 not digits
    recs[3] = recs[3][:215] + b"99" + recs[3][217:]                    # 交易类型 99
    recs[4] = recs[4].rstrip()                                         # trailing blanks trimmed: still fine
    zm.write_bytes(b"\r\n".join(recs))
    parsed = parse("unionpay_zm", zm)
    assert [(q.line_no, q.field) for q in parsed.quarantine] == [(2, "交易金额"), (4, "交易类型")]
    assert parsed.rows.column("line_no").to_pylist() == [1, 3, 5, 6]
    assert parsed.footer.ok is False and "2 row(s) quarantined" in parsed.footer.message
    assert parsed_rows(parsed.rows, ["channel_txn_id", "amount"]) == project([rows[i] for i in (0, 2, 4, 5)],
                                                                            ["channel_txn_id", "amount"])


@pytest.mark.parametrize("block", [64 << 20, 2 * 609 + 100, 700], ids=["one-block", "two-records", "one-record"])
def test_unionpay_line_ends_and_block_boundaries_keep_rows_and_line_numbers(tmp_path, monkeypatch, block):
    """CRLF, LF, both mixed, blank lines and no final line end, read in blocks that cut records anywhere:
    the same rows, numbered by their physical lines."""
    import functools

    from loaders.formats import unionpay as up

    zm = bare_unionpay_zm(trade_rows(9, seed=21, mch="802310048993424", card=True), tmp_path)
    recs = [r for r in zm.read_bytes().split(b"\r\n") if r]
    reference = parse("unionpay_zm", zm).rows.drop_columns(["line_no"])
    monkeypatch.setattr(up, "_record_blocks", functools.partial(up._record_blocks, block_bytes=block))
    mixed = b"".join(r + (b"\r\n" if i % 2 else b"\n") for i, r in enumerate(recs))
    blanks = b"\r\n".join(recs[:3] + [b"", b"   "] + recs[3:])
    for data, numbers in ((b"\n".join(recs) + b"\n", list(range(1, 10))),
                          (b"\r\n".join(recs) + b"\r\n", list(range(1, 10))),
                          (mixed.rstrip(b"\r\n"), list(range(1, 10))),
                          (blanks, [1, 2, 3, 6, 7, 8, 9, 10, 11])):
        zm.write_bytes(data)
        parsed = parse("unionpay_zm", zm)
        assert not parsed.quarantine, parsed.quarantine
        assert parsed.rows.column("line_no").to_pylist() == numbers
        assert parsed.rows.drop_columns(["line_no"]).equals(reference)


def test_bank_opening_balance_lets_the_first_row_be_checked(tmp_path):
    rows = bank_rows(3, seed=17)
    path = W.write_bank_csv(rows, tmp_path / "s.csv", encoding="utf-8", opening_balance=Decimal("1000.00"))
    text = path.read_text(encoding="utf-8").replace("户名：", "期初余额：1000.00\r\n户名：", 1)
    path.write_text(text, encoding="utf-8", newline="")
    assert parse("bank_csv", path).footer.ok is True
    path.write_text(text.replace("期初余额：1000.00", "期初余额：1000.01"), encoding="utf-8", newline="")
    footer = parse("bank_csv", path).footer
    assert footer.ok is False and "line 5" in footer.message and "1000.01" in footer.message
