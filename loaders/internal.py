"""The platform's own records, read from its database with SQLAlchemy.

Reading is column-wise: each chunk of rows becomes Arrow arrays converted in C
(text, exact decimals, timestamps); values of other shapes take the value-by-value
path with its precise errors. For ``sqlite://`` URLs the DBAPI cursor is used
directly (SQLAlchemy compiles the query; no row objects are built).

The queries (``InternalSource.queries``) take ``:start`` and ``:end``, the
business day in the platform time zone as naive local timestamps. Rows are
streamed in chunks into Arrow and inserted into DuckDB, replacing that day's
platform rows (inside the caller's transaction).

Money must arrive exact: DECIMAL columns (returned as ``Decimal``), integers or
text. A float from the database is refused with the table and key named; a
float cannot be trusted to the fen.
"""
from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from recon.config import Config
from recon.errors import UserError
from recon.warehouse import arrow_view

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


def _money_array(values, what: str, keys) -> pa.Array:
    """Exact amounts as DECIMAL(18,2). Fast path: one Arrow array of text, integers or decimals, cast in C."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        arr = None                        # mixed types: value by value below, with the offending key named
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_integer(arr.type)
                            or pa.types.is_decimal(arr.type) or pa.types.is_null(arr.type)):
        try:
            return pc.cast(arr, MONEY)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass                          # not exact to the fen (or out of range): the slow path says which
    return _money_array_slow(list(values), what, list(keys))


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
        arr = pa.array(values)
        if pa.types.is_string(arr.type):
            return pc.cast(arr, pa.timestamp("us"))
        if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
            return pc.cast(arr, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        pass
    return _ts_array_slow(list(values))


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


def _read(engine: sa.Engine, name: str, sql: str, start: datetime, end: datetime, chunk: int):
    """Yield the query's rows chunk by chunk (as :class:`_Rows`)."""
    params: dict = {"start": start, "end": end}
    if engine.dialect.name == "sqlite":
        # SQLite keeps times as text; bind text of the same shape so '… 00:00:00' < end compares right.
        params = {k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in params.items()}
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
        arr = pa.array(values)
        if pa.types.is_string(arr.type) and arr.null_count == 0:
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    return pa.array([str(v) for v in values], pa.string())


def _status(values) -> pa.Array:
    """``str(s).lower()`` of every status; in C when they are text."""
    arr = _text(values)
    return pc.utf8_lower(arr)


def load_platform(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date) -> dict[str, int]:
    """Replace the day's platform_orders and platform_expected_funds; returns row counts."""
    src, engine = cfg.internal_source, engine_for(cfg)
    start, end = day_window(business_date)
    con.execute("DELETE FROM platform_orders WHERE business_date = ?", [business_date])
    con.execute("DELETE FROM platform_expected_funds WHERE business_date = ?", [business_date])
    counts = {"orders": 0, "refunds": 0, "expected_funds": 0}
    for name in ("orders", "refunds"):
        table = "payment_orders" if name == "orders" else "refund_orders"
        for rows in _read(engine, name, src.queries[name], start, end, src.chunk_rows):
            keyname = "order_no" if name == "orders" else "refund_no"
            keys = _column(rows, keyname, name)
            arrow = pa.table({
                "source_key": _text(keys),
                "order_no": _text(_column(rows, "order_no", name)),
                "refund_no": pa.array(keys if name == "refunds" else [None] * len(rows), pa.string()),
                "channel": pa.array(_column(rows, "channel", name), pa.string()),
                "channel_txn_id": pa.array(_column(rows, "channel_txn_id" if name == "orders"
                                                   else "channel_refund_id", name), pa.string()),
                "merchant_id": pa.array(_column(rows, "merchant_id", name), pa.string()),
                "amount": _money_array(_column(rows, "amount", name), table, keys),
                "currency": pa.array(_column(rows, "currency", name), pa.string()),
                "status": _status(_column(rows, "status", name)),
                "event_time": _ts_array(_column(rows, "paid_at" if name == "orders" else "refunded_at", name)),
            })
            with arrow_view(con, "_platform_rows", arrow):
                con.execute(
                    "INSERT INTO platform_orders SELECT ?, ?, source_key, ?, order_no, refund_no, channel, "
                    "channel_txn_id, merchant_id, amount, currency, status, event_time FROM _platform_rows",
                    [business_date, table, "payment" if name == "orders" else "refund"])
            counts[name] += len(rows)
    for rows in _read(engine, "expected_funds", src.queries["expected_funds"], start, end, src.chunk_rows):
        keys = _column(rows, "movement_id", "expected_funds")
        arrow = pa.table({
            "source_key": _text(keys),
            "channel": pa.array(_column(rows, "channel", "expected_funds"), pa.string()),
            "order_no": pa.array(_column(rows, "order_no", "expected_funds"), pa.string()),
            "refund_no": pa.array(_column(rows, "refund_no", "expected_funds"), pa.string()),
            "direction": pa.array(_column(rows, "direction", "expected_funds"), pa.string()),
            "amount": _money_array(_column(rows, "amount", "expected_funds"), "expected_fund_movements", keys),
            "currency": pa.array(_column(rows, "currency", "expected_funds"), pa.string()),
            "expected_at": _ts_array(_column(rows, "expected_at", "expected_funds")),
        })
        with arrow_view(con, "_platform_rows", arrow):
            con.execute(
                "INSERT INTO platform_expected_funds SELECT ?, 'expected_fund_movements', source_key, channel, "
                "order_no, refund_no, direction, amount, currency, expected_at FROM _platform_rows", [business_date])
        counts["expected_funds"] += len(rows)
    bad = con.execute(
        "SELECT source_table, source_key, status FROM platform_orders WHERE business_date = ? AND status NOT IN "
        "('success', 'pending', 'failed', 'closed') LIMIT 1", [business_date]).fetchone()
    if bad:
        raise InternalSourceError(f"{bad[0]} {bad[1]}: unknown status {bad[2]!r} "
                                  "(expected success, pending, failed or closed)")
    return counts
