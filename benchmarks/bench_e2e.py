"""End to end: `recon run` on a generated day of N platform orders, side by side with pandas and the scan floor.

For each size N:

1. ``recon generate --orders N --days 1`` (cached in the work folder; not timed as part of the run);
2. the pipeline, in a fresh process (``run_day``: fetch from a local folder → load → match → settle →
   report → snapshot) into an empty warehouse; wall time per stage from ``DayResult.seconds``, peak RSS
   of the process tree sampled every 20 ms with psutil;
3. the pandas implementation of the same matching (``benchmarks.pandas_baseline``) in its own process,
   on the same files, and datacompy on one channel's payments where it applies;
4. the floor: DuckDB merely scanning the same statement files (ZIP members inflated first, timed) and
   SQLite counting the day's platform rows inside the engine.

Channels whose statement format cannot read the generated files yet are left out, and the results say
which and why (``usable_channels``).
"""
from __future__ import annotations

import argparse
import codecs
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DAY = date(2026, 6, 1)
ALL_CHANNELS = ("wechat", "alipay", "unionpay", "bank")


# ----------------------------------------------------------------------------- measuring
def measure(cmd: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of the whole process tree (psutil, every 20 ms), stdout."""
    import psutil
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    peak = [0]
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))
                for p in procs:
                    ct = p.cpu_times()
                    cpu[p.pid] = ct.user + ct.system
            except psutil.Error:
                pass
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "peak_rss": peak[0], "cpu": sum(cpu.values()), "stdout": out.decode(),
            "stderr": err.decode(errors="replace")}


# ----------------------------------------------------------------------------- worlds
def world_for(n: int, workdir: Path, seed: int = 1) -> tuple[Path, dict]:
    """The generated one-day world of ``n`` orders (reused when already there)."""
    out = workdir / f"world-{n}"
    meta_path = out / "world.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("orders") == n and meta.get("days") == 1 and meta.get("seed") == seed:
            return out, {"generated": False, **meta}
    r = measure([PY, "-m", "recon.cli", "generate", "--orders", str(n), "--days", "1", "--seed", str(seed),
                 "--out", str(out), "--quiet"])
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return out, {"generated": True, "generate_seconds": r["wall"], "generate_peak_rss": r["peak_rss"], **meta}


def usable_channels(workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Channels whose formats read a small generated world of the same shape; the others with the reason."""
    probe = workdir / "probe"
    if not (probe / "world.json").exists():
        from recon.generate import generate_world
        generate_world(probe, orders=2000, days=1, seed=1, break_rate=0.002)
    import importlib
    from loaders.base import FORMATS, FileError
    from recon.config import expand_path, load_config
    importlib.import_module("loaders.formats")
    cfg = load_config(probe / "recon.yml")
    ok, excluded = [], {}
    for ch in cfg.channels:
        reason = None
        for st in ch.statements:
            if st.format not in FORMATS:
                reason = f"format {st.format!r} not registered yet"
                break
            hits = sorted(glob.glob(expand_path(st.source.path, DAY)))
            try:
                parsed = FORMATS[st.format].parse(Path(hits[0]), dict(st.options))
                if parsed.footer.ok is False:
                    reason = f"{st.format}: footer check fails on the generated file: {parsed.footer.message}"
            except (FileError, Exception) as exc:          # noqa: B014 - any failure excludes the channel
                reason = f"{st.format} cannot read the generated file: {str(exc)[:200]}"
            if reason:
                break
        (excluded.__setitem__(ch.name, reason) if reason else ok.append(ch.name))
    return ok, excluded


# ----------------------------------------------------------------------------- the pipeline (child process)
# Functions timed inside `run_day` (module, name): wall and CPU seconds per call, summed.
PROFILED = (("recon.pipeline", "fetch_day"), ("recon.pipeline", "parse_fetched"), ("recon.pipeline", "load_file"),
            ("recon.pipeline", "read_platform"), ("recon.pipeline", "load_staged"),
            ("recon.pipeline", "reconcile_day"),
            ("settlement.engine", "settle_day"), ("reports.excel", "write_discrepancy_report"),
            ("reports.excel", "write_settlement_report"), ("settlement.payout", "write_payout_files"),
            ("reports.snapshot", "publish_snapshot"))


def _cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _RssSampler:
    """Peak RSS of this process while a profiled function runs (sampled every 50 ms), and the Arrow pool's."""

    def __init__(self) -> None:
        import threading

        import psutil
        self.proc, self.peak = psutil.Process(), 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def enter(self) -> int:
        outer, self.peak = self.peak, self.proc.memory_info().rss
        return outer

    def leave(self, outer: int) -> int:
        inner = max(self.peak, self.proc.memory_info().rss)
        self.peak = max(outer, inner)
        return inner


def _profile(prof: dict) -> None:
    """Wrap the PROFILED functions where `run_day` finds them; it still orchestrates every stage itself.

    Each function's entry records wall and CPU seconds and the peak RSS seen while it ran.
    """
    import functools
    import importlib
    sampler = _RssSampler()
    for module, name in PROFILED:
        try:
            mod = importlib.import_module(module)
            fn = getattr(mod, name)
        except (ImportError, AttributeError):
            continue

        def wrap(fn=fn, key=name):
            @functools.wraps(fn)
            def timed(*a, **k):
                t, c, outer = time.perf_counter(), _cpu(), sampler.enter()
                try:
                    return fn(*a, **k)
                finally:
                    peak = sampler.leave(outer)
                    s = prof.setdefault(key, {"calls": 0, "wall": 0.0, "cpu": 0.0, "peak_rss": 0})
                    s["calls"] += 1
                    s["wall"] += time.perf_counter() - t
                    s["cpu"] += _cpu() - c
                    s["peak_rss"] = max(s["peak_rss"], peak)
            return timed
        setattr(mod, name, wrap())


def child_run(world: Path, channels: list[str], workdir: Path, out_json: Path, report: bool = True,
              split: dict[str, int] | None = None) -> None:
    """`recon run` for DAY on ``world`` into a fresh warehouse under ``workdir`` (runs in its own process)."""
    from recon.config import load_config
    from recon.pipeline import run_day
    base = load_config(world / "recon.yml")
    keep = [c.model_dump(mode="json") for c in base.channels if c.name in channels]
    cfg = load_config(world / "recon.yml", overrides={
        "channels": keep, "warehouse": str(workdir / "warehouse.duckdb"), "output_dir": str(workdir / "out"),
        "landing_dir": str(workdir / "landing"), "snapshot_dir": str(workdir / "snapshot")})
    prof: dict = {}
    _profile(prof)
    t0, c0 = time.perf_counter(), _cpu()
    result = run_day(cfg, DAY, split=split, report=report)   # split: `recon run --split`, the DAG's split path
    total, cpu = time.perf_counter() - t0, _cpu() - c0
    out = {"seconds": result.seconds, "total": total, "cpu": cpu, "profile": prof, "matched": result.matched,
           "breaks": result.breaks, "statement_rows": sum(f.rows for f in result.files),
           "platform_rows": result.platform_rows,
           "files": [{"channel": f.channel, "kind": f.kind, "rows": f.rows} for f in result.files],
           "memory_limit": cfg.duckdb_memory_limit, "threads": cfg.duckdb_threads}
    out_json.write_text(json.dumps(out, default=str), encoding="utf-8")


def run_pipeline(world: Path, channels: list[str], workdir: Path, report: bool = True,
                 split: dict[str, int] | None = None) -> dict:
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out_json = run_dir / "result.json"
    r = measure([PY, "-m", "benchmarks.bench_e2e", "--child-run", str(world), "--channels", ",".join(channels),
                 "--run-dir", str(run_dir), "--out-json", str(out_json)] + ([] if report else ["--no-report"])
                + [a for ch, n in (split or {}).items() for a in ("--split", f"{ch}={n}")])
    res = json.loads(out_json.read_text(encoding="utf-8"))
    res.update(wall=r["wall"], peak_rss=r["peak_rss"], cpu_tree=r["cpu"])
    return res


def run_pandas(world: Path, channels: list[str], datacompy: bool) -> dict:
    cmd = [PY, "-m", "benchmarks.pandas_baseline", "--world", str(world), "--date", DAY.isoformat(),
           "--channels", ",".join(channels)]
    r = measure(cmd + (["--datacompy"] if datacompy else []))
    res = json.loads(r["stdout"].strip().splitlines()[-1])
    res.update(wall=r["wall"], peak_rss=r["peak_rss"], cpu_tree=r["cpu"])
    return res


# ----------------------------------------------------------------------------- the floor
def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4          # cut in the middle of a character at the sample's end


def _utf8_copy(src, dst: Path) -> Path:
    """The channels' GBK text, transcoded to UTF-8 chunk by chunk (what any reader must do first)."""
    with src, open(dst, "wb") as out:
        dec = codecs.getincrementaldecoder("gb18030")()
        for chunk in iter(lambda: src.read(1 << 22), b""):
            out.write(dec.decode(chunk).encode("utf-8"))
    return dst


def scan_floor(world: Path, channels: list[str]) -> dict:
    """DuckDB scanning every statement file of the day once (ZIP members inflated first) + SQLite's own scan."""
    import duckdb
    import sqlite3
    from recon.config import expand_path, load_config
    cfg = load_config(world / "recon.yml")
    paths = [Path(p) for ch in cfg.channels if ch.name in channels for st in ch.statements
             for p in sorted(glob.glob(expand_path(st.source.path, DAY)))]
    t0, c0 = time.perf_counter(), _cpu()
    rows = 0
    con = duckdb.connect()
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            if zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as zf:
                    members = [_utf8_copy(zf.open(info), Path(tmp) / f"{p.stem}-{i}")
                               for i, info in enumerate(zf.infolist())]
            else:
                with open(p, "rb") as fh:
                    members = [p] if _is_utf8(fh.read(1 << 16)) else [_utf8_copy(open(p, "rb"), Path(tmp) / p.name)]
            for m in members:
                rows += con.execute(
                    "SELECT count(*) FROM read_csv(?, header=false, all_varchar=true, delim='\\x01', quote='', "
                    "escape='', columns={'line': 'VARCHAR'}, strict_mode=false)",
                    [str(m)]).fetchone()[0]
    statements, statements_cpu = time.perf_counter() - t0, _cpu() - c0
    t0, c0 = time.perf_counter(), _cpu()
    lite = sqlite3.connect(world / "platform.db")
    start, end = f"{DAY} 00:00:00", f"{DAY.fromordinal(DAY.toordinal() + 1)} 00:00:00"
    platform = 0
    for table, col in (("payment_orders", "paid_at"), ("refund_orders", "refunded_at"),
                       ("expected_fund_movements", "expected_at")):
        platform += lite.execute(f"SELECT count(*), sum(length(amount)) FROM {table} WHERE {col} >= ? AND {col} < ?",
                                 [start, end]).fetchone()[0]
    lite.close()
    return {"statements_seconds": statements, "statements_cpu": statements_cpu, "statement_lines": rows,
            "platform_seconds": time.perf_counter() - t0, "platform_cpu": _cpu() - c0, "platform_rows": platform,
            "bytes": sum(p.stat().st_size for p in paths)}


# ----------------------------------------------------------------------------- one size
def bench_size(n: int, workdir: Path, with_pandas: bool = True, datacompy: bool = True,
               log=print, report: bool = True, split: dict[str, int] | None = None) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    channels, excluded = usable_channels(workdir)
    log(f"[e2e] channels used: {channels}; left out: {excluded or 'none'}")
    world, meta = world_for(n, workdir)
    log(f"[e2e] {n:,} orders: world {world} " + (f"generated in {meta['generate_seconds']:.1f} s"
                                                  if meta.get("generated") else "(cached)"))
    res: dict = {"orders": n, "channels": channels, "excluded": excluded, "world": str(world),
                 "generate_seconds": meta.get("generate_seconds"), "generate_peak_rss": meta.get("generate_peak_rss"),
                 "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    res["floor"] = scan_floor(world, channels)
    log(f"[e2e] floor: statements {res['floor']['statements_seconds']:.1f} s, "
        f"platform {res['floor']['platform_seconds']:.1f} s")
    res["pipeline"] = run_pipeline(world, channels, workdir, report, split)
    res["report_stage"] = report
    res["split"] = split or {}
    pl = res["pipeline"]
    stages = json.dumps({k: round(v, 1) for k, v in pl["seconds"].items()})
    log(f"[e2e] pipeline: {pl['wall']:.1f} s wall, stages {stages}, "
        f"peak RSS {pl['peak_rss'] / 2**30:.2f} GiB")
    if with_pandas:
        try:
            res["pandas"] = run_pandas(world, channels, datacompy)
            pd_ = res["pandas"]
            log(f"[e2e] pandas: {pd_['wall']:.1f} s wall, peak RSS {pd_['peak_rss'] / 2**30:.2f} GiB; "
                f"same breaks as the pipeline: {agree(pl, pd_)}")
        except Exception as exc:           # e.g. out of memory: report it, keep the rest
            res["pandas"] = {"error": str(exc)[-1000:]}
            log(f"[e2e] pandas failed: {str(exc)[-300:]}")
    res["load_average_end"] = os.getloadavg()
    return res


def agree(pipeline: dict, pandas: dict) -> bool:
    a = {k: v for k, v in pipeline["breaks"].items() if v}
    b = {k: v for k, v in pandas["breaks"].items() if k != "matched" and v}
    return a == b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child-run")
    ap.add_argument("--channels")
    ap.add_argument("--run-dir")
    ap.add_argument("--out-json")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--split", action="append", default=[])
    args = ap.parse_args(argv)
    if args.child_run:
        split = {c: int(n) for c, n in (x.split("=") for x in args.split)}
        child_run(Path(args.child_run), args.channels.split(","), Path(args.run_dir), Path(args.out_json),
                  report=not args.no_report, split=split)
        return 0
    ap.error("use python -m benchmarks.run")
    return 2


if __name__ == "__main__":
    sys.exit(main())
