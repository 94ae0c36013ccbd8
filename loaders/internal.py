"""The platform's own records, read from its database with SQLAlchemy.

Reading is column-wise. SQLite files and PostgreSQL are read as Arrow record
batches through their ADBC drivers (:mod:`loaders.internal_arrow`); other
databases (MariaDB/MySQL, in-memory SQLite), or a query the ADBC driver cannot
read, go through the DBAPI cursor, each chunk of rows becoming Arrow arrays
converted in C. Either way text, exact decimals and timestamps are converted in
C, and values of other shapes take the value-by-value path with its precise
errors.

The queries (``InternalSource.queries``) take ``:start`` and ``:end``, the
business day in the platform time zone as naive local timestamps. Rows are
streamed in chunks into Arrow and written to Parquet staging files
(:func:`read_platform`, which needs no warehouse and runs in a thread of its own
while the statements load), then inserted into DuckDB in one statement per table,
replacing that day's platform rows inside the caller's transaction
(:func:`load_staged`). :func:`load_platform` does both.

Money must arrive exact: DECIMAL columns (returned as ``Decimal``), integers or
text. A float from the database is refused with the table and key named; a
float cannot be trusted to the fen.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from loaders import internal_arrow
from recon.config import Config
from recon.errors import UserError

MONEY = pa.decimal128(18, 2)


class InternalSourceError(UserError):
    pass


def day_window(business_date: date) -> tuple[datetime, datetime]:
    start = datetime.combine(business_date, time(0))
    return start, start + timedelta(days=1)


def engine_for(cfg: Config) -> sa.Engine:
    src = cfg.internal_source
    url = os.environ.get(src.url_env) if src.url_env and os.environ.get(src.url_env) else src.url
    try:
        return sa.create_engine(url)
    except Exception as exc:  # bad URL or missing driver
        raise InternalSourceError(f"internal source: cannot use database URL: {type(exc).__name__}: {exc}") from None


def _as_arrow(values) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values)


def _pylist(values) -> list:
    return values.to_pylist() if isinstance(values, pa.Array) else list(values)


def _money_array(values, what: str, keys) -> pa.Array:
    """Exact amounts as DECIMAL(18,2). Fast path: one Arrow array of text, integers or decimals, cast in C."""
    try:
        arr = _as_arrow(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        arr = None                        # mixed types: value by value below, with the offending key named
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_integer(arr.type)
                            or pa.types.is_decimal(arr.type) or pa.types.is_null(arr.type)):
        try:
            return pc.cast(arr, MONEY)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass                          # not exact to the fen (or out of range): the slow path says which
    return _money_array_slow(_pylist(values), what, _pylist(keys))


def _money_array_slow(values: list, what: str, keys: list) -> pa.Array:
    texts = []
    for v, k in zip(values, keys):
        if isinstance(v, float):
            raise InternalSourceError(f"{what}: amount for {k!r} came back as a float ({v!r}); "
                                      "store money as DECIMAL, integer fen or text")
        texts.append(None if v is None else str(v))
    try:
        return pc.cast(pa.array(texts, pa.string()), MONEY)
    except pa.ArrowInvalid as exc:
        raise InternalSourceError(f"{what}: an amount is not exact to the fen: {exc}") from None


def _ts_array(values) -> pa.Array:
    """Local timestamps. Fast path: ISO text (SQLite) or naive datetimes, converted in C."""
    try:
        arr = _as_arrow(values)
        if pa.types.is_string(arr.type):
            return pc.cast(arr, pa.timestamp("us"))
        if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
            return pc.cast(arr, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        pass
    return _ts_array_slow(_pylist(values))


def _ts_array_slow(values: list) -> pa.Array:
    out = []
    for v in values:
        if isinstance(v, str):
            v = datetime.fromisoformat(v)
        out.append(v)
    return pa.array(out, pa.timestamp("us"))


class _Rows:
    """One chunk of query results, column-wise (``zip(*rows)`` runs in C)."""

    def __init__(self, names, rows: list):
        self.index = {n: i for i, n in enumerate(names)}
        self.n = len(rows)
        self.cols = list(zip(*rows)) if rows else [() for _ in self.index]

    def __len__(self) -> int:
        return self.n

    def column(self, name: str):
        return self.cols[self.index[name]]


def _params(engine: sa.Engine, start: datetime, end: datetime) -> dict:
    if engine.dialect.name == "sqlite":
        # SQLite keeps times as text; bind text of the same shape so '… 00:00:00' < end compares right.
        return {"start": start.strftime("%Y-%m-%d %H:%M:%S"), "end": end.strftime("%Y-%m-%d %H:%M:%S")}
    return {"start": start, "end": end}


def _read(engine: sa.Engine, name: str, sql: str, start: datetime, end: datetime, chunk: int):
    """Yield the query's rows chunk by chunk (as :class:`_Rows`), through the DBAPI cursor."""
    params = _params(engine, start, end)
    if engine.dialect.name == "sqlite":
        yield from _read_sqlite(engine, name, sql, params, chunk)
        return
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(sa.text(sql), params)
            names = list(result.keys())
            while True:
                rows = result.fetchmany(chunk)
                if not rows:
                    break
                yield _Rows(names, rows)
    except sa.exc.SQLAlchemyError as exc:
        msg = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        raise InternalSourceError(f"internal source query {name!r} failed: {msg}") from None


def _read_sqlite(engine: sa.Engine, name: str, sql: str, params: dict, chunk: int):
    """SQLite fast path: the DBAPI cursor directly (tuples, no SQLAlchemy row objects), same query text.

    The statement is compiled by SQLAlchemy (so ``:start``/``:end`` bind exactly as through ``sa.text``).
    """
    import sqlite3
    compiled = sa.text(sql).compile(dialect=engine.dialect)
    values = compiled.construct_params(params)
    args = [values[k] for k in compiled.positiontup] if compiled.positional else values
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(str(compiled), args)
        names = [d[0] for d in cur.description]
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                break
            yield _Rows(names, rows)
        cur.close()
    except sqlite3.Error as exc:
        raise InternalSourceError(f"internal source query {name!r} failed: {str(exc).splitlines()[0]}") from None
    finally:
        raw.close()


def _column(rows: _Rows, name: str, query: str):
    try:
        return rows.column(name)
    except KeyError:
        raise InternalSourceError(f"internal source query {query!r} must return column {name!r}") from None


def _text(values) -> pa.Array:
    """``str(v)`` of every value; in C when they are already text."""
    try:
        arr = _as_arrow(values)
        if pa.types.is_string(arr.type) and arr.null_count == 0:
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    return pa.array([str(v) for v in _pylist(values)], pa.string())


def _str(values) -> pa.Array:
    """Text as it is, NULLs kept (identifiers, currencies, channel names)."""
    if isinstance(values, pa.Array):
        return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    return pa.array(values, pa.string())


def _status(values) -> pa.Array:
    """``str(s).lower()`` of every status; in C when they are text."""
    arr = _text(values)
    return pc.utf8_lower(arr)


# The columns each query must return; the first is the row's key in error messages.
COLUMNS = {
    "orders": ["order_no", "channel", "channel_txn_id", "merchant_id", "amount", "currency", "status", "paid_at"],
    "refunds": ["refund_no", "order_no", "channel", "channel_refund_id", "merchant_id", "amount", "currency",
                "status", "refunded_at"],
    "expected_funds": ["movement_id", "channel", "order_no", "refund_no", "direction", "amount", "currency",
                       "expected_at"],
}
SOURCE_TABLE = {"orders": "payment_orders", "refunds": "refund_orders", "expected_funds": "expected_fund_movements"}


ORDERS_COLUMNS = ["source_key", "source_table", "order_type", "order_no", "refund_no", "channel", "channel_txn_id",
                  "merchant_id", "amount", "currency", "status", "event_time"]
FUNDS_COLUMNS = ["source_key", "source_table", "channel", "order_no", "refund_no", "direction", "amount", "currency",
                 "expected_at"]


@dataclass(frozen=True)
class StagedPlatform:
    """The day's platform rows read into Parquet files under ``folder``, ready to load."""

    folder: Path
    counts: dict[str, int]

    def files(self, target: str) -> list[str]:
        return sorted(str(f) for f in self.folder.glob(f"{target}.*.parquet"))


def load_platform(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date) -> dict[str, int]:
    """Replace the day's platform_orders and platform_expected_funds; returns row counts."""
    with tempfile.TemporaryDirectory(prefix=".platform-", dir=staging_parent(cfg)) as folder:
        return load_staged(con, read_platform(cfg, business_date, Path(folder)), business_date)


def staging_parent(cfg: Config) -> Path:
    """Where the platform rows are staged: beside the warehouse (same disk, same permissions)."""
    parent = Path(cfg.warehouse).parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def read_platform(cfg: Config, business_date: date, folder: Path) -> StagedPlatform:
    """Read the day's platform rows into Parquet files in ``folder`` (no warehouse involved).

    Runs in a thread of its own beside the statement loading (:func:`recon.pipeline.process_day`):
    the database read (ADBC), the conversions and the Parquet writes all run in C++, outside the GIL.
    """
    engine = engine_for(cfg)
    try:
        counts = {name: _stage_query(engine, cfg, name, business_date, folder) for name in COLUMNS}
    finally:
        engine.dispose()
    return StagedPlatform(folder, counts)


def load_staged(con: duckdb.DuckDBPyConnection, staged: StagedPlatform, business_date: date) -> dict[str, int]:
    """Replace the day's platform rows with the staged ones (inside the caller's transaction)."""
    con.execute("DELETE FROM platform_orders WHERE business_date = ?", [business_date])
    con.execute("DELETE FROM platform_expected_funds WHERE business_date = ?", [business_date])
    for table, cols in (("platform_orders", ORDERS_COLUMNS), ("platform_expected_funds", FUNDS_COLUMNS)):
        files = staged.files(table)
        if files:
            names = ", ".join(cols)
            con.execute(f"INSERT INTO {table} (business_date, {names}) SELECT ?, {names} FROM read_parquet(?)",
                        [business_date, files])
    bad = con.execute(
        "SELECT source_table, source_key, status FROM platform_orders WHERE business_date = ? AND status NOT IN "
        "('success', 'pending', 'failed', 'closed') LIMIT 1", [business_date]).fetchone()
    if bad:
        raise InternalSourceError(f"{bad[0]} {bad[1]}: unknown status {bad[2]!r} "
                                  "(expected success, pending, failed or closed)")
    return dict(staged.counts)


def _stage_query(engine: sa.Engine, cfg: Config, name: str, d: date, folder: Path) -> int:
    """Write one query's rows to ``<target>.<name>.parquet``: Arrow batches when the driver allows, else DBAPI."""
    src = cfg.internal_source
    start, end = day_window(d)
    target = "platform_expected_funds" if name == "expected_funds" else "platform_orders"
    path = folder / f"{target}.{name}.parquet"
    if internal_arrow.supports(engine):
        batches = internal_arrow.read_batches(engine, src.queries[name], _params(engine, start, end),
                                              COLUMNS[name], "amount", src.chunk_rows)
        try:
            return _write(path, name, batches)
        except internal_arrow.driver_errors():
            path.unlink(missing_ok=True)  # read it again row by row: that path names the query, column or value
    return _write(path, name, _read(engine, name, src.queries[name], start, end, src.chunk_rows))


#: Staging columns with few distinct values, dictionary-encoded in the Parquet files. The others (order and
#: transaction numbers, keys, amounts, times) are nearly all distinct: trying a dictionary on them first
#: cost more than it saved (10M orders: 9.9 -> 5.5 CPU-s to write, 11.8 -> 9.8 to load, files 457 -> 408 MB).
DICTIONARY_COLUMNS = ["source_table", "order_type", "channel", "merchant_id", "currency", "status", "direction"]


def _write(path: Path, name: str, chunks) -> int:
    """Convert each chunk column-wise and append it to the Parquet file at ``path`` (replaced)."""
    n, writer = 0, None
    try:
        for rows in chunks:
            table = _convert(name, rows)
            if writer is None:
                dictionary = [c for c in DICTIONARY_COLUMNS if c in table.schema.names]
                writer = pq.ParquetWriter(path, table.schema, compression="lz4", use_dictionary=dictionary)
            writer.write_table(table)
            n += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return n


def _refuse_floats(rows, name: str) -> None:
    mask = rows.float_amounts() if isinstance(rows, internal_arrow.Batch) else None
    if mask is not None and pc.any(mask).as_py():
        i = pc.index(mask, True).as_py()
        key, value = rows.column(COLUMNS[name][0])[i].as_py(), rows.column("amount")[i].as_py()
        raise InternalSourceError(f"{SOURCE_TABLE[name]}: amount for {key!r} came back as a float ({value}); "
                                  "store money as DECIMAL, integer fen or text")


def _convert(name: str, rows) -> pa.Table:
    """One chunk as the warehouse's columns (:data:`ORDERS_COLUMNS` or :data:`FUNDS_COLUMNS`)."""
    _refuse_floats(rows, name)
    table = SOURCE_TABLE[name]
    keys = _column(rows, COLUMNS[name][0], name)
    col = lambda c: _column(rows, c, name)  # noqa: E731
    n = len(rows)
    if name == "expected_funds":
        return pa.table({
            "source_key": _text(keys),
            "source_table": pa.repeat(pa.scalar(table), n),
            **{c: _str(col(c)) for c in ("channel", "order_no", "refund_no", "direction")},
            "amount": _money_array(col("amount"), table, keys),
            "currency": _str(col("currency")),
            "expected_at": _ts_array(col("expected_at")),
        })
    payment = name == "orders"
    return pa.table({
        "source_key": _text(keys),
        "source_table": pa.repeat(pa.scalar(table), n),
        "order_type": pa.repeat(pa.scalar("payment" if payment else "refund"), n),
        "order_no": _text(col("order_no")),
        "refund_no": pa.nulls(n, pa.string()) if payment else _str(keys),
        "channel": _str(col("channel")),
        "channel_txn_id": _str(col("channel_txn_id" if payment else "channel_refund_id")),
        "merchant_id": _str(col("merchant_id")),
        "amount": _money_array(col("amount"), table, keys),
        "currency": _str(col("currency")),
        "status": _status(col("status")),
        "event_time": _ts_array(col("paid_at" if payment else "refunded_at")),
    })
