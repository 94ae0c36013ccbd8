"""The contract every statement parser fulfils.

A parser turns one file into a :class:`ParsedFile`: canonical rows as an Arrow
table (columns of ``TRADE_SCHEMA``, ``FUNDS_SCHEMA`` or ``BANK_SCHEMA``), the
rows it could not parse (never dropped: each becomes a :class:`Quarantined`
with line, field, reason and raw text), the file's own totals checked against
the parsed rows, and the period the file says it covers.

Parsers never touch the warehouse; ``loaders.load`` does. Errors about the
file as a whole raise :class:`FileError`, whose message names the file (and
line and field where there is one).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from recon.money import MoneyError, parse_amount

MONEY = pa.decimal128(18, 2)

TRADE_SCHEMA = pa.schema([
    ("line_no", pa.int32()),
    ("txn_type", pa.string()),            # payment | refund
    ("channel_txn_id", pa.string()),
    ("merchant_order_no", pa.string()),
    ("channel_refund_id", pa.string()),
    ("merchant_refund_no", pa.string()),
    ("channel_merchant_id", pa.string()),
    ("status", pa.string()),              # success | refunded | revoked | closed | failed | processing
    ("currency", pa.string()),
    ("amount", MONEY),
    ("fee", MONEY),
    ("net", MONEY),
    ("txn_time", pa.timestamp("us")),
    ("card_no_masked", pa.string()),
    ("description", pa.string()),
])

FUNDS_SCHEMA = pa.schema([
    ("line_no", pa.int32()),
    ("movement_id", pa.string()),
    ("channel_txn_id", pa.string()),
    ("reference", pa.string()),
    ("direction", pa.string()),           # in | out
    ("amount", MONEY),
    ("currency", pa.string()),
    ("booked_at", pa.timestamp("us")),
    ("biz_type", pa.string()),
    ("memo", pa.string()),
])

BANK_SCHEMA = pa.schema([
    ("line_no", pa.int32()),
    ("value_date", pa.date32()),
    ("counterparty", pa.string()),
    ("payer_channel", pa.string()),
    ("reference", pa.string()),
    ("direction", pa.string()),
    ("amount", MONEY),
    ("currency", pa.string()),
    ("memo", pa.string()),
])

SCHEMAS = {"trade": TRADE_SCHEMA, "funds": FUNDS_SCHEMA, "bank": BANK_SCHEMA}


class FileError(Exception):
    """The file as a whole cannot be trusted (wrong day, totals disagree, unreadable)."""

    def __init__(self, path: Path | str, message: str, line_no: int | None = None,
                 field: str | None = None):
        self.path, self.line_no, self.field = str(path), line_no, field
        where = str(path) + (f", line {line_no}" if line_no else "") + (f", field {field}" if field else "")
        super().__init__(f"{where}: {message}")


class RowError(ValueError):
    """One row cannot be parsed; it goes to quarantine, the file goes on."""

    def __init__(self, field: str | None, reason: str):
        self.field = field
        super().__init__(reason)


@dataclass(frozen=True)
class Quarantined:
    line_no: int | None
    field: str | None
    reason: str
    raw_text: str


@dataclass(frozen=True)
class FooterCheck:
    """The file's own totals against what was parsed. ``ok`` is None when the file has none."""

    ok: bool | None
    message: str
    declared_rows: int | None = None
    declared_amount: Decimal | None = None
    parsed_rows: int | None = None
    parsed_amount: Decimal | None = None


@dataclass
class ParsedFile:
    path: Path
    format: str
    kind: str
    rows: pa.Table
    quarantine: list[Quarantined] = field(default_factory=list)
    footer: FooterCheck = FooterCheck(None, "no totals in this format")
    period: tuple[date, date] | None = None   # [start, end) the file says it covers
    empty_day: bool = False                    # the channel said: no statement this day
    meta: dict[str, Any] = field(default_factory=dict)


Parser = Callable[[Path, dict[str, Any]], ParsedFile]


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    parse: Parser
    detect: Callable[[bytes], bool] | None = None
    description: str = ""


FORMATS: dict[str, Format] = {}


def register(name: str, kind: str, detect: Callable[[bytes], bool] | None = None,
             description: str = "") -> Callable[[Parser], Parser]:
    def deco(fn: Parser) -> Parser:
        FORMATS[name] = Format(name, kind, fn, detect, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


# ------------------------------------------------------------------ text helpers
FULLWIDTH = str.maketrans({"（": "(", "）": ")", "：": ":", "，": ",", "　": " "})


def norm_header(name: str) -> str:
    """Header names compare equal across full-width/ASCII brackets, BOMs, backticks and spaces."""
    return name.replace("\ufeff", "").strip().strip("`").strip().translate(FULLWIDTH).replace(" ", "")


def mask_card(value: str | None) -> str | None:
    """A card or account number with at most the first 6 and last 4 characters visible.

    Digits in between become ``*`` (an already masked ``622609******0048`` stays as it
    is); a short number (10 characters or fewer) keeps only its last 4.
    """
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    if len(v) <= 10:
        return "".join("*" if ch.isdigit() else ch for ch in v[:-4]) + v[-4:] if len(v) > 4 else v
    middle = "".join("*" if ch.isalnum() else ch for ch in v[6:-4])
    return v[:6] + middle + v[-4:]


_LONG_DIGITS = None


def mask_numbers(text: str | None, min_len: int = 12) -> str | None:
    """Mask every run of ``min_len`` or more digits in free text (card/account numbers in memos)."""
    global _LONG_DIGITS
    if text is None:
        return None
    import re
    if _LONG_DIGITS is None:
        _LONG_DIGITS = re.compile(r"\d{%d,}" % min_len)
    return _LONG_DIGITS.sub(lambda m: mask_card(m.group(0)) or "", text)


def zip_entry_name(info: zipfile.ZipInfo) -> str:
    """A ZIP entry's real name: the UTF-8 flag honoured; otherwise UTF-8 if valid, else GB18030 (GBK, what
    Chinese channels' tools write, Alipay among them), else CP437 as read."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for enc in ("utf-8", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return info.filename


def money(value: str, fieldname: str, *, blank_is_zero: bool = False) -> Decimal:
    if blank_is_zero and not value.strip():
        return Decimal("0.00")
    try:
        return parse_amount(value)
    except (MoneyError, ArithmeticError) as exc:  # parse_amount('1e999') raises InvalidOperation
        raise RowError(fieldname, str(exc)) from None


class RowBuilder:
    """Collect canonical rows column-wise and quarantine the ones that fail."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.cols: dict[str, list[Any]] = {n: [] for n in schema.names}
        self.quarantine: list[Quarantined] = []

    def add(self, row: dict[str, Any]) -> None:
        for n in self.schema.names:
            self.cols[n].append(row.get(n))

    def reject(self, line_no: int | None, raw: str, field: str | None, reason: str) -> None:
        self.quarantine.append(Quarantined(line_no, field, reason, raw))

    def try_add(self, line_no: int, raw: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        try:
            row = build()
        except RowError as exc:
            self.reject(line_no, raw, exc.field, str(exc))
            return None
        row["line_no"] = line_no
        self.add(row)
        return row

    def table(self) -> pa.Table:
        return pa.table({n: pa.array(self.cols[n], type=self.schema.field(n).type)
                         for n in self.schema.names}, schema=self.schema)

    def __len__(self) -> int:
        return len(self.cols["line_no"])
