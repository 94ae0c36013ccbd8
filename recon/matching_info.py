"""Information flow: platform orders and refunds against the channel's transaction details.

One full outer join on (channel, match key, occurrence). The platform side is the day's rows plus the
platform rows of earlier ``missing_in_channel`` breaks still open or pending (carry-over); the channel
side is the day's statement rows plus the rows of earlier ``missing_in_platform`` breaks. A carried row
that finds its partner today clears its old break (``auto_resolved``); one that does not stays a break of
its own day and makes no new one.

Match key (stable, order-number based, so discrepancy ids do not change):
- platform: ``payment:<order_no>``, ``refund:<refund_no>``;
- channel: the channel's transaction id (refund id for refunds) looked up among the platform rows in
  play (``platform_orders.channel_txn_id``) gives the platform's order (refund) number; where the channel
  id is unknown to the platform, the merchant order (refund) number the channel printed; where there is
  none, the channel's own id. So the channel's id wins, the merchant number is the fallback.
Each refund has its own key, so several partial refunds of one order pair one by one.
Occurrence numbers pair repeated keys one-to-one; a key's extra rows on one side are ``duplicate``.
"""
from __future__ import annotations

from datetime import date

import duckdb

# Platform status -> the channel statuses that agree with it.
COMPATIBLE_STATUS_SQL = """
    (p.status = 'success' AND c.status IN ('success', 'refunded'))
 OR (p.status IN ('closed', 'failed') AND c.status IN ('revoked', 'closed', 'failed'))
 OR (p.status = 'pending' AND c.status = 'processing')
"""


# The platform rows in play: the day's, plus those of carried missing_in_channel breaks (their copies in
# unmatched_platform_rows: reading them back from platform_orders read every earlier day that had one);
# ``kt``/``kno``: the kind and number of the match key (match_key = kt:kno).
P_ALL = """
    SELECT channel, CASE order_type WHEN 'payment' THEN 'payment' ELSE 'refund' END AS kt,
           CASE order_type WHEN 'payment' THEN order_no ELSE refund_no END AS kno,
           business_date, source_table, source_key, order_type, order_no, refund_no, channel_txn_id, merchant_id,
           amount, currency, status, event_time, carried_id
    FROM (
        SELECT po.business_date, po.source_table, po.source_key, po.order_type, po.order_no, po.refund_no,
               po.channel, po.channel_txn_id, po.merchant_id, po.amount, po.currency, po.status, po.event_time,
               NULL::VARCHAR AS carried_id
        FROM platform_orders po
        WHERE po.business_date = $d AND po.channel = $ch
          AND po.channel IN (SELECT channel FROM channel_params WHERE has_trade)
        UNION ALL
        SELECT po.business_date, po.source_table, po.source_key, po.order_type, po.order_no, po.refund_no,
               po.channel, po.channel_txn_id, po.merchant_id, po.amount, po.currency, po.status, po.event_time,
               k.discrepancy_id
        FROM carry k JOIN unmatched_platform_rows po ON po.discrepancy_id = k.discrepancy_id
        WHERE k.flow = 'information' AND k.type = 'missing_in_channel' AND k.channel = $ch)
"""


def information_flow(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """TEMP TABLE info_pairs: one row per (channel, match key, occurrence) with its outcome.

    One statement per channel over narrow rows. The match key is joined as its parts, the kind ``kt`` (``payment`` /
    ``refund``) and the number ``kno`` (match_key = ``kt:kno``, built by the ``info_sources`` view for the
    rows written out), so no key strings are built for the join. Occurrence numbers are computed only for
    keys that repeat on a side (rare); every other row is occurrence 1.
    """
    # A row without any key number (a platform refund without refund_no; a channel row without any id or
    # merchant number) pairs with nothing; such rows are numbered per channel, as rows of one NULL match key
    # were. They hardly ever exist and their branches cost the optimiser a materialised scan, so they are
    # there only when some may be in play (the checks may find more rows than are in play, never fewer).
    p_rows, p_null = (f"""p_rows AS NOT MATERIALIZED ({P_ALL}    WHERE CASE order_type WHEN 'payment' THEN order_no """
                      """ELSE refund_no END IS NOT NULL"""), ""
    c_filter, c_null = "    WHERE kno IS NOT NULL\n", ""
    keyless_p, keyless_c = con.execute("""
SELECT (SELECT count(*) FROM (SELECT order_type, order_no, refund_no FROM platform_orders WHERE business_date = $d
                               UNION ALL SELECT order_type, order_no, refund_no FROM unmatched_platform_rows
                               WHERE discrepancy_id IN (SELECT discrepancy_id FROM carry))
        WHERE CASE order_type WHEN 'payment' THEN order_no ELSE refund_no END IS NULL),
       (SELECT count(*) FROM (SELECT txn_type, merchant_order_no, channel_txn_id, merchant_refund_no, channel_refund_id
                              FROM channel_transactions WHERE business_date = $d
                              UNION ALL SELECT txn_type, merchant_order_no, channel_txn_id, merchant_refund_no,
                                               channel_refund_id FROM unmatched_channel_rows
                              WHERE discrepancy_id IN (SELECT discrepancy_id FROM carry))
        WHERE merchant_order_no IS NULL AND channel_txn_id IS NULL
          AND (txn_type = 'payment' OR (merchant_refund_no IS NULL AND channel_refund_id IS NULL)))""",
                                       {"d": d}).fetchone()
    if keyless_p:
        p_rows = f"""p_all AS NOT MATERIALIZED ({P_ALL}), p_rows AS NOT MATERIALIZED (
    SELECT * FROM p_all WHERE kno IS NOT NULL"""
        p_null = """    UNION ALL
    SELECT r.*, row_number() OVER (PARTITION BY r.channel ORDER BY r.event_time, r.business_date, r.source_key)
    FROM p_all r WHERE r.kno IS NULL
"""
    if keyless_c:
        c_filter, c_null = "", """    UNION ALL
    SELECT r.*, row_number() OVER (PARTITION BY r.channel ORDER BY r.txn_time, r.business_date, r.file_no, r.line_no)
    FROM c_rows r WHERE r.kno IS NULL
"""
    pairs = f"""
WITH {p_rows}), p_rep AS (   -- keys that repeat among the platform rows (rare)
    SELECT channel, kt, kno FROM p_rows GROUP BY ALL HAVING count(*) > 1
), p AS (
    SELECT r.*, 1::BIGINT AS occ FROM p_rows r ANTI JOIN p_rep USING (channel, kt, kno)
    UNION ALL
    SELECT r.*, row_number() OVER (PARTITION BY r.channel, r.kt, r.kno
                                   ORDER BY r.event_time, r.business_date, r.source_key) AS occ
    FROM p_rows r SEMI JOIN p_rep USING (channel, kt, kno)
{p_null}), ids AS (   -- the channel's id -> the platform's number, among the platform rows in play
    SELECT channel, order_type, channel_txn_id, min(kno) AS k
    FROM p_rows WHERE channel_txn_id IS NOT NULL GROUP BY ALL
), c_rows AS MATERIALIZED (
    SELECT *
    FROM (
        SELECT r.business_date, r.channel, r.file_no, r.line_no, r.txn_type, r.channel_txn_id,
               r.merchant_order_no, r.merchant_refund_no, r.status, r.currency, r.amount, r.fee, r.txn_time,
               r.carried_id,
               CASE r.txn_type WHEN 'payment' THEN 'payment' ELSE 'refund' END AS kt,
               CASE r.txn_type WHEN 'payment' THEN coalesce(i.k, r.merchant_order_no, r.channel_txn_id)
                    ELSE coalesce(i.k, r.merchant_refund_no, r.channel_refund_id,
                                  coalesce(r.merchant_order_no, r.channel_txn_id) || '@' || r.amount)
               END AS kno
        FROM (
            SELECT ct.business_date, ct.channel, f.file_no, ct.line_no, ct.txn_type, ct.channel_txn_id,
                   ct.merchant_order_no, ct.channel_refund_id, ct.merchant_refund_no, ct.status, ct.currency,
                   ct.amount, ct.fee, ct.txn_time, NULL::VARCHAR AS carried_id
            FROM channel_transactions ct JOIN info_files f USING (file_id)
            WHERE ct.business_date = $d AND ct.channel = $ch
              AND ct.txn_type IN ('payment', 'refund')   -- Stripe/Adyen fee, dispute, payout lines are not orders
            UNION ALL
            SELECT ct.business_date, ct.channel, f.file_no, ct.line_no, ct.txn_type, ct.channel_txn_id,
                   ct.merchant_order_no, ct.channel_refund_id, ct.merchant_refund_no, ct.status, ct.currency,
                   ct.amount, ct.fee, ct.txn_time, k.discrepancy_id
            FROM carry k JOIN unmatched_channel_rows ct ON ct.discrepancy_id = k.discrepancy_id
            JOIN info_files f ON f.file_id = ct.file_id
            WHERE k.flow = 'information' AND k.type = 'missing_in_platform' AND ct.channel = $ch) r
        LEFT JOIN ids i
          ON i.channel = r.channel AND i.order_type = r.txn_type
         AND i.channel_txn_id = CASE r.txn_type WHEN 'payment' THEN r.channel_txn_id ELSE r.channel_refund_id END)
{c_filter}), c_rep AS (   -- keys that repeat among the channel rows (rare)
    SELECT channel, kt, kno FROM c_rows WHERE kno IS NOT NULL GROUP BY ALL HAVING count(*) > 1
), c AS (
    SELECT r.*, 1::BIGINT AS occ FROM c_rows r ANTI JOIN c_rep USING (channel, kt, kno) WHERE r.kno IS NOT NULL
    UNION ALL
    SELECT r.*, row_number() OVER (PARTITION BY r.channel, r.kt, r.kno
                                   ORDER BY r.txn_time, r.business_date, r.file_no, r.line_no) AS occ
    FROM c_rows r SEMI JOIN c_rep USING (channel, kt, kno)
{c_null})
SELECT coalesce(p.channel, c.channel) AS channel, coalesce(p.kt, c.kt) AS kt, coalesce(p.kno, c.kno) AS kno,
       coalesce(p.occ, c.occ) AS occ,
       coalesce(p.order_type, c.txn_type) AS txn_type,
       coalesce(p.order_no, c.merchant_order_no, c.channel_txn_id) AS order_no,
       coalesce(p.refund_no, c.merchant_refund_no) AS refund_no,
       p.merchant_id, p.amount AS p_amount, c.amount AS c_amount, p.currency AS p_currency,
       c.currency AS c_currency, p.status AS p_status, c.status AS c_status, c.fee AS c_fee,
       p.event_time, p.source_table, p.source_key, f.file_id, c.line_no,
       p.carried_id AS p_carried, c.carried_id AS c_carried,
       p.kno IS NOT NULL AS has_p, c.kno IS NOT NULL AS has_c,
       -- at the cut-off: the other side may have put this row on a neighbouring day
       (p.event_time < cp.cut_lo_p OR p.event_time >= cp.cut_hi_p) AS p_at_cut,
       (c.txn_time < cp.day_lo_c OR c.txn_time >= cp.day_hi_c) AS c_at_cut,
       CASE
         WHEN p.kno IS NULL AND c.occ > 1 THEN 'duplicate'
         WHEN c.kno IS NULL AND p.occ > 1 THEN 'duplicate'
         WHEN p.kno IS NULL THEN CASE WHEN c.status IN ('success', 'refunded') THEN 'missing_in_platform' END
         WHEN c.kno IS NULL THEN CASE WHEN p.status = 'success' THEN 'missing_in_channel' END
         WHEN p.currency <> c.currency THEN 'currency_mismatch'
         WHEN NOT ({COMPATIBLE_STATUS_SQL}) THEN 'status_mismatch'
         WHEN abs(c.amount - p.amount) > cp.tolerance THEN 'amount_mismatch'
         WHEN p.order_type = 'payment' AND cp.fee_rate IS NOT NULL AND c.fee IS NOT NULL
              AND c.fee <> round(p.amount * cp.fee_rate, 2) THEN 'fee_mismatch'   -- round(): half-up here
         WHEN p.status = 'success' THEN 'matched'
       END AS outcome
FROM p FULL OUTER JOIN c ON p.channel = c.channel AND p.kt = c.kt AND p.kno = c.kno AND p.occ = c.occ
JOIN channel_params cp ON cp.channel = coalesce(p.channel, c.channel)
LEFT JOIN info_files f ON f.file_no = c.file_no
"""
    # One channel at a time: every key includes the channel, and the join's cost grows faster than its
    # size (10M keys: 33.6 s in one statement, 19.0 s as three channels of 4.6M, 3.6M and 2.0M). Each
    # channel's pairs are a table of their own and ``info_pairs`` is a view over them: copying them into
    # one table cost 4.4 s at 10M. (Not one TEMP table created empty and INSERTed into: DuckDB 2.0 kept the
    # statistics of the empty table, so the rows were invisible to GROUP BY / filters.)
    # The statement files in play get small numbers: a 64-character file id in every row of the join
    # doubled what it spilled (10M: 2.4 -> 1.3 GB for the largest channel, 24 -> 17 CPU-s).
    con.execute("""CREATE OR REPLACE TEMP TABLE info_files AS
SELECT file_id, (row_number() OVER (ORDER BY file_id))::INTEGER AS file_no FROM loaded_files WHERE status = 'active'""")
    channels = [c for (c,) in con.execute("SELECT channel FROM channel_params ORDER BY 1").fetchall()]
    channels = channels or [""]        # no channel reconciled whole (all in buckets): no pairs, same columns
    con.execute("DROP VIEW IF EXISTS info_pairs")
    for i, channel in enumerate(channels):
        con.execute(f"CREATE OR REPLACE TEMP TABLE info_pairs_{i} AS {pairs}", {"d": d, "ch": channel})
    con.execute("CREATE TEMP VIEW info_pairs AS "
                + " UNION ALL ".join(f"SELECT * FROM info_pairs_{i}" for i in range(len(channels))))
    # the outputs' strings, built only for the rows read: match key, source_table:source_key, path:line;
    # the contract (fee) figures from channel_params
    con.execute("""
CREATE OR REPLACE TEMP VIEW info_sources AS
SELECT i.*, i.kt || ':' || i.kno AS match_key,
       i.source_table || ':' || i.source_key AS platform_source, lf.path || ':' || i.line_no AS channel_source,
       round(i.p_amount * cp.fee_rate, 2) AS contract_fee,     -- round(): half away from zero = half-up here
       cp.fee_rate, cp.pending_days
FROM info_pairs i JOIN channel_params cp USING (channel) LEFT JOIN loaded_files lf ON lf.file_id = i.file_id
""")


def drop_info_pairs(con: duckdb.DuckDBPyConnection) -> None:
    """Free the day's pairs (about a row per transaction) once the breaks and matches are written."""
    con.execute("DROP VIEW IF EXISTS info_sources")
    con.execute("DROP VIEW IF EXISTS info_pairs")
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary "
                               "AND regexp_full_match(table_name, 'info_pairs_[0-9]+|info_files')").fetchall():
        con.execute(f"DROP TABLE temp.main.{name}")
