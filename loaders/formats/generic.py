"""A statement format declared entirely in config, so that a new bank needs a config block, not code.

Options (``statements[].options`` in the YAML)::

    kind: bank                  # bank | trade | funds (must match the statement's kind)
    encoding: gbk               # default: UTF-8 (BOM or not), else GBK, detected
    delimiter: ","              # or
    widths: [8, 20, 15, 1]      # fixed-width fields (bytes in the file's encoding, default)
    width_unit: bytes           # bytes | chars
    quote: true                 # CSV quoting (delimited files)
    skip_lines: 2               # title lines before the header (or before the data when header: false)
    skip_footer_lines: 1        # trailer lines at the end (also: footer_prefix: "合计")
    header: true                # false: columns are 1-based positions
    columns: {value_date: 交易日期, amount: 金额, counterparty: 对方户名, memo: 摘要, reference: 流水号}
    amount_unit: yuan           # yuan | fen (integer fen)
    sign: signed                # signed | debit_credit (columns debit/credit) | indicator
    indicator_credit: [贷, C]   # with sign: indicator (column ``indicator``)
    indicator_debit: [借, D]
    date_formats: ["%Y%m%d", "%Y-%m-%d"]
    txn_types: {消费: payment, 退货: refund}   # trade: values of column txn_type
    defaults: {currency: CNY, status: success}
    payer_channels: {wechat: [财付通]}          # bank: as for bank_csv
    totals: {rows: "总笔数", amount: "总金额"}   # optional: footer/prefix text patterns ``总笔数:(\\d+)``

Canonical columns by kind: bank ``value_date, counterparty, reference, amount|debit|credit,
currency, memo``; trade ``txn_type, channel_txn_id, merchant_order_no, amount, fee, net,
txn_time, currency, status, card_no, description``; funds ``movement_id, channel_txn_id,
reference, amount|debit|credit, booked_at, biz_type, memo``.
"""
from __future__ import annotations

import csv
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loaders.base import (
    SCHEMAS, FileError, FooterCheck, ParsedFile, RowBuilder, RowError, mask_card, mask_numbers, norm_header,
    register,
)
from loaders.formats._tabular import ByteStream, footer_check, source_for
from loaders.formats.bank import CREDIT_MARKS, DEBIT_MARKS, DEFAULT_PAYERS, payer_of
from recon.money import MoneyError, parse_amount

FEN = Decimal("0.01")
REQUIRED = {"bank": ("value_date",), "trade": ("channel_txn_id", "txn_time"), "funds": ("booked_at",)}


class _Spec:
    def __init__(self, path: Path, opts: dict[str, Any]):
        self.kind = opts.get("kind")
        if self.kind not in SCHEMAS:
            raise FileError(path, f"generic format: options.kind must be one of {sorted(SCHEMAS)}, got {self.kind!r}")
        self.columns: dict[str, Any] = dict(opts.get("columns") or {})
        if not self.columns:
            raise FileError(path, "generic format: options.columns maps no column")
        self.widths = opts.get("widths")
        self.width_unit = opts.get("width_unit", "bytes")
        self.delimiter = opts.get("delimiter", ",")
        self.quote = bool(opts.get("quote", True))
        self.skip = int(opts.get("skip_lines", 0))
        self.skip_footer = int(opts.get("skip_footer_lines", 0))
        self.footer_prefix = opts.get("footer_prefix")
        self.header = bool(opts.get("header", not self.widths))
        self.unit = opts.get("amount_unit", "yuan")
        if self.unit not in ("yuan", "fen"):
            raise FileError(path, f"generic format: amount_unit must be yuan or fen, got {self.unit!r}")
        self.sign = opts.get("sign", "debit_credit" if "debit" in self.columns else "signed")
        self.credit_marks = {str(v).upper() for v in opts.get("indicator_credit", CREDIT_MARKS)}
        self.debit_marks = {str(v).upper() for v in opts.get("indicator_debit", DEBIT_MARKS)}
        self.date_formats = list(opts.get("date_formats") or ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d",
                                                               "%Y-%m-%d %H:%M:%S"])
        self.txn_types = {str(k): v for k, v in (opts.get("txn_types") or {}).items()}
        self.defaults = dict(opts.get("defaults") or {})
        self.defaults.setdefault("currency", opts.get("currency", "CNY"))
        self.payers = opts.get("payer_channels") or DEFAULT_PAYERS
        self.totals = opts.get("totals") or {}
        for need in REQUIRED[self.kind]:
            if need not in self.columns:
                raise FileError(path, f"generic format ({self.kind}): options.columns needs {need!r}")


def _split_fixed(raw: bytes, text: str, spec: _Spec, encoding: str) -> list[str]:
    out, pos = [], 0
    if spec.width_unit == "chars":
        for w in spec.widths:
            out.append(text[pos:pos + w])
            pos += w
        return out
    for w in spec.widths:
        out.append(raw[pos:pos + w].decode(encoding))
        pos += w
    return out


def _amount(text: str, spec: _Spec, name: str) -> Decimal:
    t = text.strip()
    if spec.unit == "fen":
        neg = t.startswith("-")
        digits = t.lstrip("+-")
        if not digits.isdigit():
            raise RowError(name, f"expected integer fen, got {text!r}")
        v = Decimal(int(digits)) * FEN
        return -v if neg else v
    try:
        return parse_amount(t)
    except (MoneyError, ArithmeticError) as exc:  # parse_amount('1e999') raises InvalidOperation
        raise RowError(name, str(exc)) from None


def _date(text: str, spec: _Spec, name: str) -> datetime:
    t = text.strip()
    for fmt in spec.date_formats:
        try:
            return datetime.strptime(t, fmt)
        except ValueError:
            continue
    raise RowError(name, f"not a date ({' / '.join(spec.date_formats)}): {text!r}")


@register("generic", "bank", detect=None, description="A format declared entirely in options (see docs/formats.md)")
def parse_generic(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """A format declared entirely in options (see docs/formats.md)."""
    spec = _Spec(Path(path), opts)
    src = source_for(Path(path), None, "statement")
    stream = ByteStream(src, opts.get("encoding"))
    enc = stream.encoding
    raw_lines: list[bytes] = []
    while True:
        ln = stream.readline()
        if not ln:
            break
        raw_lines.append(ln)
    stream.close()
    # widened bytes -> the file's own bytes again (fixed widths count the file's bytes)
    lines = []
    for i, b in enumerate(raw_lines, start=1):
        b = b.rstrip(b"\r\n")
        real = b.decode("utf-8").encode("latin-1") if stream.widen else b
        try:
            text = real.decode(enc)
        except UnicodeDecodeError:
            text = None
        lines.append((i, real, text))
    prefix = lines[: spec.skip]
    body = lines[spec.skip:]
    trailer = []
    if spec.skip_footer:
        body, trailer = body[: len(body) - spec.skip_footer], body[len(body) - spec.skip_footer:]
    if spec.footer_prefix:
        keep = []
        for item in body:
            if item[2] is not None and item[2].strip().startswith(spec.footer_prefix):
                trailer.append(item)
            else:
                keep.append(item)
        body = keep
    schema = SCHEMAS[spec.kind]
    out = RowBuilder(schema)
    header_line = None
    index: dict[str, int] = {}

    def split(item) -> list[str]:
        _, raw, text = item
        if spec.widths:
            return _split_fixed(raw, text, spec, enc)
        if spec.quote:
            return next(csv.reader([text], delimiter=spec.delimiter), [])
        return text.split(spec.delimiter)

    body = [b for b in body if b[2] is None or b[2].strip()]
    if spec.header:
        if not body:
            raise FileError(src.label, "no header line after the skipped lines")
        header_line = body[0]
        if header_line[2] is None:
            raise FileError(src.label, f"header is not valid {enc}", line_no=header_line[0])
        names = [norm_header(h) for h in split(header_line)]
        for key, col in spec.columns.items():
            n = norm_header(str(col))
            if n not in names:
                raise FileError(src.label, f"header has no column {col!r} (for {key})", line_no=header_line[0])
            index[key] = names.index(n)
        body = body[1:]
        width = len(names)
    else:
        for key, col in spec.columns.items():
            if not isinstance(col, int) or col < 1:
                raise FileError(src.label, f"without a header, columns.{key} must be a 1-based position, got {col!r}")
            index[key] = col - 1
        width = len(spec.widths) if spec.widths else None
    sums = {"rows": 0, "amount": Decimal("0.00")}
    for item in body:
        line_no, raw, text = item
        if text is None:
            out.reject(line_no, raw.decode(enc, "replace"), None, f"line is not valid {enc}")
            continue
        try:
            fields = split(item)
        except UnicodeDecodeError:
            out.reject(line_no, text, None, f"a fixed-width field splits a {enc} character")
            continue
        if width is not None and not spec.widths and len(fields) != width:
            out.reject(line_no, text, None, f"expected {width} columns, found {len(fields)}")
            continue
        if spec.widths and spec.width_unit == "bytes" and len(raw) < sum(spec.widths) - spec.widths[-1]:
            out.reject(line_no, text, None, f"line is {len(raw)} bytes, shorter than the declared widths")
            continue

        def get(key: str, fields=fields) -> str:
            i = index.get(key)
            if i is None:
                return ""
            if i >= len(fields):
                raise RowError(key, f"line has no column {i + 1}")
            return fields[i].strip()

        def build() -> dict[str, Any]:
            return _row(spec, get)

        row = out.try_add(line_no, text, build)
        if row:
            sums["rows"] += 1
            signed = row["amount"] if row.get("direction", "in") == "in" or spec.kind == "trade" else -row["amount"]
            sums["amount"] += signed
    footer = FooterCheck(None, "no totals declared for this format")
    if spec.totals:
        texts = [t for _, _, t in prefix + trailer if t]
        checks = []
        for name, pattern in spec.totals.items():
            m = None
            for t in texts:
                m = re.search(re.escape(pattern) + r"\s*[:：]?\s*([-+]?[\d,]+(?:\.\d+)?)", t)
                if m:
                    break
            if m is None:
                checks.append((name, f"missing ({pattern!r} not found)", "-"))
                continue
            if name == "rows":
                checks.append(("rows", int(m.group(1).replace(",", "")), sums["rows"] + len(out.quarantine)))
            else:
                try:
                    declared = _amount(m.group(1), spec, name)
                except RowError as exc:
                    raise FileError(src.label, f"declared total {name} is not an amount: {exc}") from None
                checks.append((name, declared, sums["amount"]))
        footer = footer_check(checks, len(out.quarantine))
    table = out.table()
    return ParsedFile(path, "generic", spec.kind, table, out.quarantine, footer,
                      empty_day=table.num_rows == 0 and not out.quarantine, meta={"encoding": enc})


def _direction(spec: _Spec, get) -> tuple[str, Decimal]:
    if spec.sign == "debit_credit":
        d = get("debit")
        c = get("credit")
        dv = abs(_amount(d, spec, "debit")) if d else Decimal("0.00")
        cv = abs(_amount(c, spec, "credit")) if c else Decimal("0.00")
        if dv and cv:
            raise RowError("credit", "both debit and credit are filled")
        if not d and not c:
            raise RowError("credit", "neither debit nor credit is filled")
        return ("out", dv) if dv else ("in", cv)
    value = _amount(get("amount"), spec, "amount")
    if spec.sign == "indicator":
        mark = get("indicator").upper()
        if mark in spec.credit_marks:
            return "in", abs(value)
        if mark in spec.debit_marks:
            return "out", abs(value)
        raise RowError("indicator", f"expected one of {sorted(spec.credit_marks | spec.debit_marks)}, got {mark!r}")
    return ("out", -value) if value < 0 else ("in", value)


def _row(spec: _Spec, get) -> dict[str, Any]:
    d = spec.defaults

    def txt(key: str) -> str | None:
        v = get(key) if key in spec.columns else ""
        return v or d.get(key)

    if spec.kind == "bank":
        direction, amount = _direction(spec, get)
        memo = txt("memo")
        cp = txt("counterparty")
        return {"value_date": _date(get("value_date"), spec, "value_date").date(), "counterparty": cp,
                "payer_channel": payer_of([cp, memo, txt("counterparty_account")], spec.payers),
                "reference": txt("reference"), "direction": direction, "amount": amount,
                "currency": txt("currency"), "memo": mask_numbers(memo)}
    if spec.kind == "funds":
        direction, amount = _direction(spec, get)
        return {"movement_id": txt("movement_id"), "channel_txn_id": txt("channel_txn_id"),
                "reference": txt("reference"), "direction": direction, "amount": amount,
                "currency": txt("currency"), "booked_at": _date(get("booked_at"), spec, "booked_at"),
                "biz_type": txt("biz_type"), "memo": mask_numbers(txt("memo"))}
    raw_type = get("txn_type") if "txn_type" in spec.columns else ""
    if raw_type:
        txn_type = spec.txn_types.get(raw_type, raw_type if raw_type in ("payment", "refund") else None)
        if txn_type is None:
            raise RowError("txn_type", f"unknown transaction type {raw_type!r} (options.txn_types)")
    else:
        txn_type = d.get("txn_type", "payment")
    amount = _amount(get("amount"), spec, "amount")
    if txn_type == "refund":
        amount = abs(amount)
    fee = _amount(get("fee"), spec, "fee") if "fee" in spec.columns and get("fee") else Decimal("0.00")
    net = _amount(get("net"), spec, "net") if "net" in spec.columns and get("net") else \
        ((amount if txn_type != "refund" else -amount) - fee)
    if not get("channel_txn_id"):
        raise RowError("channel_txn_id", "empty transaction id")
    return {"txn_type": txn_type, "channel_txn_id": get("channel_txn_id"),
            "merchant_order_no": txt("merchant_order_no"), "channel_refund_id": txt("channel_refund_id"),
            "merchant_refund_no": txt("merchant_refund_no"), "channel_merchant_id": txt("channel_merchant_id"),
            "status": txt("status") or "success", "currency": txt("currency"), "amount": amount, "fee": fee,
            "net": net, "txn_time": _date(get("txn_time"), spec, "txn_time"),
            "card_no_masked": mask_card(txt("card_no")), "description": txt("description")}
