"""The Excel workbooks finance opens every morning.

``write_discrepancy_report(con, cfg, business_date, out_dir)`` writes
``<out_dir>/recon_report_YYYY-MM-DD.xlsx``; ``write_settlement_report(con, cfg,
batch_id, out_dir)`` writes ``<out_dir>/settlement_<batch_id>.xlsx``. Both read
the warehouse only (never write it), stream rows with openpyxl's write-only mode
and replace the target atomically (temp file + rename), so a reader never sees
half a workbook. Layout and the re-import contract: ``reports/README.md``.
"""
from __future__ import annotations

import contextlib
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference

from recon.formula import sql_literal
from recon.views import AGE_BUCKETS, age_bucket_order_sql, age_bucket_sql
from recon.warehouse import archived_batch_days
from reports._xlsx import (
    BOLD,
    DIRECTION_FILLS,
    EXCEL_MAX_ROWS,
    NOTE_FONT,
    SECTION_FONT,
    TITLE_FONT,
    WARN_FILL,
    Col,
    TableWriter,
    atomic_path,
    cell,
    header_cells,
    set_widths,
    text_cell,
)

#: The discrepancy types, in sheet order. Types found in the warehouse but not listed get sheets after these.
DISCREPANCY_TYPES = (
    "missing_in_channel", "missing_in_platform", "status_mismatch", "amount_mismatch", "fee_mismatch",
    "currency_mismatch", "duplicate", "long", "short",
)
OPEN_STATUSES = ("open", "pending")
#: The columns finance fills in; always the last two of every detail sheet, always blank when written.
RESOLUTION_COLUMNS = ("action", "note")

# Detail sheets: discrepancy_id first (the re-import key), action/note last.
DETAIL_COLS = [
    Col("discrepancy_id", "id"), Col("business_date", "date"), Col("channel", "text", 12),
    Col("flow", "text", 12), Col("type", "text", 19), Col("status", "text", 13), Col("match_key", "id", 30),
    Col("order_no", "id", 24), Col("merchant_id", "text", 14), Col("currency", "text", 9),
    Col("platform_amount", "money"), Col("channel_amount", "money"), Col("difference", "money"),
    Col("long_short", "text", 11), Col("first_seen_date", "date", 15), Col("last_seen_date", "date", 15),
    Col("age_days", "int", 9), Col("platform_source", "text", 30), Col("channel_source", "text", 34),
    Col("detail", "free"), Col("resolved_date", "date", 14), Col("resolution_note", "free", 30),
    Col("action", "blank", 16), Col("note", "blank", 36),
]
#: Columns shown when the warehouse has them (reconciliation workflow, migration 3), before action/note.
OPTIONAL_DETAIL_COLS = [Col("resolution_action", "text", 18), Col("resolved_by", "text", 16)]

_DIRECTION = ("CASE WHEN type IN ('long', 'short') THEN type "
              "WHEN difference > 0 THEN 'long' WHEN difference < 0 THEN 'short' END")

_DETAIL_SELECT = f"""
SELECT discrepancy_id, business_date, channel, flow, type, status, match_key, order_no, merchant_id, currency,
       platform_amount, channel_amount, difference, {_DIRECTION} AS long_short,
       first_seen_date, last_seen_date, date_diff('day', first_seen_date, $d::DATE) AS age_days,
       platform_source, channel_source, detail, resolved_date, resolution_note{{optional}}, NULL AS action, NULL AS note
FROM discrepancies
"""


def detail_columns(con: duckdb.DuckDBPyConnection) -> tuple[list[Col], str]:
    """The detail sheets' columns and SELECT, by column name: optional columns only when present."""
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'discrepancies' "
        "AND table_catalog = current_database() AND table_schema = current_schema()").fetchall()}
    extra = [c for c in OPTIONAL_DETAIL_COLS if c.name in have]
    cols = DETAIL_COLS[:-2] + extra + DETAIL_COLS[-2:]
    return cols, _DETAIL_SELECT.format(optional="".join(f", {c.name}" for c in extra))


def report_path(out_dir: Path, business_date: date) -> Path:
    return Path(out_dir) / f"recon_report_{business_date.isoformat()}.xlsx"


def settlement_report_path(out_dir: Path, batch_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(batch_id))
    return Path(out_dir) / f"settlement_{safe}.xlsx"


def _currency_of(cfg: Any, channel: str) -> str | None:
    for ch in getattr(cfg, "channels", ()) or ():
        if ch.name == channel:
            return ch.currency
    return None


_DIFF_IDX = [c.name for c in DETAIL_COLS].index("difference")
_LS_IDX = [c.name for c in DETAIL_COLS].index("long_short")


def _row_style(row: tuple) -> dict[int, Any]:
    """Highlight long (green) and short (orange) on the difference and long_short cells."""
    fill = DIRECTION_FILLS.get(row[_LS_IDX])
    return {_DIFF_IDX: fill, _LS_IDX: fill} if fill else {}


class _Block:
    """Sequential writer for the Summary sheet: titled sections of small tables."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.row = 0

    def append(self, cells: list[Any]) -> None:
        self.ws.append(cells)
        self.row += 1

    def blank(self) -> None:
        self.append([])

    def section(self, title: str, note: str | None = None) -> None:
        self.blank()
        self.append([text_cell(self.ws, title, font=SECTION_FONT)])
        if note:
            self.append([text_cell(self.ws, note, font=NOTE_FONT)])

    def table(self, cols: list[Col], rows: list[tuple], *, total: tuple | None = None,
              empty: str = "none") -> tuple[int, int]:
        """Write a header, rows and an optional bold total row; returns (header row, last data row)."""
        self.append(header_cells(self.ws, cols))
        head = self.row
        for r in rows:
            self.append([cell(self.ws, v, c.kind, fill=WARN_FILL if c.name == "footer_ok" and v is False else None)
                         for v, c in zip(r, cols)])
        if not rows:
            self.append([text_cell(self.ws, empty, font=NOTE_FONT)])
        last = self.row
        if total is not None and rows:
            self.append([cell(self.ws, v, c.kind, font=BOLD) for v, c in zip(total, cols)])
        return head, last


def _q(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[tuple]:
    return con.execute(sql, params).fetchall()


@contextlib.contextmanager
def _atomic_workbook(final: Path):
    """A write-only workbook saved to a temporary name and renamed over ``final`` only if all went well.

    Yields ``(workbook, writers)``; the block appends its TableWriters to ``writers`` so that a failure
    also removes their half-written CSV exports.
    """
    tmp = atomic_path(final)
    writers: list[TableWriter] = []
    try:
        wb = Workbook(write_only=True)
        yield wb, writers
        wb.save(tmp)
        os.replace(tmp, final)
    except BaseException:
        for w in writers:
            w.abort()
        tmp.unlink(missing_ok=True)
        raise


def write_discrepancy_report(con: duckdb.DuckDBPyConnection, cfg: Any, business_date: date, out_dir: Path, *,
                             row_limit: int = EXCEL_MAX_ROWS, max_sheets_per_type: int = 3) -> Path:
    """Write the day's reconciliation workbook from the warehouse; returns its path.

    ``row_limit`` is the number of rows per sheet including the header (Excel's maximum by
    default); a detail table longer than that continues on "<type> (2)", ... up to
    ``max_sheets_per_type`` sheets, beyond which it is capped with a note and written in full
    to ``recon_report_YYYY-MM-DD_<type>.csv`` beside the workbook.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = report_path(out_dir, business_date)
    p = {"d": business_date}
    with _atomic_workbook(final) as (wb, writers):
        summary = wb.create_sheet("Summary")
        type_counts = dict(_q(con, "SELECT type, count(*) FROM discrepancies "
                                   "WHERE business_date = $d GROUP BY type", p))
        types = list(DISCREPANCY_TYPES) + sorted(t for t in type_counts if t not in DISCREPANCY_TYPES)
        carry_where = "business_date < $d AND status IN ('open', 'pending')"
        dcols, detail_select = detail_columns(con)
        carry_count = _q(con, f"SELECT count(*) FROM discrepancies WHERE {carry_where}", p)[0][0]
        quarantine_count = _q(con, "SELECT count(*) FROM quarantine WHERE business_date = $d", p)[0][0]

        # ---- detail sheets (streamed; the Summary is filled in afterwards but stays first)
        overflow: list[str] = []
        for t in types:
            export = out_dir / f"recon_report_{business_date.isoformat()}_{re.sub(r'[^A-Za-z0-9_]', '_', t)}.csv"
            w = TableWriter(wb, t, dcols, total_rows=type_counts.get(t, 0), row_limit=row_limit,
                            max_sheets=max_sheets_per_type, export_path=export, row_style=_row_style,
                            empty_note=f"No {t} breaks on {business_date.isoformat()}.")
            writers.append(w)
            if type_counts.get(t):
                cur = con.execute(detail_select + " WHERE business_date = $d AND type = $t "
                                  "ORDER BY channel, abs(difference) DESC NULLS LAST, discrepancy_id",
                                  {**p, "t": t})
                while batch := cur.fetchmany(10_000):
                    for row in batch:
                        w.append(row)
            w.close()
            if len(w.titles) > 1:
                overflow.append(f"{t}: {w.total_rows:,} rows continue on sheets {', '.join(w.titles)}.")
            if w.capped:
                overflow.append(f"{t}: {w.total_rows:,} rows; only {w.written:,} shown, full list in "
                                f"{w.export_path.name}.")

        carry = TableWriter(wb, "carry_over", dcols, total_rows=carry_count, row_limit=row_limit,
                            max_sheets=max_sheets_per_type,
                            export_path=out_dir / f"recon_report_{business_date.isoformat()}_carry_over.csv",
                            row_style=_row_style, empty_note="No breaks carried over from earlier days.")
        writers.append(carry)
        cur = con.execute(detail_select + f" WHERE {carry_where} "
                          "ORDER BY first_seen_date, channel, type, discrepancy_id", p)
        while batch := cur.fetchmany(10_000):
            for row in batch:
                carry.append(row)
        carry.close()
        if carry.capped:
            overflow.append(f"carry_over: {carry.total_rows:,} rows; full list in {carry.export_path.name}.")

        qcols = [Col("channel", "text", 12), Col("path", "text", 40), Col("line_no", "int"),
                 Col("field", "text", 16), Col("reason", "free", 40), Col("raw_text", "free", 60)]
        qw = TableWriter(wb, "quarantine", qcols, total_rows=quarantine_count, row_limit=row_limit,
                         max_sheets=max_sheets_per_type,
                         export_path=out_dir / f"recon_report_{business_date.isoformat()}_quarantine.csv",
                         empty_note="No rows were quarantined.")
        writers.append(qw)
        cur = con.execute("SELECT channel, path, line_no, field, reason, raw_text FROM quarantine "
                          "WHERE business_date = $d ORDER BY channel, path, line_no", p)
        while batch := cur.fetchmany(10_000):
            for row in batch:
                qw.append(row)
        qw.close()

        _write_summary(con, cfg, summary, business_date, overflow)
    return final


def _write_summary(con: duckdb.DuckDBPyConnection, cfg: Any, ws: Any, business_date: date,
                   overflow: list[str]) -> None:
    p = {"d": business_date}
    set_widths(ws, [18, 14, 18, 44, 16, 16, 16, 16, 16, 16, 18, 12, 56, 12])
    ws.freeze_panes = "A3"
    b = _Block(ws)
    b.append([text_cell(ws, f"Reconciliation report \u2014 business date {business_date.isoformat()}",
                        font=TITLE_FONT)])
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    run = _q(con, "SELECT status, run_id FROM runs WHERE business_date = $d ORDER BY started_at DESC LIMIT 1", p)
    run_text = f"latest run {run[0][1]}: {run[0][0]}" if run else "no run recorded for this date"
    b.append([text_cell(ws, f"Generated {generated} from the warehouse; {run_text}.", font=NOTE_FONT)])

    # ---- files loaded
    b.section("Statement files loaded", "Amounts in the channel's currency; superseded files are listed but "
              "not counted in the channel totals.")
    fcols = [Col("channel"), Col("kind"), Col("format"), Col("file"), Col("rows", "int"),
             Col("quarantined", "int"), Col("gross_total", "money"), Col("fee_total", "money"),
             Col("net_total", "money"), Col("currency"), Col("declared_amount", "money"),
             Col("footer_ok", "bool"), Col("footer_message", "free"), Col("status")]
    files = _q(con, """
        SELECT channel, kind, format, regexp_extract(path, '[^/\\\\]*$') AS file, row_count, quarantined_count,
               gross_total, fee_total, net_total, declared_amount, footer_ok, footer_message, status
        FROM loaded_files WHERE business_date = $d ORDER BY channel, kind, status, path""", p)
    b.table(fcols, [(*r[:9], _currency_of(cfg, r[0]), *r[9:]) for r in files], empty="No files loaded.")

    b.section("Totals per channel (active files)")
    tcols = [Col("channel"), Col("files", "int"), Col("rows", "int"), Col("quarantined", "int"),
             Col("gross_total", "money"), Col("fee_total", "money"), Col("net_total", "money"),
             Col("currency"), Col("footer_failures", "int")]
    totals = _q(con, """
        SELECT channel, count(*), sum(row_count), sum(quarantined_count), sum(gross_total), sum(fee_total),
               sum(net_total), count(*) FILTER (WHERE footer_ok = false)
        FROM loaded_files WHERE business_date = $d AND status = 'active' GROUP BY channel ORDER BY channel""", p)
    b.table(tcols, [(*r[:7], _currency_of(cfg, r[0]), r[7]) for r in totals], empty="No files loaded.")

    # ---- breaks by channel x type x status
    b.section("Discrepancies by channel \u00d7 type \u00d7 status",
              "difference = channel \u2212 platform; totals per currency (amounts are never added across currencies).")
    dcols = [Col("channel"), Col("flow"), Col("type"), Col("status"), Col("currency"), Col("count", "int"),
             Col("platform_amount", "money"), Col("channel_amount", "money"), Col("difference", "money"),
             Col("abs_difference", "money")]
    rows = _q(con, """
        SELECT channel, flow, type, status, currency, count(*), sum(platform_amount), sum(channel_amount),
               sum(difference), sum(abs(difference))
        FROM discrepancies WHERE business_date = $d GROUP BY ALL ORDER BY channel, flow, type, status, currency""", p)
    b.table(dcols, rows, empty="No discrepancies for this date.")
    for t in _q(con, """
            SELECT 'TOTAL', NULL, NULL, NULL, currency, count(*), sum(platform_amount), sum(channel_amount),
                   sum(difference), sum(abs(difference))
            FROM discrepancies WHERE business_date = $d GROUP BY currency ORDER BY currency""", p):
        b.append([cell(ws, v, c.kind, font=BOLD) for v, c in zip(t, dcols)])

    # ---- long and short
    b.section("Long and short totals",
              "long: the channel holds more than the platform expects (difference > 0); short: less. "
              "All of the day's breaks, whatever their status.")
    lcols = [Col("channel"), Col("flow"), Col("currency"), Col("long_count", "int"), Col("long_amount", "money"),
             Col("short_count", "int"), Col("short_amount", "money"), Col("net_difference", "money")]
    ls_sql = f"""
        WITH x AS (SELECT channel, flow, currency, difference, {_DIRECTION} AS dir
                   FROM discrepancies WHERE business_date = $d)
        SELECT {{keys}}, count(*) FILTER (WHERE dir = 'long'), coalesce(sum(difference) FILTER (WHERE dir = 'long'), 0),
               count(*) FILTER (WHERE dir = 'short'), coalesce(sum(difference) FILTER (WHERE dir = 'short'), 0),
               coalesce(sum(difference) FILTER (WHERE dir IN ('long', 'short')), 0)
        FROM x GROUP BY ALL HAVING count(dir) > 0 ORDER BY ALL"""
    ls_rows = _q(con, ls_sql.format(keys="channel, flow, currency"), p)
    b.table(lcols, ls_rows, empty="No long or short breaks.")
    for t in _q(con, ls_sql.format(keys="'TOTAL', NULL, currency"), p) if ls_rows else []:
        b.append([cell(ws, v, c.kind, font=BOLD) for v, c in zip(t, lcols)])

    # ---- carried over by age bucket
    age = "date_diff('day', first_seen_date, $d::DATE)"
    b.section("Breaks carried over from earlier days, by age",
              "Still open or pending, from business dates before this one; age = days since first seen. "
              "Buckets: " + ", ".join(label for label, _lo, _hi in AGE_BUCKETS) + ".")
    acols = [Col("channel"), Col("currency"), Col("age_bucket"), Col("count", "int"),
             Col("difference", "money"), Col("abs_difference", "money"), Col("oldest_first_seen", "date")]
    b.table(acols, _q(con, f"""
        SELECT channel, currency, {age_bucket_sql(age)} AS bucket, count(*), sum(difference), sum(abs(difference)),
               min(first_seen_date)
        FROM discrepancies WHERE business_date < $d AND status IN ('open', 'pending')
        GROUP BY channel, currency, bucket, {age_bucket_order_sql(age)}
        ORDER BY channel, currency, {age_bucket_order_sql(age)}""", p), empty="Nothing carried over.")

    # ---- chart data + chart
    b.section("Discrepancy amounts by channel (chart data)",
              "Absolute amounts of the day's long and short breaks, per channel and currency.")
    ccols = [Col("channel"), Col("long_amount", "money"), Col("short_amount", "money")]
    chart_rows = _q(con, f"""
        WITH x AS (SELECT channel, currency, difference, {_DIRECTION} AS dir
                   FROM discrepancies WHERE business_date = $d)
        SELECT channel || ' (' || coalesce(currency, '?') || ')',
               coalesce(sum(abs(difference)) FILTER (WHERE dir = 'long'), 0),
               coalesce(sum(abs(difference)) FILTER (WHERE dir = 'short'), 0)
        FROM x GROUP BY channel, currency ORDER BY channel, currency""", p)
    head, last = b.table(ccols, chart_rows, empty="No discrepancies to chart.")
    if chart_rows:
        chart = BarChart()
        chart.type = "col"
        chart.title = "Discrepancy amounts by channel"
        chart.y_axis.title = "amount"
        chart.y_axis.numFmt = "#,##0.00"
        chart.y_axis.delete = False
        chart.x_axis.delete = False
        chart.add_data(Reference(ws, min_col=2, max_col=3, min_row=head, max_row=last), titles_from_data=True)
        chart.set_categories(Reference(ws, min_col=1, min_row=head + 1, max_row=last))
        chart.height, chart.width = 7.5, 16
        ws.add_chart(chart, f"E{head}")
        for _ in range(14):  # leave room below the chart before the next section
            b.blank()

    # ---- notes
    b.section("Notes")
    notes = [
        "Detail sheets: one per discrepancy type (all breaks of this business date, every status), "
        "'carry_over' (open or pending breaks from earlier dates), 'quarantine' (rows that could not load).",
        "To resolve breaks, fill in the last two columns 'action' and 'note' of a detail sheet and re-import "
        "the workbook; rows are keyed by 'discrepancy_id' (first column). See reports/README.md.",
        "long_short is highlighted: green = long (channel > platform), orange = short (channel < platform).",
        "Card, ID and phone numbers and e-mail addresses in free text are masked.",
        *overflow,
    ]
    for n in notes:
        b.append([text_cell(ws, n, font=NOTE_FONT)])


# ============================================================= settlement workbook
_SETTLEMENT_BASE = {"settlement_batches", "settlement_lines", "settlement_items"}


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema() AND table_catalog = current_database() "
        "ORDER BY ordinal_position", [table]).fetchall()


def _kind_of(name: str, data_type: str) -> str:
    dt = data_type.upper()
    if re.search(r"(account|card|id_no|phone|mobile|email)", name) and "CHAR" in dt:
        return "account" if re.search(r"(account|card|id_no)", name) else "free"
    if dt.startswith("DECIMAL") or dt in ("DOUBLE", "FLOAT", "REAL"):
        return "money"
    if dt == "DATE":
        return "date"
    if dt.startswith("TIMESTAMP"):
        return "datetime"
    if dt in ("INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER"):
        return "int"
    if dt == "BOOLEAN":
        return "bool"
    if name in ("detail", "memo", "note", "reason", "description", "message"):
        return "free"
    return "text"


SETTLEMENT_DETAIL_ROWS = 10_000


def write_settlement_report(con: duckdb.DuckDBPyConnection, cfg: Any, batch_id: str, out_dir: Path, *,
                            row_limit: int = EXCEL_MAX_ROWS, max_sheets: int = 3,
                            detail_rows: int = SETTLEMENT_DETAIL_ROWS) -> Path:
    """Write one settlement batch's workbook: batch summary, lines per merchant, held and carried, items.

    Transaction-level sheets (items, holds, ...) show at most ``detail_rows`` rows; a bigger batch's
    full lists go to CSV beside the workbook (openpyxl writes ~3,000 rows/s: a million-item sheet
    would take longer than the whole night's reconciliation, and every item is also in the
    per-merchant statements).

    Reads ``settlement_batches``/``_lines``/``_items``; any further ``settlement_*`` table with a
    ``batch_id`` column (added by later migrations, e.g. holds or carry-forwards) gets a sheet of its
    own, its columns taken from ``information_schema``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    zone = sql_literal(getattr(cfg, "timezone", None) or "UTC")
    # Timestamps are shown as local wall-clock time of the config's zone (Excel has no time zones).
    batch = con.execute(f"SELECT batch_id, settlement_date, status, timezone({zone}, created_at), "
                        f"timezone({zone}, confirmed_at), confirmed_by "
                        "FROM settlement_batches WHERE batch_id = ?", [batch_id]).fetchone()
    if batch is None:
        raise LookupError(f"no settlement batch {batch_id!r} in the warehouse")
    if days := archived_batch_days(con, batch_id):
        raise LookupError(f"settlement batch {batch_id} holds items of archived days "
                          f"({', '.join(str(d) for d in days)}): its item list is no longer all in the warehouse; "
                          f"the analyst snapshot still has it, or restore the days first "
                          f"(`recon archive restore --date {days[0]}`)")
    final = settlement_report_path(out_dir, batch_id)
    merchants = {m.id: m for m in (getattr(cfg, "merchants", ()) or ())}
    p = {"b": batch_id}
    with _atomic_workbook(final) as (wb, writers):
        ws = wb.create_sheet("Batch")
        set_widths(ws, [22, 20, 14, 16, 16, 16, 16, 16, 16, 18, 16])
        blk = _Block(ws)
        blk.append([text_cell(ws, f"Settlement batch {batch_id}", font=TITLE_FONT)])
        for label, v in zip(("batch_id", "settlement_date", "status", "created_at", "confirmed_at", "confirmed_by"),
                            batch):
            blk.append([text_cell(ws, label, font=BOLD), cell(ws, v)])
        blk.append([text_cell(ws, f"times in {getattr(cfg, 'timezone', None) or 'UTC'}", font=NOTE_FONT)])
        blk.section("Totals per currency")
        scols = [Col("currency"), Col("merchants", "int"), Col("trade_count", "int"), Col("gross", "money"),
                 Col("refunds", "money"), Col("fees", "money"), Col("adjustments", "money"), Col("net", "money"),
                 Col("payout", "money"), Col("carried_forward", "money"), Col("held_merchants", "int")]
        blk.table(scols, _q(con, """
            SELECT currency, count(*), sum(trade_count), sum(gross), sum(refunds), sum(fees), sum(adjustments),
                   sum(net), sum(payout), sum(carried_forward), count(*) FILTER (WHERE payout = 0 AND net <> 0)
            FROM settlement_lines WHERE batch_id = $b GROUP BY currency ORDER BY currency""", p),
            empty="No lines in this batch.")
        blk.section("Notes")
        for n in ("'lines': one row per merchant and currency; payout = what is paid now, carried_forward = "
                  "what is held back and carried to a later batch (below the minimum payout, reserve, or a "
                  "negative balance).",
                  "'held_carried': the lines with something held or carried; bank accounts are masked."):
            blk.append([text_cell(ws, n, font=NOTE_FONT)])

        # Columns by name; the balance columns of later migrations are shown when the table has them.
        have = {n for n, _t in _table_columns(con, "settlement_lines")}
        money = ["gross", "refunds", "fees", "adjustments", "net",
                 *[c for c in ("carried_in", "reserve_held", "reserve_released") if c in have],
                 "payout", "carried_forward"]
        lcols = [Col("merchant_id"), Col("merchant_name", "free", 24), Col("currency", "text", 9),
                 Col("trade_count", "int", 12), *[Col(m, "money") for m in money],
                 Col("bank_name", "free", 20), Col("bank_account", "account")]

        def line_rows(where: str) -> tuple[int, list[tuple]]:
            rows = _q(con, f"SELECT merchant_id, currency, trade_count, {', '.join(money)} "
                           f"FROM settlement_lines WHERE batch_id = $b {where} ORDER BY merchant_id, currency", p)
            out = []
            for r in rows:
                m = merchants.get(r[0])
                out.append((r[0], m.name if m else None, *r[1:],
                            m.bank_name if m else None, m.bank_account if m else None))
            return len(out), out

        for title, where in (("lines", ""), ("held_carried", "AND (carried_forward <> 0 OR payout <> net"
                                               + (" OR reserve_held <> 0" if "reserve_held" in have else "") + ")")):
            n, rows = line_rows(where)
            w = TableWriter(wb, title, lcols, total_rows=n, row_limit=row_limit, max_sheets=max_sheets,
                            export_path=final.with_name(final.stem + f"_{title}.csv"),
                            empty_note="Nothing held or carried." if title != "lines" else "No lines.")
            writers.append(w)
            for r in rows:
                w.append(r)
            w.close()

        # Any further settlement_* table keyed by batch (migration 2 and later), columns by name.
        extra = [r[0] for r in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = 'batch_id' "
            "AND table_name LIKE 'settlement_%' AND table_catalog = current_database() "
            "AND table_schema = current_schema() ORDER BY table_name").fetchall()
            if r[0] not in _SETTLEMENT_BASE]
        for table in ["settlement_items", *extra]:
            cols_meta = _table_columns(con, table)
            if not cols_meta:
                continue
            cols = [Col(n, _kind_of(n, t)) for n, t in cols_meta]
            names = ", ".join(f'timezone({zone}, "{n}") AS "{n}"' if t.upper().startswith("TIMESTAMP WITH")
                              else f'"{n}"' for n, t in cols_meta)
            n_rows = con.execute(f'SELECT count(*) FROM "{table}" WHERE batch_id = ?', [batch_id]).fetchone()[0]
            title = table.removeprefix("settlement_") or table
            # Every item is in the merchant statements (settlement.payout): no second full export of them.
            items = table == "settlement_items"
            w = TableWriter(wb, title, cols, total_rows=n_rows, row_limit=min(row_limit, detail_rows + 1),
                            max_sheets=1, export_path=None if items else final.with_name(f"{final.stem}_{title}.csv"),
                            empty_note="No rows.",
                            capped_note=f"every transaction, fee and deduction is in the merchant statements "
                                        f"{batch_id}_statement_<merchant>.csv beside it." if items else None)
            writers.append(w)
            limit = f" LIMIT {int(detail_rows)}" if items else ""     # nothing beyond the cap is read
            where, params = "batch_id = ?", [batch_id]
            if items and n_rows > detail_rows:
                where, params = _first_items_filter(con, batch_id, [n for n, _t in cols_meta], detail_rows)
            cur = con.execute(f'SELECT {names} FROM "{table}" WHERE {where} ORDER BY ALL{limit}', params)
            while chunk := cur.fetchmany(10_000):
                for r in chunk:
                    w.append(r)
            w.close()
    return final


#: The leading sort columns of settlement_items after batch_id (ORDER BY ALL follows the table's columns).
_ITEM_PREFIX = ("merchant_id", "currency", "trade_date", "channel")


def _first_items_filter(con: duckdb.DuckDBPyConnection, batch_id: str, columns: list[str],
                        n: int) -> tuple[str, list[Any]]:
    """A WHERE clause that keeps the first ``n`` items of a batch in ORDER BY ALL order, and few others.

    Sorting every item of a big batch to show 10,000 of them costs ~0.8 CPU-s per million items. Instead:
    count the items per (merchant, currency, trade date, channel), which is cheap, find the group holding
    the n-th item in that order, and keep the groups up to it. The first n items by the full order are
    all in those groups (they lead the full order); the ORDER BY ALL LIMIT n after it picks them.
    Falls back to the whole batch unless the table starts with those columns, none nullable."""
    whole = ("batch_id = ?", [batch_id])
    nullable = dict(con.execute(
        "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'settlement_items' "
        "AND table_schema = current_schema() AND table_catalog = current_database()").fetchall())
    if tuple(columns[1:1 + len(_ITEM_PREFIX)]) != _ITEM_PREFIX or columns[0] != "batch_id" or any(
            nullable.get(c) != "NO" for c in _ITEM_PREFIX):
        return whole
    keys = ", ".join(_ITEM_PREFIX)
    row = con.execute(f"""
        SELECT {keys} FROM (
            SELECT {keys}, sum(count(*)) OVER (ORDER BY {keys}) AS upto
            FROM settlement_items WHERE batch_id = ? GROUP BY {keys})
        WHERE upto >= ? ORDER BY upto LIMIT 1""", [batch_id, n]).fetchone()
    if row is None:
        return whole
    return f"batch_id = ? AND ({keys}) <= ({', '.join('?' for _ in row)})", [batch_id, *row]


def batches_for_date(con: duckdb.DuckDBPyConnection, business_date: date) -> list[str]:
    """Settlement batches that belong to a business date: settled on it, or holding its trades."""
    return [r[0] for r in con.execute("""
        SELECT batch_id FROM settlement_batches WHERE settlement_date = $d
        UNION SELECT DISTINCT batch_id FROM settlement_items WHERE trade_date = $d
        ORDER BY 1""", {"d": business_date}).fetchall()]
