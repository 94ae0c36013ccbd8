"""Parse one statement file without touching the warehouse and report what is in it.

Used by ``recon check-file``: the on-call engineer's look at a suspicious file.
"""
from __future__ import annotations

import gzip
import importlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import FORMATS, FileError, ParsedFile
from loaders.formats._tabular import ARCHIVE_ERRORS

# detection order: the most specific first ("generic" cannot be detected)
DETECT_ORDER = ("wechat_trade", "wechat_fundflow", "alipay_trade", "alipay_funds", "unionpay_zm", "stripe_payout",
                "adyen_settlement", "bank_xlsx", "bank_csv")


def _formats() -> dict:
    importlib.import_module("loaders.formats")
    return FORMATS


def _head(path: Path, n: int = 65536) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(n)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(n)
        except ARCHIVE_ERRORS as exc:
            raise FileError(path, f"corrupt gzip: {exc}") from None
    return head


def detect_format(path: Path | str) -> str | None:
    """The registered format whose detector recognises the file (ZIPs by their entries)."""
    path = Path(path)
    formats = _formats()
    if not path.is_file():
        raise FileError(path, "no such file")
    head = _head(path)
    if head[:4] == b"PK\x03\x04":
        from loaders.formats._tabular import zip_members
        import zipfile
        members = zip_members(path)
        names = [n for n, _ in members]
        if any(n.startswith("xl/") for n in names):
            return "bank_xlsx"
        if any("业务明细" in n for n in names):
            return "alipay_trade"
        if any("账务明细" in n for n in names):
            return "alipay_funds"
        if any("ZM_" in n for n in names):
            return "unionpay_zm"
        with zipfile.ZipFile(path) as zf:
            for _, info in members:
                try:
                    with zf.open(info) as fh:
                        inner = fh.read(65536)
                except ARCHIVE_ERRORS as exc:
                    raise FileError(path, f"cannot read ZIP entry {info.filename!r}: {exc}") from None
                for name in DETECT_ORDER:
                    fmt = formats.get(name)
                    if fmt and fmt.detect and name != "bank_xlsx" and fmt.detect(inner):
                        return name
        return None
    for name in DETECT_ORDER:
        fmt = formats.get(name)
        if fmt is not None and fmt.detect is not None and fmt.detect(head):
            return name
    return None


def totals_by_currency(parsed: ParsedFile) -> dict[str, dict[str, Decimal]]:
    """gross / fees / net per currency, as ``loaders.load`` counts them.

    trade: gross = payments' amounts, fees = all fees, net = all nets;
    funds and bank: gross = money in, fees = 0, net = in - out.
    """
    t = parsed.rows
    out: dict[str, dict[str, Decimal]] = {}
    if t.num_rows == 0:
        return out
    zero = Decimal("0.00")
    for ccy in sorted(v for v in pc.unique(t.column("currency")).to_pylist() if v is not None) + (
            [None] if t.column("currency").null_count else []):
        sub = t.filter(pc.equal(t.column("currency"), ccy)) if ccy is not None else \
            t.filter(pc.is_null(t.column("currency")))
        if parsed.kind == "trade":
            pay = sub.filter(pc.equal(sub.column("txn_type"), "payment"))
            gross = _sum(pay.column("amount"))
            fees = _sum(sub.column("fee"))
            net = _sum(sub.column("net"))
        else:
            is_in = pc.equal(sub.column("direction"), "in")
            gross = _sum(sub.filter(is_in).column("amount"))
            outgoing = _sum(sub.filter(pc.invert(is_in)).column("amount"))
            fees, net = zero, gross - outgoing
        out[ccy or "?"] = {"gross": gross, "fees": fees, "net": net}
    return out


def _sum(col: pa.ChunkedArray) -> Decimal:
    s = pc.sum(col).as_py()
    return Decimal("0.00") if s is None else Decimal(s).quantize(Decimal("0.01"))


def check_file(path: Path | str, fmt: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse ``path`` and return the report (raises FileError for a file-level problem)."""
    path = Path(path)
    formats = _formats()
    detected = False
    if fmt is None:
        fmt = detect_format(path)
        detected = True
        if fmt is None:
            raise FileError(path, "format not recognised; name it with --format (known: "
                            + ", ".join(sorted(formats)) + ")")
    if fmt not in formats:
        raise FileError(path, f"unknown format {fmt!r} (known: {', '.join(sorted(formats))})")
    parsed = formats[fmt].parse(path, dict(options or {}))
    f = parsed.footer
    return {
        "path": str(path),
        "format": fmt,
        "detected": detected,
        "kind": parsed.kind,
        "rows": parsed.rows.num_rows,
        "quarantined": len(parsed.quarantine),
        "totals": {ccy: {k: str(v) for k, v in t.items()} for ccy, t in totals_by_currency(parsed).items()},
        "footer_ok": f.ok,
        "footer_message": f.message,
        "footer": {"declared_rows": f.declared_rows, "parsed_rows": f.parsed_rows,
                   "declared_amount": None if f.declared_amount is None else str(f.declared_amount),
                   "parsed_amount": None if f.parsed_amount is None else str(f.parsed_amount)},
        "period": None if parsed.period is None else [parsed.period[0].isoformat(), parsed.period[1].isoformat()],
        "empty_day": parsed.empty_day,
        "errors": [{"line": q.line_no, "field": q.field, "reason": q.reason, "raw": q.raw_text}
                   for q in parsed.quarantine],
        "meta": {k: v for k, v in parsed.meta.items() if isinstance(v, (str, int, float, bool, list, dict))
                 or v is None},
    }
