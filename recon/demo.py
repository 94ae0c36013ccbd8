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


def build_platform_db(url: str, source_dir: Path = SAMPLES / "platform") -> dict[str, int]:
    """(Re)create the platform tables at ``url`` from the CSV files; returns row counts."""
    engine = sa.create_engine(url)
    counts = {}
    with engine.begin() as conn:
        for table in TABLES:
            with open(source_dir / f"{table}.csv", newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cols = reader.fieldnames or []
                rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text(f"CREATE TABLE {table} ({', '.join(f'{c} TEXT' for c in cols)})"))
            if rows:
                conn.execute(sa.text(f"INSERT INTO {table} VALUES ({', '.join(':' + c for c in cols)})"), rows)
            counts[table] = len(rows)
    engine.dispose()
    return counts
