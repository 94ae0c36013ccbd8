"""The resolution workflow: a person resolves a break; every resolution is kept in an audit table.

- ``resolve``: one break, by id (``recon resolve``).
- ``import_resolutions``: the ``action``/``note`` columns finance filled in on the Excel discrepancy report
  (``recon import-resolutions``): every sheet whose first header is ``discrepancy_id`` and which has
  ``action`` and ``note`` headers; each filled-in row is validated on its own (unknown id, already
  resolved, bad action) and the valid rows are applied together.
- ``list_discrepancies``: what the on-call engineer looks at (``recon discrepancies``).

A resolution sets ``status = 'resolved'``, ``resolved_by``, ``resolution_action``, ``resolution_note``,
``resolved_at`` and ``resolved_date``, and appends one row to ``discrepancy_resolutions`` (append-only:
nothing here updates or deletes it). Runs never undo a person's resolution (``recon.matching``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb

from recon.errors import UserError
from recon.views import age_bucket_sql
from recon.warehouse import transaction

ACTIONS = ("write_off", "platform_corrected", "channel_corrected", "refund_issued", "other")
RESOLVED = ("resolved", "auto_resolved")
STATUSES = ("open", "pending", "auto_resolved", "resolved")


class ResolutionError(UserError):
    """A resolution that cannot be applied (unknown id, already resolved, bad action, empty name)."""


def normalise_action(text: str | None) -> str:
    """``Write off`` / ``write-off`` / ``WRITE_OFF`` -> ``write_off``; anything else is refused."""
    value = re.sub(r"[\s\-]+", "_", (text or "").strip().lower())
    if value not in ACTIONS:
        raise ResolutionError(f"unknown action {text!r} (expected one of: {', '.join(ACTIONS)})")
    return value


def _check(con: duckdb.DuckDBPyConnection, discrepancy_id: str) -> tuple:
    row = con.execute("SELECT status, resolved_by, resolved_date, resolution_note FROM discrepancies "
                      "WHERE discrepancy_id = ?", [discrepancy_id]).fetchone()
    if row is None:
        raise ResolutionError(f"no discrepancy with id {discrepancy_id!r}")
    status, by, when, note = row
    if status in RESOLVED:
        how = "auto-resolved" if status == "auto_resolved" else f"resolved by {by or 'unknown'}"
        raise ResolutionError(f"discrepancy {discrepancy_id} is already {how} on {when}"
                              + (f" ({note})" if note else ""))
    return row


def _apply(con: duckdb.DuckDBPyConnection, discrepancy_id: str, old_status: str, *, by: str, action: str,
           note: str, today: date, origin: str) -> None:
    now = datetime.now(timezone.utc)
    con.execute("""
UPDATE discrepancies SET status = 'resolved', resolved_date = ?, resolved_by = ?, resolution_action = ?,
       resolution_note = ?, resolved_at = ?, resolved_by_file = NULL, resolved_by_source = NULL,
       age_days = date_diff('day', first_seen_date, ?::DATE)
WHERE discrepancy_id = ?""", [today, by, action, note, now, today, discrepancy_id])
    con.execute("""
INSERT INTO discrepancy_resolutions (discrepancy_id, recorded_at, recorded_by, action, note, old_status,
                                     new_status, business_date, file_id, origin)
VALUES (?, ?, ?, ?, ?, ?, 'resolved', NULL, NULL, ?)""", [discrepancy_id, now, by, action, note, old_status, origin])


def _who(by: str | None) -> str:
    by = (by or "").strip()
    if not by:
        raise ResolutionError("say who resolves: --by NAME")
    if by.lower() == "system":
        raise ResolutionError("'system' is reserved for resolutions the pipeline makes; use your own name")
    return by


def resolve(con: duckdb.DuckDBPyConnection, discrepancy_id: str, *, by: str, note: str,
            action: str = "other", today: date | None = None, origin: str = "cli") -> dict:
    """Resolve one break (its own transaction). Returns the break as it now is."""
    by, action = _who(by), normalise_action(action)
    note = (note or "").strip()
    if not note:
        raise ResolutionError("a resolution needs a note: --note TEXT")
    today = today or date.today()
    with transaction(con):
        status = _check(con, discrepancy_id)[0]
        _apply(con, discrepancy_id, status, by=by, action=action, note=note, today=today, origin=origin)
    cols = ("discrepancy_id", "status", "resolved_by", "resolution_action", "resolution_note", "resolved_date")
    row = con.execute(f"SELECT {', '.join(cols)} FROM discrepancies WHERE discrepancy_id = ?",
                      [discrepancy_id]).fetchone()
    return dict(zip(cols, row))


# ----------------------------------------------------------------------------- Excel import
@dataclass
class RowProblem:
    sheet: str
    row: int              # the spreadsheet row number (1 = header)
    discrepancy_id: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.sheet}!row {self.row}" + (f" ({self.discrepancy_id})" if self.discrepancy_id else "") \
            + f": {self.message}"


@dataclass
class ImportReport:
    applied: list[tuple[str, str]] = field(default_factory=list)      # (discrepancy_id, action)
    problems: list[RowProblem] = field(default_factory=list)
    sheets: list[str] = field(default_factory=list)                   # the sheets read


def _cell(value) -> str:
    return "" if value is None else str(value).strip()


def read_resolution_rows(path: Path) -> tuple[list[str], list[tuple[str, int, str, str, str]]]:
    """(sheets read, rows ``(sheet, row_no, discrepancy_id, action, note)`` with an action or a note)."""
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise ResolutionError(f"{path}: no such file") from None
    except Exception as exc:  # not a workbook, corrupt zip, ...
        raise ResolutionError(f"{path}: cannot read as an Excel workbook: {type(exc).__name__}: {exc}") from None
    sheets, rows = [], []
    try:
        for ws in wb.worksheets:
            it = ws.iter_rows(values_only=True)
            header = [_cell(h).lower() for h in next(it, ())]
            if not header or header[0] != "discrepancy_id" or "action" not in header or "note" not in header:
                continue
            sheets.append(ws.title)
            ia, inote = header.index("action"), header.index("note")
            for n, values in enumerate(it, start=2):
                values = list(values) + [None] * (len(header) - len(values))
                action, note = _cell(values[ia]), _cell(values[inote])
                if action or note:
                    rows.append((ws.title, n, _cell(values[0]), action, note))
    finally:
        wb.close()
    if not sheets:
        raise ResolutionError(f"{path}: no sheet has the columns discrepancy_id (first), action and note; "
                              "is this a discrepancy report?")
    return sheets, rows


def import_resolutions(con: duckdb.DuckDBPyConnection, path: str | Path, *, by: str,
                       today: date | None = None) -> ImportReport:
    """Apply the filled-in action/note rows of a report workbook; problems are reported per row."""
    by, path = _who(by), Path(path)
    today = today or date.today()
    sheets, rows = read_resolution_rows(path)
    report = ImportReport(sheets=sheets)
    seen: dict[str, str] = {}
    with transaction(con):
        for sheet, n, did, action_text, note in rows:
            try:
                if not did:
                    raise ResolutionError("no discrepancy_id in the first column")
                if not action_text:
                    raise ResolutionError(f"an action is needed (one of: {', '.join(ACTIONS)})")
                action = normalise_action(action_text)
                if did in seen:
                    raise ResolutionError(f"already resolved by this workbook ({seen[did]})")
                status = _check(con, did)[0]
            except ResolutionError as exc:
                report.problems.append(RowProblem(sheet, n, did or None, str(exc)))
                continue
            _apply(con, did, status, by=by, action=action, note=note or action, today=today,
                   origin=f"import:{path.name}")
            seen[did] = f"{sheet}!row {n}"
            report.applied.append((did, action))
    return report


# ----------------------------------------------------------------------------- listing
LIST_COLUMNS = ("discrepancy_id", "business_date", "channel", "flow", "type", "status", "match_key",
                "currency", "difference", "first_seen_date", "age_days", "age_bucket", "resolved_by",
                "resolution_note")


def as_of_date(con: duckdb.DuckDBPyConnection) -> date | None:
    """The latest business date reconciled: ages are counted to it."""
    return con.execute("SELECT max(aged_as_of) FROM discrepancies").fetchone()[0]


def list_discrepancies(con: duckdb.DuckDBPyConnection, *, statuses: tuple[str, ...] = ("open",),
                       channel: str | None = None, older_than: int | None = None,
                       as_of: date | None = None, limit: int | None = None) -> list[dict]:
    """Breaks with the given statuses, oldest first; ``older_than``: more than N days open as of ``as_of``."""
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ResolutionError(f"unknown status {bad[0]!r} (expected one of: {', '.join(STATUSES)})")
    as_of = as_of or as_of_date(con) or date.today()
    age = ("date_diff('day', first_seen_date, CASE WHEN status IN ('open', 'pending') THEN $as_of::DATE "
           "ELSE coalesce(resolved_date, $as_of::DATE) END)")
    sql = (f"SELECT discrepancy_id, business_date, channel, flow, type, status, match_key, currency, difference, "
           f"first_seen_date, {age} AS age_days, {age_bucket_sql(age)} AS age_bucket, resolved_by, resolution_note "
           f"FROM discrepancies WHERE list_contains($statuses, status)")
    params: dict = {"as_of": as_of, "statuses": list(statuses)}
    if channel:
        sql += " AND channel = $channel"
        params["channel"] = channel
    if older_than is not None:
        sql += f" AND {age} > $older"
        params["older"] = older_than
    sql += " ORDER BY first_seen_date, channel, type, discrepancy_id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [dict(zip(LIST_COLUMNS, r)) for r in con.execute(sql, params).fetchall()]
