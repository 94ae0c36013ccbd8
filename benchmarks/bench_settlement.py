"""Benchmark: settlement alone (``settlement.engine.settle_day``) at 10M matched transactions per day.

    .venv/bin/python benchmarks/bench_settlement.py --rows 10000000 [--workdir /tmp/bench_settlement]

For each size: a child process generates the day straight into a fresh warehouse with DuckDB SQL
(N matched transactions for trade date 2026-06-05, ~95% payments and ~5% refunds over 1,000
merchants in CNY plus 1% USD, and open discrepancies holding ~0.1% of the orders); then a second,
fresh child process opens the warehouse and, each inside its own transaction, runs ``settle_day``
once (first run), once more (a rerun that replaces the whole draft batch) and writes the payout
files. Reported: wall time of each step and the peak RSS of the settling process (the generator's
memory is not counted), under the config's DuckDB memory limit. ``--write-results`` rewrites the
"Settlement" section of benchmarks/RESULTS.md (between its markers). Never run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY = date(2026, 6, 5)
MEMORY_LIMIT = "4GB"   # the config default (Config.duckdb_memory_limit)
N_MERCHANTS = 1000


def config(warehouse: Path):
    from recon.config import parse_config
    merchants = [{"id": f"M{i:04d}", "name": f"merchant {i}", "fee_rate": "0.006" if i % 2 else "0.0038",
                  "fee_fixed": "0.00" if i % 3 else "0.10", "fee_min": "0.01" if i % 5 == 0 else None,
                  "refund_fee_policy": "pro_rata" if i % 4 == 0 else "kept",
                  "reserve_rate": "0.05" if i % 10 == 0 else "0", "reserve_days": 30,
                  "bank_account": f"62220000{i:08d}", "bank_name": "ICBC", "account_name": f"merchant {i} Ltd"}
                 for i in range(N_MERCHANTS)]
    for m in merchants:
        if m["fee_min"] is None:
            del m["fee_min"]
    return parse_config({
        "warehouse": str(warehouse), "output_dir": str(warehouse.parent / "out"),
        "landing_dir": str(warehouse.parent / "landing"), "duckdb_memory_limit": MEMORY_LIMIT,
        "channels": [{"name": "wechat", "statements": [
            {"kind": "trade", "format": "wechat_trade", "source": {"type": "folder", "path": "/x"}}]}],
        "internal_source": {"url": "sqlite://"}, "merchants": merchants})


def generate(warehouse: Path, n: int) -> None:
    from recon.warehouse import connect
    if warehouse.exists():
        warehouse.unlink()
    con = connect(warehouse, memory_limit=MEMORY_LIMIT)
    # i: transaction number; every 20th is a refund of the payment before it; amounts exact fen.
    con.execute(f"""
        INSERT INTO matched_transactions (business_date, channel, match_key, txn_type, order_no, refund_no,
            merchant_id, amount, currency, channel_fee, event_time, platform_source, file_id)
        SELECT DATE '{DAY.isoformat()}', 'wechat',
               CASE WHEN i % 20 = 19 THEN 'R' ELSE 'P' END || i,
               CASE WHEN i % 20 = 19 THEN 'refund' ELSE 'payment' END,
               'O' || CASE WHEN i % 20 = 19 THEN i - 1 ELSE i END,
               CASE WHEN i % 20 = 19 THEN 'RF' || i END,
               'M' || lpad(CAST((hash(i // 20) % {N_MERCHANTS}) AS VARCHAR), 4, '0'),
               CAST((1 + hash(i) % 100000) / 100 AS DECIMAL(18,2)),
               CASE WHEN i % 100 = 7 THEN 'USD' ELSE 'CNY' END,
               NULL, TIMESTAMP '{DAY.isoformat()} 09:00:00' + to_seconds(i % 43200), 'bench', 'bench'
        FROM range({n}) t(i)
    """)
    # the refund goes to the merchant of its payment (same i // 20); ~0.1% of orders under a break
    con.execute(f"""
        INSERT INTO discrepancies (discrepancy_id, business_date, channel, flow, type, match_key, status,
            first_seen_date, last_seen_date, order_no)
        SELECT 'D' || i, DATE '{DAY.isoformat()}', 'wechat', 'information', 'amount_mismatch', 'P' || i,
               'open', DATE '{DAY.isoformat()}', DATE '{DAY.isoformat()}', 'O' || i
        FROM range(0, {n}, 997) t(i)
    """)
    con.close()


def settle(warehouse: Path, out: Path) -> dict:
    from recon.warehouse import connect, transaction
    from settlement.engine import settle_day
    from settlement.payout import write_payout_files

    cfg = config(warehouse)
    con = connect(warehouse, memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads)
    result = {}
    t = time.perf_counter()
    with transaction(con):
        first = settle_day(con, cfg, DAY)
    result["first_run_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with transaction(con):
        again = settle_day(con, cfg, DAY)
    result["rerun_s"] = time.perf_counter() - t
    assert again.to_dict() == first.to_dict(), "rerun differs"
    t = time.perf_counter()
    files = write_payout_files(con, cfg, first.batch_ids[0], out)
    result["files_s"] = time.perf_counter() - t
    result.update({
        "settled": first.settled, "held": first.held, "lines": len(first.lines), "files": len(files),
        "payout_total": str(sum(ln["payout"] for ln in first.lines)),
        "items": con.execute("SELECT count(*) FROM settlement_items").fetchone()[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    con.close()
    return result


BEGIN, END = "<!-- settlement:begin -->", "<!-- settlement:end -->"


def table(results: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {results[0]['cores']} cores; 1-minute load average around the runs "
             + ", ".join(f"{r.get('load_average_start', r['load_average'])[0]:.1f}-{r['load_average'][0]:.1f}"
                         for r in results)
             + " (other benchmarks and test suites were running on the same 2 cores, so these times are "
             "upper bounds). DuckDB memory limit "
             f"{results[0]['memory_limit']}.", "",
             "| matched txns | first run | rerun (replaces the draft) | payout + statements | settled | held "
             "| lines | statement files | peak RSS (settle process) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['first_run_s']:.1f} s | {r['rerun_s']:.1f} s | {r['files_s']:.1f} s "
                     f"| {r['settled']:,} | {r['held']:,} | {r['lines']:,} | {r['files'] - 2:,} "
                     f"| {r['peak_rss_mib'] / 1024:.2f} GiB |")
    lines += ["", "Generation (not timed above): " + ", ".join(
        f"{r['rows']:,} rows {r['generate_s']:.0f} s" for r in results) + ".",
        "Each run is one `settle_day` inside one transaction: 1,000 merchants (mixed fee rules, pro-rata refunds, "
        "10% with a rolling reserve), 5% refunds, 1% USD, ~0.1% of orders held by an open discrepancy; the rerun "
        "asserts an identical summary. At 10M the settling process peaks at the DuckDB memory limit: DuckDB "
        "uses the memory it is given and spills the sort beyond it (lower `duckdb_memory_limit` to trade time "
        "for memory). Most of the time is writing ~10M `settlement_items` rows (clustered by merchant, so "
        "each statement file reads only its merchant's row groups)."]
    return "\n".join(lines)


def write_results(text: str) -> None:
    from benchmarks._common import write_section

    write_section(text, BEGIN, END, "Settlement")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_WORKDIR", "/tmp/bench_settlement")))
    ap.add_argument("--write-results", action="store_true", help="update the Settlement section of RESULTS.md")
    ap.add_argument("--from-json", type=Path, nargs="+", help="write results from earlier runs' JSON lines")
    ap.add_argument("--child", choices=["generate", "settle"], help=argparse.SUPPRESS)
    ap.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "generate":
        generate(args.warehouse, args.rows[0])
        return 0
    if args.child == "settle":
        print(json.dumps(settle(args.warehouse, args.warehouse.parent / "out")))
        return 0
    command = "python benchmarks/bench_settlement.py --rows " + " ".join(str(n) for n in args.rows)
    if args.from_json:
        results = [json.loads(ln) for p in args.from_json for ln in p.read_text().splitlines()
                   if ln.startswith("{")]
        results.sort(key=lambda r: r["rows"])
        command = "python benchmarks/bench_settlement.py --rows " + " ".join(str(r["rows"]) for r in results)
        write_results(table(results, command))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    load_start = os.getloadavg()
    for n in args.rows:
        wh = args.workdir / f"settle-{n}.duckdb"
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", "generate", "--rows", str(n), "--warehouse", str(wh)],
                       check=True)
        gen = time.perf_counter() - t
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", "settle", "--warehouse", str(wh)],
                              check=True, capture_output=True, text=True)
        total = time.perf_counter() - t
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res.update({"rows": n, "generate_s": gen, "settle_process_wall_s": total, "cores": os.cpu_count(),
                    "load_average_start": load_start, "load_average": os.getloadavg(),
                    "memory_limit": MEMORY_LIMIT})
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.write_results:
        write_results(table(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
