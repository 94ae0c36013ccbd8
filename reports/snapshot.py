"""The read-only snapshot analysts query, published after each successful run.

The live warehouse file belongs to the nightly pipeline alone: DuckDB lets one
process write a file and nobody else open it meanwhile, and a half-written day
must never be visible. So after a run commits, the pipeline publishes into
``cfg.snapshot_path`` (``snapshot_dir``, default ``<output_dir>/snapshot``):

``recon.duckdb``
    a consistent copy of the whole warehouse (every table, plus the analyst views
    of :mod:`recon.views` and a one-row ``snapshot_info`` table), made with
    ``ATTACH`` + ``COPY FROM DATABASE`` on a separate connection of the pipeline's
    database instance, so it contains committed data only, even while the pipeline
    has a transaction open. It is written under a temporary name and renamed over
    the previous snapshot in one step: a reader sees the old copy or the new one.
``parquet/discrepancies/business_date=YYYY-MM-DD/channel=NAME/data_0.parquet``
    every break (all days; statuses change over time, so it is rewritten whole).
``parquet/channel_transactions/business_date=YYYY-MM-DD/channel=NAME/data_0.parquet``
    the published day's statement rows (one business date per publish).
``manifest.json``
    what was published, when, and the row counts.

Each Parquet file is replaced atomically; for a view that is consistent across
tables, use ``recon.duckdb``.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from recon.views import create_views
from recon.warehouse import WarehouseError

SNAPSHOT_DB = "recon.duckdb"
PARQUET_DIR = "parquet"
MANIFEST = "manifest.json"


def snapshot_db_path(cfg: Any) -> Path:
    return Path(cfg.snapshot_path) / SNAPSHOT_DB


def publish_snapshot(cfg: Any, business_date: date, *, con: duckdb.DuckDBPyConnection | None = None,
                     transactions: bool = True) -> Path:
    """Publish the analyst snapshot; returns the path of the snapshot DuckDB file.

    Pass the pipeline's open writer connection ``con``
    (any state: only committed data is copied, through ``con.cursor()``); without it the
    warehouse is opened read-only, which fails while another process holds it. Call it after
    the day's transaction has committed, or the snapshot holds the previous day only.
    """
    snap_dir = Path(cfg.snapshot_path)
    snap_dir.mkdir(parents=True, exist_ok=True)
    final = snap_dir / SNAPSHOT_DB
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    tmp = snap_dir / f".{SNAPSHOT_DB}.{tag}.tmp"
    staging = snap_dir / f".{PARQUET_DIR}.{tag}.tmp"
    own = con is None
    if own:
        con = _open_read_only(cfg.warehouse)
    cur = con.cursor()  # a separate connection of the same database: committed data only
    alias = f"recon_snapshot_{tag}"
    attached = False
    try:
        src = con.execute("SELECT current_database()").fetchone()[0]
        cur.execute(f"USE {_ident(src)}")  # a cursor starts in the instance's default catalog
        cur.execute(f"ATTACH '{_sql_str(tmp)}' AS {alias}")
        attached = True
        cur.execute("BEGIN TRANSACTION")
        # One transaction: the database copy and the Parquet files read the same committed state.
        cur.execute(f"COPY FROM DATABASE {_ident(src)} TO {alias}")
        counts = {t: cur.execute(f'SELECT count(*) FROM {alias}.main."{t}"').fetchone()[0]
                  for (t,) in cur.execute(
                      "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                      "AND table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY 1", [alias]).fetchall()}
        published_at = datetime.now(timezone.utc).replace(microsecond=0)
        last_run = cur.execute(
            "SELECT max(business_date) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        cur.execute(f"USE {alias}")
        create_views(cur)
        cur.execute("CREATE OR REPLACE TABLE snapshot_info (published_at TIMESTAMPTZ, business_date DATE, "
                    "last_succeeded_date DATE, source_warehouse VARCHAR)")
        cur.execute("INSERT INTO snapshot_info VALUES (?, ?, ?, ?)",
                    [published_at, business_date, last_run, str(cfg.warehouse)])
        cur.execute(f"USE {_ident(src)}")
        staging.mkdir()
        cur.execute(f"COPY (SELECT * FROM discrepancies) TO '{_sql_str(staging / 'discrepancies')}' "
                    "(FORMAT parquet, PARTITION_BY (business_date, channel))")
        if transactions:
            cur.execute("COPY (SELECT * FROM channel_transactions WHERE business_date = ?) "
                        f"TO '{_sql_str(staging / 'channel_transactions')}' "
                        "(FORMAT parquet, PARTITION_BY (business_date, channel))", [business_date])
        cur.execute("COMMIT")
        cur.execute(f"DETACH {alias}")
        attached = False
        os.replace(tmp, final)
        _sync_tree(staging / "discrepancies", snap_dir / PARQUET_DIR / "discrepancies", prefix=None)
        if transactions:
            _sync_tree(staging / "channel_transactions", snap_dir / PARQUET_DIR / "channel_transactions",
                       prefix=f"business_date={business_date.isoformat()}")
        manifest = {
            "business_date": business_date.isoformat(),
            "published_at": published_at.isoformat(),
            "last_succeeded_date": last_run.isoformat() if last_run else None,
            "database": SNAPSHOT_DB,
            "row_counts": counts,
            "parquet": {"discrepancies": f"{PARQUET_DIR}/discrepancies/business_date=*/channel=*/*.parquet",
                        "channel_transactions":
                            f"{PARQUET_DIR}/channel_transactions/business_date=*/channel=*/*.parquet"},
        }
        mtmp = snap_dir / f".{MANIFEST}.{tag}.tmp"
        mtmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(mtmp, snap_dir / MANIFEST)
    except BaseException:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        if attached:
            try:
                cur.execute(f"USE {_ident(src)}")
                cur.execute(f"DETACH {alias}")
            except duckdb.Error:
                pass
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        cur.close()
        if own:
            con.close()
    return final


def _open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory database with the warehouse attached read-only as the default catalog (a
    read-only *instance* could not attach the new snapshot file for writing)."""
    if not Path(path).exists():
        raise WarehouseError(f"warehouse {path} does not exist yet: run `recon run` first")
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{_sql_str(Path(path))}' AS recon_live (READ_ONLY)")
    except duckdb.Error as exc:
        con.close()
        raise WarehouseError(f"cannot open warehouse {path} read-only: {exc}") from None
    con.execute("USE recon_live")
    return con


def _sync_tree(new: Path, target: Path, prefix: str | None) -> None:
    """Move the files of ``new`` into ``target`` one atomic rename at a time, then drop files of
    ``target`` (under ``prefix`` when given) that the new tree no longer has."""
    fresh: set[Path] = set()
    if new.exists():
        for f in sorted(new.rglob("*.parquet")):
            rel = f.relative_to(new)
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
            fresh.add(dest)
    scope = target / prefix if prefix else target
    if scope.exists():
        for f in scope.rglob("*.parquet"):
            if f not in fresh:
                f.unlink()
        for d in sorted((p for p in scope.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                d.rmdir()


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
