"""Put a parsed statement file into the warehouse, exactly once.

Rules (issue 3, "Integrity"):
- the same file (sha256) loaded again for the same channel/day is a no-op;
- a different file for a channel, day and statement already loaded is a
  restatement: the old file is marked ``superseded`` and its rows replaced,
  never added on top;
- a file whose header period does not cover the business date is refused;
- a footer that disagrees with the rows is a file-level error;
- rows that could not be parsed go to ``quarantine``; the channel's policy
  decides whether that fails the run (``fail``) or only warns (``warn``).

Runs inside the caller's transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

import loaders.formats  # noqa: F401  (importing it registers every format)
from loaders.base import FORMATS, FileError, ParsedFile
from loaders.fetch.base import FetchedFile
from recon.warehouse import insert_arrow

TABLES = {"trade": "channel_transactions", "funds": "channel_funds_movements", "bank": "bank_statement_lines"}


@dataclass(frozen=True)
class LoadResult:
    file_id: str
    channel: str
    kind: str
    format: str
    path: str
    rows: int
    quarantined: int
    gross: Decimal
    fees: Decimal
    net: Decimal
    footer_ok: bool | None
    footer_message: str
    skipped: bool          # identical file already loaded
    restated: str | None   # file_id this one superseded
    empty_day: bool


def parse_fetched(fetched: FetchedFile, options: dict) -> ParsedFile:
    fmt = FORMATS.get(fetched.format)
    if fmt is None:
        raise FileError(fetched.path, f"unknown statement format {fetched.format!r} (known: {sorted(FORMATS)})")
    return fmt.parse(fetched.path, options)


def check_period(parsed: ParsedFile, business_date: date) -> None:
    if parsed.period is None:
        return
    start, end = parsed.period          # [start, end); a one-day file may say start == end
    covered = start <= business_date < end if end > start else business_date == start
    if not covered:
        raise FileError(parsed.path, f"file covers {start} to {end}, not the business date {business_date}: "
                        "refusing a statement for another day")


def _totals(kind: str, rows: pa.Table) -> tuple[Decimal, Decimal, Decimal]:
    """Gross, fees and net of the file's rows (exact: Arrow sums DECIMAL(18,2) as DECIMAL(38,2))."""
    def total(values) -> Decimal:
        return pc.sum(values).as_py() or Decimal("0")

    zero = Decimal("0.00")
    if rows.num_rows == 0:
        return zero, zero, zero
    amount = rows.column("amount")
    if kind == "trade":
        paid = pc.equal(rows.column("txn_type"), "payment")
        gross = total(pc.filter(amount, pc.fill_null(paid, False)))
        return _fen(gross), _fen(total(rows.column("fee"))), _fen(total(rows.column("net")))
    inflow = pc.fill_null(pc.equal(rows.column("direction"), "in"), False)
    gross = total(pc.filter(amount, inflow))
    return _fen(gross), zero, _fen(gross - total(pc.filter(amount, pc.invert(inflow))))


def _fen(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))  # already exact to the fen: fixes the exponent only, never rounds


def load_file(con: duckdb.DuckDBPyConnection, fetched: FetchedFile, parsed: ParsedFile, business_date: date,
              quarantine_policy: str = "fail", run_id: str | None = None) -> LoadResult:
    """Load one parsed file for ``business_date`` (inside the caller's transaction)."""
    if parsed.quarantine and quarantine_policy == "fail":
        first = parsed.quarantine[0]
        raise FileError(fetched.original_name, f"{len(parsed.quarantine)} row(s) could not be loaded (policy: fail; "
                        f"kept in quarantine); first: {first.reason}", line_no=first.line_no, field=first.field)
    if parsed.footer.ok is False and not (parsed.quarantine and quarantine_policy == "warn"):
        # Under 'warn', totals that disagree because rows were quarantined load the good rows and keep
        # footer_ok = false on the file; without quarantined rows a disagreement always refuses the file.
        raise FileError(fetched.original_name, f"the file's own totals disagree with its rows: {parsed.footer.message}")
    check_period(parsed, business_date)
    kind, table = parsed.kind, TABLES[parsed.kind]
    path = str(fetched.path)
    gross, fees, net = _totals(kind, parsed.rows)
    existing = con.execute(
        "SELECT file_id FROM loaded_files WHERE channel = ? AND business_date = ? AND kind = ? AND format = ? "
        "AND status = 'active'", [fetched.channel, business_date, kind, parsed.format]).fetchall()
    result = dict(file_id=fetched.sha256, channel=fetched.channel, kind=kind, format=parsed.format, path=path,
                  rows=parsed.rows.num_rows, quarantined=len(parsed.quarantine), gross=gross, fees=fees, net=net,
                  footer_ok=parsed.footer.ok, footer_message=parsed.footer.message, empty_day=parsed.empty_day)
    if any(fid == fetched.sha256 for (fid,) in existing):
        return LoadResult(**result, skipped=True, restated=None)
    restated = None
    for (old,) in existing:
        restated = old
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [old])
        con.execute("DELETE FROM quarantine WHERE file_id = ?", [old])
        con.execute("UPDATE loaded_files SET status = 'superseded' WHERE file_id = ?", [old])
    # A file loaded earlier and superseded, now loaded again (restated back): reactivate it.
    con.execute("DELETE FROM loaded_files WHERE file_id = ?", [fetched.sha256])
    con.execute(f"DELETE FROM {table} WHERE file_id = ?", [fetched.sha256])
    con.execute("DELETE FROM quarantine WHERE file_id = ?", [fetched.sha256])
    if parsed.rows.num_rows:
        cols = ", ".join(parsed.rows.schema.names)
        insert_arrow(con, f"INSERT INTO {table} (business_date, channel, file_id, {cols}) "
                          f"SELECT ?, ?, ?, {cols} FROM _load_rows", parsed.rows,
                     [business_date, fetched.channel, fetched.sha256], name="_load_rows")
    now = datetime.now(timezone.utc)
    if parsed.quarantine:
        con.executemany(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[business_date, fetched.channel, fetched.sha256, path, q.line_no, q.field, q.reason, q.raw_text, now]
             for q in parsed.quarantine])
    period = parsed.period or (None, None)
    con.execute(
        "INSERT INTO loaded_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
        [fetched.sha256, fetched.channel, business_date, kind, parsed.format, path, fetched.size_bytes,
         parsed.rows.num_rows, len(parsed.quarantine), gross, fees, net, parsed.footer.declared_rows,
         parsed.footer.declared_amount, parsed.footer.ok, parsed.footer.message, period[0], period[1], restated,
         now, run_id])
    return LoadResult(**result, skipped=False, restated=restated)
