"""Arrow-native reading of the platform database (ADBC), for SQLite files and PostgreSQL.

Row-by-row DBAPI cursors build a Python object per value; at ten million orders a
day that was most of the platform read (146 s of 20M rows). The ADBC drivers hand
the results over as Arrow record batches built in C, and :mod:`loaders.internal`
converts them column-wise with the same exactness checks as before.

The query text is the configured one, compiled by SQLAlchemy for the driver's
parameter style, so ``:start``/``:end`` bind exactly as on the DBAPI path.

SQLite needs two precautions. Its columns have no fixed type, and the ADBC driver
infers each column's Arrow type from the first rows (a column that starts with
NULLs is taken as an integer and the first text value then fails). So the query
is wrapped: every needed column is cast to TEXT, a first sentinel row of text
fixes every column's type (it is dropped again), and ``typeof(amount) = 'real'``
travels beside the amount, because a float cast to text would otherwise pass as
an exact amount. Anything the driver still cannot read raises
:class:`ArrowReadUnavailable`, and the caller reads that query the DBAPI way.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

FLOAT_FLAG = "_amount_is_float"
_SENTINEL = "_sentinel"


class ArrowReadUnavailable(Exception):
    """This source or query cannot be read through ADBC; use the DBAPI path."""


class Batch:
    """One record batch of query results, with the interface of the DBAPI chunks."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch

    def __len__(self) -> int:
        return self.batch.num_rows

    def column(self, name: str) -> pa.Array:
        arr = self.batch.column(name)  # KeyError when missing, like the DBAPI chunks
        return arr.storage if isinstance(arr, pa.ExtensionArray) else arr  # PostgreSQL NUMERIC: text

    def float_amounts(self) -> pa.Array | None:
        """Mask of amounts the database holds as floats (SQLite only; None elsewhere)."""
        if FLOAT_FLAG not in self.batch.schema.names:
            return None
        return pc.equal(self.batch.column(FLOAT_FLAG), 1)


def supports(engine: sa.Engine) -> bool:
    """True when an ADBC driver for this database is installed and the source is a file or server."""
    try:
        if engine.dialect.name == "sqlite":
            import adbc_driver_sqlite.dbapi  # noqa: F401
            db = engine.url.database
            return bool(db) and db != ":memory:" and not db.startswith("file:") and Path(db).is_file()
        if engine.dialect.name == "postgresql":
            import adbc_driver_postgresql.dbapi  # noqa: F401
            return True
    except ImportError:
        return False
    return False


def read_batches(engine: sa.Engine, sql: str, params: dict, columns: list[str], amount: str | None,
                 batch_rows: int) -> Iterator[Batch]:
    """Yield the query's rows as Arrow batches; driver errors are raised as they come.

    The driver reads ahead in a thread of its own (at most two batches ahead), so the
    database read and the caller's conversion and insert use both cores.
    """
    if engine.dialect.name == "sqlite":
        source = _sqlite(engine, sql, params, columns, amount, batch_rows)
    else:
        source = _postgresql(engine, sql, params, batch_rows)
    return _read_ahead(source, depth=2)


_DONE = object()


def _read_ahead(source: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``source`` in a thread, ``depth`` items ahead of the consumer; its error is raised here."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        """Hand ``item`` over unless the consumer has gone away (never blocks for good)."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised in its thread
            put(exc)
        finally:
            source.close()

    worker = threading.Thread(target=produce, name="platform-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def driver_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failing ADBC query raises (a query error, or a type the driver cannot read)."""
    errors: list[type[BaseException]] = [OSError, pa.ArrowException]
    try:
        from adbc_driver_manager import Error
        errors.append(Error)
    except ImportError:
        pass
    return tuple(errors)


def _compiled(sql: str, dialect, params: dict) -> tuple[str, list]:
    compiled = sa.text(sql).compile(dialect=dialect)
    values = compiled.construct_params(params)
    return str(compiled), [values[k] for k in compiled.positiontup]


def _sqlite(engine, sql, params, columns, amount, batch_rows):
    import adbc_driver_sqlite.dbapi as adbc

    text, args = _compiled(sql, engine.dialect, params)
    first = [f"1 AS {_SENTINEL}"] + [f"'' AS {c}" for c in columns]
    rest = ["0"] + [f"CAST({c} AS TEXT)" for c in columns]
    if amount:
        first.append(f"0 AS {FLOAT_FLAG}")
        rest.append(f"typeof({amount}) = 'real'")
    wrapped = f"SELECT {', '.join(first)} UNION ALL SELECT {', '.join(rest)} FROM ({text})"
    with adbc.connect(engine.url.database) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        cur.execute(wrapped, args)
        for batch in cur.fetch_record_batch():
            keep = pc.equal(batch.column(_SENTINEL), 0)
            batch = batch.filter(keep).drop_columns([_SENTINEL])
            if batch.num_rows:
                yield Batch(batch)


def _postgresql(engine, sql, params, batch_rows):
    import adbc_driver_postgresql.dbapi as adbc
    from sqlalchemy.dialects import postgresql

    text, args = _compiled(sql, postgresql.dialect(paramstyle="numeric_dollar"), params)
    uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_rows * 128)})
        cur.execute(text, args)
        for batch in cur.fetch_record_batch():
            if batch.num_rows:
                yield Batch(batch)
