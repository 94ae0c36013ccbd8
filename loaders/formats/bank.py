"""Bank statements (CSV and .xlsx): the lump-sum settlement credit each channel pays per day.

Banks export a few title lines (account, name, period), then a header row, then one line
per movement. Columns are found by header name among common Chinese and English
spellings (or named in ``options["columns"]``): value date, counterparty, reference,
memo, and either separate debit/credit columns or one signed amount (optionally with a
借/贷 indicator column).

``payer_channel`` is recognised from counterparty and memo (and the counterparty
account) with ``options["payer_channels"]`` (``{channel: [substring, ...]}``, matched
case-insensitively in order; the default knows WeChat/Tenpay, Alipay, UnionPay,
Stripe and Adyen). Counterparty account numbers are used for that only, never stored;
long digit runs in memos are masked (first 6 / last 4).
"""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import BANK_SCHEMA, FileError, FooterCheck, ParsedFile, mask_numbers, norm_header, register
from loaders.formats._tabular import (
    Batch, Collector, Cols, Errors, Reader, as_bool, batch_columns, drive, msum, no_rows, source_for, to_money, to_time,
    with_encoding_retry,
)

ALIASES: dict[str, tuple[str, ...]] = {
    "value_date": ("交易日期", "记账日期", "入账日期", "起息日", "日期", "交易时间", "ValueDate", "BookingDate", "Date",
                   "TransactionDate"),
    "counterparty": ("对方户名", "对方账户名", "对方名称", "对方单位", "收/付方名称", "付款人名称", "Counterparty", "Payer",
                     "PayerName", "Name"),
    "counterparty_account": ("对方账号", "对方账户", "收/付方账号", "付款人账号", "CounterpartyAccount", "PayerAccount"),
    "reference": ("交易流水号", "流水号", "凭证号", "交易参考号", "业务流水号", "Reference", "TransactionID", "Ref"),
    "memo": ("摘要", "Memo", "Description", "Narrative", "Details"),
    "purpose": ("用途", "附言", "备注", "Purpose", "Remark"),
    "debit": ("借方发生额(支出)", "借方发生额", "借方金额", "支出金额", "支出", "Debit", "Withdrawal", "DebitAmount"),
    "credit": ("贷方发生额(收入)", "贷方发生额", "贷方金额", "收入金额", "收入", "Credit", "Deposit", "CreditAmount"),
    "amount": ("交易金额", "发生额", "金额", "Amount"),
    "indicator": ("借贷标志", "借贷方向", "收支方向", "DebitCredit", "DrCr", "Direction"),
    "currency": ("币种", "货币", "币别", "Currency"),
    "balance": ("余额", "账户余额", "联机余额", "Balance", "RunningBalance"),
}
DEFAULT_PAYERS: dict[str, list[str]] = {
    "wechat": ["财付通", "tenpay", "微信"],
    "alipay": ["支付宝", "alipay"],
    "unionpay": ["银联", "unionpay", "chinaums"],
    "stripe": ["stripe"],
    "adyen": ["adyen"],
}
CREDIT_MARKS = {"贷", "收", "收入", "C", "CR", "CREDIT", "贷方", "+"}
DEBIT_MARKS = {"借", "支", "支出", "D", "DR", "DEBIT", "借方", "-"}
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y.%m.%d")
TOTAL_MARKS = ("合计", "总计", "本页合计", "Total")


def _index(header: list[str], opts: dict[str, Any]) -> dict[str, int]:
    """canonical column -> header position (configured names first, then the aliases)."""
    norm = [norm_header(h) for h in header]
    configured = opts.get("columns") or {}
    out: dict[str, int] = {}
    for key, aliases in ALIASES.items():
        names = [configured[key]] if key in configured else list(aliases)
        for name in names:
            n = norm_header(str(name))
            if n in norm:
                out[key] = norm.index(n)
                break
    return out


def _is_header(fields: list[str], opts: dict[str, Any]) -> bool:
    idx = _index(fields, opts)
    return "value_date" in idx and ("amount" in idx or ("debit" in idx and "credit" in idx))


OPENING = re.compile(r"(期初余额|上日余额|承前余额|OpeningBalance)\s*[:：]?\s*([-+]?[\d,]+\.\d{2})\b", re.I)


def opening_balance(lines: list[str]) -> Decimal | None:
    """The opening balance a statement's title lines state (期初余额 / Opening balance), if any."""
    for ln in lines:
        m = OPENING.search(ln.replace(" ", ""))
        if m:
            try:
                return Decimal(m.group(2).replace(",", ""))
            except ArithmeticError:
                return None
    return None


def payer_of(texts: list[str | None], payers: dict[str, list[str]]) -> str | None:
    hay = " ".join(t for t in texts if t).lower().replace(" ", "")
    for channel, needles in payers.items():
        if any(n.lower().replace(" ", "") in hay for n in needles):
            return channel
    return None


class _Mapper:
    """Canonical bank rows from a batch of string columns (shared by CSV and xlsx)."""

    def __init__(self, rd: Reader, idx: dict[str, int], opts: dict[str, Any], out: Collector):
        self.rd, self.idx, self.opts, self.out = rd, idx, opts, out
        self.payers = opts.get("payer_channels") or DEFAULT_PAYERS
        self.formats = tuple(opts.get("date_formats") or DATE_FORMATS)
        self.ccy = opts.get("currency", "CNY")
        self.totals: list[tuple[int, Decimal, Decimal]] = []
        self.sums = {"in": Decimal("0.00"), "out": Decimal("0.00")}
        self.index = {norm_header(k): v for k, v in idx.items()}
        self.prev_balance: Decimal | None = None
        self.opening: Decimal | None = None
        self.chain_checked = 0
        self.chain_break: tuple | None = None

    def process(self, batch: Batch) -> None:
        prepared = batch_columns(batch, self.index, self.rd, " \t")
        if prepared is None:
            return
        batch, errs, c = prepared
        n = c.n
        day_text = c.get("value_date")
        # a 合计/Total line: the statement's own totals, not a movement
        is_total = np.zeros(n, dtype=bool)
        for mark in TOTAL_MARKS:
            is_total |= as_bool(pc.starts_with(day_text, mark))
        for key in ("counterparty", "memo"):
            if c.has(key):
                for mark in TOTAL_MARKS[:3]:
                    is_total |= as_bool(pc.equal(c.get(key), mark)) & as_bool(pc.equal(day_text, ""))
        if is_total.any():
            self._totals(c, is_total, batch.lines)
            keep = ~is_total
            # the movements around the total lines, afresh (they hold no total line: no further round)
            self.process(Batch(batch.table.filter(pa.array(keep)), batch.lines[keep]))
            return
        when = to_time(day_text, "value_date", errs, self.formats, required=True)
        if c.has("debit") and c.has("credit"):
            debit = pc.abs(to_money(c.get("debit"), "debit", errs, blank_zero=True))
            credit = pc.abs(to_money(c.get("credit"), "credit", errs, blank_zero=True))
            z = pa.scalar(Decimal("0.00"), pa.decimal128(18, 2))
            both = as_bool(pc.and_(pc.not_equal(debit, z), pc.not_equal(credit, z)))
            errs.mark(both, "credit", "both debit and credit are filled")
            neither = as_bool(pc.and_(pc.equal(c.get("debit"), ""), pc.equal(c.get("credit"), "")))
            errs.mark(neither, "credit", "neither debit nor credit is filled")
            is_out = pc.not_equal(debit, z)
            amount = pc.if_else(is_out, debit, credit)
        else:
            signed = to_money(c.get("amount"), "amount", errs)
            if c.has("indicator"):
                ind = pc.utf8_upper(c.get("indicator"))
                cr = as_bool(pc.is_in(ind, value_set=pa.array(sorted(CREDIT_MARKS))))
                dr = as_bool(pc.is_in(ind, value_set=pa.array(sorted(DEBIT_MARKS))))
                texts = c.get("indicator")
                errs.mark(~cr & ~dr, "indicator", lambda i: f"expected 借/贷 (D/C), got {texts[i].as_py()!r}")
                is_out = pa.array(dr)
            else:
                is_out = pc.less(signed, pa.scalar(Decimal("0.00"), pa.decimal128(18, 2)))
            amount = pc.abs(signed)
        memo = c.text("memo")
        if c.has("purpose"):
            purpose = c.text("purpose")
            memo = pc.if_else(pc.is_null(purpose), memo,
                              pc.if_else(pc.is_null(memo), purpose,
                                         pc.binary_join_element_wise(memo, purpose, " ")))
        counterparty = c.text("counterparty")
        account = c.text("counterparty_account")
        cp_list, memo_list, acct_list = counterparty.to_pylist(), memo.to_pylist(), account.to_pylist()
        payer = pa.array([payer_of([a, b, d], self.payers) for a, b, d in zip(cp_list, memo_list, acct_list)],
                         pa.string())
        memo = pa.array([mask_numbers(m) for m in memo_list], pa.string())
        ccy = c.text("currency")
        cols = {"value_date": pc.cast(when, pa.date32()), "counterparty": counterparty, "payer_channel": payer,
                "reference": c.text("reference"), "direction": pc.if_else(is_out, "out", "in"), "amount": amount,
                "currency": pc.coalesce(ccy, pa.scalar(self.ccy)), "memo": memo}
        balance = to_money(c.get("balance"), "balance", Errors(n), blank_zero=False) if c.has("balance") else None
        self.out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        o = as_bool(is_out)
        self.sums["in"] += msum(amount, keep & ~o)
        self.sums["out"] += msum(amount, keep & o)
        if balance is not None:
            self._chain(balance.to_pylist(), amount.to_pylist(), o, keep, batch.lines)

    def _chain(self, balances, amounts, is_out, keep, lines) -> None:
        """The running balance column: each row's balance is the previous one plus or minus its amount.
        A row lost (or an amount changed) anywhere breaks the chain."""
        for i, bal in enumerate(balances):
            if bal is None:
                continue
            if self.prev_balance is not None:
                self.chain_checked += 1
                amt = amounts[i] if keep[i] and amounts[i] is not None else None
                expected = None if amt is None else self.prev_balance + (-amt if is_out[i] else amt)
                if expected != bal and self.chain_break is None:
                    self.chain_break = (int(lines[i]), self.prev_balance, amt, bal)
            self.prev_balance = bal

    def _totals(self, c: Cols, mask: np.ndarray, lines: np.ndarray) -> None:
        scratch = Errors(c.n)
        if c.has("debit") and c.has("credit"):
            d = to_money(c.get("debit"), "debit", scratch, blank_zero=True).to_pylist()
            cr = to_money(c.get("credit"), "credit", scratch, blank_zero=True).to_pylist()
            for i in np.flatnonzero(mask):
                self.totals.append((int(lines[i]), abs(d[i] or 0), abs(cr[i] or 0)))

    def reset(self) -> None:
        self.out.reset()
        self.totals.clear()
        self.prev_balance, self.chain_checked, self.chain_break = self.opening, 0, None
        self.sums.update({"in": Decimal("0.00"), "out": Decimal("0.00")})

    def footer(self, quarantined: int) -> FooterCheck:
        chain = None
        if self.chain_break is not None:
            line, prev, amt, bal = self.chain_break
            chain = FooterCheck(False, f"running balance breaks at line {line}: previous balance {prev} with this "
                                f"row's amount {amt if amt is not None else '(unparsed)'} should give "
                                f"{'?' if amt is None else 'the next balance'}, the file says {bal}"
                                + (f" ({quarantined} row(s) quarantined)" if quarantined else ""))
        if not self.totals:
            if chain is not None:
                return chain
            if self.chain_checked:
                return FooterCheck(True, f"running balance agrees on {self.chain_checked + 1} rows")
            return FooterCheck(None, "statement has no totals line")
        if chain is not None:
            return chain
        _, d, cr = self.totals[-1]
        checks = [("贷方合计", Decimal(cr).quantize(Decimal("0.01")), self.sums["in"]),
                  ("借方合计", Decimal(d).quantize(Decimal("0.01")), self.sums["out"])]
        from loaders.formats._tabular import footer_check
        return footer_check(checks, quarantined)


def _detect_csv(head: bytes) -> bool:
    for enc in ("utf-8", "gb18030"):
        try:
            text = head.decode(enc, "ignore")
        except LookupError:
            continue
        for line in text.splitlines()[:30]:
            if _is_header(line.split(","), {}):
                return True
    return False


@register("bank_csv", "bank", detect=_detect_csv, description="Bank statement CSV (lump-sum settlement credits)")
@with_encoding_retry
def parse_csv(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Bank statement CSV (lump-sum settlement credits)."""
    src = source_for(path, lambda n: n.lower().endswith((".csv", ".txt")), "statement")
    delimiter = opts.get("delimiter", ",")

    def find(line_no: int, text: str) -> str:
        import csv as _csv
        try:
            fields = next(_csv.reader([text], delimiter=delimiter), [])
        except _csv.Error as exc:                 # e.g. a title line past the csv module's field limit
            raise FileError(src.label, f"unreadable title line: {exc}", line_no=line_no) from None
        return "header" if _is_header(fields, opts) else "skip"

    rd = Reader(src, encoding=opts.get("encoding"), delimiter=delimiter, quote=True, find_header=find,
                max_prefix=int(opts.get("max_title_lines", 50)))
    if rd.empty or rd.header is None:
        if any(t.strip() for _, t in rd.prefix):
            raise FileError(src.label, "no column header (a date and an amount or debit/credit column) found in "
                            f"{len(rd.prefix)} line(s); name the columns in options.columns")
        return no_rows(path, "bank_csv", "bank", "header-only statement: no movements")
    rd.allow_multiline = bool(opts.get("allow_multiline_values"))
    idx = _index(rd.header, opts)
    rd.include = sorted(set(idx.values()))
    out = Collector(BANK_SCHEMA, src)
    mapper = _Mapper(rd, idx, opts, out)
    mapper.opening = mapper.prev_balance = opening_balance([t for _, t in rd.prefix])
    drive(rd, mapper.process, mapper.reset)
    for e in rd.extras:
        if e.text.strip():
            reason = e.reason or f"expected {rd.width} columns, found {len(rd._split(e.text))}"
            out.reject(e.line_no, None, reason, e.text)
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    return ParsedFile(path, "bank_csv", "bank", table, quarantine, mapper.footer(len(quarantine)),
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"encoding": rd.encoding, "columns": {k: rd.header[v] for k, v in idx.items()}})


# ------------------------------------------------------------------ xlsx
def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S") if (v.hour, v.minute, v.second) != (0, 0, 0) else \
            v.strftime("%Y-%m-%d")
    if isinstance(v, date):
        return v.strftime("%Y-%m-%d")
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        # Excel stores numbers as binary floats; repr() gives the shortest text that reads back
        # as the same float, which for an amount typed with two decimals is those two decimals.
        # Anything with more digits below the fen is then rejected by the exact money parser.
        try:
            d = Decimal(repr(v))
        except InvalidOperation:
            return repr(v)
        return format(d, "f")
    return str(v)


class _XlsxReader:
    """Just enough of :class:`Reader` for :class:`Cols` (real strings, not widened)."""

    class _Stream:
        widen = False

    def __init__(self, header: list[str], label: str):
        self.header, self.stream, self.encoding = header, self._Stream(), "utf-8"
        self.width = len(header)
        self.include = None
        self.label = label


@register("bank_xlsx", "bank", detect=lambda head: head[:4] == b"PK\x03\x04" and b"xl/" in head[:2000],
          description="Bank statement .xlsx (openpyxl read-only)")
def parse_xlsx(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Bank statement .xlsx (openpyxl read-only)."""
    from openpyxl import load_workbook

    path = Path(path)
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:    # openpyxl raises many types for a broken workbook
        raise FileError(path, f"cannot open as .xlsx: {type(exc).__name__}: {exc}") from None
    try:
        sheet = opts.get("sheet")
        if sheet is not None and sheet not in wb.sheetnames:
            raise FileError(path, f"no sheet {sheet!r} (sheets: {wb.sheetnames})")
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        header: list[str] | None = None
        rows: list[list[str]] = []
        nums: list[int] = []
        out = Collector(BANK_SCHEMA, None)   # type: ignore[arg-type]
        mapper = None
        raw: dict[int, str] = {}
        titles: list[str] = []

        def flush(rows: list[list[str]], nums: list[int]) -> None:
            """Convert a chunk of sheet rows; keep the cell text of rows that failed (the raw text)."""
            mapper.process(_batch(rows, nums, len(header)))
            where = {n: i for i, n in enumerate(nums)}
            for ln in out.need_raw:
                if ln in where and ln not in raw:
                    raw[ln] = ",".join(rows[where[ln]])
        for row_no, values in _sheet_rows(ws, path):
            cells = [_cell_text(v).strip() for v in values]
            if header is None:
                if _is_header(cells, opts):
                    header = cells
                    rd = _XlsxReader(header, str(path))
                    idx = _index(header, opts)
                    mapper = _Mapper(rd, idx, opts, out)   # type: ignore[arg-type]
                    mapper.opening = mapper.prev_balance = opening_balance(titles)
                    continue
                titles.append(" ".join(c for c in cells if c))
                if row_no > int(opts.get("max_title_lines", 50)):
                    raise FileError(path, "no column header (date and amount columns) found")
                continue
            if not any(cells):
                continue
            rows.append((cells + [""] * len(header))[: len(header)])
            nums.append(row_no)
            if len(rows) >= 50_000:
                flush(rows, nums)
                rows, nums = [], []
        if header is None:
            raise FileError(path, "no column header (date and amount columns) found")
        if rows:
            flush(rows, nums)
    finally:
        wb.close()
    table = out.table()
    for line_no, (fld, reason) in sorted(out.need_raw.items()):
        out.quarantine.append(_q(line_no, fld, reason, raw.get(line_no, f"(sheet row {line_no})")))
    out.need_raw.clear()
    return ParsedFile(path, "bank_xlsx", "bank", table, out.quarantine, mapper.footer(len(out.quarantine)),
                      empty_day=table.num_rows == 0 and not out.quarantine,
                      meta={"sheet": ws.title, "columns": {k: header[v] for k, v in mapper.idx.items()}})


def _sheet_rows(ws, path: Path):
    """(row number, values) of a read-only sheet; a broken sheet is a FileError, not a crash."""
    it = enumerate(ws.iter_rows(values_only=True), start=1)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:    # openpyxl/lxml raise many types for a damaged sheet
            raise FileError(path, f"cannot read the sheet: {type(exc).__name__}: {exc}") from None
        yield item


def _q(line_no, fld, reason, raw):
    from loaders.base import Quarantined
    return Quarantined(line_no, fld, reason, raw)


def _batch(rows: list[list[str]], nums: list[int], width: int) -> Batch:
    cols = {f"c{i}": pa.array([r[i].encode("utf-8") for r in rows], pa.binary()) for i in range(width)}
    return Batch(pa.table(cols), np.asarray(nums, dtype=np.int64))
