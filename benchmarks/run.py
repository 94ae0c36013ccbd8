"""``make bench``: the end-to-end benchmark (and, with ``--others``, the component benchmarks beside it).

    python -m benchmarks.run                          # 1M and 10M orders/day (long: minutes on 2 cores)
    python -m benchmarks.run --sizes 1000000          # one size
    python -m benchmarks.run --sizes 100000 --no-pandas --workdir /tmp/bench
    BENCH_SIZES=1000000 make bench

Generated worlds are cached in ``--workdir`` (default ``$BENCH_WORKDIR`` or ``/tmp/payrecon-bench``).
Raw results go to ``<workdir>/e2e-<N>.json``; ``--write-results`` rewrites the "End to end" section of
``benchmarks/RESULTS.md`` (between its markers) with the tables. Never run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- e2e:begin -->", "<!-- e2e:end -->"
OTHERS = ("bench_load", "bench_matching", "bench_settlement")
GiB = 2 ** 30


def fmt_s(x) -> str:
    return "—" if x is None else f"{x:.1f} s"


def table(results: list[dict], command: str) -> str:
    stages = ("fetch", "load", "match", "settle", "report")
    la = [r["load_average"][0] for r in results] + [r.get("load_average_end", [0])[0] for r in results]
    lines = [f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
             f"load average during the runs {min(la):.1f}–{max(la):.1f} (a load above 2 means other jobs shared "
             "the two cores: wall times are then inflated, CPU seconds much less).", ""]
    lines += ["Pipeline (`run_day`: fetch → load → match → settle → report + snapshot), wall seconds per stage "
              "from `DayResult.seconds`:", "",
              "| orders/day | statement rows | platform rows | " + " | ".join(stages) + " | total wall "
              "| CPU s (process tree) | rows/s (wall) | rows/s (CPU) | peak RSS |",
              "|---:" * (len(stages) + 8) + "|"]
    for r in results:
        pl = r["pipeline"]
        rows = pl["statement_rows"] + sum(pl["platform_rows"].values())
        cpu = pl.get("cpu_tree") or pl.get("cpu") or float("nan")
        lines.append(f"| {r['orders']:,}{'' if r.get('report_stage', True) else ' (no report)'} | "
                     f"{pl['statement_rows']:,} | {sum(pl['platform_rows'].values()):,} | "
                     + " | ".join(fmt_s(pl["seconds"].get(s)) for s in stages)
                     + f" | {pl['wall']:.1f} s | {cpu:.1f} s | {rows / pl['wall']:,.0f} | {rows / cpu:,.0f} "
                       f"| {pl['peak_rss'] / GiB:.2f} GiB |")
    prof_keys = sorted({k for r in results for k in r["pipeline"].get("profile", {})},
                       key=lambda k: -results[-1]["pipeline"].get("profile", {}).get(k, {}).get("wall", 0))
    if prof_keys:
        lines += ["", "Where the time goes inside `run_day` (wall / CPU seconds summed over calls; "
                      "peak RSS of the process while the function ran). CPU is the whole process's while "
                      "the function ran: functions that run side by side (`read_platform` in its thread "
                      "beside `parse_fetched` and `load_file`; `publish_snapshot` beside the workbooks and "
                      "payout files) each count the other's too.", "",
                  "| function | " + " | ".join(f"{r['orders']:,}" for r in results) + " |",
                  "|---" + "|---:" * len(results) + "|"]
        for k in prof_keys:
            cells = []
            for r in results:
                s = r["pipeline"].get("profile", {}).get(k)
                rss = f" ({s['peak_rss'] / GiB:.2f} GiB)" if s and s.get("peak_rss") else ""
                cells.append("—" if not s else f"{s['wall']:.1f} / {s['cpu']:.1f}{rss}")
            lines.append(f"| `{k}` | " + " | ".join(cells) + " |")
    lines += ["", "Side by side on the same files (ratio = the other's seconds ÷ the pipeline's):", "",
              "| orders/day | pipeline wall / CPU | pandas wall / CPU | pandas ÷ pipeline (wall, CPU) "
              "| pandas peak RSS | datacompy (WeChat payments only) | scan floor wall / CPU "
              "| pipeline ÷ floor (wall, CPU) | same breaks |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in results:
        pl, pd_, fl = r["pipeline"], r.get("pandas") or {}, r["floor"]
        pcpu = pl.get("cpu_tree") or pl.get("cpu") or float("nan")
        fw = fl["statements_seconds"] + fl["platform_seconds"]
        fc = fl.get("statements_cpu", float("nan")) + fl.get("platform_cpu", float("nan"))
        floor = f"{fw:.1f} / {fc:.1f} s | {pl['wall'] / fw:.1f}×, {pcpu / fc:.1f}×"
        if "wall" in pd_:
            from benchmarks.bench_e2e import agree
            dc = pd_.get("datacompy")
            lines.append(
                f"| {r['orders']:,}{'' if r.get('report_stage', True) else ' (no report)'} | "
                f"{pl['wall']:.1f} / {pcpu:.1f} s | {pd_['wall']:.1f} / {pd_['cpu_tree']:.1f} s | "
                f"{pd_['wall'] / pl['wall']:.2f}×, {pd_['cpu_tree'] / pcpu:.2f}× | {pd_['peak_rss'] / GiB:.2f} GiB | "
                + (f"{dc['seconds']:.1f} s on {dc['rows']:,} rows" if dc else "—")
                + f" | {floor} | {'yes' if agree(pl, pd_) else 'NO'} |")
        else:
            lines.append(f"| {r['orders']:,} | {pl['wall']:.1f} / {pcpu:.1f} s | "
                         f"{pd_.get('error', 'not run')[:80]} | | | | {floor} | |")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        core = ("fetch_day", "parse_fetched", "load_file", "read_platform", "load_staged", "reconcile_day",
                "settle_day")

        def core_cpu(r: dict) -> float:
            return sum(r["pipeline"].get("profile", {}).get(k, {}).get("cpu", 0.0) for k in core)

        ratios = ", ".join(f"`{k}` {b['pipeline']['profile'][k]['cpu'] / a['pipeline']['profile'][k]['cpu']:.1f}×"
                           for k in core if k in a["pipeline"].get("profile", {}) and k in b["pipeline"].get(
                               "profile", {}) and a["pipeline"]["profile"][k]["cpu"] > 0)
        lines += ["", f"Growth: {b['orders'] / a['orders']:.0f}× the orders cost {core_cpu(b) / core_cpu(a):.1f}× "
                      f"the CPU of fetch → settle ({ratios})."]
    excl = results[0].get("excluded") or {}
    lines += ["", "Channels: " + ", ".join(results[0]["channels"])
              + ("" if not excl else "; left out (their format cannot read the generated files yet): "
                 + "; ".join(f"{k}: {v}" for k, v in excl.items()))]
    for r in results:
        pl, pd_ = r["pipeline"], r.get("pandas") or {}
        lines += ["", f"Breaks found at {r['orders']:,} orders: pipeline {json.dumps(pl['breaks'], sort_keys=True)}"
                  + ("; pandas " + json.dumps({k: v for k, v in pd_['breaks'].items() if k != 'matched'},
                                              sort_keys=True) if 'breaks' in pd_ else "")]
        if pd_.get("seconds"):
            lines.append("pandas stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in pd_["seconds"].items()))
        if r.get("generate_seconds"):
            lines.append(f"Generating the world took {r['generate_seconds']:.1f} s "
                         f"(peak RSS {r['generate_peak_rss'] / GiB:.2f} GiB).")
    return "\n".join(lines)


def write_results(text: str) -> None:
    path = HERE / "RESULTS.md"
    body = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = body[:body.index(BEGIN)] + block + body[body.index(END) + len(END):]
    else:
        body = body.rstrip() + "\n\n## End to end\n\n" + block + "\n"
    path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="payrecon benchmarks")
    ap.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "1000000,10000000"),
                    help="orders per day, comma separated (default 1000000,10000000)")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/tmp/payrecon-bench"))
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    ap.add_argument("--no-datacompy", action="store_true")
    ap.add_argument("--no-report", action="store_true",
                    help="stop after settle (run_day without report_day), e.g. to profile the core at 10M")
    ap.add_argument("--write-results", action="store_true", help="update the End to end section of RESULTS.md")
    ap.add_argument("--from-json", nargs="+", metavar="FILE",
                    help="only rebuild the tables from raw results (<workdir>/e2e-<N>.json) of earlier runs")
    ap.add_argument("--command", help="with --from-json: the command line that produced them")
    ap.add_argument("--others", action="store_true", help=f"also run {', '.join(OTHERS)} when present")
    ap.add_argument("--split", action="append", default=[], metavar="CHANNEL=N",
                    help="run the pipeline's split path (`recon run --split`): CHANNEL in N key-hash buckets")
    args = ap.parse_args(argv)
    if args.from_json:
        results = sorted((json.loads(Path(f).read_text(encoding="utf-8")) for f in args.from_json),
                         key=lambda r: r["orders"])
        text = table(results, args.command or "python -m benchmarks.run --sizes "
                     + ",".join(str(r["orders"]) for r in results))
        print(text)
        if args.write_results:
            write_results(text)
        return 0
    from benchmarks.bench_e2e import bench_size
    work = Path(args.workdir)
    split = {c: int(k) for c, k in (x.split("=", 1) for x in args.split)}
    results = []
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        t0 = time.perf_counter()
        r = bench_size(n, work, with_pandas=not args.no_pandas, datacompy=not args.no_datacompy,
                       report=not args.no_report, split=split)
        (work / f"e2e-{n}.json").write_text(json.dumps(r, indent=2, default=str), encoding="utf-8")
        print(f"[e2e] {n:,} orders done in {time.perf_counter() - t0:.0f} s; raw results {work / f'e2e-{n}.json'}")
        results.append(r)
    command = ("python -m benchmarks.run --sizes " + args.sizes + (" --no-pandas" if args.no_pandas else "")
               + (" --no-report" if args.no_report else "") + "".join(f" --split {x}" for x in args.split))
    text = table(results, command)
    print("\n" + text)
    if args.write_results:
        write_results(text)
    if args.others:
        for mod in OTHERS:
            if (HERE / f"{mod}.py").exists():
                print(f"\n== benchmarks.{mod}")
                subprocess.run([sys.executable, "-m", f"benchmarks.{mod}"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
