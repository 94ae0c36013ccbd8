"""Low-level helpers for streaming, safe workbooks (openpyxl write-only mode).

* every text goes through :func:`text_cell`: illegal XML characters removed,
  free text masked, and text that could be read as a formula stored as a string
  with Excel's quote prefix (never as a formula);
* money is written as the exact ``Decimal`` with ``#,##0.00``; dates as real dates;
* :class:`TableWriter` writes a table with a frozen, filtered header and fixed
  widths, and continues on further sheets (``"amount_mismatch (2)"``) past the
  row limit; beyond ``max_sheets`` sheets it stops with a note row and the full
  table goes to a CSV export beside the workbook.

Speed: openpyxl spends ~350 µs per 24-column row building a cell object, a style and
an lxml element per cell. :class:`TableWriter` renders each data row's XML itself
(``_FastRows``: the same values, types and style ids that :func:`cell` gives) and writes
those bytes straight into the sheet's file (``_RawSheetWriter``): ~40 µs a row of the
discrepancy tables.
(Parsing each row back into an lxml element for openpyxl's stream, as before, was 40% of
the rendering: 1.3 of 3.1 s for 43k rows.) The XML is the same bytes openpyxl writes
(tests compare the two); a row holding a value it does not know goes through openpyxl
as before.
"""
from __future__ import annotations

import csv
import os
import re
from copy import copy
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from openpyxl import LXML
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
from openpyxl.compat import safe_string
from openpyxl.utils.datetime import to_excel
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._writer import WorksheetWriter, create_temporary_file

from reports.safe import csv_safe, is_dangerous, mask_account, mask_text

EXCEL_MAX_ROWS = 1_048_576          # rows per sheet, header included
EXCEL_MAX_CELL_CHARS = 32_767
MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
INT_FORMAT = "#,##0"

HEADER_FONT = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="305496")
TITLE_FONT = Font(bold=True, size=14)
SECTION_FONT = Font(bold=True, size=12, color="305496")
BOLD = Font(bold=True)
NOTE_FONT = Font(italic=True, color="7F7F7F")
LONG_FILL = PatternFill("solid", fgColor="E2EFDA")   # green: channel holds more than the platform
SHORT_FILL = PatternFill("solid", fgColor="FCE4D6")  # red/orange: channel holds less
WARN_FILL = PatternFill("solid", fgColor="FFF2CC")
DIRECTION_FILLS = {"long": LONG_FILL, "short": SHORT_FILL}
CENTER = Alignment(horizontal="center")
RIGHT = Alignment(horizontal="right", vertical="center")
LEFT = Alignment(horizontal="left", vertical="center")

KIND_WIDTH = {"id": 26, "text": 14, "free": 44, "money": 16, "date": 12, "datetime": 19, "int": 10,
              "bool": 9, "account": 22, "blank": 24}


@dataclass(frozen=True)
class Col:
    name: str
    kind: str = "text"   # id | text | free | money | date | datetime | int | bool | account | blank
    width: float | None = None

    @property
    def col_width(self) -> float:
        # wide enough for the header text (bold, plus the filter button)
        return max(self.width or KIND_WIDTH.get(self.kind, 14), len(self.name) * 1.1 + 4)


def clean_text(value: str) -> str:
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    if len(value) > EXCEL_MAX_CELL_CHARS:
        value = value[: EXCEL_MAX_CELL_CHARS - 1] + "\u2026"
    return value


def _styled(ws: Any, value: Any, *, number_format: str | None = None, font: Font | None = None,
            fill: PatternFill | None = None, alignment: Alignment | None = None, quote: bool = False,
            as_text: bool = False) -> Any:
    """A cell with the given style. Setting styles one attribute at a time makes openpyxl hash
    every style object for every cell; instead each distinct style is built once per workbook and
    its (small) style array copied into later cells."""
    c = WriteOnlyCell(ws, value=value)
    if as_text:
        c.data_type = "s"
    key = (number_format, id(font), id(fill), id(alignment), quote)
    cache = ws.parent.__dict__.setdefault("_recon_style_cache", {})
    hit = cache.get(key)
    if hit is not None:
        c._style = copy(hit[0])
        return c
    if number_format is not None:
        c.number_format = number_format
    if font is not None:
        c.font = font
    if fill is not None:
        c.fill = fill
    if alignment is not None:
        c.alignment = alignment
    if quote:
        c.quotePrefix = True
    cache[key] = (copy(c._style), font, fill, alignment)  # keeps the style objects (and their ids) alive
    return c


def text_cell(ws: Any, value: str, *, font: Font | None = None, fill: PatternFill | None = None) -> Any:
    """A string cell that Excel shows as text and never evaluates."""
    value = clean_text(value)
    dangerous = is_dangerous(value)
    if not dangerous and font is None and fill is None:
        return value
    # openpyxl guesses data_type 'f' for text starting with '='; force a string, with the
    # quote prefix (Excel's leading apostrophe) so editing the cell does not turn it into one.
    # A highlighted label (long / short) is centred, apart from the amount beside it.
    return _styled(ws, value, as_text=True, quote=dangerous, font=font, fill=fill,
                   alignment=CENTER if fill is not None else None)


def cell(ws: Any, value: Any, kind: str = "text", *, fill: PatternFill | None = None,
         font: Font | None = None) -> Any:
    """One cell of the given column kind (see :class:`Col`)."""
    if value is None:
        return None if fill is None else _styled(ws, None, fill=fill)
    if kind == "free":
        value = mask_text(str(value))
    elif kind == "account":
        value = mask_account(str(value))
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, datetime) and value.tzinfo is not None:
        # Excel has no time zones: show the instant in the session's zone, as DuckDB returned it.
        value = value.replace(tzinfo=None)
    if isinstance(value, str):
        return text_cell(ws, value, font=font, fill=fill)
    fmt, align = None, None
    if isinstance(value, datetime):
        fmt, align = DATETIME_FORMAT, CENTER
    elif isinstance(value, date):
        fmt, align = DATE_FORMAT, CENTER
    elif kind == "money":
        fmt = MONEY_FORMAT
    elif isinstance(value, int):
        fmt = INT_FORMAT
    return _styled(ws, value, number_format=fmt, font=font, fill=fill, alignment=align)


def header_cells(ws: Any, cols: Iterable[Col]) -> list[Any]:
    out = []
    for col in cols:
        # numbers are right-aligned, so are their headers
        out.append(_styled(ws, clean_text(col.name), as_text=True, quote=is_dangerous(col.name), font=HEADER_FONT,
                           fill=HEADER_FILL, alignment=RIGHT if col.kind in ("money", "int") else LEFT))
    return out


def set_widths(ws: Any, widths: Iterable[float]) -> None:
    for i, w in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = w
    print_setup(ws)


def print_setup(ws: Any) -> None:
    """Landscape, one page wide (as many tall as needed): printable without cutting columns."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = "9"  # A4
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0


def sheet_title(base: str, part: int = 1) -> str:
    """A valid, <= 31 character sheet title; continuation sheets get " (n)"."""
    base = re.sub(r"[\[\]:*?/\\]", "_", base).strip("'") or "sheet"
    suffix = "" if part == 1 else f" ({part})"
    return base[: 31 - len(suffix)] + suffix


def atomic_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


#: Render TableWriter rows without openpyxl cell objects (see the module docstring); False = openpyxl only.
FAST_ROWS = True

_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


class _RawRow(tuple):
    """A row already rendered: its ``<row>`` element's bytes (its only item)."""


class _RawSheetWriter(WorksheetWriter):
    """openpyxl's writer of a write-only sheet, whose stream also takes ready-made row XML.

    openpyxl streams a sheet into a temporary file through lxml's incremental writer, which accepts
    elements only; here lxml writes into a file object of ours, so a rendered row's bytes go straight
    after whatever lxml holds (flushed first). ``out`` stays the file's path (the workbook zips it)."""

    def __init__(self, ws: Any) -> None:
        path = create_temporary_file()
        self._file = open(path, "wb")
        super().__init__(ws, out=self._file)      # starts the stream: lxml writes into self._file
        self.out = path

    def write_raw(self, xf: Any, data: bytes) -> None:
        xf.flush()
        self._file.write(data)

    def close(self) -> None:
        super().close()
        self._file.close()


class _FastRows:
    """Writes rows of a write-only worksheet as ready-made XML, the way openpyxl would write them.

    Hooks the worksheet's own row stream (``_values_to_row`` / ``write_row``), so row numbers,
    the sheet's other parts and any row it cannot render stay openpyxl's."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.styles: dict[tuple, str] = {}
        self.epoch = ws.parent.epoch
        self.letters: list[str] = []
        self.dates: dict[date, str] = {}
        writer = ws._writer
        convert, write = ws._values_to_row, writer.write_row
        ws._values_to_row = lambda row, idx: row if type(row) is _RawRow else convert(row, idx)
        writer.write_row = lambda xf, row, idx: (writer.write_raw(xf, row[0]) if type(row) is _RawRow
                                                 else write(xf, row, idx))

    @staticmethod
    def usable(ws: Any) -> bool:
        return (FAST_ROWS and LXML and isinstance(getattr(ws, "_writer", None), _RawSheetWriter)
                and hasattr(ws, "_values_to_row") and not ws.parent.iso_dates)

    @staticmethod
    def prepare(ws: Any) -> None:
        """Give a new write-only sheet the writer that takes rendered rows (before its first row)."""
        if FAST_ROWS and LXML and getattr(ws, "_writer", "none") is None and not ws.parent.iso_dates:
            ws._writer = _RawSheetWriter(ws)
            ws._writer.write_top()

    def _style(self, key: tuple, value: Any, kind: str, fill: Any) -> str:
        """The ``s="n"`` attribute :func:`cell` gives this kind of value, found once per kind."""
        attr = self.styles.get(key)
        if attr is None:
            c = cell(self.ws, value, kind, fill=fill)
            attr = f' s="{c.style_id}"' if getattr(c, "has_style", False) else ""
            self.styles[key] = attr
        return attr

    def render(self, row: tuple, cols: list[Col], fills: dict[int, Any], idx: int) -> _RawRow | None:
        """The ``<row>`` element of ``row`` as row ``idx``; None when a value needs openpyxl itself."""
        out = [f'<row r="{idx}">']
        letters = self.letters
        while len(letters) < len(cols):
            letters.append(get_column_letter(len(letters) + 1))
        for i, (value, col) in enumerate(zip(row, cols)):
            fill = fills.get(i) if fills else None
            ref = f"{letters[i]}{idx}"
            if value is None:
                if fill is not None:
                    return None              # openpyxl writes <c ...></c>; a parsed element would be <c/>
                continue
            kind = col.kind
            if kind == "free":
                value = mask_text(str(value))
            elif kind == "account":
                value = mask_account(str(value))
            t = type(value)
            if t is bool:
                value, t = ("yes" if value else "no"), str
            if t is str:
                text = clean_text(value)
                dangerous = is_dangerous(text)
                if not dangerous and fill is None:
                    if text in ERROR_CODES:
                        return None          # openpyxl makes this an error cell: leave it to openpyxl
                    style = ""
                else:
                    style = self._style(("s", dangerous, id(fill)), text, "text", fill)
                if not text:
                    return None              # as above: an empty cell stays openpyxl's
                space = ' xml:space="preserve"' if text != text.strip() else ""
                out.append(f'<c r="{ref}"{style} t="inlineStr"><is><t{space}>{text.translate(_XML_TEXT)}</t></is></c>')
                continue
            if t is int or (t is Decimal and value.is_finite()):   # safe_string's own formatting
                style = self._style(("n", kind == "money", t is int, id(fill)), value, kind, fill)
                out.append(f'<c r="{ref}"{style} t="n"><v>{"%.16g" % value}</v></c>')
                continue
            if t is date:                     # few distinct dates per table: their serials are kept
                style = self._style(("d", id(fill)), value, kind, fill)
                serial = self.dates.get(value)
                if serial is None:
                    serial = self.dates[value] = safe_string(to_excel(value, self.epoch))
                out.append(f'<c r="{ref}"{style} t="n"><v>{serial}</v></c>')
                continue
            if t is datetime:
                if value.tzinfo is not None:
                    value = value.replace(tzinfo=None)
                num, key = to_excel(value, self.epoch), ("dt", id(fill))
            elif t is float:
                num, key = value, ("n", kind == "money", False, id(fill))
            else:
                return None
            style = self._style(key, value, kind, fill)
            out.append(f'<c r="{ref}"{style} t="n"><v>{safe_string(num)}</v></c>')
        out.append("</row>")
        # as lxml writes it: ASCII, every other character as a decimal character reference
        return _RawRow(("".join(out).encode("ascii", "xmlcharrefreplace"),))


class TableWriter:
    """Streams rows into one or more sheets; see the module docstring.

    ``total_rows`` (known in advance from a COUNT) decides whether the table fits in
    ``max_sheets`` sheets of ``row_limit`` rows (header included); if not, every row
    also goes to ``export_path`` (CSV, injection-safe and masked like the sheets).
    ``row_style(row) -> fills`` returns ``{column index: fill}`` for a row.
    """

    def __init__(self, wb: Any, base_title: str, cols: list[Col], *, total_rows: int,
                 row_limit: int = EXCEL_MAX_ROWS, max_sheets: int = 3,
                 export_path: Path | None = None, row_style: Any = None,
                 empty_note: str | None = None, capped_note: str | None = None) -> None:
        if row_limit < 3:
            raise ValueError("row_limit must leave room for a header, a row and a note")
        self.wb, self.base, self.cols = wb, base_title, cols
        self.row_limit, self.max_sheets = row_limit, max(1, max_sheets)
        self.total_rows = total_rows
        self.row_style = row_style
        self.empty_note = empty_note
        capacity = (row_limit - 1) * self.max_sheets
        self.capped = total_rows > capacity
        # When capped, the last sheet keeps one row for the note pointing at the export.
        self.shown_limit = capacity - 1 if self.capped else total_rows
        self.export_path = export_path if self.capped else None
        self._export_target = export_path
        self.sheets: list[Any] = []
        self.titles: list[str] = []
        self.rows_in_sheet = 0
        self.written = 0
        self._csv_tmp: Path | None = None
        self._csv_file: Any = None
        self._csv: Any = None
        # Capped with a note that points elsewhere (rows already written in full by another output).
        self.capped_note = capped_note if self.capped and export_path is None else None
        if self.capped and self.capped_note is None:
            if export_path is None:
                raise ValueError(f"{base_title}: {total_rows} rows exceed the sheets and no export path was given")
            self._csv_tmp = atomic_path(export_path)
            self._csv_file = open(self._csv_tmp, "w", newline="", encoding="utf-8-sig")
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow([c.name for c in cols])
        self._new_sheet()

    def _new_sheet(self) -> None:
        if self.sheets:
            self._close_sheet()
        title = sheet_title(self.base, len(self.sheets) + 1)
        ws = self.wb.create_sheet(title)
        set_widths(ws, [c.col_width for c in self.cols])
        ws.print_title_rows = "1:1"  # repeat the header on every printed page
        ws.freeze_panes = "B2"
        _FastRows.prepare(ws)
        ws.append(header_cells(ws, self.cols))
        self._fast = _FastRows(ws) if _FastRows.usable(ws) else None
        self.sheets.append(ws)
        self.titles.append(title)
        self.rows_in_sheet = 1

    def _close_sheet(self) -> None:
        ws = self.sheets[-1]
        last = max(self.rows_in_sheet, 1)
        ws.auto_filter.ref = f"A1:{get_column_letter(len(self.cols))}{last}"

    def append(self, row: tuple) -> None:
        if self._csv is not None:
            self._csv.writerow([csv_safe(self._csv_value(v, c.kind)) for v, c in zip(row, self.cols)])
        if self.written >= self.shown_limit:
            return
        if self.rows_in_sheet >= self.row_limit:
            self._new_sheet()
        ws = self.sheets[-1]
        fills = self.row_style(row) if self.row_style else {}
        raw = self._fast.render(row, self.cols, fills, self.rows_in_sheet + 1) if self._fast else None
        ws.append(raw if raw is not None else
                  [cell(ws, v, c.kind, fill=fills.get(i)) for i, (v, c) in enumerate(zip(row, self.cols))])
        self.rows_in_sheet += 1
        self.written += 1

    @staticmethod
    def _csv_value(value: Any, kind: str) -> Any:
        if value is None:
            return ""
        if kind == "free":
            return ILLEGAL_CHARACTERS_RE.sub("", mask_text(str(value)) or "")
        if kind == "account":
            return mask_account(str(value))
        if isinstance(value, (date, datetime)):
            return value.isoformat()
        return value

    def close(self) -> None:
        ws = self.sheets[-1]
        if self.capped:
            shown = f"Only the first {self.written:,} of {self.total_rows:,} rows are shown in this workbook; "
            note = shown + (self.capped_note or f"the full list is in {self.export_path.name} beside it.")
            # Close the filter over the data rows first, then add the note below them.
            self._close_sheet()
            ws.append([text_cell(ws, note, font=NOTE_FONT)])
            if self._csv_file is None:
                return
            self._csv_file.close()
            os.replace(self._csv_tmp, self.export_path)
            self._csv = None
            return
        if self.written == 0 and self.empty_note:
            ws.append([text_cell(ws, self.empty_note, font=NOTE_FONT)])  # below the filtered range
        self._close_sheet()
        if self._export_target is not None and self._export_target.exists():
            self._export_target.unlink()  # a stale export from an earlier, bigger report of the same name

    def abort(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
            if self._csv_tmp is not None:
                self._csv_tmp.unlink(missing_ok=True)
