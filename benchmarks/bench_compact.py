"""Compacting the warehouse file: how much space a long history leaves once it is archived, and what
`recon compact` costs to give it back.

Starts from the warehouse of ``bench_history --orders N --days K --archive-keep 1 --queue-only`` (K nights, the
queue worked, nothing archived: the history a team has when it first turns archiving on), copied, then runs in
fresh processes: ``recon archive move`` (every closed day leaves), ``recon compact``. Per step: wall and CPU
seconds of the process tree, peak RSS, and the file's size, used and free blocks afterwards.

    python -m benchmarks.bench_history --orders 1000000 --days 8 --archive-keep 1 --queue-only
    python -m benchmarks.bench_compact --orders 1000000 --days 8 --write-results

``--copy-only WAREHOUSE`` measures the copy and the check alone (no swap) on a copy of any warehouse file,
e.g. the one-day 10M warehouse ``benchmarks.run`` leaves in ``<workdir>/run``.

Never run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from benchmarks._common import write_section
from benchmarks.bench_e2e import PY, _cpu, measure

BEGIN, END = "<!-- compact:begin -->", "<!-- compact:end -->"
GiB = 2 ** 30


def _space(wh: Path) -> dict:
    from recon.compact import space

    s = space(wh)
    return {"file": s.file_bytes, "used": s.used_bytes, "free_share": s.free_share}


def history_compaction(orders: int, days: int, workdir: Path) -> dict:
    world = workdir / f"history-{orders}x{days}"
    source = workdir / f"history-run-{world.name}-archive1-queue-only"
    if not (source / "warehouse.duckdb").exists():
        sys.exit(f"no history in {source}: run `python -m benchmarks.bench_history --orders {orders} --days {days} "
                 "--archive-keep 1 --queue-only` first")
    run = workdir / f"compact-run-{world.name}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    shutil.copy2(source / "warehouse.duckdb", run / "warehouse.duckdb")
    shutil.copytree(source / "snapshot", run / "snapshot")     # the archive links the snapshot's files
    raw = yaml.safe_load((world / "recon.yml").read_text(encoding="utf-8"))
    raw.update(warehouse=str(run / "warehouse.duckdb"), output_dir=str(run / "out"),
               landing_dir=str(run / "landing"), snapshot_dir=str(run / "snapshot"),
               settlement={**raw.get("settlement", {}), "duplicate_lookback_days": 1}, archive={"keep_days": 1})
    config = world / "bench-compact.yml"         # beside recon.yml: its relative paths stay right
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    wh = run / "warehouse.duckdb"
    steps = [{"step": "before", **_space(wh)}]
    for name, args in (("recon archive move", ["archive", "move"]), ("recon compact", ["compact"])):
        r = measure([PY, "-m", "recon.cli", *args, "--config", str(config)])
        steps.append({"step": name, "wall": r["wall"], "cpu": r["cpu"], "peak_rss": r["peak_rss"], **_space(wh),
                      "stdout": r["stdout"][-2000:]})
        print(f"[compact] {name}: {r['wall']:.1f} s, {r['cpu']:.1f} CPU-s; file {steps[-1]['file'] / GiB:.2f} GiB, "
              f"{steps[-1]['free_share']:.0%} free", file=sys.stderr, flush=True)
    return {"orders": orders, "days": days, "steps": steps, "load_average": os.getloadavg()}


def copy_only(warehouse: Path) -> dict:
    """Copy and check a copy of ``warehouse`` (as compact does), in this process; no swap."""
    import resource

    from recon import compact
    from recon.warehouse import connect

    work = warehouse.with_name("bench-compact-copy.duckdb")
    shutil.copy2(warehouse, work)
    tmp = work.with_name(work.name + ".compacting")
    compact.discard(tmp)
    con = connect(work, memory_limit="3GB")
    real_verify, marks = compact._verify, {}

    def timed_verify(con, name):                 # the copy's time ends where its check starts
        marks["copied"] = (time.perf_counter(), _cpu())
        return real_verify(con, name)

    compact._verify = timed_verify
    try:
        t0, c0 = time.perf_counter(), _cpu()
        tables = compact.copy_database(con, tmp)
        t2, c2 = time.perf_counter(), _cpu()
    finally:
        compact._verify = real_verify
        con.close()
    t1, c1 = marks["copied"]
    out = {"file": work.stat().st_size, "copy_file": tmp.stat().st_size, "copy": [t1 - t0, c1 - c0],
           "check": [t2 - t1, c2 - c1], "tables": tables,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    compact.discard(tmp)
    work.unlink()
    return out


def table(res: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} cores; load average after the steps {res['load_average'][0]:.1f}.", "",
             "| step | wall | CPU-s | peak RSS | warehouse file | in use | free |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in res["steps"]:
        timing = (f"{s['wall']:.1f} s | {s['cpu']:.1f} | {s['peak_rss'] / GiB:.2f} GiB" if "wall" in s
                  else "— | — | —")
        lines.append(f"| {s['step']} | {timing} | {s['file'] / GiB:.2f} GiB | {s['used'] / GiB:.2f} GiB "
                     f"| {s['free_share']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/tmp/payrecon-bench"))
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--copy-only", metavar="WAREHOUSE")
    args = ap.parse_args(argv)
    if args.copy_only:
        print(json.dumps(copy_only(Path(args.copy_only)), indent=1))
        return 0
    res = history_compaction(args.orders, args.days, Path(args.workdir))
    (Path(args.workdir) / f"compact-{args.orders}x{args.days}.json").write_text(json.dumps(res, indent=1))
    text = table(res, f"python -m benchmarks.bench_compact --orders {args.orders} --days {args.days}")
    print(text)
    if args.write_results:
        write_section(text, BEGIN, END, "Compacting the warehouse file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
