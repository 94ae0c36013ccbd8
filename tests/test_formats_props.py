"""Property tests: a corrupted statement either loads with the corruption quarantined (or its own totals
reporting the mismatch) or fails with a file-level FileError: never another exception, never a silently
different total."""
from __future__ import annotations

import importlib
import re
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loaders import writers as W
from loaders.base import FORMATS, FileError
from tests.formats_helpers import amount_total, bank_rows, funds_rows, trade_rows

importlib.import_module("loaders.formats")
DAY = date(2026, 6, 5)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])
AMOUNT = re.compile(rb"\d+\.\d{2}")
BAD_AMOUNTS = [b"12.3x", b"1.005", b"--1", b"", b"1e999", b"\xe4\xb8\x80", b"NaN", b"9" * 25, b"9999999999999999.99"]
# a different but well-formed amount: only a file's own totals can notice it
OTHER_AMOUNTS = [b"-99999999999999.99", b"0.01"]


def _write(fmt: str, tmp: Path) -> tuple[Path, bytes, int, str]:
    """A valid file of ``fmt``: (path, bytes, index of the first body byte, delimiter)."""
    if fmt == "wechat_trade":
        p = W.write_wechat_trade(trade_rows(8, seed=21), tmp / "t.csv")
    elif fmt == "wechat_fundflow":
        p = W.write_wechat_fundflow(funds_rows(8, seed=22), tmp / "f.csv")
    elif fmt == "alipay_trade":
        p = W.write_alipay_trade(trade_rows(8, seed=23, mch=None), tmp / "a.csv", bill_date=DAY, as_zip=False)
    elif fmt == "alipay_funds":
        p = W.write_alipay_funds(funds_rows(8, seed=24), tmp / "af.csv", bill_date=DAY, as_zip=False)
    elif fmt == "unionpay_zm":
        rows = trade_rows(8, seed=25, mch="802310048993424", card=True)
        z = W.write_unionpay_zm(rows, tmp / "u.zip", clearing_date=DAY)
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                (tmp / info.filename).write_bytes(zf.read(info))
        p = tmp / "INN26060588ZM_802310048993424"
    elif fmt == "bank_csv":
        p = W.write_bank_csv(bank_rows(8, seed=26), tmp / "b.csv")
    elif fmt == "stripe_payout":
        p = W.write_stripe_payout(trade_rows(8, seed=27, currencies=("USD", "EUR"), comma_ok=True), tmp / "s.csv")
    elif fmt == "adyen_settlement":
        p = W.write_adyen_settlement(trade_rows(8, seed=28, currencies=("USD", "EUR")), tmp / "ad.csv")
    else:
        raise AssertionError(fmt)
    data = p.read_bytes()
    lines = data.split(b"\n")
    if fmt == "unionpay_zm":
        header_lines = 0
    elif fmt.startswith("alipay"):
        header_lines = next(i for i, ln in enumerate(lines) if not ln.startswith(b"#")) + 1
    elif fmt == "bank_csv":
        header_lines = 3
    else:
        header_lines = 1
    start = sum(len(ln) + 1 for ln in lines[:header_lines])
    return p, data, start, " " if fmt == "unionpay_zm" else ","


# formats without totals of their own cannot notice a file cut at a line boundary
NO_OWN_TOTALS = {"bank_csv", "stripe_payout", "adyen_settlement"}
FORMATS_UNDER_TEST = ["wechat_trade", "wechat_fundflow", "alipay_trade", "alipay_funds", "unionpay_zm", "bank_csv",
                      "stripe_payout", "adyen_settlement"]


def corrupt(data: bytes, start: int, delim: str, draw, kinds: list[str], amounts: list[bytes]) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(kinds))
    body = data[start:]
    if kind == "truncate":
        # (cut right after the header, a file is header-only: a valid day without a statement)
        return kind, data[: draw(st.integers(start + 1, len(data) - 1))]
    lines = body.split(b"\n")
    i = draw(st.integers(0, max(0, len(lines) - 2)))
    line = lines[i]
    if kind == "bad_amount":
        spans = [m.span() for m in AMOUNT.finditer(line)]
        if spans:
            a, b = draw(st.sampled_from(spans))
            line = line[:a] + draw(st.sampled_from(amounts)) + line[b:]
    elif kind == "columns":
        d = delim.encode()
        cuts = [m.start() for m in re.finditer(re.escape(d), line)]
        if cuts:
            at = draw(st.sampled_from(cuts))
            line = line[:at] + line[at + 1:] if draw(st.booleans()) else line[:at] + d + b"x" + line[at:]
        else:
            line = line + d + b"x"
    elif kind == "encoding":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from([b"\xff", b"\x80\x80", b"\xfe\xff\xfe", b"\xc3"])) + line[at:]
    elif kind == "quote":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + b'"' + line[at:]
    lines[i] = line
    return kind, data[:start] + b"\n".join(lines)


@pytest.mark.parametrize("fmt", FORMATS_UNDER_TEST)
@SETTINGS
@given(data=st.data())
def test_corrupted_files_are_loud(tmp_path_factory, fmt, data):
    tmp = tmp_path_factory.mktemp(fmt)
    path, original, start, delim = _write(fmt, tmp)
    good = FORMATS[fmt].parse(path, {})
    assert not good.quarantine and good.footer.ok is not False
    kinds = ["bad_amount", "columns", "encoding", "quote"] + ([] if fmt in NO_OWN_TOTALS else ["truncate"])
    # (a bare Alipay detail CSV totals 商家实收 only, not 订单金额: its ZIP's 汇总 file does)
    amounts = BAD_AMOUNTS + ([] if fmt in NO_OWN_TOTALS or fmt == "alipay_trade" else OTHER_AMOUNTS)
    kind, broken = corrupt(original, start, delim, data.draw, kinds, amounts)
    path.write_bytes(broken)
    try:
        parsed = FORMATS[fmt].parse(path, {})
    except FileError:
        return                                   # a file-level error naming the file: fine
    same = (parsed.rows.num_rows == good.rows.num_rows and amount_total(parsed.rows) == amount_total(good.rows)
            and Decimal(sum(r["net"] for r in parsed.rows.to_pylist() if "net" in r)) ==
            Decimal(sum(r["net"] for r in good.rows.to_pylist() if "net" in r)))
    loud = bool(parsed.quarantine) or parsed.footer.ok is False
    assert same or loud, (kind, broken[start:start + 300], parsed.footer.message)
    for q in parsed.quarantine:
        assert q.reason and q.raw_text is not None
        assert q.line_no is None or 1 <= q.line_no <= broken.count(b"\n") + 1


def _archive(kind: str, tmp: Path) -> tuple[str, Path]:
    if kind == "alipay_zip":
        return "alipay_trade", W.write_alipay_trade(trade_rows(6, seed=29, mch=None), tmp / "a.zip", bill_date=DAY)
    if kind == "unionpay_zip":
        return "unionpay_zm", W.write_unionpay_zm(trade_rows(6, seed=31, mch="802310048993424", card=True),
                                                  tmp / "u.zip", clearing_date=DAY)
    if kind == "wechat_gzip":
        return "wechat_trade", W.write_wechat_trade(trade_rows(6, seed=32), tmp / "w.csv.gz", gzip=True)
    return "bank_xlsx", W.write_bank_xlsx(bank_rows(5, seed=33), tmp / "b.xlsx")


@pytest.mark.parametrize("kind", ["alipay_zip", "unionpay_zip", "wechat_gzip", "bank_xlsx"])
@SETTINGS
@given(cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)),
                                                  max_size=3))
def test_damaged_archives_fail_as_file_errors(tmp_path_factory, kind, cut, flips):
    from loaders.check import check_file
    fmt, path = _archive(kind, tmp_path_factory.mktemp(kind))
    good = FORMATS[fmt].parse(path, {})
    data = bytearray(path.read_bytes())
    for pos, byte in flips:
        data[pos % len(data)] = byte
    path.write_bytes(bytes(data[: max(10, len(data) - cut)]))       # (nearly empty: a day without a statement)
    for run in (lambda: FORMATS[fmt].parse(path, {}), lambda: check_file(path, fmt)):
        try:
            parsed = run()
        except FileError:
            continue
        if isinstance(parsed, dict):
            continue
        assert (parsed.rows.num_rows == good.rows.num_rows and amount_total(parsed.rows) == amount_total(good.rows)) \
            or parsed.quarantine or parsed.footer.ok is False


def test_broken_workbook_is_a_file_error(tmp_path):
    path = W.write_bank_xlsx(bank_rows(3), tmp_path / "b.xlsx")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(FileError, match="b.xlsx"):
        FORMATS["bank_xlsx"].parse(path, {})


def test_bad_amount_in_an_xlsx_cell_is_quarantined_with_the_row_text(tmp_path):
    from openpyxl import load_workbook
    path = W.write_bank_xlsx(bank_rows(4, seed=30), tmp_path / "b.xlsx")
    wb = load_workbook(path)
    ws = wb.active
    ws.cell(row=5, column=7, value="12,34x")
    ws.cell(row=6, column=7, value=1.005)
    wb.save(path)
    parsed = FORMATS["bank_xlsx"].parse(path, {})
    assert [(q.line_no, q.field) for q in parsed.quarantine] == [(5, "credit"), (6, "credit")]
    assert "12,34x" in parsed.quarantine[0].raw_text and "below the fen" in parsed.quarantine[1].reason
    assert parsed.rows.num_rows == 2
