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


def write_demo_config(out: Path, **overrides) -> Path:
    """A copy of ``sample_files/recon.yml`` writing into ``out`` (statement paths point at the samples).

    Builds the platform database ``out/platform.db`` if it is not there yet; returns the config's path.
    """
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((SAMPLES / "recon.yml").read_text(encoding="utf-8"))
    for channel in raw["channels"]:
        for st in channel["statements"]:
            st["source"]["path"] = str(SAMPLES / st["source"]["path"])
    url = f"sqlite:///{out / 'platform.db'}"
    if not (out / "platform.db").exists():
        build_platform_db(url)
    raw.update({"warehouse": str(out / "warehouse.duckdb"), "output_dir": str(out),
                "landing_dir": str(out / "landing"), "internal_source": {"url": url}, **overrides})
    path = out / "recon.yml"
    path.write_text("# Written by `recon demo` from sample_files/recon.yml\n"
                    + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
