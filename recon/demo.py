"""The bundled demo: build the platform's SQLite database from ``sample_files/platform/*.csv``.

Amounts are stored as TEXT so they stay exact in SQLite (whose NUMERIC
affinity would turn them into floats).
"""
from __future__ import annotations

import csv
from pathlib import Path

import sqlalchemy as sa

SAMPLES = Path(__file__).resolve().parent.parent / "sample_files"
TABLES = ("payment_orders", "refund_orders", "expected_fund_movements")


def _column_type(name: str, money_type: str, time_type: str) -> str:
    if name == "amount":
        return money_type
    if name.endswith("_at"):
        return time_type
    return "VARCHAR(64)"


def build_platform_db(url: str, source_dir: Path = SAMPLES / "platform", *, money_type: str = "TEXT",
                      time_type: str = "TEXT") -> dict[str, int]:
    """(Re)create the platform tables at ``url`` from the CSV files; returns row counts.

    SQLite keeps the defaults (TEXT); PostgreSQL and MariaDB take ``NUMERIC(18,2)`` and ``TIMESTAMP``.
    """
    engine = sa.create_engine(url)
    counts = {}
    with engine.begin() as conn:
        for table in TABLES:
            with open(source_dir / f"{table}.csv", newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cols = reader.fieldnames or []
                rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            ddl = ", ".join(f"{c} {_column_type(c, money_type, time_type)}" for c in cols)
            conn.execute(sa.text(f"CREATE TABLE {table} ({ddl})"))
            if rows:
                conn.execute(sa.text(f"INSERT INTO {table} VALUES ({', '.join(':' + c for c in cols)})"), rows)
            counts[table] = len(rows)
    engine.dispose()
    return counts
