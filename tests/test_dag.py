"""The nightly DAG on a real Airflow 3: DagBag import, dag.test() end to end (folder and real servers),
a channel that never publishes, an idempotent rerun, failure notification, and ``make airflow-demo``.

One temporary AIRFLOW_HOME with a SQLite metadata DB per test session (``airflow db migrate`` once);
every run gets its own output folder and config file (RECON_CONFIG).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from recon.airflow_demo import DAGS_FOLDER, ROOT, airflow_bin, airflow_env
from recon.config import load_config
from recon.demo import SAMPLES, build_platform_db
from recon.warehouse import connect
from tests.conftest import DEMO_DATE, write_demo_config
from tests.servers import Reply, http_server, sftp_server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

LOGICAL = datetime(2026, 6, 5, tzinfo=timezone.utc)     # what `airflow dags test recon_nightly 2026-06-05` uses
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
POOL = "recon_warehouse"


# ----------------------------------------------------------------------------- Airflow, once per session
@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.perf_counter()
    subprocess.run([airflow_bin(), "db", "migrate"], env=os.environ.copy(), check=True, capture_output=True)
    if "airflow.settings" in sys.modules:          # imported earlier by another test: point it at this home
        from airflow import settings
        settings.dispose_orm()
        settings.configure_vars()
        settings.configure_orm()
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(POOL, 1, "DuckDB warehouse: one writer at a time", include_deferred=False)
    print(f"\nAirflow home {home}: db migrate + pool in {time.perf_counter() - t0:.1f} s")
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


DAG_TEST_LIMIT_S = 240    # dag.test() loops while a task is unrunnable: fail the test rather than hang the suite


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    import signal

    def expired(signum, frame):
        raise TimeoutError(f"{what} did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_dag(config: Path, dag_id: str = "recon_nightly"):
    from airflow.dag_processing.dagbag import DagBag

    with environ(RECON_CONFIG=str(config)):
        bag = DagBag(dag_folder=str(DAGS_FOLDER), known_pools={POOL, "default_pool"})
    assert bag.import_errors == {}, bag.import_errors
    return bag, bag.dags[dag_id]


def run_dag(config: Path, logical_date: datetime = LOGICAL, dag_id: str = "recon_nightly", conf: dict | None = None,
            **env: str):
    """dag.test() for one logical date; returns the DagRun state and {(task_id, map_index): state}."""
    _, dag = load_dag(config, dag_id)
    t0 = time.perf_counter()
    with environ(RECON_CONFIG=str(config), **env), deadline(DAG_TEST_LIMIT_S, f"dag.test of {dag_id}"):
        dr = dag.test(logical_date=logical_date, run_conf=conf)
    tis = dr.get_task_instances()
    states = {(ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in tis}
    run_dag.tries = {(ti.task_id, ti.map_index): ti.try_number for ti in tis}
    run_dag.run_id = dr.run_id
    print(f"dag.test({logical_date.date()}) -> {dr.state} in {time.perf_counter() - t0:.1f} s: {states}")
    return str(getattr(dr.state, "value", dr.state)), states


def rewrite(config: Path, edit) -> Path:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    edit(raw)
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config


def warehouse_state(cfg, d: date = DEMO_DATE):
    con = connect(cfg.warehouse, read_only=True)
    try:
        breaks = sorted(con.execute(
            "SELECT discrepancy_id, flow, type, channel, match_key, platform_amount, channel_amount, difference, "
            "status FROM discrepancies WHERE business_date = ?", [d]).fetchall())
        lines = sorted(con.execute(
            "SELECT l.batch_id, l.merchant_id, l.gross, l.refunds, l.fees, l.net FROM settlement_lines l").fetchall())
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("channel_transactions", "channel_funds_movements", "platform_orders", "loaded_files",
                            "discrepancies", "matched_transactions", "settlement_items")}
        return breaks, lines, counts
    finally:
        con.close()


def cli_reference(tmp_path: Path, **overrides):
    """The same day through ``recon run``'s code path, for comparison."""
    from recon.pipeline import run_day

    cfg = load_config(write_demo_config(tmp_path / "cli", **overrides))
    run_day(cfg, DEMO_DATE)
    return warehouse_state(cfg)


# ----------------------------------------------------------------------------- the DAG file
def test_dagbag_imports_with_no_errors_and_reports_parse_time(airflow_home, tmp_path):
    config = write_demo_config(tmp_path / "demo")
    t0 = time.perf_counter()
    bag, dag = load_dag(config)
    wall = time.perf_counter() - t0
    stats = {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}
    print(f"\nDagBag: {len(bag.dags)} DAG(s), {wall:.2f} s wall; parse time per file: {stats}")
    assert sorted(bag.dags) == ["recon_buckets", "recon_nightly"] and stats
    assert dag.max_active_runs == 1
    tt = dag.timetable
    assert type(tt).__name__ == "CronDataIntervalTimetable"
    assert (tt.expression if hasattr(tt, "expression") else tt._expression) == "30 10 * * *"
    assert "Asia/Shanghai" in str(tt)
    tasks = dag.task_dict
    assert set(tasks) == {"plan", "per_channel.fetch", "per_channel.verify", "reconcile_and_settle", "report",
                          "publish"}
    fetch = tasks["per_channel.fetch"]
    assert fetch.mode == "reschedule" and fetch.poke_interval == 300
    for tid in ("reconcile_and_settle", "report", "publish"):
        assert tasks[tid].pool == POOL
        assert getattr(tasks[tid].trigger_rule, "value", tasks[tid].trigger_rule) == "all_success"
    assert tasks["reconcile_and_settle"].depends_on_past
    assert tasks["report"].retries == 3 and tasks["report"].retry_exponential_backoff
    assert tasks["plan"].on_failure_callback


def test_with_a_start_date_the_scheduler_runs_every_business_day_in_order(airflow_home, tmp_path):
    """Catch-up: the scheduled intervals from schedule.start_date, one business date after the other."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    from recon.orchestration import business_date_of

    config = rewrite(write_demo_config(tmp_path / "c"), lambda raw: raw.update(schedule={"start_date": "2026-06-01"}))
    _, dag = load_dag(config)
    assert dag.catchup is True and dag.max_active_runs == 1
    tt = coerce_to_core_timetable(dag.timetable)
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    last, runs = None, []
    for _ in range(4):
        info = tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        last = info.data_interval
        runs.append((business_date_of(zone="Asia/Shanghai", data_interval_start=last.start, run_type="scheduled"),
                     last.end.in_timezone("Asia/Shanghai").strftime("%m-%d %H:%M")))
    assert runs == [(date(2026, 6, 1), "06-02 10:30"), (date(2026, 6, 2), "06-03 10:30"),
                    (date(2026, 6, 3), "06-04 10:30"), (date(2026, 6, 4), "06-05 10:30")]


def test_a_config_error_is_an_import_error_naming_the_key(airflow_home, tmp_path):
    config = rewrite(write_demo_config(tmp_path / "bad"), lambda raw: raw.update(schedule={"cron": "every day"}))
    from airflow.dag_processing.dagbag import DagBag

    with environ(RECON_CONFIG=str(config)):
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert {Path(f).name for f in bag.import_errors} == {"recon_nightly.py", "recon_buckets.py"}
    for message in bag.import_errors.values():
        assert "schedule.cron" in message and "cron expression" in message


def test_task_errors_retry_transient_faults_only(airflow_home):
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

    from loaders.base import FileError
    from loaders.fetch.base import FetchError, TransientFetchError
    from recon.orchestration import task_errors

    with pytest.raises(TransientFetchError):               # re-raised as is: Airflow retries with backoff
        with task_errors("fetch"):
            raise TransientFetchError("sftp 127.0.0.1: connection reset")
    for exc in (FetchError("auth refused for user x"), FileError("a.csv", "footer disagrees", line_no=9),
                ValueError("bad")):
        with pytest.raises(AirflowFailException, match="fetch: "):
            with task_errors("fetch"):
                raise exc
    with pytest.raises(AirflowSensorTimeout):              # Airflow's own signals pass through untouched
        with task_errors("fetch"):
            raise AirflowSensorTimeout("late")


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 that keeps every message it is given (no TLS, no auth)."""

    def __init__(self):
        import socketserver
        import threading

        self.messages: list[dict] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 sink ESMTP\r\n")
                mail = {"rcpt": [], "data": ""}
                while line := self.rfile.readline():
                    cmd = line.decode("utf-8", "replace").strip()
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.wfile.write(b"250 sink\r\n")
                    elif verb == "MAIL":
                        mail["from"] = cmd
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "RCPT":
                        mail["rcpt"].append(cmd)
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = []
                        while (ln := self.rfile.readline()) not in (b".\r\n", b""):
                            data.append(ln.decode("utf-8", "replace"))
                        mail["data"] = "".join(data)
                        sink.messages.append(dict(mail))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    try:
        yield sink
    finally:
        sink.close()


# ----------------------------------------------------------------------------- dag.test() end to end
@pytest.fixture(scope="module")
def demo_run(airflow_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("dag-demo")
    config = write_demo_config(out / "run")
    state, states = run_dag(config)
    return config, state, states


def test_dag_test_runs_the_demo_day_end_to_end(demo_run, tmp_path):
    config, state, states = demo_run
    cfg = load_config(config)
    assert state == "success", states
    assert set(states.values()) == {"success"}
    assert {k for k in states if k[0] == "per_channel.fetch"} == {("per_channel.fetch", 0), ("per_channel.fetch", 1)}
    report = Path(cfg.output_dir) / "reports" / "2026-06-05" / "recon_report_2026-06-05.xlsx"
    assert report.exists() and report.stat().st_size > 0
    snapshot = cfg.snapshot_path / "recon.duckdb"
    assert snapshot.exists()
    import duckdb

    with duckdb.connect(str(snapshot), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM discrepancies WHERE business_date = ?", [DEMO_DATE]).fetchone()[0] > 0
    # The DAG runs the CLI's stages: the same breaks and settlements as `recon run` on the same day.
    assert warehouse_state(cfg) == cli_reference(tmp_path)


def test_rerunning_the_same_date_is_idempotent(demo_run):
    config, state, _ = demo_run
    assert state == "success"
    cfg = load_config(config)
    before = warehouse_state(cfg)
    state2, states2 = run_dag(config)
    assert state2 == "success", states2
    assert warehouse_state(cfg) == before                  # same discrepancies (ids too), settlements, row counts


def test_a_channel_that_never_publishes_fails_at_its_deadline_and_nothing_is_published(
        airflow_home, tmp_path, http_server, smtp_sink):
    http_server.route("/hook", Reply(200, b"ok"))

    def edit(raw):
        for ch in raw["channels"]:
            if ch["name"] == "alipay":
                ch["statements"][0]["source"]["path"] = str(tmp_path / "never" / "*_{yyyymmdd}_业务明细.csv")
        raw["schedule"] = {"file_deadline_minutes": 0.05, "poke_interval_seconds": 1,   # a 3-second deadline
                           "notify_webhook": http_server.url("/hook"), "notify_email": "finance-ops@example.com"}

    config = rewrite(write_demo_config(tmp_path / "run"), edit)
    cfg = load_config(config)
    connect(cfg.warehouse).close()                        # an existing warehouse, to prove it is left alone
    before = warehouse_state(cfg)
    t0 = time.perf_counter()
    smtp = json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
                       "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "recon@example.com"}})
    state, states = run_dag(config, AIRFLOW_CONN_SMTP_DEFAULT=smtp)
    took = time.perf_counter() - t0
    assert state == "failed"
    assert states[("per_channel.fetch", 1)] == "failed"           # alipay: waited, then failed at the deadline
    assert states[("per_channel.fetch", 0)] == "success"          # wechat still fetched ...
    assert states[("per_channel.verify", 0)] == "success"         # ... and verified
    for tid in ("reconcile_and_settle", "report", "publish"):
        assert states[(tid, -1)] == "upstream_failed"
    # The failure notification says which channel, which day and why.
    posts = [json.loads(r.body) for r in http_server.hits("/hook")]
    assert len(posts) == 1, posts
    msg = posts[0]
    assert msg["task_id"] == "per_channel.fetch" and msg["map_index"] == 1 and msg["business_date"] == "2026-06-05"
    assert "AirflowSensorTimeout" in msg["error"] and "channel alipay" in msg["error"]
    assert "not published by the deadline" in msg["error"] and "2026-06-05" in msg["error"]
    print(f"deadline failure after {took:.1f} s: {msg['error']}")
    # ... and so does the email, sent through Airflow's SMTP connection.
    (mail,) = smtp_sink.messages
    assert [r.lower() for r in mail["rcpt"]] == ["rcpt to:<finance-ops@example.com>"]
    assert "recon@example.com" in mail["from"]
    assert "per_channel.fetch" in mail["data"] and "2026-06-05" in mail["data"]
    # Nothing partial: no report, no snapshot, the warehouse as it was; wechat's file is in the landing zone.
    assert not (Path(cfg.output_dir) / "reports" / "2026-06-05").exists()
    assert not cfg.snapshot_path.exists()
    assert warehouse_state(cfg) == before
    manifest = [json.loads(ln) for ln in (Path(cfg.landing_dir) / "manifest.jsonl").read_text().splitlines()]
    assert {m["channel"] for m in manifest} == {"wechat"}


def test_bucket_dag_reconciles_a_channel_in_buckets_identically(demo_run):
    """Scale-out shown in Airflow: wechat's day redone in 3 mapped bucket tasks + merge = the unsplit rows."""
    config, state, _ = demo_run
    assert state == "success"
    cfg = load_config(config)
    before = warehouse_state(cfg)
    con = connect(cfg.warehouse)
    con.execute("DELETE FROM discrepancies WHERE channel = 'wechat'")   # forget wechat's reconciliation
    con.execute("DELETE FROM matched_transactions WHERE channel = 'wechat'")
    con.close()
    assert warehouse_state(cfg) != before
    state, states = run_dag(config, dag_id="recon_buckets", conf={"channel": "wechat", "buckets": 3})
    assert state == "success", states
    assert sorted(k for k in states if k[0] == "reconcile") == [("reconcile", 0), ("reconcile", 1), ("reconcile", 2)]
    assert warehouse_state(cfg) == before
    base = Path(cfg.output_dir) / "buckets" / "business_date=2026-06-05" / "channel=wechat"
    parts = sorted((base / "summary").glob("bucket=*.json"))
    assert [p.name for p in parts] == ["bucket=0.json", "bucket=1.json", "bucket=2.json"]
    assert not (base / "discrepancies").exists()           # merged, committed, removed


def test_nightly_dag_with_schedule_buckets_splits_wechat_and_equals_the_unsplit_run(airflow_home, tmp_path):
    """schedule.buckets: the nightly DAG loads and commits, runs wechat's 3 buckets as mapped tasks outside the
    pool, then reconciles alipay, merges wechat and settles: the same warehouse as `recon run` unsplit."""
    config = rewrite(write_demo_config(tmp_path / "split"), lambda raw: raw.update(schedule={"buckets": {"wechat": 3}}))
    _, dag = load_dag(config)
    tasks = dag.task_dict
    assert {"load", "bucket"} <= set(tasks)
    assert tasks["load"].pool == POOL and tasks["load"].wait_for_downstream
    assert tasks["bucket"].pool != POOL                      # read-only: buckets run side by side
    assert tasks["reconcile_and_settle"].upstream_task_ids >= {"load", "bucket"}
    state, states = run_dag(config)
    assert state == "success", states
    assert sorted(k for k in states if k[0] == "bucket") == [("bucket", 0), ("bucket", 1), ("bucket", 2)]
    cfg = load_config(config)
    assert warehouse_state(cfg) == cli_reference(tmp_path)
    con = connect(cfg.warehouse, read_only=True)
    runs = con.execute("SELECT status, stage FROM runs ORDER BY started_at").fetchall()
    con.close()
    assert runs == [("loaded", "load"), ("succeeded", "settle")]
    import airflow.settings
    from airflow.models.xcom import XComModel

    with airflow.settings.Session() as session:
        xcom = session.query(XComModel).filter_by(task_id="reconcile_and_settle", dag_id="recon_nightly",
                                                  run_id=run_dag.run_id, key="return_value").one()
    summary = XComModel.deserialize_value(xcom)
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary["split"] == {"wechat": 3} and len(summary["loaded_by_run"]) == 1 and summary["matched"] > 0
    assert (Path(cfg.output_dir) / "reports" / "2026-06-05" / "recon_report_2026-06-05.xlsx").exists()


def test_with_archive_nightly_the_dag_ends_by_archiving_the_closed_days(airflow_home, tmp_path):
    """archive.nightly: an `archive` task after publish moves the closed days out (recon archive move), and with
    archive.compact_min_free rewrites the warehouse file without the space they left (recon compact);
    backup.nightly: a `backup` task after it copies the warehouse (recon backup make)."""
    from tests.test_archive import build_worlds

    import airflow.settings
    from airflow.models.xcom import XComModel

    from recon.compact import space

    world = build_worlds(tmp_path)["closed"]       # days 2026-06-01..04 run; day 1 closed
    config = rewrite(world / "recon.yml",
                     lambda raw: raw.update(archive={"nightly": True, "compact_min_free": 0.001},
                                            backup={"nightly": True}))
    _, dag = load_dag(config)
    assert dag.task_dict["archive"].upstream_task_ids == {"publish"} and dag.task_dict["archive"].pool == POOL
    assert dag.task_dict["backup"].upstream_task_ids == {"archive"} and dag.task_dict["backup"].pool == POOL
    state, states = run_dag(config)                # business date 2026-06-05
    assert state == "success", states
    with airflow.settings.Session() as session:
        xcom = session.query(XComModel).filter_by(task_id="archive", dag_id="recon_nightly",
                                                  run_id=run_dag.run_id, key="return_value").one()
    result = XComModel.deserialize_value(xcom)
    result = json.loads(result) if isinstance(result, str) else result
    assert result["archived"] == ["2026-06-01"] and result["compacted"] is True, result
    assert result["file_bytes_after"] < result["file_bytes_before"]
    assert space(load_config(config).warehouse).free_blocks == 0
    from recon.backup import list_backups

    (taken,) = list_backups(load_config(config))       # backup.nightly: the compacted warehouse, copied last
    assert taken.bytes <= result["file_bytes_after"]
    con = connect(load_config(config).warehouse, read_only=True)
    try:
        assert con.execute("SELECT business_date FROM archived_days").fetchall() == [(date(2026, 6, 1),)]
        assert con.execute("SELECT count(*) FROM channel_transactions WHERE business_date = '2026-06-01'"
                           ).fetchone()[0] == 0
        assert con.execute("SELECT max(business_date) FROM runs WHERE status = 'succeeded'"
                           ).fetchone()[0] == date(2026, 6, 5)
    finally:
        con.close()
    _, plain = load_dag(write_demo_config(tmp_path / "plain"))
    assert "archive" not in plain.task_dict and "backup" not in plain.task_dict
    _, backed_up = load_dag(rewrite(write_demo_config(tmp_path / "backup"),
                                    lambda raw: raw.update(backup={"nightly": True})))
    assert backed_up.task_dict["backup"].upstream_task_ids == {"publish"}


def test_schedule_buckets_must_name_configured_channels(tmp_path):
    from recon.config import ConfigError

    for buckets, message in (({"nosuch": 2}, "not configured: ['nosuch']"), ({"wechat": 0}, "at least 1")):
        config = rewrite(write_demo_config(tmp_path / f"bad{len(message)}"),
                         lambda raw: raw.update(schedule={"buckets": buckets}))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(config)


def test_transient_faults_are_retried_and_others_fail_at_once(airflow_home, tmp_path, http_server):
    """Alipay's server answers 503 once (retried with backoff, then fetched); WeChat's refuses the token
    (401: failed at the first try although retries are configured), and nothing is reconciled."""
    (alipay,) = (SAMPLES / "channels" / "alipay").iterdir()
    http_server.route("/alipay/20260605.csv", Reply(503, b"busy"), Reply(200, alipay.read_bytes()))
    http_server.route("/hook", Reply(200, b"ok"))

    def edit(raw):
        for ch in raw["channels"]:
            for st in ch["statements"]:
                if ch["name"] == "alipay":
                    st["source"] = {"type": "http", "url": http_server.url("/alipay/{yyyymmdd}.csv"), "retries": 0}
                elif st["kind"] == "trade":
                    st["source"] = {"type": "http", "url": http_server.url("/wechat/{yyyymmdd}.csv"), "retries": 0,
                                    "auth": "token", "airflow_conn_id": "recon_http_wechat"}
        raw["schedule"] = {"retries": 2, "retry_delay_seconds": 1, "max_retry_delay_seconds": 2,
                           "notify_webhook": http_server.url("/hook")}

    http_server.route("/wechat/20260605.csv", Reply(401, b"bad token"))
    config = rewrite(write_demo_config(tmp_path / "run"), edit)
    token = "tok-" + uuid.uuid4().hex
    state, states = run_dag(config, AIRFLOW_CONN_RECON_HTTP_WECHAT=json.dumps({"conn_type": "http",
                                                                                 "password": token}))
    tries = run_dag.tries
    assert state == "failed"
    assert states[("per_channel.fetch", 1)] == "success" and tries[("per_channel.fetch", 1)] == 2
    assert len(http_server.hits("/alipay/20260605.csv")) == 2
    assert states[("per_channel.fetch", 0)] == "failed" and tries[("per_channel.fetch", 0)] == 1
    assert len(http_server.hits("/wechat/20260605.csv")) == 1
    assert states[("reconcile_and_settle", -1)] == "upstream_failed"
    (msg,) = [json.loads(r.body) for r in http_server.hits("/hook")]
    assert msg["task_id"] == "per_channel.fetch" and msg["map_index"] == 0
    assert "AirflowFailException" in msg["error"] and "HTTP 401" in msg["error"] and token not in msg["error"]


# ----------------------------------------------------------------------------- real servers
@pytest.fixture
def pg_platform():
    try:
        admin = sa.create_engine(PG)
        with admin.begin() as c:
            schema = "recon_dag_" + uuid.uuid4().hex[:8]
            c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (database test) is not reachable: {exc}; .ci/run starts it")
    url = PG + f"?options=-csearch_path%3D{schema}"
    build_platform_db(url, money_type="NUMERIC(18,2)", time_type="TIMESTAMP")
    try:
        yield url
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_dag_test_against_sshd_http_and_postgresql(airflow_home, tmp_path, sftp_server, http_server, pg_platform):
    # The sample day published on a real OpenSSH sshd (WeChat Pay) and a local HTTP server (Alipay).
    (sftp_server.root / "wechat").mkdir()
    for f in (SAMPLES / "channels" / "wechat").iterdir():
        (sftp_server.root / "wechat" / f.name).write_bytes(f.read_bytes())
    (alipay,) = (SAMPLES / "channels" / "alipay").iterdir()
    token = "tok-" + uuid.uuid4().hex

    def bill(req):
        if req.headers.get("Authorization") != f"Bearer {token}":
            return Reply(401, b"unauthorized")
        return Reply(200, alipay.read_bytes(), {"Content-Type": "text/csv"})

    http_server.route("/alipay/20260605_business.csv", bill)
    conns = {
        "AIRFLOW_CONN_RECON_SFTP": json.dumps({"conn_type": "sftp", "login": sftp_server.username,
                                               "extra": {"private_key": sftp_server.client_key.read_text()}}),
        "AIRFLOW_CONN_RECON_HTTP": json.dumps({"conn_type": "http", "password": token}),
    }

    def sftp(rel):
        return {"type": "sftp", "host": sftp_server.host, "port": sftp_server.port,
                "remote_path": sftp_server.remote(rel), "known_hosts": str(sftp_server.known_hosts),
                "airflow_conn_id": "recon_sftp", "connect_timeout": 5, "retries": 0}

    def edit(raw):
        for ch in raw["channels"]:
            for st in ch["statements"]:
                if ch["name"] == "wechat":
                    name = Path(st["source"]["path"]).name
                    st["source"] = sftp(f"wechat/{name}")
                else:
                    st["source"] = {"type": "http", "url": http_server.url("/alipay/{yyyymmdd}_business.csv"),
                                    "auth": "token", "airflow_conn_id": "recon_http", "retries": 0}
        raw["internal_source"] = {"url": pg_platform}

    config = rewrite(write_demo_config(tmp_path / "run"), edit)
    cfg = load_config(config)
    state, states = run_dag(config, **conns)
    assert state == "success", states
    assert http_server.hits("/alipay/20260605_business.csv")
    sources = {json.loads(ln)["channel"]: json.loads(ln)["source"]
               for ln in (Path(cfg.landing_dir) / "manifest.jsonl").read_text(encoding="utf-8").splitlines()}
    assert sources["wechat"].startswith(f"sftp://127.0.0.1:{sftp_server.port}/")
    assert sources["alipay"].startswith("http://127.0.0.1:")
    assert (Path(cfg.output_dir) / "reports" / "2026-06-05" / "recon_report_2026-06-05.xlsx").exists()
    assert (cfg.snapshot_path / "recon.duckdb").exists()
    # Same breaks and settlements as the folder + SQLite run of the same day.
    assert warehouse_state(cfg)[:2] == cli_reference(tmp_path)[:2]


# ----------------------------------------------------------------------------- make airflow-demo
def test_make_airflow_demo_runs_the_dag_once_in_a_temporary_airflow_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out = subprocess.run([sys.executable, "-m", "recon.airflow_demo", "--config", "sample_files/recon.yml",
                          "--date", "2026-06-05", "--out", str(tmp_path / "demo")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    lines = dict(ln.split(":", 1) for ln in out.stdout.splitlines() if ln.startswith(("Excel report", "DuckDB file",
                                                                                       "Analyst snapshot")))
    assert Path(lines["Excel report"].strip()).exists()
    assert Path(lines["DuckDB file"].strip()).exists()
    assert Path(lines["Analyst snapshot"].strip()).exists()
