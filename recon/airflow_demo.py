"""``make airflow-demo``: the nightly DAG, once, on a real Airflow in a temporary AIRFLOW_HOME.

    python -m recon.airflow_demo --config sample_files/recon.yml --date 2026-06-05 [--out out/airflow-demo]

1. writes a copy of the config into a fresh output folder (warehouse, landing zone, reports there; a
   SQLite platform database built from ``sample_files/platform`` when the config's platform is SQLite);
2. creates a temporary AIRFLOW_HOME with a SQLite metadata database (``airflow db migrate``), its
   dags_folder pointing at this project's ``dags/``, and the one-slot warehouse pool
   (``airflow pools set``);
3. runs ``airflow dags test recon_nightly <date>`` with RECON_CONFIG set to the copy;
4. prints where the Excel report, the DuckDB warehouse and the analyst snapshot are.

The tests use :func:`airflow_env` for their own temporary Airflow.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = ROOT / "dags"
DAG_ID = "recon_nightly"


def airflow_env(home: Path, dags_folder: Path = DAGS_FOLDER) -> dict[str, str]:
    """Environment for an Airflow whose home, SQLite metadata DB and logs are all under ``home``."""
    home = Path(home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


def airflow_bin() -> str:
    exe = Path(sys.executable).parent / "airflow"
    return str(exe) if exe.exists() else "airflow"


def _run(cmd: list[str], env: dict[str, str], log_file: Path | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if log_file is not None:
        log_file.write_text(out.stdout + out.stderr, encoding="utf-8")
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise SystemExit(f"airflow-demo: `{' '.join(cmd[1:])}` failed (exit {out.returncode}):\n{tail}")
    return out


def prepare_airflow_home(home: Path, pool: str, env: dict[str, str]) -> None:
    """``airflow db migrate`` and the one-slot warehouse pool."""
    home.mkdir(parents=True, exist_ok=True)
    _run([airflow_bin(), "db", "migrate"], env)
    _run([airflow_bin(), "pools", "set", pool, "1", "DuckDB warehouse: one writer at a time"], env)


def demo_config(config: Path, out: Path) -> Path:
    """A copy of ``config`` writing everything into ``out`` (absolute paths; validated on the way)."""
    from recon.config import load_config
    from recon.demo import build_platform_db

    cfg = load_config(config)
    raw = cfg.model_dump(mode="json", exclude={"config_path", "config_sha256", "snapshot_dir"})
    raw.update(warehouse=str(out / "warehouse.duckdb"), output_dir=str(out), landing_dir=str(out / "landing"))
    if cfg.internal_source.url.startswith("sqlite:"):
        url = f"sqlite:///{out / 'platform.db'}"
        build_platform_db(url)
        raw["internal_source"] = {**raw["internal_source"], "url": url}
    path = out / "recon.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load_config(path)                              # the copy validates too
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recon.airflow_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the YAML config (e.g. sample_files/recon.yml)")
    ap.add_argument("--date", required=True, type=date.fromisoformat, help="business date, YYYY-MM-DD")
    ap.add_argument("--out", default="out/airflow-demo", help="output folder (emptied first)")
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary AIRFLOW_HOME (logs, metadata DB)")
    args = ap.parse_args(argv)

    from recon.config import load_config

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = demo_config(Path(args.config), out)
    cfg = load_config(config)
    home = Path(tempfile.mkdtemp(prefix="recon-airflow-home-"))
    env = {**os.environ, **airflow_env(home), "RECON_CONFIG": str(config)}
    t0 = time.perf_counter()
    try:
        print(f"[airflow] temporary AIRFLOW_HOME {home} (SQLite metadata DB), dags_folder {DAGS_FOLDER}")
        prepare_airflow_home(home, cfg.schedule.pool, env)
        print(f"[airflow] metadata DB migrated, pool {cfg.schedule.pool!r} (1 slot) created")
        print(f"[airflow] airflow dags test {DAG_ID} {args.date} ...", flush=True)
        log_file = out / "airflow-dags-test.log"
        proc = subprocess.run([airflow_bin(), "dags", "test", DAG_ID, args.date.isoformat()], env=env,
                              capture_output=True, text=True)
        log_file.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        report = out / "reports" / args.date.isoformat() / f"recon_report_{args.date.isoformat()}.xlsx"
        snapshot = cfg.snapshot_path / "recon.duckdb"
        if proc.returncode != 0 or not report.exists() or not snapshot.exists():  # dags test exits 1 on failure
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            print(f"{tail}\n\nairflow-demo: the DAG run did not succeed; full log: {log_file}", file=sys.stderr)
            return 1
        print(f"[airflow] DAG run succeeded in {time.perf_counter() - t0:.0f} s; log: {log_file}")
        print(f"\nExcel report:     {report}")
        print(f"DuckDB file:      {cfg.warehouse}")
        print(f"Analyst snapshot: {snapshot}")
        print(f"Config used:      {config}")
        print(f"Try:              recon sql --config {config} \"SELECT type, count(*) FROM discrepancies GROUP BY 1\"")
        return 0
    finally:
        if args.keep_home:
            print(f"AIRFLOW_HOME kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
