"""Benchmark: matching alone (``recon.matching.reconcile_day``) at 1M and 10M transactions per day.

    .venv/bin/python benchmarks/bench_matching.py --rows 1000000 10000000 [--workdir /tmp/bench_matching]

For each size: a child process generates the day straight into a fresh warehouse with DuckDB SQL
(N platform payments + N/20 refunds, the channel's N + N/20 statement rows with ~0.5% injected breaks and 10%
of rows without the merchant order number, N expected and N booked fund movements, yesterday's batch and a
bank credit); then a second, fresh child process opens the warehouse and runs ``reconcile_day`` once inside a
transaction. Reported: the matching wall time and the peak RSS of the matching process (the generator's
memory is not counted), the config's DuckDB memory limit, and the break counts found, which must equal the
injected ones (``expected``; exit status 1 otherwise).
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

DAY = date(2026, 6, 10)
MEMORY_LIMIT = "4GB"   # the config default (Config.duckdb_memory_limit)


def config(warehouse: Path):
    from recon.config import parse_config
    return parse_config({
        "warehouse": str(warehouse), "output_dir": "/tmp/bench_out", "landing_dir": "/tmp/bench_out",
        "duckdb_memory_limit": MEMORY_LIMIT,
        "channels": [{"name": "wechat", "fee_rate": "0.006", "statements": [
            {"kind": "trade", "format": "wechat_trade", "source": {"type": "folder", "path": "/x"}},
            {"kind": "funds", "format": "wechat_fundflow", "source": {"type": "folder", "path": "/x"}}]}],
        "internal_source": {"url": "sqlite://"}})


def generate(warehouse: Path, n: int) -> None:
    from recon.warehouse import connect
    if warehouse.exists():
        warehouse.unlink()
    con = connect(warehouse, memory_limit=MEMORY_LIMIT)
    params = {"d": DAY, "n": n}

    def sql(text: str) -> None:
        con.execute(text, {k: v for k, v in params.items() if f"${k}" in text})

    sql("""
INSERT INTO loaded_files (file_id, channel, business_date, kind, format, path, size_bytes, row_count,
                          quarantined_count, status, loaded_at)
VALUES ('trade0', 'wechat', $d::DATE - 1, 'trade', 'wechat_trade', 'trade0.csv', 0, 0, 0, 'active', now()),
       ('trade1', 'wechat', $d, 'trade', 'wechat_trade', 'trade1.csv', 0, 0, 0, 'active', now()),
       ('funds1', 'wechat', $d, 'funds', 'wechat_fundflow', 'funds1.csv', 0, 0, 0, 'active', now()),
       ('bank1', 'bank', $d, 'bank', 'bank_csv', 'bank1.csv', 0, 0, 0, 'active', now())""")
    # i: payment number; amount 0.01 .. 1000.00, exact; times spread over 09:00 .. 21:00
    sql("""
CREATE TEMP TABLE g AS
SELECT i, 'O' || i AS no, 'X' || i AS txn,
       (((i * 7919) % 100000 + 1)::DECIMAL(18,2) * 0.01::DECIMAL(18,2))::DECIMAL(18,2) AS amount,  -- exact
       $d::TIMESTAMP + INTERVAL 9 HOUR + to_seconds((i * 43200 // $n)::BIGINT) AS ts
FROM range($n) t(i)""")
    sql("""
INSERT INTO platform_orders
SELECT $d, 'payment_orders', no, 'payment', no, NULL, 'wechat', txn, 'M' || (i % 500), amount, 'CNY',
       'success', ts FROM g
UNION ALL   -- a partial refund on every 20th order
SELECT $d, 'refund_orders', 'R' || i, 'refund', no, 'R' || i, 'wechat', 'RX' || i, 'M' || (i % 500),
       round(amount / 3::DECIMAL(18,2), 2), 'CNY', 'success', ts + INTERVAL 1 HOUR FROM g WHERE i % 20 = 0""")
    sql("""
INSERT INTO channel_transactions
SELECT $d, 'wechat', 'trade1', i, 'payment', txn, CASE WHEN i % 10 = 5 THEN NULL ELSE no END, NULL, NULL, '1900',
       CASE WHEN i % 1000 = 4 THEN 'closed' ELSE 'success' END, 'CNY',
       amount + CASE WHEN i % 1000 = 2 THEN 1 ELSE 0 END,
       round(amount * 0.006::DECIMAL(12,8), 2) + CASE WHEN i % 1000 = 3 THEN 0.01 ELSE 0 END,
       NULL, ts + INTERVAL 1 SECOND, NULL, NULL
FROM g WHERE i % 1000 <> 1                                   -- missing_in_channel
UNION ALL SELECT $d, 'wechat', 'trade1', i + $n, 'payment', txn, no, NULL, NULL, '1900', 'success', 'CNY', amount,
       round(amount * 0.006::DECIMAL(12,8), 2), NULL, ts, NULL, NULL FROM g WHERE i % 1000 = 6   -- duplicate
UNION ALL SELECT $d, 'wechat', 'trade1', i + 2 * $n, 'payment', 'XZ' || i, 'Z' || i, NULL, NULL, '1900', 'success',
       'CNY', amount, round(amount * 0.006::DECIMAL(12,8), 2), NULL, ts, NULL, NULL
FROM g WHERE i % 1000 = 7                                    -- missing_in_platform
UNION ALL SELECT $d, 'wechat', 'trade1', i + 3 * $n, 'refund', txn, no, 'RX' || i,
       CASE WHEN i % 40 = 0 THEN NULL ELSE 'R' || i END, '1900', 'success', 'CNY', round(amount / 3::DECIMAL(18,2), 2),
       0, NULL, ts + INTERVAL 1 HOUR, NULL, NULL FROM g WHERE i % 20 = 0
UNION ALL SELECT $d::DATE - 1, 'wechat', 'trade0', i, 'payment', 'Y' || txn, 'Y' || no, NULL, NULL, '1900', 'success',
       'CNY', amount, round(amount * 0.006::DECIMAL(12,8), 2), amount - round(amount * 0.006::DECIMAL(12,8), 2),
       ts - INTERVAL 1 DAY, NULL, NULL
FROM g""")
    sql("""
INSERT INTO platform_expected_funds
SELECT $d, 'expected_fund_movements', 'F' || i, 'wechat', no, NULL, 'in', amount, 'CNY', ts FROM g
UNION ALL SELECT $d, 'expected_fund_movements', 'FR' || i, 'wechat', no, 'R' || i, 'out',
       round(amount / 3::DECIMAL(18,2), 2), 'CNY', ts + INTERVAL 1 HOUR FROM g WHERE i % 20 = 0""")
    sql("""
INSERT INTO channel_funds_movements
SELECT $d, 'wechat', 'funds1', i, 'M' || i, txn, no, 'in', amount + CASE WHEN i % 1000 = 8 THEN 0.5 ELSE 0 END,
       'CNY', ts + INTERVAL 2 SECOND, 'trade', NULL FROM g WHERE i % 1000 <> 9      -- long / short
UNION ALL SELECT $d, 'wechat', 'funds1', i + $n, 'MR' || i, 'RX' || i, 'R' || i, 'out',
       round(amount / 3::DECIMAL(18,2), 2), 'CNY', ts + INTERVAL 1 HOUR, 'refund', NULL FROM g WHERE i % 20 = 0""")
    sql("""
INSERT INTO bank_statement_lines
SELECT $d, 'bank', 'bank1', 1, $d, 'Tenpay', 'wechat', 'batch', 'in', sum(net) - 1, 'CNY', NULL
FROM channel_transactions WHERE business_date = $d::DATE - 1""")
    con.execute("CHECKPOINT")
    con.close()


def expected(n: int) -> tuple[int, dict[str, int]]:
    """What ``generate`` injected: (matched pairs, breaks by type) for n payments."""
    def every(k: int) -> int:          # payments i < n with i % 1000 == k
        return len(range(k, n, 1000))
    matched = n - sum(every(k) for k in (1, 2, 3, 4)) + len(range(0, n, 20))   # + the refunds
    breaks = {"missing_in_channel": every(1), "amount_mismatch": every(2), "fee_mismatch": every(3),
              "status_mismatch": every(4), "duplicate": every(6), "missing_in_platform": every(7),
              "long": every(8), "short": every(9) + (1 if n else 0)}              # + yesterday's batch, 1 short
    return matched, {k: v for k, v in sorted(breaks.items()) if v}


def match(warehouse: Path) -> dict:
    from recon.matching import reconcile_day
    from recon.warehouse import connect, transaction
    cfg = config(warehouse)
    con = connect(warehouse, memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads)
    rows = con.execute("SELECT (SELECT count(*) FROM platform_orders) + (SELECT count(*) FROM channel_transactions "
                       "WHERE business_date = ?)", [DAY]).fetchone()[0]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    with transaction(con):
        summary = reconcile_day(con, cfg, DAY)
    seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)   # all DuckDB threads of this process
    con.close()
    return {"rows": rows, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 1), "matched": summary.matched,
            "breaks": summary.by_type, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000],
                    help="platform payments per day (default: 1M and 10M)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_matching"))
    ap.add_argument("--child", choices=["generate", "match"], help=argparse.SUPPRESS)
    ap.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "generate":
        generate(args.warehouse, args.rows[0])
        return 0
    if args.child == "match":
        print(json.dumps(match(args.warehouse)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    for n in args.rows:
        wh = args.workdir / f"matching_{n}.duckdb"
        t0 = time.perf_counter()
        subprocess.run(me + ["--child", "generate", "--rows", str(n), "--warehouse", str(wh)], check=True)
        gen = time.perf_counter() - t0
        out = subprocess.run(me + ["--child", "match", "--rows", str(n), "--warehouse", str(wh)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{n:>11,} payments/day: {r['rows']:,} platform + statement rows; matching {r['seconds']} s "
              f"(CPU {r['cpu_seconds']} s, load average after {load}), "
              f"peak RSS {r['peak_rss_mb']} MB (memory_limit {MEMORY_LIMIT}); matched {r['matched']:,}; "
              f"breaks {r['breaks']}; (generation {gen:.0f} s)", flush=True)
        wh.unlink(missing_ok=True)
        matched, breaks = expected(n)
        if r["matched"] != matched or r["breaks"] != breaks:
            print(f"WRONG RESULT: expected matched {matched:,}, breaks {breaks}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
