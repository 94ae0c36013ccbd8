"""The platform's records read through SQLAlchemy from SQLite, PostgreSQL and MariaDB, exactly."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

import loaders.internal
from loaders.internal import InternalSourceError, load_platform
from recon.demo import build_platform_db
from recon.warehouse import connect, transaction
from tests.conftest import DEMO_DATE, demo_config

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"


def reachable(url: str) -> bool:
    try:
        with sa.create_engine(url).connect() as c:
            c.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


def platform_rows(cfg):
    con = connect(cfg.warehouse)
    with transaction(con):
        counts = load_platform(con, cfg, DEMO_DATE)
    rows = con.execute("SELECT order_type, order_no, refund_no, channel, merchant_id, amount, currency, status, "
                       "event_time FROM platform_orders ORDER BY ALL").fetchall()
    funds = con.execute("SELECT channel, order_no, refund_no, direction, amount FROM platform_expected_funds "
                        "ORDER BY ALL").fetchall()
    con.close()
    return counts, rows, funds


def arrow_only(monkeypatch):
    """Make the row-by-row DBAPI path fail, so a passing read proves the Arrow (ADBC) path did it all."""
    def no_dbapi(*a, **k):
        raise AssertionError("read through the DBAPI cursor, not through ADBC")
        yield  # pragma: no cover
    monkeypatch.setattr(loaders.internal, "_read", no_dbapi)


def dbapi_only(monkeypatch):
    monkeypatch.setattr(loaders.internal.internal_arrow, "supports", lambda engine: False)


@pytest.fixture
def sqlite_reference(tmp_path):
    return platform_rows(demo_config(tmp_path / "sqlite"))


def test_sqlite_gives_the_sample_rows_exactly(sqlite_reference):
    counts, rows, funds = sqlite_reference
    assert counts == {"orders": 12, "refunds": 2, "expected_funds": 12}
    assert sum(r[5] for r in rows if r[0] == "payment") == Decimal("1834.90")
    assert all(isinstance(r[5], Decimal) for r in rows)


@pytest.mark.parametrize("url", [PG, MARIADB], ids=["postgresql", "mariadb"])
def test_server_databases_give_the_same_rows_as_sqlite(tmp_path, url, sqlite_reference, monkeypatch):
    if url == PG:
        arrow_only(monkeypatch)  # PostgreSQL is read through ADBC; MariaDB through the DBAPI cursor
    if not reachable(url):
        pytest.fail(f"{url.split('@')[1]} is not reachable: .ci/run starts it; start it by hand otherwise")
    schema = "recon_test_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(url)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}" if url == PG else f"CREATE DATABASE {schema}"))
    try:
        db_url = (url + f"?options=-csearch_path%3D{schema}") if url == PG else url.rsplit("/", 1)[0] + f"/{schema}"
        build_platform_db(db_url, money_type="NUMERIC(18,2)", time_type="TIMESTAMP")
        cfg = demo_config(tmp_path / "server", internal_source={"url": db_url})
        assert platform_rows(cfg) == sqlite_reference
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE" if url == PG else f"DROP DATABASE {schema}"))
        admin.dispose()


@pytest.mark.parametrize("path", ["arrow", "dbapi"])
def test_money_that_arrives_as_a_float_is_refused_with_the_key(tmp_path, monkeypatch, path):
    arrow_only(monkeypatch) if path == "arrow" else dbapi_only(monkeypatch)
    url = f"sqlite:///{tmp_path / 'float.db'}"
    build_platform_db(url, money_type="REAL")
    cfg = demo_config(tmp_path, internal_source={"url": url})
    with pytest.raises(InternalSourceError, match=r"payment_orders: amount for 'P001' came back as a float"):
        platform_rows(cfg)


def test_sqlite_columns_of_mixed_storage_read_the_same_through_arrow_and_dbapi(tmp_path, monkeypatch):
    """SQLite columns have no fixed type: NULLs first, integers among text, many small batches."""
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    build_platform_db(url)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE payment_orders SET channel_txn_id = NULL WHERE rowid <= 5"))
        c.execute(sa.text("UPDATE payment_orders SET order_no = 700 + rowid, amount = 10 WHERE rowid > 10"))
    engine.dispose()
    cfg = demo_config(tmp_path / "w", internal_source={"url": url, "chunk_rows": 3})
    dbapi_only(monkeypatch)
    reference = platform_rows(cfg)
    monkeypatch.undo()
    arrow_only(monkeypatch)
    cfg = demo_config(tmp_path / "a", internal_source={"url": url, "chunk_rows": 3})
    counts, rows, funds = platform_rows(cfg)
    assert (counts, rows, funds) == reference
    assert sum(1 for r in rows if r[1] in ("711", "712")) == 2        # integer order numbers arrive as text
    assert Decimal("10.00") in {r[5] for r in rows if r[1] == "711"}   # an integer amount is exact


def test_a_broken_query_is_a_clear_error(tmp_path):
    cfg = demo_config(tmp_path, internal_source={
        "url": f"sqlite:///{tmp_path / 'platform.db'}", "queries": {"orders": "SELECT nope FROM payment_orders"}})
    with pytest.raises(InternalSourceError, match="internal source query 'orders' failed: no such column: nope"):
        platform_rows(cfg)


def test_staging_files_use_a_dictionary_only_for_the_few_valued_columns(tmp_path):
    """Order numbers and keys are nearly all distinct: a dictionary for them costs time and saves nothing."""
    import pyarrow.parquet as pq

    from loaders.internal import DICTIONARY_COLUMNS, read_platform

    cfg = demo_config(tmp_path / "sqlite")
    staged = read_platform(cfg, DEMO_DATE, tmp_path)
    files = staged.files("platform_orders") + staged.files("platform_expected_funds")
    assert len(files) == 3
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for i in range(meta.num_columns):
            col = meta.row_group(0).column(i)
            dictionary = any("DICTIONARY" in e for e in col.encodings)
            assert dictionary == (col.path_in_schema in DICTIONARY_COLUMNS), (f, col.path_in_schema, col.encodings)
