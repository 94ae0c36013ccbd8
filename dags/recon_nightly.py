"""The nightly reconciliation: per channel wait -> fetch -> verify, then reconcile + settle, report, publish
(-> archive, with ``archive.nightly``; -> backup, with ``backup.nightly``).

With ``schedule.buckets`` (large channels split by key hash): ... verify -> load -> bucket[channel, b] ... ->
reconcile + settle (the other channels, and the buckets merged) -> report -> publish.

Thin on purpose: every step is a function of ``recon.orchestration`` (the same pipeline code ``recon run``
uses). At parse time the DAG reads only the local YAML config named by RECON_CONFIG (or the Airflow
Variable ``recon_config``) for its schedule; no network, no database. Conventions: docs/deploy.md.
"""
from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task, task_group

from recon import orchestration as steps

S = steps.dag_settings()

default_args = {
    "retries": S.retries,                      # used only by transient faults: the rest fail at once
    "retry_delay": S.retry_delay,
    "retry_exponential_backoff": 2.0,          # 1, 2, 4 ... x retry_delay, capped below
    "max_retry_delay": S.max_retry_delay,
    "on_failure_callback": steps.notify_failure,
}


@dag(
    dag_id=steps.DAG_ID,
    # A cron *data interval* in the platform time zone: the run firing at 10:30 on D+1 covers
    # [D 10:30, D+1 10:30) and reconciles business date D (steps.business_date_of).
    schedule=CronDataIntervalTimetable(S.cron, timezone=S.timezone),
    start_date=S.start_date,
    catchup=S.catchup,
    max_active_runs=1,                         # days run in order: one day's carry-over feeds the next
    default_args=default_args,
    tags=["payrecon"],
    doc_md=__doc__,
)
def recon_nightly():
    @task
    def plan() -> list[str]:
        return steps.plan()

    @task.sensor(mode="reschedule", poke_interval=S.poke_interval_seconds,
                 timeout=S.deadline_seconds + S.poke_interval_seconds + 60)   # backstop; the poke enforces it
    def fetch(channel: str):
        return steps.wait_and_fetch(channel)

    @task
    def verify(channel: str, landed: list[dict]) -> list[dict]:
        return steps.verify(channel)

    @task_group
    def per_channel(channel: str):
        # Mapped group: each channel waits, fetches and verifies on its own; a late one holds no other.
        return verify(channel, fetch(channel))

    # trigger_rule all_success (the default): one channel missing = no reconciliation, no partial publish.
    # depends_on_past: day D+1 carries D's open breaks forward, so it waits until D has reconciled.
    @task(pool=S.pool, depends_on_past=True)
    def reconcile_and_settle(verified: list[list[dict]], buckets: list[dict] | None = None) -> dict:
        return steps.reconcile_and_settle(buckets)

    # Split channels (schedule.buckets): the day is loaded and committed first, then each bucket is a task of
    # its own on a read-only warehouse, outside the pool. wait_for_downstream: D+1 loads only once D's
    # buckets and reconciliation have succeeded, so a bucket never reads a day whose predecessor failed.
    @task(pool=S.pool, wait_for_downstream=True)
    def load(verified: list[list[dict]]) -> list[dict]:
        return steps.load_statements()

    @task
    def bucket(job: dict) -> dict:
        return steps.bucket_job(job)

    @task(pool=S.pool)
    def report(summary: dict) -> dict[str, str]:
        return steps.report()

    @task(pool=S.pool)
    def publish(outputs: dict[str, str]) -> str:
        return steps.publish()

    @task(pool=S.pool)
    def archive(published: str) -> dict:
        return steps.archive()

    @task(pool=S.pool)
    def backup(after: str | dict) -> dict:
        return steps.backup()

    verified = per_channel.expand(channel=plan())
    if S.buckets:
        jobs = load(verified)
        summary = reconcile_and_settle(verified, bucket.expand(job=jobs))
        jobs >> summary                        # directly downstream of load too (wait_for_downstream)
    else:
        summary = reconcile_and_settle(verified)
    published = publish(report(summary))
    last = published
    if S.archive:                              # archive.nightly: closed old days leave the warehouse
        last = archive(published)
    if S.backup:                               # backup.nightly: a checked copy of the warehouse, last
        backup(last)


recon_nightly()
