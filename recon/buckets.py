"""A channel's day reconciled in N key-hash buckets, each on a read-only warehouse, then merged.

For a channel too large for one task (docs/deploy.md, "When one machine is not enough"): every bucket
runs the pipeline's unchanged ``reconcile_day`` over its slice of the channel's rows and writes Parquet;
:func:`apply_buckets` replaces the channel's breaks and the day's pairs with the union of the buckets, inside
the caller's transaction (the nightly run's, so merge and settlement commit together), and
:func:`merge_buckets` does the same in a transaction of its own. The result is exactly the unsplit run's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import date
from pathlib import Path

import duckdb

from recon.config import Config
from recon.errors import UserError
from recon.matching import reconcile_day
from recon.warehouse import connect, transaction, unmatched_rows_sql


class BucketError(UserError):
    """A bucket that cannot run or be merged (a bucket number out of range, files missing, stale data): one
    line naming the channel, the date and what to do; not retried, as nothing gets better by waiting."""


#: Every keyed table the day's reconciliation reads, as the rows of one channel and one bucket. The bucket
#: is hash(reference) % N where the reference is the platform's order / refund number a row pairs on: the
#: number inside the match key (``payment:<ref>``, ``refund:<ref>``, ``internal:<ref>``) and the funds-flow
#: reference. A channel row without the merchant's number takes the platform number its channel id maps to,
#: exactly as the matching does, so both sides of a pair, its duplicates, its funds movements and its carried
#: breaks always fall into the same bucket. {src} is the warehouse catalog, {where} the channel + bucket test.
BUCKET_INPUTS = {
    "platform_orders": ("SELECT t.* FROM {src}.platform_orders t WHERE {where}",
                        "CASE t.order_type WHEN 'payment' THEN t.order_no ELSE t.refund_no END"),
    "channel_transactions": (
        "SELECT t.* FROM {src}.channel_transactions t LEFT JOIN temp.main._bucket_ids i ON i.channel = t.channel "
        "AND i.order_type = t.txn_type "
        "AND i.channel_txn_id = CASE t.txn_type WHEN 'payment' THEN t.channel_txn_id ELSE t.channel_refund_id END "
        "WHERE {where}",
        "CASE t.txn_type WHEN 'payment' THEN coalesce(i.k, t.merchant_order_no, t.channel_txn_id) "
        "ELSE coalesce(i.k, t.merchant_refund_no, t.channel_refund_id, "
        "coalesce(t.merchant_order_no, t.channel_txn_id) || '@' || t.amount) END"),
    "platform_expected_funds": ("SELECT t.* FROM {src}.platform_expected_funds t WHERE {where}",
                                "coalesce(t.refund_no, t.order_no)"),
    "channel_funds_movements": ("SELECT t.* FROM {src}.channel_funds_movements t WHERE {where}",
                                "coalesce(t.reference, t.channel_txn_id, t.movement_id)"),
    # Settlement-batch checks compare a bank's lump sum with a whole channel's day: not splittable by key.
    "bank_statement_lines": ("SELECT t.* FROM {src}.bank_statement_lines t WHERE false", None),
}
#: The channel's ids -> the platform's numbers, among the platform rows the matching has in play (the day's,
#: and those of the channel's carried ``missing_in_channel`` breaks; ``recon.matching_info``'s ``ids``), built
#: once per bucket: not over every day's orders, and not again wherever the channel rows are read.
_IDS = """
CREATE OR REPLACE TEMP TABLE _bucket_ids AS
SELECT channel, order_type, channel_txn_id, min(CASE order_type WHEN 'payment' THEN order_no ELSE refund_no END) AS k
FROM (
    SELECT channel, order_type, channel_txn_id, order_no, refund_no FROM {src}.platform_orders
    WHERE channel = $ch AND business_date = $d AND channel_txn_id IS NOT NULL
    UNION ALL
    SELECT u.channel, u.order_type, u.channel_txn_id, u.order_no, u.refund_no
    FROM {src}.unmatched_platform_rows u JOIN {src}.discrepancies x USING (discrepancy_id)
    WHERE x.channel = $ch AND x.flow = 'information' AND x.type = 'missing_in_channel' AND x.business_date < $d
      AND (x.status IN ('open', 'pending') OR (x.status = 'auto_resolved' AND x.resolved_date >= $d))
      AND u.channel_txn_id IS NOT NULL)
GROUP BY ALL
"""
#: The reference of a break or a matched pair: its match key without the kind prefix and a duplicate's
#: ``#<occurrence>``. Channel-wide breaks (``batch:<T>``) belong to no bucket.
_KEY_REF = r"regexp_replace(regexp_replace(t.match_key, '^(payment|refund|internal):', ''), '#[0-9]+$', '')"
#: What the reconciliation writes; each bucket writes its own slice (seeded with the slice's current rows).
BUCKET_OUTPUTS = {
    "discrepancies": f"t.match_key NOT LIKE 'batch:%' AND {{bucket:{_KEY_REF}}}",
    # the day's pairs are written afresh and nothing else of the table is read: no history is copied
    "matched_transactions": "false",
    "discrepancy_members": "false",          # members of settlement-batch breaks only
    "discrepancy_resolutions": "false",      # append-only audit: a bucket's new rows are appended at merge
}
#: Also written by the reconciliation, but not exported: a bucket writes its copy of them (seeded with the channel's
#: rows, which its carried breaks read), and the merge copies the rows of the merged breaks again
#: (:func:`recon.warehouse.unmatched_rows_sql`).
BUCKET_SCRATCH = {"unmatched_platform_rows": "true", "unmatched_channel_rows": "true"}
#: Written beside them: the ids of the slice's breaks the run withdrew. The ``discrepancies`` file holds only
#: the rows the run changed or added, so a merge writes what the day touched, not the channel's history.
WITHDRAWN = "discrepancies_withdrawn"


def bucket_sql(ref_sql: str, buckets: int) -> str:
    # DuckDB hash(): 64-bit, stable for a DuckDB version (every bucket of one run uses the same version).
    return f"(hash({ref_sql}) % {int(buckets)})"


def _bucket_dir(out_dir: Path, channel: str, d: date) -> Path:
    return Path(out_dir) / f"business_date={d.isoformat()}" / f"channel={channel}"


def reconcile_bucket(cfg: Config, d: date, channel: str, bucket: int, buckets: int, out_dir: Path) -> dict:
    """Reconcile one key-hash bucket of one channel's day; writes Parquet, never the warehouse.

    The warehouse is opened read-only (many buckets can read it at once, from many processes). TEMP
    views named like the input tables show only this channel's rows of this bucket, and TEMP tables
    named like the output tables hold this slice's current rows; the pipeline's own ``reconcile_day``
    then runs unchanged and resolves its table names to them (DuckDB looks in ``temp`` first; a write
    to any other table fails: the warehouse is read-only). What it changed is written to
    ``<out_dir>/business_date=D/channel=C/<table>/bucket=<b>.parquet`` (the breaks it changed or added, the
    ids of those it withdrew, the day's pairs, the new audit rows), and its counts, with the data it read
    (:func:`basis_run`, :func:`last_keyed_audit`), to ``.../summary/bucket=<b>.json``.
    """
    if buckets < 1 or not 0 <= bucket < buckets:
        raise BucketError(f"bucket {bucket} of {buckets}: expected at least 1 bucket and a bucket number in "
                          f"0..{max(buckets, 1) - 1}")
    cfg.channel(channel)                                   # a known channel (its name is a safe identifier)
    out = _bucket_dir(out_dir, channel, d)
    con = connect(cfg.warehouse, read_only=True, memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads)
    try:
        db = con.execute("SELECT current_database()").fetchone()[0]
        src = f'"{db}".main'
        basis, audit = basis_run(con, d), last_keyed_audit(con, channel)   # before the TEMP tables shadow them
        ch = f"'{channel}'"
        con.execute(_IDS.format(src=src), {"ch": channel, "d": d})
        for table, (sql, ref) in BUCKET_INPUTS.items():
            where = f"t.channel = {ch} AND {bucket_sql(ref, buckets)} = {bucket}" if ref else "true"
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS " + sql.format(src=src, where=where))
        for table, seed in {**BUCKET_OUTPUTS, **BUCKET_SCRATCH}.items():
            ddl = con.execute("SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
                              "AND table_name = ?", [db, table]).fetchone()[0]
            for seq in re.findall(r"nextval\('([^']+)'\)", ddl):
                con.execute(f"CREATE TEMP SEQUENCE IF NOT EXISTS {seq}")
            con.execute(re.sub(r"^CREATE TABLE\s+(\S+\.)*", "CREATE TEMP TABLE ", ddl, count=1))
            cond = re.sub(r"\{bucket:(.*)\}", lambda m: f"{bucket_sql(m.group(1), buckets)} = {bucket}", seed)
            if seed != "false":
                cond = f"t.channel = {ch} AND {cond}"
            con.execute(f"INSERT INTO temp.main.{table} SELECT * FROM {src}.{table} t WHERE {cond}")
        con.execute("CREATE TEMP TABLE _seed AS SELECT * FROM temp.main.discrepancies")
        t0 = time.perf_counter()
        summary = reconcile_day(con, cfg, d, channels=[channel])
        seconds = time.perf_counter() - t0
        exports = {t: f"SELECT * FROM temp.main.{t}" for t in BUCKET_OUTPUTS}
        exports["discrepancies"] = "SELECT * FROM temp.main.discrepancies EXCEPT SELECT * FROM _seed"
        exports["discrepancy_resolutions"] = "SELECT * EXCLUDE (resolution_id) FROM temp.main.discrepancy_resolutions"
        exports[WITHDRAWN] = ("SELECT discrepancy_id FROM _seed "
                              "EXCEPT SELECT discrepancy_id FROM temp.main.discrepancies")
        files = {}
        for table, query in exports.items():
            path = out / table / f"bucket={bucket}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet)")
            os.replace(tmp, path)                        # a reader sees the whole bucket file or none
            files[table] = str(path)
        result = {"channel": channel, "business_date": d.isoformat(), "bucket": bucket, "buckets": buckets,
                  "basis_run": basis, "basis_audit": audit, "matched": summary.matched, "breaks": dict(summary.by_type),
                  "seconds": round(seconds, 3), "files": files}
        _write_json(out / "summary" / f"bucket={bucket}.json", result)
        return result
    finally:
        con.close()


def basis_run(con: duckdb.DuckDBPyConnection, d: date) -> str | None:
    """The run whose data a bucket reads: the day's latest run that loaded it (``loaded`` or ``succeeded``)."""
    row = con.execute("SELECT run_id FROM runs WHERE business_date = ? AND status IN ('loaded', 'succeeded') "
                      "ORDER BY started_at DESC LIMIT 1", [d]).fetchone()
    return row[0] if row else None


def last_keyed_audit(con: duckdb.DuckDBPyConnection, channel: str) -> int | None:
    """The latest audit row of the channel's keyed breaks: it moves when a person resolves one (or a run
    changes one), which a bucket's copy of those breaks would otherwise overwrite at the merge."""
    return con.execute("SELECT max(r.resolution_id) FROM discrepancy_resolutions r JOIN discrepancies x "
                       "USING (discrepancy_id) WHERE x.channel = ? AND x.match_key NOT LIKE 'batch:%'",
                       [channel]).fetchone()[0]


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def apply_buckets(con: duckdb.DuckDBPyConnection, d: date, channel: str, buckets: int,
                  out_dir: Path) -> dict:
    """Apply every bucket's slice of one channel to the warehouse, inside the caller's transaction.

    A bucket's files hold what its run changed in its slice (the channel's keyed breaks whose reference
    hashes to the bucket): the breaks changed or added replace theirs, those withdrawn are deleted, the
    day's matched pairs of the channel are replaced, and the buckets' audit rows appended.
    Refuses if a bucket file is missing, or if a bucket read other data than the warehouse now holds (the
    day was loaded again after it ran, or someone resolved one of the channel's breaks meanwhile). Returns
    the buckets' summed counts (``matched``, ``breaks`` by type, as ``reconcile_day`` reports them) and the
    rows merged per table (``rows``).
    """
    if buckets < 1:
        raise BucketError(f"cannot merge channel {channel} for {d}: expected at least 1 bucket, got {buckets}")
    base = _bucket_dir(out_dir, channel, d)
    paths = {t: [base / t / f"bucket={b}.parquet" for b in range(buckets)] for t in [*BUCKET_OUTPUTS, WITHDRAWN]}
    summaries = [base / "summary" / f"bucket={b}.json" for b in range(buckets)]
    missing = [str(p) for ps in [*paths.values(), summaries] for p in ps if not p.exists()]
    if missing:
        raise BucketError(f"cannot merge channel {channel} for {d}: bucket files missing (a bucket did not "
                          f"finish, or they were merged and removed already: reconcile the buckets again): "
                          f"{missing}")
    done = [json.loads(p.read_text(encoding="utf-8")) for p in summaries]
    basis, audit = basis_run(con, d), last_keyed_audit(con, channel)
    stale = [f"bucket {s['bucket']} (read run {s.get('basis_run')}, audit row {s.get('basis_audit')})" for s in done
             if (s.get("basis_run"), s.get("basis_audit")) != (basis, audit)]
    if stale:
        raise BucketError(f"cannot merge channel {channel} for {d}: the warehouse now holds the data of run {basis} "
                          f"and the channel's breaks up to audit row {audit}, but {', '.join(stale)} read other "
                          "data (loaded again, or a break resolved meanwhile); reconcile the buckets again")

    def files(table: str) -> str:
        # hive_partitioning off: the folder names (business_date=..., channel=...) are for people and engines
        # that prune by them; the rows already carry both columns.
        return "read_parquet([" + ", ".join(f"'{p}'" for p in paths[table]) + "], hive_partitioning = false)"

    con.execute(f"DELETE FROM discrepancies WHERE channel = ? AND match_key NOT LIKE 'batch:%' AND discrepancy_id IN "
                f"(SELECT discrepancy_id FROM {files('discrepancies')} "
                f"UNION ALL SELECT discrepancy_id FROM {files(WITHDRAWN)})", [channel])
    con.execute(f"INSERT INTO discrepancies SELECT * FROM {files('discrepancies')}")
    for sql in unmatched_rows_sql(f"SELECT discrepancy_id FROM {files('discrepancies')}",
                                  f"SELECT discrepancy_id FROM {files(WITHDRAWN)}"):
        con.execute(sql)
    con.execute("DELETE FROM matched_transactions WHERE channel = ? AND business_date = ?", [channel, d])
    con.execute(f"INSERT INTO matched_transactions SELECT * FROM {files('matched_transactions')} "
                "WHERE business_date = ?", [d])
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {files('discrepancy_resolutions')}").fetchall()]
    collist = ", ".join(f'"{c}"' for c in cols)
    con.execute(f"INSERT INTO discrepancy_resolutions ({collist}) "
                f"SELECT {collist} FROM {files('discrepancy_resolutions')}")
    breaks: dict[str, int] = {}
    for s_ in done:
        for k, v in s_["breaks"].items():
            breaks[k] = breaks.get(k, 0) + v
    return {"matched": sum(s_["matched"] for s_ in done), "breaks": dict(sorted(breaks.items())),
            "rows": {t: con.execute(f"SELECT count(*) FROM {files(t)}").fetchone()[0] for t in paths}}


def merge_buckets(cfg: Config, d: date, channel: str, buckets: int, out_dir: Path) -> dict:
    """:func:`apply_buckets` in a warehouse transaction of its own (``recon buckets merge``, ``recon_buckets``);
    the merged slices are removed once it commits (:func:`discard_slices`)."""
    con = connect(cfg.warehouse, memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads)
    try:
        with transaction(con):
            merged = apply_buckets(con, d, channel, buckets, out_dir)
    finally:
        con.close()
    discard_slices(out_dir, d, channel)
    return merged


def discard_slices(out_dir: Path, d: date, channel: str) -> None:
    """Remove a channel's bucket Parquet of day ``d`` once merged and committed (at ten million orders a day
    they are a few hundred MB); the small ``summary/bucket=<b>.json`` files stay as the record of what each
    bucket found and which load it read. Merging again needs the buckets reconciled again."""
    base = _bucket_dir(out_dir, channel, d)
    for table in [*BUCKET_OUTPUTS, WITHDRAWN]:
        shutil.rmtree(base / table, ignore_errors=True)


def bucket_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "buckets"
