"""Scale-out on one machine: a channel's day reconciled in key-hash buckets (each bucket on its own read-only
connection, in its own process, writing Parquet), merged, gives exactly the unsplit run's rows. Plus the
business-date rule of the DAG. No Airflow needed here."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pytest

from recon.config import load_config
from recon.buckets import BucketError, merge_buckets, reconcile_bucket
from recon.orchestration import business_date_of
from recon.pipeline import fetch_day, process_day
from recon.warehouse import connect
from tests.conftest import DEMO_DATE, write_demo_config

BREAK_COLUMNS = "* EXCLUDE (resolved_at)"          # every column but a wall-clock timestamp
AUDIT_COLUMNS = "discrepancy_id, recorded_by, action, note, old_status, new_status, business_date, file_id, origin"


def rows(con, table: str, columns: str = "*") -> list[tuple]:
    return sorted(con.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)


def _bucket(args):
    config, channel, b, n, out = args
    return reconcile_bucket(load_config(config), DEMO_DATE, channel, b, n, Path(out))


def reconciliation(con) -> tuple:
    return (rows(con, "discrepancies", BREAK_COLUMNS), rows(con, "matched_transactions"),
            rows(con, "discrepancy_resolutions", AUDIT_COLUMNS))


@pytest.mark.parametrize("buckets", [1, 4])
def test_bucketed_reconciliation_equals_the_unsplit_run(tmp_path, buckets):
    config = write_demo_config(tmp_path / "split")
    cfg = load_config(config)
    process_day(cfg, DEMO_DATE, fetch_day(cfg, DEMO_DATE))   # loads the day and reconciles it unsplit ...
    con = connect(cfg.warehouse)
    unsplit = reconciliation(con)
    assert unsplit[0] and unsplit[1]
    con.execute("DELETE FROM discrepancies")     # ... then forget the reconciliation: buckets must redo it
    con.execute("DELETE FROM matched_transactions")
    con.execute("DELETE FROM discrepancy_resolutions")
    con.close()
    out = tmp_path / "buckets"
    jobs = [(str(config), ch.name, b, buckets, str(out)) for ch in cfg.channels for b in range(buckets)]
    with ProcessPoolExecutor(max_workers=2) as pool:   # independent: separate processes, read-only warehouse
        results = list(pool.map(_bucket, jobs))
    assert sorted((r["channel"], r["bucket"]) for r in results) == sorted((j[1], j[2]) for j in jobs)
    for r in results:
        for f in r["files"].values():
            assert f.endswith(f"bucket={r['bucket']}.parquet") and Path(f).exists()
    # The Parquet files alone hold the whole answer ...
    parquet = duckdb.connect()
    pq = parquet.execute(f"SELECT {BREAK_COLUMNS} FROM read_parquet('{out}/**/discrepancies/*.parquet', "
                       "hive_partitioning = false)").fetchall()
    assert sorted(pq, key=repr) == unsplit[0]
    if buckets > 1:   # every key of the demo day lands in exactly one bucket; several buckets are used
        per_bucket = parquet.execute(f"SELECT filename, count(*) FROM read_parquet('{out}/**/discrepancies/*.parquet',"
                                     " filename = true, hive_partitioning = false) GROUP BY 1").fetchall()
        assert len([n for _, n in per_bucket if n]) > 1
    # ... and merged into the warehouse they are exactly the unsplit run's rows.
    for ch in cfg.channels:
        merge_buckets(cfg, DEMO_DATE, ch.name, buckets, out)
    con = connect(cfg.warehouse, read_only=True)
    assert reconciliation(con) == unsplit
    con.close()


def test_merge_refuses_when_a_bucket_is_missing(tmp_path):
    cfg = load_config(write_demo_config(tmp_path / "m"))
    process_day(cfg, DEMO_DATE, fetch_day(cfg, DEMO_DATE))
    reconcile_bucket(cfg, DEMO_DATE, "wechat", 0, 2, tmp_path / "b")
    with pytest.raises(BucketError, match="bucket=1.parquet"):
        merge_buckets(cfg, DEMO_DATE, "wechat", 2, tmp_path / "b")


def test_a_bucket_never_writes_the_warehouse(tmp_path):
    cfg = load_config(write_demo_config(tmp_path / "ro"))
    process_day(cfg, DEMO_DATE, fetch_day(cfg, DEMO_DATE))
    con = connect(cfg.warehouse, read_only=True)
    before = rows(con, "discrepancies"), rows(con, "matched_transactions")
    con.close()
    con = connect(cfg.warehouse)
    con.execute("DELETE FROM discrepancies")
    con.close()
    reconcile_bucket(cfg, DEMO_DATE, "wechat", 0, 1, tmp_path / "b")
    con = connect(cfg.warehouse, read_only=True)
    assert rows(con, "discrepancies") == [] and rows(con, "matched_transactions") == before[1]
    con.close()


# ----------------------------------------------------------------------------- business date
SH = "Asia/Shanghai"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_a_scheduled_run_on_d_plus_1_reconciles_d():
    # cron 30 10 * * * Asia/Shanghai, data interval [06-05 10:30, 06-06 10:30) CST = [02:30Z, 02:30Z)
    assert business_date_of(zone=SH, data_interval_start=utc(2026, 6, 5, 2, 30),
                            logical_date=utc(2026, 6, 5, 2, 30), run_type="scheduled") == date(2026, 6, 5)
    assert business_date_of(zone=SH, data_interval_start=utc(2026, 6, 5, 2, 30),
                            logical_date=utc(2026, 6, 5, 2, 30), run_type="backfill") == date(2026, 6, 5)


def test_the_platform_zone_decides_the_date_not_utc():
    # 06-04 20:00Z is 06-05 04:00 in Shanghai
    assert business_date_of(zone=SH, data_interval_start=utc(2026, 6, 4, 20, 0), run_type="scheduled") \
        == date(2026, 6, 5)


def test_a_manual_run_reconciles_the_date_it_was_given():
    # `airflow dags test recon_nightly 2026-06-05`: logical date 06-05T00:00Z; Airflow infers the last full
    # interval before it, [06-03 10:30, 06-04 10:30) CST, as the data interval: the given date wins.
    assert business_date_of(zone=SH, data_interval_start=utc(2026, 6, 3, 2, 30), logical_date=utc(2026, 6, 5),
                            run_type="manual") == date(2026, 6, 5)


def test_a_manual_run_without_a_logical_date_reconciles_the_day_before_it_ran():
    assert business_date_of(zone=SH, data_interval_start=None, logical_date=None, run_type="manual",
                            run_after=utc(2026, 6, 6, 3, 0)) == date(2026, 6, 5)
