"""Scale-out path: one channel's day reconciled in N key-hash buckets (mapped tasks, each on a read-only
warehouse, writing Parquet), then merged in one transaction through the warehouse pool.

Triggered by hand for a business date already loaded by ``recon_nightly`` (params: channel, buckets), e.g.
``airflow dags test recon_buckets 2026-06-05 -c '{"channel": "wechat", "buckets": 4}'``. The result is
identical to the unsplit reconciliation (tests/test_dag.py, tests/test_dag_buckets.py). The nightly DAG splits
the channels of ``schedule.buckets`` itself (docs/deploy.md); ``recon buckets reconcile|merge`` are these steps
by hand.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from recon import orchestration as steps

S = steps.dag_settings()


@dag(
    dag_id="recon_buckets",
    schedule=None,
    start_date=S.start_date,
    catchup=False,
    max_active_runs=1,
    params={"channel": Param("wechat", type="string"), "buckets": Param(4, type="integer", minimum=1)},
    default_args={"retries": S.retries, "retry_delay": S.retry_delay, "retry_exponential_backoff": 2.0,
                  "max_retry_delay": S.max_retry_delay, "on_failure_callback": steps.notify_failure},
    tags=["payrecon"],
    doc_md=__doc__,
)
def recon_buckets():
    @task
    def plan() -> list[int]:
        return steps.plan_buckets()

    @task
    def reconcile(bucket: int) -> dict:
        return steps.bucket_step(bucket)

    @task(pool=S.pool)
    def merge(results: list[dict]) -> dict[str, int]:
        return steps.merge_step()

    merge(reconcile.expand(bucket=plan()))


recon_buckets()
