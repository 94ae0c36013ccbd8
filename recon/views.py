"""Stable, documented views over the warehouse for analysts (and the reports).

``create_views(con)`` issues ``CREATE OR REPLACE VIEW`` for every view below;
it is idempotent and cheap, and is meant to run after the migrations each time
the warehouse is opened read-write (``recon.warehouse.connect``), and again on
the published snapshot (``reports.snapshot``). Views list their columns by name,
so columns added by later migrations do not change what a view returns.

This module imports nothing from the project (``recon.warehouse`` may import
it without a cycle). Documented in ``docs/warehouse.md`` ("Analyst access").
"""
from __future__ import annotations

import duckdb

#: Age buckets of an open break, in days since it was first seen. ``(label, lo, hi)``, ``hi`` inclusive,
#: ``None`` = no upper bound. Shared by ``v_open_breaks_aging`` and the Excel report.
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-3 days", 0, 3),
    ("4-7 days", 4, 7),
    ("8-14 days", 8, 14),
    ("15-30 days", 15, 30),
    ("31+ days", 31, None),
)


def age_bucket_sql(age_expr: str) -> str:
    """A SQL CASE expression naming the age bucket of ``age_expr`` (an integer number of days)."""
    parts = []
    for label, _lo, hi in AGE_BUCKETS:
        if hi is None:
            parts.append(f"ELSE '{label}'")
        else:
            parts.append(f"WHEN {age_expr} <= {hi} THEN '{label}'")
    return "CASE " + " ".join(parts) + " END"


def age_bucket_order_sql(age_expr: str) -> str:
    """The bucket's position (1..n), for sorting."""
    parts = [f"WHEN {age_expr} <= {hi} THEN {i}" for i, (_l, _lo, hi) in enumerate(AGE_BUCKETS, 1)
             if hi is not None]
    return "CASE " + " ".join(parts) + f" ELSE {len(AGE_BUCKETS)} END"


# The direction of a break's money: channel - platform > 0 means the channel holds more than the
# platform expects ("long"), < 0 less ("short"). Funds-flow breaks of type long/short keep their type.
DIRECTION_SQL = (
    "CASE WHEN d.type IN ('long', 'short') THEN d.type "
    "WHEN d.difference > 0 THEN 'long' WHEN d.difference < 0 THEN 'short' ELSE NULL END"
)

# The as-of date of the aging views: the latest business date a run completed for, else the latest
# date any break was seen.
AS_OF_SQL = (
    "(SELECT coalesce((SELECT max(business_date) FROM runs WHERE status = 'succeeded'), "
    "(SELECT max(last_seen_date) FROM discrepancies)))"
)

VIEWS: dict[str, str] = {
    # One row per break, with its direction (long/short) and whether it is still open.
    "v_discrepancies": f"""
SELECT d.discrepancy_id, d.business_date, d.channel, d.flow, d.type, d.status,
       d.status IN ('open', 'pending') AS is_open,
       d.match_key, d.order_no, d.merchant_id, d.currency,
       d.platform_amount, d.channel_amount, d.difference, abs(d.difference) AS abs_difference,
       {DIRECTION_SQL} AS direction,
       d.first_seen_date, d.last_seen_date, d.resolved_date, d.resolution_note,
       d.platform_source, d.channel_source, d.detail
FROM discrepancies d
""",
    # One row per business date x channel: what was loaded, matched and broken that day.
    "v_daily_summary": """
WITH f AS (
    SELECT business_date, channel, count(*) AS files_loaded, sum(row_count) AS statement_rows,
           sum(quarantined_count) AS quarantined_rows,
           count(*) FILTER (WHERE footer_ok = false) AS footer_failures
    FROM loaded_files WHERE status = 'active' GROUP BY ALL
), t AS (
    SELECT business_date, channel, count(*) AS channel_transactions FROM channel_transactions GROUP BY ALL
), p AS (
    SELECT business_date, channel, count(*) AS platform_orders FROM platform_orders GROUP BY ALL
), m AS (
    SELECT business_date, channel, count(*) FILTER (WHERE outcome = 'matched') AS matched,
           count(*) FILTER (WHERE outcome <> 'matched') AS paired_with_break
    FROM matched_transactions GROUP BY ALL
), d AS (
    SELECT business_date, channel, count(*) AS breaks,
           count(*) FILTER (WHERE status IN ('open', 'pending')) AS open_breaks,
           count(*) FILTER (WHERE flow = 'information') AS information_breaks,
           count(*) FILTER (WHERE flow = 'funds') AS funds_breaks
    FROM discrepancies GROUP BY ALL
), k AS (
    SELECT business_date, channel FROM f UNION SELECT business_date, channel FROM t
    UNION SELECT business_date, channel FROM p UNION SELECT business_date, channel FROM m
    UNION SELECT business_date, channel FROM d
)
SELECT k.business_date, k.channel,
       coalesce(f.files_loaded, 0) AS files_loaded, coalesce(f.statement_rows, 0) AS statement_rows,
       coalesce(f.quarantined_rows, 0) AS quarantined_rows, coalesce(f.footer_failures, 0) AS footer_failures,
       coalesce(t.channel_transactions, 0) AS channel_transactions,
       coalesce(p.platform_orders, 0) AS platform_orders, coalesce(m.matched, 0) AS matched,
       coalesce(m.paired_with_break, 0) AS paired_with_break,
       coalesce(d.breaks, 0) AS breaks, coalesce(d.open_breaks, 0) AS open_breaks,
       coalesce(d.information_breaks, 0) AS information_breaks, coalesce(d.funds_breaks, 0) AS funds_breaks,
       -- moved out of the live warehouse (recon archive): its row counts there are 0; the snapshot keeps them
       k.business_date IN (SELECT business_date FROM archived_days) AS archived
FROM k
LEFT JOIN f USING (business_date, channel) LEFT JOIN t USING (business_date, channel)
LEFT JOIN p USING (business_date, channel) LEFT JOIN m USING (business_date, channel)
LEFT JOIN d USING (business_date, channel)
""",
    # One row per business date x channel x currency: money on each side. Platform totals count
    # successful orders only; channel totals count every statement row (the statement is the fact).
    "v_channel_totals": """
WITH t AS (
    SELECT business_date, channel, currency, count(*) AS channel_txn_count,
           coalesce(sum(amount) FILTER (WHERE txn_type = 'payment'), 0) AS channel_payments,
           coalesce(sum(amount) FILTER (WHERE txn_type = 'refund'), 0) AS channel_refunds,
           coalesce(sum(fee), 0) AS channel_fees
    FROM channel_transactions GROUP BY ALL
), p AS (
    SELECT business_date, channel, currency, count(*) AS platform_order_count,
           coalesce(sum(amount) FILTER (WHERE order_type = 'payment'), 0) AS platform_payments,
           coalesce(sum(amount) FILTER (WHERE order_type = 'refund'), 0) AS platform_refunds
    FROM platform_orders WHERE status = 'success' GROUP BY ALL
), fm AS (
    SELECT business_date, channel, currency,
           coalesce(sum(amount) FILTER (WHERE direction = 'in'), 0) AS funds_in,
           coalesce(sum(amount) FILTER (WHERE direction = 'out'), 0) AS funds_out
    FROM channel_funds_movements GROUP BY ALL
), d AS (
    SELECT business_date, channel, currency, count(*) AS breaks,
           coalesce(sum(difference), 0) AS break_difference
    FROM discrepancies GROUP BY ALL
), k AS (
    SELECT business_date, channel, currency FROM t UNION SELECT business_date, channel, currency FROM p
    UNION SELECT business_date, channel, currency FROM fm
    UNION SELECT business_date, channel, currency FROM d WHERE currency IS NOT NULL
)
SELECT k.business_date, k.channel, k.currency,
       coalesce(t.channel_txn_count, 0) AS channel_txn_count,
       coalesce(t.channel_payments, 0) AS channel_payments,
       coalesce(t.channel_refunds, 0) AS channel_refunds,
       coalesce(t.channel_fees, 0) AS channel_fees,
       coalesce(p.platform_order_count, 0) AS platform_order_count,
       coalesce(p.platform_payments, 0) AS platform_payments,
       coalesce(p.platform_refunds, 0) AS platform_refunds,
       coalesce(fm.funds_in, 0) AS funds_in, coalesce(fm.funds_out, 0) AS funds_out,
       coalesce(d.breaks, 0) AS breaks, coalesce(d.break_difference, 0) AS break_difference
FROM k
LEFT JOIN t USING (business_date, channel, currency) LEFT JOIN p USING (business_date, channel, currency)
LEFT JOIN fm USING (business_date, channel, currency) LEFT JOIN d USING (business_date, channel, currency)
""",
    # One row per settlement line (merchant x currency in a batch), with its batch.
    "v_settlements": """
SELECT b.batch_id, b.settlement_date, b.status AS batch_status, b.created_at, b.confirmed_at, b.confirmed_by,
       l.merchant_id, l.currency, l.trade_count, l.gross, l.refunds, l.fees, l.adjustments, l.net,
       l.payout, l.carried_forward
FROM settlement_batches b JOIN settlement_lines l ON l.batch_id = b.batch_id
""",
    # One row per break still open or pending, aged at the latest completed business date.
    "v_open_breaks": f"""
WITH a AS (SELECT {AS_OF_SQL} AS as_of_date)
SELECT d.discrepancy_id, d.business_date, d.channel, d.flow, d.type, d.status, d.match_key, d.order_no,
       d.merchant_id, d.currency, d.platform_amount, d.channel_amount, d.difference,
       {DIRECTION_SQL} AS direction, d.first_seen_date, d.last_seen_date, a.as_of_date,
       date_diff('day', d.first_seen_date, a.as_of_date) AS age_days,
       {age_bucket_sql("date_diff('day', d.first_seen_date, a.as_of_date)")} AS age_bucket
FROM discrepancies d, a
WHERE d.status IN ('open', 'pending')
""",
    # Open breaks by channel x currency x age bucket.
    "v_open_breaks_aging": f"""
WITH a AS (SELECT {AS_OF_SQL} AS as_of_date),
o AS (
    SELECT d.channel, d.currency, d.difference, d.first_seen_date, a.as_of_date,
           date_diff('day', d.first_seen_date, a.as_of_date) AS age_days
    FROM discrepancies d, a WHERE d.status IN ('open', 'pending')
)
SELECT channel, currency, any_value(as_of_date) AS as_of_date,
       {age_bucket_sql('age_days')} AS age_bucket, {age_bucket_order_sql('age_days')} AS bucket_order,
       count(*) AS break_count, coalesce(sum(difference), 0) AS total_difference,
       coalesce(sum(abs(difference)), 0) AS total_abs_difference, min(first_seen_date) AS oldest_first_seen
FROM o GROUP BY channel, currency, age_bucket, bucket_order
""",
    # One row per run, with the seconds of its stages (runs.summary): which stage grows, night after night.
    "v_runs": """
SELECT run_id, business_date, status, stage, started_at, finished_at,
       date_diff('millisecond', started_at, finished_at) / 1000.0 AS wall_seconds,
       TRY_CAST(summary->>'$.seconds.load' AS DOUBLE) AS load_seconds,
       TRY_CAST(summary->>'$.seconds.match' AS DOUBLE) AS match_seconds,
       TRY_CAST(summary->>'$.seconds.settle' AS DOUBLE) AS settle_seconds,
       TRY_CAST(summary->>'$.rows' AS BIGINT) AS statement_rows,
       TRY_CAST(summary->>'$.matched' AS BIGINT) AS matched, message
FROM runs
""",
    # Statement files as loaded (active ones; superseded files stay in loaded_files).
    "v_loaded_files": """
SELECT file_id, business_date, channel, kind, format, path, row_count, quarantined_count, gross_total,
       fee_total, net_total, declared_rows, declared_amount, footer_ok, footer_message, loaded_at, run_id
FROM loaded_files WHERE status = 'active'
""",
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create or replace every analyst view in the connection's current database. Idempotent."""
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
