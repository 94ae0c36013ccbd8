"""Night after night: does a night cost what its day costs, or does it grow with the warehouse's history?

``bench_e2e`` measures one day into an empty warehouse. A real warehouse keeps every earlier day: the
breaks carried forward, the matched pairs, the settlement items and the snapshot's partitions. This
benchmark generates ``--days K`` consecutive days of ``--orders N`` (``recon generate``; cached in the
work folder), then runs them one night at a time, each ``run_day`` in a fresh process on the *same*
warehouse, as the nightly DAG does. Per night: wall and CPU seconds per stage and per function (the same
profile as ``bench_e2e``), peak RSS, the warehouse file's size and the breaks open after the night.
Night K ÷ night 1 is the figure to watch: it should stay near 1.

    python -m benchmarks.bench_history --orders 1000000 --days 7
    python -m benchmarks.bench_history --orders 1000000 --days 7 --write-results

``--archive-keep K`` runs the steady state of a team that works its queue: after each night every break older
than a day is written off (a bulk update standing in for ``recon resolve``), every batch whose settlement date
has come is confirmed, and ``recon archive move`` runs with ``settlement.duplicate_lookback_days`` =
``archive.keep_days`` = K. Its table adds the archive's own seconds, the days archived and the rows the
warehouse still holds. ``--queue-only`` with it does the same team work but archives nothing: the baseline
that shows what archiving itself changes.

Never run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks._common import write_section
from benchmarks.bench_e2e import PY, _cpu, _profile, measure

BEGIN, END = "<!-- history:begin -->", "<!-- history:end -->"
ARCHIVE_BEGIN, ARCHIVE_END = "<!-- history-archive:begin -->", "<!-- history-archive:end -->"
START = date(2026, 6, 1)        # recon generate's first day
GiB = 2 ** 30


def world_for(n: int, days: int, workdir: Path, seed: int = 1) -> Path:
    """The generated ``days``-day world of ``n`` orders a day (reused when already there)."""
    out = workdir / f"history-{n}x{days}"
    meta = out / "world.json"
    if meta.exists():
        m = json.loads(meta.read_text(encoding="utf-8"))
        if (m.get("orders"), m.get("days"), m.get("seed")) == (n, days, seed):
            return out
    measure([PY, "-m", "recon.cli", "generate", "--orders", str(n), "--days", str(days), "--seed", str(seed),
             "--out", str(out), "--quiet"])
    return out


def child_night(world: Path, run_dir: Path, day: date, out_json: Path, archive_keep: int | None = None,
                queue_only: bool = False) -> None:
    """``run_day`` for one night on the warehouse under ``run_dir`` (kept from night to night)."""
    import duckdb

    from recon.config import load_config
    from recon.pipeline import run_day
    wh = run_dir / "warehouse.duckdb"
    overrides = {"warehouse": str(wh), "output_dir": str(run_dir / "out"), "landing_dir": str(run_dir / "landing"),
                 "snapshot_dir": str(run_dir / "snapshot")}
    if archive_keep:
        overrides.update(settlement={"duplicate_lookback_days": archive_keep}, archive={"keep_days": archive_keep})
    cfg = load_config(world / "recon.yml", overrides=overrides)
    prof: dict = {}
    _profile(prof)
    t0, c0 = time.perf_counter(), _cpu()
    result = run_day(cfg, day)
    total, cpu = time.perf_counter() - t0, _cpu() - c0
    archived = _work_the_queue_and_archive(cfg, day, move_days=not queue_only) if archive_keep else {}
    with duckdb.connect(str(wh), read_only=True) as con:
        open_breaks, kept_pairs = con.execute(
            "SELECT (SELECT count(*) FROM discrepancies WHERE status IN ('open', 'pending')), "
            "(SELECT count(*) FROM matched_transactions)").fetchone()
    out = {"day": day.isoformat(), "seconds": result.seconds, "total": total, "cpu": cpu, "profile": prof,
           "archive": archived,
           "matched": result.matched, "breaks": result.breaks,
           "statement_rows": sum(f.rows for f in result.files), "platform_rows": result.platform_rows,
           "open_breaks": open_breaks, "pairs_kept": kept_pairs, "warehouse_bytes": wh.stat().st_size,
           "snapshot_bytes": sum(p.stat().st_size for p in (run_dir / "snapshot").rglob("*") if p.is_file())}
    out_json.write_text(json.dumps(out, default=str), encoding="utf-8")


def _work_the_queue_and_archive(cfg, day: date, move_days: bool = True) -> dict:
    """The team's part of the night (write-offs, confirmations; simulated in bulk), then ``archive.move``
    (``move_days=False``: the queue only, the baseline that shows what archiving itself changes)."""
    from recon.archive import move
    from recon.warehouse import connect, transaction

    con = connect(cfg.warehouse)
    try:
        with transaction(con):
            con.execute("""
                UPDATE discrepancies SET status = 'resolved', resolved_date = $d, resolved_by = 'bench',
                       resolution_action = 'write_off', resolution_note = 'bench_history --archive-keep',
                       resolved_at = now()
                WHERE status IN ('open', 'pending') AND business_date < $d""", {"d": day})
            con.execute("""
                UPDATE settlement_batches SET status = 'confirmed', confirmed_at = now(), confirmed_by = 'bench'
                WHERE status = 'draft' AND settlement_date <= $d""", {"d": day})
        t0, c0 = time.perf_counter(), _cpu()
        moved, kept = move(con, cfg) if move_days else ([], [])
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        live = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in
                   ("channel_transactions", "channel_funds_movements", "platform_orders", "platform_expected_funds",
                    "matched_transactions", "settlement_items"))
    finally:
        con.close()
    return {"seconds": seconds, "cpu": cpu, "days": [str(m["business_date"]) for m in moved],
            "rows": sum(m["rows"] for m in moved), "kept": len(kept), "live_rows": live, "archiving": move_days}


def run_nights(world: Path, days: int, workdir: Path, archive_keep: int | None = None,
               queue_only: bool = False) -> list[dict]:
    tag = (f"-archive{archive_keep}" if archive_keep else "") + ("-queue-only" if queue_only else "")
    run_dir = workdir / f"history-run-{world.name}{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    nights = []
    for i in range(days):
        day = START + timedelta(days=i)
        out_json = run_dir / f"night-{day}.json"
        r = measure([PY, "-m", "benchmarks.bench_history", "--child-night", str(world), "--run-dir", str(run_dir),
                     "--day", day.isoformat(), "--out-json", str(out_json)]
                    + (["--archive-keep", str(archive_keep)] if archive_keep else [])
                    + (["--queue-only"] if queue_only else []))
        res = json.loads(out_json.read_text(encoding="utf-8"))
        res.update(wall=r["wall"], peak_rss=r["peak_rss"], cpu_tree=r["cpu"], load_average=os.getloadavg())
        nights.append(res)
        if res["archive"]:
            print(f"[history] {day}: archive {res['archive']['seconds']:.1f} s, days {res['archive']['days']}, "
                  f"{res['archive']['live_rows']:,} rows kept", file=sys.stderr, flush=True)
        print(f"[history] {day}: {res['wall']:.1f} s wall, {res['cpu_tree']:.1f} CPU-s, "
              f"peak {res['peak_rss'] / GiB:.2f} GiB, warehouse {res['warehouse_bytes'] / GiB:.2f} GiB, "
              f"open breaks {res['open_breaks']:,}", file=sys.stderr, flush=True)
    return nights


def table(nights: list[dict], command: str) -> str:
    stages = ("fetch", "load", "match", "settle", "report")
    la = [n["load_average"][0] for n in nights]
    first = nights[0]
    lines = [f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} cores; load average after the nights {min(la):.1f}–{max(la):.1f}.", "",
             "| night | statement rows | " + " | ".join(stages) + " | wall | CPU-s | CPU ÷ night 1 | peak RSS "
             "| warehouse | pairs kept | open breaks |", "|---" + "|---:" * (len(stages) + 8) + "|"]
    for n in nights:
        lines.append(f"| {n['day']} | {n['statement_rows']:,} | "
                     + " | ".join(f"{n['seconds'].get(s, 0):.1f}" for s in stages)
                     + f" | {n['wall']:.1f} s | {n['cpu_tree']:.1f} | {n['cpu_tree'] / first['cpu_tree']:.2f}× "
                       f"| {n['peak_rss'] / GiB:.2f} GiB | {n['warehouse_bytes'] / GiB:.2f} GiB "
                       f"| {n['pairs_kept']:,} | {n['open_breaks']:,} |")
    if any(n.get("archive") and n["archive"].get("archiving", True) for n in nights):   # raw files of before: True
        lines += ["", "After each night: the queue worked (breaks older than a day written off, batches whose date has "
                      "come confirmed) and `recon archive move` (its time is inside the night's wall and CPU above):",
                  "", "| night | archive wall | archive CPU-s | days archived | rows moved | days kept | rows of the "
                      "big tables in the warehouse |", "|---|---:|---:|---|---:|---:|---:|"]
        for n in nights:
            a = n["archive"]
            lines.append(f"| {n['day']} | {a['seconds']:.1f} s | {a['cpu']:.1f} | {', '.join(a['days']) or '—'} "
                         f"| {a['rows']:,} | {a['kept']} | {a['live_rows']:,} |")
    keys = sorted(first["profile"], key=lambda k: -first["profile"][k]["cpu"])
    lines += ["", "CPU seconds per function, night by night (the whole process's CPU while the function ran, "
                  "as in the end-to-end profile):", "",
              "| function | " + " | ".join(n["day"][5:] for n in nights) + " | last ÷ first |",
              "|---" + "|---:" * (len(nights) + 1) + "|"]
    for k in keys:
        cpus = [n["profile"].get(k, {}).get("cpu", 0.0) for n in nights]
        ratio = f"{cpus[-1] / cpus[0]:.2f}×" if cpus[0] else "—"
        lines.append(f"| `{k}` | " + " | ".join(f"{c:.1f}" for c in cpus) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/tmp/payrecon-bench"))
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--archive-keep", type=int, help="work the queue and archive after each night, keeping K days")
    ap.add_argument("--queue-only", action="store_true", help="with --archive-keep: work the queue, archive nothing")
    ap.add_argument("--from-json", help="only rebuild the table from a raw results file of an earlier run")
    ap.add_argument("--child-night")
    ap.add_argument("--run-dir")
    ap.add_argument("--day")
    ap.add_argument("--out-json")
    args = ap.parse_args(argv)
    if args.child_night:
        child_night(Path(args.child_night), Path(args.run_dir), date.fromisoformat(args.day), Path(args.out_json),
                    args.archive_keep, args.queue_only)
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keep = (f" --archive-keep {args.archive_keep}" if args.archive_keep else "") + (
        " --queue-only" if args.queue_only else "")
    command = f"python -m benchmarks.bench_history --orders {args.orders} --days {args.days}{keep}"
    raw = workdir / f"history-{args.orders}x{args.days}{keep.replace(' --', '-').replace(' ', '')}.json"
    if args.from_json:
        nights = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        nights = run_nights(world_for(args.orders, args.days, workdir), args.days, workdir, args.archive_keep,
                            args.queue_only)
        raw.write_text(json.dumps(nights, default=str), encoding="utf-8")
    text = table(nights, command)
    print(text)
    if args.write_results and args.archive_keep and not args.queue_only:
        write_section(text, ARCHIVE_BEGIN, ARCHIVE_END, "Night after night, archiving old days")
    elif args.write_results:
        write_section(text, BEGIN, END, "Night after night (a warehouse with history)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
