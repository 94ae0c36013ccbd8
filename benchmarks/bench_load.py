"""Benchmark: loading (parsing) one big statement file — a 1,000,000-row Alipay GBK trade bill (the ZIP as
Alipay delivers it) and a 1,000,000-row WeChat trade bill.

    .venv/bin/python -m benchmarks.bench_load                       # 1M rows each
    .venv/bin/python -m benchmarks.bench_load --rows 1000000 2000000 --write-results

The files are written once with ``loaders.writers`` into ``--workdir`` (default /tmp/payrecon-bench-load) and
reused. Each parse runs in a fresh child process that reports wall time, CPU time (user+sys), peak RSS
(``ru_maxrss``) and the size of the Arrow output, so memory shows what streaming costs beyond the output.
Aim (issue 3): each under 10 s on the 2-core machine, memory bounded by streaming, not by file size.
Never run by the test suite. ``--write-results`` rewrites the "Loading" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
DAY = date(2026, 6, 5)
CENT = Decimal("0.01")


def rows(n: int):
    """Canonical trade rows: 10% refunds, amounts 1.00-500.99, fee 0.6% half-up to the fen."""
    t0 = datetime.combine(DAY, datetime.min.time())
    words = ["咖啡", "图书", "会员月卡", "外卖套餐", "电影票", "demo goods"]
    for i in range(n):
        amount = Decimal(100 + (i * 7919) % 50000) * CENT
        fee = (amount * Decimal("0.006")).quantize(CENT, rounding=ROUND_HALF_UP)   # half-up, as the channels
        refund = i % 10 == 9
        yield {"txn_type": "refund" if refund else "payment", "channel_txn_id": f"2026060522001{i:015d}",
               "merchant_order_no": f"ORD{i:012d}", "channel_refund_id": f"50{i:020d}" if refund else None,
               "merchant_refund_no": f"REF{i:012d}" if refund else None, "channel_merchant_id": "1900000109",
               "status": "success", "currency": "CNY", "amount": amount, "fee": -fee if refund else fee,
               "net": -amount + fee if refund else amount - fee, "txn_time": t0 + timedelta(seconds=i % 86400),
               "card_no_masked": None, "description": words[i % len(words)]}


def make(kind: str, n: int, work: Path) -> Path:
    from loaders import writers as W

    work.mkdir(parents=True, exist_ok=True)
    path = work / (f"alipay_{n}.csv.zip" if kind == "alipay" else f"wechat_{n}.csv")
    if path.exists():
        return path
    tmp = path.with_suffix(path.suffix + ".part")
    t = time.perf_counter()
    if kind == "alipay":
        W.write_alipay_trade(rows(n), tmp, bill_date=DAY)
    else:
        W.write_wechat_trade(rows(n), tmp)
    tmp.rename(path)
    print(f"  wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def child(fmt: str, path: str) -> None:
    """Runs in a fresh process: parse once, print one JSON line."""
    import resource

    import loaders.formats  # noqa: F401
    from loaders.base import FORMATS

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    parsed = FORMATS[fmt].parse(Path(path), {})
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"format": fmt, "rows": parsed.rows.num_rows, "quarantined": len(parsed.quarantine),
                      "footer_ok": parsed.footer.ok, "wall_s": wall,
                      "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                      "peak_rss_mb": r1.ru_maxrss / 1024, "arrow_mb": parsed.rows.nbytes / 1e6,
                      "file_mb": Path(path).stat().st_size / 1e6}))


def measure(fmt: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_load", "--child", fmt, str(path)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict], command: str, load: tuple) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
             f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: other jobs share "
             "the cores, so wall times are pessimistic; CPU time is what the parse itself used).", "",
             "| file | rows | file size | wall | CPU (user+sys) | rows/s (wall) | peak RSS | Arrow output | footer |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['rows']:,} | {r['file_mb']:.0f} MB | {r['wall_s']:.1f} s | "
                     f"{r['cpu_s']:.1f} s | {r['rows'] / r['wall_s']:,.0f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['arrow_mb']:.0f} MB | {'ok' if r['footer_ok'] else r['footer_ok']} |")
    return "\n".join(lines)


def write_results(text: str) -> None:
    from benchmarks._common import write_section

    write_section(text, BEGIN, END, "Loading")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--workdir", default=os.environ.get("BENCH_LOAD_WORKDIR", "/tmp/payrecon-bench-load"))
    ap.add_argument("--repeat", type=int, default=1, help="parse each file this many times, keep the fastest")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    load = os.getloadavg()
    results = []
    for n in args.rows:
        for kind, fmt, label in (("alipay", "alipay_trade", "Alipay trade bill, GBK ZIP"),
                                 ("wechat", "wechat_trade", "WeChat trade bill (ALL), UTF-8")):
            path = make(kind, n, Path(args.workdir))
            best = min((measure(fmt, path) for _ in range(args.repeat)), key=lambda r: r["wall_s"])
            best["label"] = label
            results.append(best)
            print(f"  {label}: {best['rows']:,} rows in {best['wall_s']:.1f} s wall / {best['cpu_s']:.1f} s CPU, "
                  f"peak RSS {best['peak_rss_mb']:.0f} MB, Arrow output {best['arrow_mb']:.0f} MB, "
                  f"footer {best['footer_ok']}", flush=True)
    command = "python -m benchmarks.bench_load " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(results, command.strip(), load)
    print("\n" + text)
    if args.write_results:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
