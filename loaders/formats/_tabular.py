"""Fast, streaming reading of delimited statement bodies, with exact line numbers.

A statement file is: some lines before the column header (``#`` comments, title
lines), the header, the body, and footer/summary lines. :class:`Reader` reads
the lines up to the header itself, then hands the body to pyarrow's streaming
CSV reader (all columns as strings; one record batch per block), transcoding
GBK/UTF-8 to UTF-8 on the fly. Memory stays bounded by the block size plus the
Arrow output; the file is never held whole.

Lines that do not have the header's column count (footers, summary lines,
broken rows) come back in :attr:`Reader.extras` with their physical line
number and text; the format decides whether they are footer lines or rows to
quarantine. Physical line numbers of body rows are reconstructed per batch
from the extras, and checked against the total line count at the end: when a
quoted value spans lines (which this reconstruction cannot follow) the body is
re-read with Python's ``csv`` module, which tracks lines exactly.

Values are converted column-wise with pyarrow compute (exact decimal casts,
``strptime``); a batch whose column fails the fast cast is converted value by
value with :func:`recon.money.parse_amount`, so the offending rows are named.
"""
from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from loaders.base import (
    MONEY, SCHEMAS, FileError, FooterCheck, ParsedFile, Quarantined, norm_header, zip_entry_name,
)
from recon.money import MoneyError, parse_amount

ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, NotImplementedError, struct.error)
CHUNK = 1 << 20
BLOCK = 1 << 20
# No statement amount comes near 10^14 yuan; the margin keeps sums and differences of two amounts
# inside DECIMAL(18,2) so that Arrow arithmetic on converted columns can never overflow.
MAX_ABS = Decimal("99999999999999.99")


class _RetryEncoding(Exception):
    """Auto-detected UTF-8 turned out wrong further into the file: start again as GB18030."""


def with_encoding_retry(parse: Callable[[Path, dict[str, Any]], Any]) -> Callable[[Path, dict[str, Any]], Any]:
    """Wrap a parser: when auto-detected UTF-8 turns out wrong (:class:`_RetryEncoding`), parse again as GB18030."""
    @functools.wraps(parse)
    def wrapper(path: Path, opts: dict[str, Any]) -> Any:
        try:
            return parse(path, opts)
        except _RetryEncoding:
            return parse(path, {**opts, "encoding": "gb18030"})
    return wrapper


# ------------------------------------------------------------------ sources
def is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def zip_members(path: Path) -> list[tuple[str, zipfile.ZipInfo]]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [(zip_entry_name(i), i) for i in zf.infolist() if not i.is_dir()]
    except ARCHIVE_ERRORS as exc:
        raise FileError(path, f"corrupt ZIP: {exc}") from None


@dataclass(frozen=True)
class Source:
    """Where the bytes of one statement come from: a plain file, a gzip file or a ZIP entry."""

    path: Path
    member: zipfile.ZipInfo | None = None
    member_name: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}!{self.member_name}" if self.member_name else str(self.path)

    def open(self):
        if self.member is not None:
            zf = zipfile.ZipFile(self.path)
            try:
                return zf.open(self.member)
            except ARCHIVE_ERRORS as exc:
                raise FileError(self.label, f"cannot read ZIP entry: {exc}") from None
        fh = open(self.path, "rb")
        if fh.read(2) == b"\x1f\x8b":
            fh.seek(0)
            return gzip.GzipFile(fileobj=fh)
        fh.seek(0)
        return fh

    def read_all(self) -> bytes:
        with self.open() as fh:
            try:
                return fh.read()
            except ARCHIVE_ERRORS as exc:
                raise FileError(self.label, f"cannot read: {exc}") from None


def source_for(path: Path, pick: Callable[[str], bool] | None = None, what: str = "statement") -> Source:
    """The file itself, or the ZIP entry ``pick`` selects (the only entry when ``pick`` is None)."""
    path = Path(path)
    if not path.exists():
        raise FileError(path, "no such file")
    if not is_zip(path):
        return Source(path)
    members = zip_members(path)
    chosen = [(n, i) for n, i in members if (pick(n) if pick else True)]
    if not chosen:
        raise FileError(path, f"ZIP has no {what} entry (entries: {[n for n, _ in members]})")
    name, info = chosen[0]
    return Source(path, info, name)


# ------------------------------------------------------------------ byte stream
ASCII_COMPATIBLE = {"utf-8", "gb18030", "latin-1", "cp1252", "big5", "ascii"}
ALIASES = {"utf8": "utf-8", "utf-8-sig": "utf-8", "gbk": "gb18030", "gb2312": "gb18030", "cp936": "gb18030",
           "gb18030": "gb18030", "latin1": "latin-1", "iso-8859-1": "latin-1"}


def canonical_encoding(name: str) -> str:
    n = name.lower().replace("_", "-")
    return ALIASES.get(n, n)


class ByteStream(io.RawIOBase):
    """The bytes of a source as pyarrow reads them.

    UTF-8 passes through (BOM dropped). Any other (ASCII-compatible) encoding such
    as GBK is widened byte for byte (latin-1 -> UTF-8): ASCII, and so every
    delimiter, quote and newline, stays where it was, pyarrow can report odd lines
    as text, and :meth:`decode` turns a value back into the real characters.
    (Python's GBK decoder is too slow for a million-row bill; decoding only
    the non-ASCII values, once per distinct value, is not.)
    Physical lines (``\n``) are counted as they pass.
    """

    def __init__(self, source: Source, encoding: str | None):
        super().__init__()
        self.source = source
        self.raw = source.open()
        first = self._raw_read()
        self.auto = encoding is None
        enc = detect_encoding(first) if encoding is None else canonical_encoding(encoding)
        try:
            codecs.lookup(enc)
        except LookupError:
            raise FileError(source.label, f"unknown encoding {encoding!r}") from None
        if enc not in ASCII_COMPATIBLE:
            raise FileError(source.label, f"encoding {enc} is not supported (ASCII-compatible encodings only)")
        self.encoding = enc
        self.widen = enc != "utf-8"
        if first.startswith(codecs.BOM_UTF8) and enc == "utf-8":
            first = first[3:]
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        self.raw_lines = 0
        self.last_byte = b""
        self._feed(first)

    def _raw_read(self) -> bytes:
        try:
            return self.raw.read(CHUNK)
        except ARCHIVE_ERRORS as exc:
            raise FileError(self.source.label, f"cannot read (corrupt compressed data?): {exc}") from None

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            self.eof = True
            return
        self.raw_lines += chunk.count(b"\n")
        self.last_byte = chunk[-1:]
        if self.pos > CHUNK:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += chunk.decode("latin-1").encode("utf-8") if self.widen else chunk

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            while not self.eof:
                self._feed(self._raw_read())
            n = len(self.buf) - self.pos
        while len(self.buf) - self.pos < n and not self.eof:
            self._feed(self._raw_read())
        out = bytes(self.buf[self.pos: self.pos + n])
        self.pos += len(out)
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0 or self.eof:
                end = i + 1 if i >= 0 else len(self.buf)
                out = bytes(self.buf[self.pos: end])
                self.pos = end
                return out
            self._feed(self._raw_read())

    def unread(self, n: int) -> None:
        self.pos -= n

    @property
    def total_lines(self) -> int:
        return self.raw_lines + (0 if self.last_byte in (b"\n", b"") else 1)

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()

    # -- text
    def text_of(self, arrow_text: str, errors: str = "strict") -> str:
        """Real characters of a line/value that came through the stream as text."""
        if not self.widen:
            return arrow_text
        return arrow_text.encode("latin-1", "replace").decode(self.encoding, errors)

    def line_text(self, raw: bytes, line_no: int) -> str:
        try:
            text = raw.decode("utf-8")
            return self.text_of(text).rstrip("\r\n")
        except UnicodeDecodeError as exc:
            if self.auto and not self.widen:
                raise _RetryEncoding() from None
            raise FileError(self.source.label, f"cannot decode as {self.encoding}: {exc.reason}",
                            line_no=line_no) from None


def detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, False)
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


# ------------------------------------------------------------------ reading
@dataclass
class Extra:
    """A physical line (or quoted span) that is not a body row of the header's width."""

    line_no: int
    text: str
    reason: str | None = None      # set when the line has the right width but cannot be a row


@dataclass
class Batch:
    table: pa.Table          # binary columns c{i} (only the columns asked for)
    lines: np.ndarray        # physical line number of each row


FindHeader = Callable[[int, str], str]   # (line_no, text) -> "skip" | "header" | "empty"


class Reader:
    """Read prefix lines and the header, then stream the body as batches of raw columns."""

    def __init__(self, source: Source, *, encoding: str | None = None, delimiter: str = ",", quote: bool = True,
                 find_header: FindHeader | None = None, max_prefix: int = 200, header: bool = True,
                 skip_lines: int = 0, width: int | None = None):
        self.source, self.delimiter, self.quote = source, delimiter, quote
        self.encoding_arg = encoding
        self.extras: list[Extra] = []
        self.prefix: list[tuple[int, str]] = []
        self.header: list[str] | None = None
        self.header_line = 0
        self.empty = False
        self.used_slow = False
        self.stream = ByteStream(source, encoding)
        self.encoding = self.stream.encoding
        find = find_header or (lambda n, t: "header" if t.strip() else "skip")
        line_no = 0
        while True:
            raw = self.stream.readline()
            if not raw:
                self.empty = line_no <= skip_lines or header
                break
            line_no += 1
            text = self.stream.line_text(raw, line_no)
            if line_no <= skip_lines:
                self.prefix.append((line_no, text))
                continue
            if not header:                       # no header line: columns by position
                self.stream.unread(len(raw))
                line_no -= 1
                self.header = [str(i) for i in range(width or len(self._split(text)))]
                break
            verdict = find(line_no, text)
            if verdict == "header":
                self.header = self._split(text)
                self.header_line = line_no
                break
            self.prefix.append((line_no, text))
            if verdict == "empty":
                self.empty = True
                break
            if line_no >= max_prefix:
                raise FileError(source.label, f"no column header in the first {max_prefix} lines")
        self.first_body_line = line_no + 1
        self.width = len(self.header) if self.header else 0
        self.total_lines: int | None = None
        self.include: list[int] | None = None
        self.allow_multiline = False

    def _split(self, text: str) -> list[str]:
        if not self.quote:
            return text.split(self.delimiter)
        return next(csv.reader([text], delimiter=self.delimiter), [])

    def header_map(self, clean: Callable[[str], str] = lambda s: s) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, h in enumerate(self.header or []):
            key = norm_header(clean(h))
            if key and key not in out:
                out[key] = i
        return out

    def extra_text(self, arrow_text: str) -> str:
        return self.stream.text_of(arrow_text, "replace")

    # -- body
    def batches(self) -> Iterator[Batch]:
        if self.empty or not self.header:
            return
        names = [f"c{i}" for i in range(self.width)]
        include = [names[i] for i in self.include] if self.include is not None else names
        pending: list[Extra] = []

        def on_invalid(row) -> str:
            pending.append(Extra(row.number, row.text))
            return "skip"

        try:
            reader = pv.open_csv(
                pa.PythonFile(self.stream, mode="r"),
                read_options=pv.ReadOptions(column_names=names, use_threads=False, block_size=BLOCK),
                parse_options=pv.ParseOptions(delimiter=self.delimiter, quote_char='"' if self.quote else False,
                                              invalid_row_handler=on_invalid, ignore_empty_lines=False,
                                              newlines_in_values=False),
                convert_options=pv.ConvertOptions(column_types={n: pa.binary() for n in names},
                                                  include_columns=include, strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                self.total_lines = self.stream.total_lines
                return
            raise _Multiline() from None      # e.g. an odd line that is not UTF-8: let the exact reader say
        next_line = self.first_body_line
        queue: list[Extra] = []
        base = self.first_body_line - 1        # pyarrow numbers lines from 1 at the start of what it reads
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid:
                raise _Multiline() from None
            k = rb.num_rows
            # pyarrow may already have parsed (and reported odd lines of) the next block: place
            # this batch's rows on the physical lines not taken by reported odd lines, in order.
            if pending:
                queue.extend(Extra(e.line_no + base, e.text) for e in pending)
                pending.clear()
                queue.sort(key=lambda e: e.line_no)
            pieces = []
            left = k
            while left:
                if queue and queue[0].line_no < next_line:
                    raise _Multiline()
                room = (queue[0].line_no - next_line) if queue else left
                take = min(room, left)
                if take:
                    pieces.append(np.arange(next_line, next_line + take, dtype=np.int64))
                    next_line += take
                    left -= take
                if left:
                    if not queue:
                        raise _Multiline()
                    next_line = self._take_extra(queue.pop(0))
            while queue and queue[0].line_no == next_line:
                next_line = self._take_extra(queue.pop(0))
            if k:
                lines = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
                yield Batch(pa.Table.from_batches([rb]), lines)
        queue.extend(Extra(e.line_no + base, e.text) for e in pending)
        queue.sort(key=lambda e: e.line_no)
        for e in queue:
            if e.line_no != next_line:
                raise _Multiline()
            next_line = self._take_extra(e)
        self.total_lines = self.stream.total_lines
        if next_line - 1 != self.total_lines:
            raise _Multiline()

    def _take_extra(self, e: Extra) -> int:
        self.extras.append(Extra(e.line_no, self.extra_text(e.text)))
        return e.line_no + e.text.count("\n") + 1


class _Multiline(Exception):
    """The fast reader cannot place every row on its line (a quoted value spans lines...)."""


def slow_batches(reader: Reader, size: int = 50_000) -> Iterator[Batch]:
    """The exact reader: Python's csv over the lines, tracking physical line numbers."""
    stream = ByteStream(reader.source, reader.encoding)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    first = reader.first_body_line
    for _ in range(first - 1):
        text.readline()
    consumed: list[str] = []

    def lines():
        for ln in text:
            consumed.append(ln)
            yield ln

    width, extras = reader.width, reader.extras
    keep = reader.include if reader.include is not None else list(range(width))
    rd = csv.reader(lines(), delimiter=reader.delimiter, quotechar='"',
                    quoting=csv.QUOTE_MINIMAL if reader.quote else csv.QUOTE_NONE, strict=False)
    rows: list[list[str]] = []
    nums: list[int] = []
    prev = first - 1
    while True:
        try:
            row = next(rd)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FileError(reader.source.label, f"cannot parse CSV: {exc}", line_no=prev + 1) from None
        start, prev = prev + 1, first - 1 + rd.line_num
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        if len(row) != width:
            extras.append(Extra(start, reader.extra_text(raw.encode("utf-8", "surrogateescape")
                                                         .decode("utf-8", "replace"))))
            continue
        if not reader.allow_multiline and prev > start:
            # a quoted value spanning lines is far more often a stray quote swallowing whole rows
            extras.append(Extra(start, reader.extra_text(raw.encode("utf-8", "surrogateescape")
                                                         .decode("utf-8", "replace")),
                                f"a quoted value spans lines {start}-{prev} (stray quote?); set "
                                "allow_multiline_values if the channel really writes them"))
            continue
        rows.append(row)
        nums.append(start)
        if len(rows) >= size:
            yield _rows_batch(rows, nums, keep)
            rows, nums = [], []
    if rows:
        yield _rows_batch(rows, nums, keep)
    reader.total_lines = prev
    stream.close()


def _rows_batch(rows: list[list[str]], nums: list[int], keep: list[int]) -> Batch:
    cols = {f"c{i}": pa.array([r[i].encode("utf-8", "surrogateescape") for r in rows], pa.binary()) for i in keep}
    return Batch(pa.table(cols) if cols else pa.table({}), np.asarray(nums, dtype=np.int64))


def extras_batch(reader: Reader, extras: list[Extra], split: Callable[[str], list[str]]) -> Batch:
    """A small batch from odd lines the format accepts as rows (e.g. a trailing comma), padded/cut."""
    keep = reader.include if reader.include is not None else list(range(reader.width))
    rows = []
    for e in extras:
        f = (split(e.text) + [""] * reader.width)[: reader.width]
        rows.append(f)
    cols = {f"c{i}": pa.array([_back(reader, r[i]) for r in rows], pa.binary()) for i in keep}
    return Batch(pa.table(cols), np.asarray([e.line_no for e in extras], dtype=np.int64))


def _back(reader: Reader, value: str) -> bytes:
    """A real-character value back to the bytes the fast reader would have produced."""
    if reader.stream.widen:
        return value.encode(reader.encoding, "replace").decode("latin-1").encode("utf-8")
    return value.encode("utf-8")


def _quiet(it: Iterator[Batch]) -> Iterator[Batch]:
    """Iterate with pyarrow's complaints about undecodable odd lines kept off stderr.

    pyarrow cannot hand a line that is not UTF-8 to the odd-line handler; it reports
    that through ``sys.unraisablehook`` (a traceback on stderr) and then fails the read,
    which sends the file to the exact reader. The traceback is noise for a user.
    """
    import sys

    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield from it
    finally:
        sys.unraisablehook = previous


def drive(reader: Reader, process: Callable[[Batch], None], reset: Callable[[], None]) -> None:
    """Feed every body batch to ``process``, in order, streaming.

    Parsing (pyarrow, in this thread) overlaps with converting the previous batch (one worker
    thread; pyarrow releases the GIL), at most two batches in flight. When the fast reader cannot
    place rows on their lines (a quoted value spans lines), ``reset`` the output and use the exact
    reader.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        inflight: list = []
        try:
            for b in _quiet(reader.batches()):
                inflight.append(pool.submit(process, b))
                if len(inflight) >= 2:
                    inflight.pop(0).result()
            for f in inflight:
                f.result()
            return
        except _Multiline:
            for f in inflight:
                f.cancel()
            for f in inflight:
                if not f.cancelled():
                    f.exception()
    reset()
    reader.extras.clear()
    reader.used_slow = True
    for b in slow_batches(reader):
        process(b)


# ------------------------------------------------------------------ converting
class Errors:
    """Per-batch row errors: the first failing field of a row wins."""

    def __init__(self, n: int):
        self.n = n
        self.bad = np.zeros(n, dtype=bool)
        self.items: dict[int, tuple[str | None, str]] = {}

    def mark(self, mask: np.ndarray | pa.Array, field: str | None, reason: str | Callable[[int], str]) -> None:
        if isinstance(mask, (pa.Array, pa.ChunkedArray)):
            mask = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) if len(mask) else np.zeros(0, bool)
        new = mask & ~self.bad
        if new.any():
            for i in np.flatnonzero(new):
                self.items[int(i)] = (field, reason(int(i)) if callable(reason) else reason)
            self.bad |= new

    def mark_one(self, i: int, field: str | None, reason: str) -> None:
        if not self.bad[i]:
            self.bad[i] = True
            self.items[i] = (field, reason)


def as_bool(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def clean(arr: pa.ChunkedArray | pa.Array, chars: str = " \t`") -> pa.Array:
    """Strip backticks (WeChat), trailing tabs (Alipay) and spaces."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return pc.utf8_trim(arr, characters=chars)


def to_money(arr: pa.Array, field: str, errs: Errors, *, blank_zero: bool = False,
             parse: Callable[[str], Decimal] | None = None) -> pa.Array:
    """Exact decimal(18,2) from strings; rows with anything but an exact amount are marked bad."""
    empty = as_bool(pc.equal(arr, ""))
    if not blank_zero and empty.any():
        errs.mark(empty, field, "empty amount")
    filled = pc.if_else(pa.array(empty), pa.scalar("0" if blank_zero else None, pa.string()), arr)
    if parse is None:
        try:
            out = pc.cast(filled, MONEY)
            biggest = pc.max(pc.abs(out)).as_py()
            if biggest is None or biggest <= MAX_ABS:
                return out
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    values: list[Decimal | None] = []
    convert = parse or parse_amount
    for i, text in enumerate(filled.to_pylist()):
        if text is None:
            values.append(None)
            continue
        try:
            v = convert(text)
            if abs(v) > MAX_ABS:
                raise MoneyError(f"amount out of range: {text!r}")
            values.append(v)
        except (MoneyError, ValueError, ArithmeticError) as exc:
            errs.mark_one(i, field, str(exc))
            values.append(None)
    return pa.array(values, MONEY)


def to_time(arr: pa.Array, field: str, errs: Errors, formats: tuple[str, ...] = ("%Y-%m-%d %H:%M:%S",),
            required: bool = False) -> pa.Array:
    empty = as_bool(pc.equal(arr, ""))
    if required and empty.any():
        errs.mark(empty, field, "empty time")
    out = None
    for fmt in formats:
        parsed = pc.strptime(arr, format=fmt, unit="us", error_is_null=True)
        out = parsed if out is None else pc.coalesce(out, parsed)
    bad = as_bool(pc.is_null(out)) & ~empty
    if bad.any():
        texts = arr.to_pylist()
        errs.mark(bad, field, lambda i: f"not a time ({' / '.join(formats)}): {texts[i]!r}")
    return out


def map_values(arr: pa.Array, mapping: dict[str, str | None]) -> pa.Array:
    """Map strings through ``mapping``; values not in it become null."""
    keys = list(mapping)
    idx = pc.index_in(arr, value_set=pa.array(keys, pa.string()))
    return pc.take(pa.array([mapping[k] for k in keys], pa.string()), idx)


def blank_to_null(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def zeros(n: int) -> pa.Array:
    return pc.cast(pa.array(np.zeros(n, dtype=np.int32)), MONEY)


def nulls(n: int, typ: pa.DataType) -> pa.Array:
    return pa.nulls(n, typ)


def const(n: int, value: Any, typ: pa.DataType = pa.string()) -> pa.Array:
    return pa.array([value] * n, typ) if n else pa.array([], typ)


# ------------------------------------------------------------------ collecting
@dataclass
class Collector:
    """Canonical output tables and quarantined rows of one file."""

    schema: pa.Schema
    source: Source
    tables: list[pa.Table] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    need_raw: dict[int, tuple[str | None, str]] = field(default_factory=dict)
    rows: int = 0

    def add(self, columns: dict[str, pa.Array], lines: np.ndarray, errs: Errors) -> pa.Table:
        n = len(lines)
        cols = {}
        for f in self.schema:
            if f.name == "line_no":
                cols[f.name] = pa.array(lines, pa.int32())
            else:
                v = columns.get(f.name)
                cols[f.name] = nulls(n, f.type) if v is None else (v if v.type == f.type else pc.cast(v, f.type))
        table = pa.table(cols, schema=self.schema)
        if errs.bad.any():
            for i, (fld, reason) in errs.items.items():
                self.need_raw[int(lines[i])] = (fld, reason)
            table = table.filter(pa.array(~errs.bad))
        self.tables.append(table)
        self.rows += table.num_rows
        return table

    def reset(self) -> None:
        self.tables.clear()
        self.quarantine.clear()
        self.need_raw.clear()
        self.rows = 0

    def reject(self, line_no: int | None, field: str | None, reason: str, raw: str) -> None:
        self.quarantine.append(Quarantined(line_no, field, reason, raw))

    def table(self) -> pa.Table:
        if not self.tables:
            return self.schema.empty_table()
        t = pa.concat_tables(self.tables)
        if len(self.tables) > 1:
            lines = t.column("line_no").to_numpy()
            if len(lines) > 1 and (np.diff(lines) < 0).any():
                t = t.take(pa.array(np.argsort(lines, kind="stable")))
        return t

    def finish_quarantine(self, reader: "Reader") -> list[Quarantined]:
        """Fetch the raw text of rows that failed a value conversion, in one streaming pass."""
        if self.need_raw:
            wanted = dict(self.need_raw)
            stream = ByteStream(self.source, reader.encoding)
            line_no = 0
            last = max(wanted)
            while line_no < last:
                raw = stream.readline()
                if not raw:
                    break
                line_no += 1
                if line_no in wanted:
                    fld, reason = wanted[line_no]
                    text = stream.text_of(raw.decode("utf-8", "replace"), "replace").rstrip("\r\n")
                    self.quarantine.append(Quarantined(line_no, fld, reason, text))
            stream.close()
            self.need_raw.clear()
        self.quarantine.sort(key=lambda q: (q.line_no or 0))
        return self.quarantine


class Cols:
    """Decoded, cleaned string columns of a batch, looked up by (normalised) header name.

    A value that is not valid in the file's encoding marks its row bad (quarantined).
    """

    def __init__(self, batch: Batch, index: dict[str, int], reader: Reader, errs: "Errors",
                 chars: str = " \t`"):
        self.t, self.index, self.reader, self.errs, self.chars = batch.table, index, reader, errs, chars
        self.n = batch.table.num_rows
        self._cache: dict[int, pa.Array] = {}

    def idx(self, *names: str) -> int | None:
        for name in names:
            i = self.index.get(norm_header(name))
            if i is not None:
                return i
        return None

    def has(self, *names: str) -> bool:
        return self.idx(*names) is not None

    def raw(self, i: int) -> pa.Array:
        if i not in self._cache:
            col = self.t.column(f"c{i}").combine_chunks()
            self._cache[i] = clean(decode_column(col, self.reader, self.errs, self.header_name(i)), self.chars)
        return self._cache[i]

    def header_name(self, i: int) -> str:
        h = self.reader.header or []
        return h[i].strip().strip("`") if i < len(h) else str(i)

    def get(self, *names: str) -> pa.Array | None:
        i = self.idx(*names)
        return None if i is None else self.raw(i)

    def text(self, *names: str) -> pa.Array:
        """Cleaned values with blanks as null (null column when the header lacks it)."""
        a = self.get(*names)
        return nulls(self.n, pa.string()) if a is None else blank_to_null(a)


def decode_column(col: pa.Array, reader: Reader, errs: "Errors", field: str) -> pa.Array:
    """Binary column -> real strings. ASCII is free; other values are decoded once per distinct value."""
    widen = reader.stream.widen
    try:
        s = pc.cast(col, pa.string())
    except pa.ArrowInvalid:               # not UTF-8 (in a UTF-8 file): decode value by value
        s = None
    if s is not None and (not widen or bool(pc.all(pc.string_is_ascii(s)).as_py() in (True, None))):
        return s
    if s is None:
        values = col.to_pylist()
        out = []
        for i, v in enumerate(values):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                errs.mark_one(i, field, f"not valid {reader.encoding}: {v!r}")
                out.append("")
        return pa.array(out, pa.string())
    enc = pc.dictionary_encode(s)
    dictionary = enc.dictionary.to_pylist()
    decoded, bad = [], []
    for j, v in enumerate(dictionary):
        try:
            decoded.append(v.encode("latin-1").decode(reader.encoding))
        except UnicodeDecodeError:
            decoded.append("")
            bad.append(j)
    result = pc.take(pa.array(decoded, pa.string()), enc.indices)
    if bad:
        mask = as_bool(pc.is_in(enc.indices, value_set=pa.array(bad, enc.indices.type)))
        texts = s.to_pylist()
        errs.mark(mask, field, lambda i: f"not valid {reader.encoding}: {texts[i]!r}")
    return result


def blank_rows(batch: Batch) -> np.ndarray | None:
    """Rows whose every column is empty (blank lines); None when there are none (the common case)."""
    t = batch.table
    if t.num_rows == 0 or t.num_columns == 0:
        return None
    mask = as_bool(pc.equal(pc.binary_length(t.column(0)), 0))
    if not mask.any():
        return None
    for i in range(1, t.num_columns):
        mask &= as_bool(pc.equal(pc.binary_length(t.column(i)), 0))
        if not mask.any():
            return None
    return mask


def without_blank(batch: Batch) -> Batch:
    mask = blank_rows(batch)
    if mask is None:
        return batch
    keep = ~mask
    return Batch(batch.table.filter(pa.array(keep)), batch.lines[keep])


def batch_columns(batch: Batch, index: dict[str, int], reader: Reader, chars: str = " \t`"
                  ) -> tuple[Batch, Errors, Cols] | None:
    """The batch without its blank lines, a fresh :class:`Errors` and the :class:`Cols` to read it by
    header name; None when no row is left."""
    batch = without_blank(batch)
    n = batch.table.num_rows
    if n == 0:
        return None
    errs = Errors(n)
    return batch, errs, Cols(batch, index, reader, errs, chars)


def each_batch(index: dict[str, int], reader: Reader, chars: str = " \t`"
               ) -> Callable[[Callable[[Batch, Errors, Cols], None]], Callable[[Batch], None]]:
    """Turn a format's ``process(batch, errs, cols)`` into the ``process(batch)`` :func:`drive` calls
    (see :func:`batch_columns`; a batch of blank lines only is skipped)."""
    def wrap(fn: Callable[[Batch, Errors, Cols], None]) -> Callable[[Batch], None]:
        @functools.wraps(fn)
        def process(batch: Batch) -> None:
            prepared = batch_columns(batch, index, reader, chars)
            if prepared is not None:
                fn(*prepared)
        return process
    return wrap


def cols_for(reader: Reader, index: dict[str, int], *names: str) -> None:
    """Ask the reader for only the columns a format uses (faster, and odd unused columns do not matter)."""
    wanted = sorted({index[norm_header(n)] for n in names if norm_header(n) in index})
    reader.include = wanted


def need_columns(reader: Reader, index: dict[str, int], names: Iterable[str]) -> None:
    """A FileError on the header line when the header lacks one of ``names``."""
    for name in names:
        if norm_header(name) not in index:
            raise FileError(reader.source.label, f"header has no column {name!r}", line_no=reader.header_line)


def no_rows(path: Path, fmt: str, kind: str, reason: str, **fields: Any) -> ParsedFile:
    """The result for a file without rows (a day without a statement): empty table, nothing to check."""
    return ParsedFile(path, fmt, kind, SCHEMAS[kind].empty_table(), empty_day=True,
                      footer=FooterCheck(True, reason, 0, Decimal("0.00"), 0, Decimal("0.00")), **fields)


def footer_check(checks: list[tuple[str, Any, Any]], quarantined: int = 0):
    """A FooterCheck from (name, declared, parsed) triples; the first amount is the headline figure."""
    checks = [c for c in checks if c[1] is not None]
    if not checks:
        return FooterCheck(None, "file has no totals to check")
    bad = [f"{name}: file says {d}, rows give {p}" for name, d, p in checks if d != p]
    rows = next((d for n, d, _ in checks if n == "rows"), None)
    prow = next((p for n, _, p in checks if n == "rows"), None)
    amount = next((d for _, d, _ in checks if isinstance(d, Decimal)), None)
    pamount = next((p for _, d, p in checks if isinstance(d, Decimal)), None)
    note = f" ({quarantined} row(s) quarantined)" if quarantined else ""
    if bad:
        return FooterCheck(False, "; ".join(bad) + note, rows, amount, prow, pamount)
    return FooterCheck(True, "totals agree: " + ", ".join(f"{n} {p}" for n, _, p in checks) + note, rows, amount,
                       prow, pamount)


def decimal_of(text: str) -> Decimal | None:
    try:
        return parse_amount(text)
    except (MoneyError, ArithmeticError):
        return None


def add(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.cast(pc.add(a, b), MONEY)


def sub(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.cast(pc.subtract(a, b), MONEY)


def neg(a: pa.Array) -> pa.Array:
    return pc.cast(pc.negate(a), MONEY)


def msum(a: pa.Array, keep: np.ndarray | None = None) -> Decimal:
    if keep is not None:
        a = a.filter(pa.array(keep))
    s = pc.sum(a).as_py()
    return Decimal("0.00") if s is None else Decimal(s).quantize(Decimal("0.01"))
