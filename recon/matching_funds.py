"""Funds flow: where the money went, at three levels, as rows of TEMP TABLE ``funds_cmp``.

- ``txn`` (per channel and reference): the channel's fund-flow entries (in − out) against the platform's
  expected movements (``platform_expected_funds``), for channels with a ``funds`` statement.
  match_key = the reference (merchant order or refund number).
- ``internal`` (per channel and reference, every channel): system-to-system inside the platform. Net of its
  successful orders (payments +, refunds −) against the net of its expected fund movements.
  match_key = ``internal:<reference>``; platform_amount = the orders' net, channel_amount = the expected
  movements' net (both platform figures; the detail says so). ``short``: a successful order without its
  expected movement; ``long``: an expected movement without a successful order (or more than it).
- ``batch`` (per channel and trade date, many-to-one): the bank's lump-sum credits from a channel
  (``bank_statement_lines`` direction ``in``, ``payer_channel`` = the channel) on day D against the sum of
  the expected net amounts of the channel's settlement batch for trade date T = D − ``settlement_lag_days``:
  the channel's statement rows of T that move money (payments success/refunded: amount − fee; refunds
  success: −amount − fee, the fee of a refund being the fee given back, printed negative), or, for a
  channel without a trade statement, its successful platform orders with the contract fee.
  match_key = ``batch:<T>``; the rows behind it go to ``batch_members``. A channel is checked from the
  first day a bank statement shows a credit from it.

``difference`` = channel − platform; > 0 ``long``, < 0 ``short``. ``carry_key`` groups a row with the
earlier unresolved breaks it can clear (same reference; for batches, any earlier batch of the channel:
TEMP TABLE ``funds_carried`` made by ``recon.matching``). Only rows that differ, or that may clear a
carried break, are kept; their sources are looked up for those rows only (the sums run over narrow rows).
"""
from __future__ import annotations

from datetime import date

import duckdb

SIGNED = "CASE direction WHEN 'in' THEN amount ELSE -amount END"


def funds_flow(con: duckdb.DuckDBPyConnection, d: date) -> None:
    p = {"d": d}
    # The per-reference sums of both reference-level checks in one pass: the expected movements (e), the
    # channel's account entries (a) and the successful orders (o), one aggregate over their union (a full
    # outer join of the three sums; a NULL reference pairs with nothing, so the account's NULL-reference
    # entries keep a group of their own). Only the references that differ, or may clear a carried break,
    # are kept.
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE funds_refs AS
WITH e AS MATERIALIZED (
    SELECT channel, coalesce(refund_no, order_no) AS ref, sum({SIGNED}) AS net
    FROM platform_expected_funds
    WHERE business_date = $d AND channel IN (SELECT channel FROM channel_params) GROUP BY ALL
), a AS (
    SELECT channel, coalesce(reference, channel_txn_id, movement_id) AS ref, sum({SIGNED}) AS net
    FROM channel_funds_movements m JOIN loaded_files lf USING (file_id, channel)
    WHERE m.business_date = $d AND lf.status = 'active' AND channel IN (SELECT channel FROM channel_params)
    GROUP BY ALL
), o AS (
    SELECT channel, coalesce(refund_no, order_no) AS ref,
           sum(CASE order_type WHEN 'payment' THEN amount ELSE -amount END) AS net
    FROM platform_orders
    WHERE business_date = $d AND status = 'success' AND channel IN (SELECT channel FROM channel_params)
    GROUP BY ALL
)
SELECT 'txn' AS level, coalesce(e.channel, a.channel) AS channel, coalesce(e.ref, a.ref) AS ref, e.net AS p_net,
       a.net AS c_net
FROM (SELECT * FROM e WHERE channel IN (SELECT channel FROM channel_params WHERE has_funds)) e
FULL OUTER JOIN a ON e.channel = a.channel AND e.ref = a.ref
WHERE coalesce(a.net, 0) <> coalesce(e.net, 0)
   OR (coalesce(e.channel, a.channel), coalesce(e.ref, a.ref)) IN (SELECT (channel, carry_key) FROM funds_carried)
UNION ALL
SELECT 'internal', coalesce(o.channel, e.channel), coalesce(o.ref, e.ref), o.net, e.net
FROM o FULL OUTER JOIN e ON o.channel = e.channel AND o.ref = e.ref
WHERE coalesce(e.net, 0) <> coalesce(o.net, 0)
   OR (coalesce(o.channel, e.channel), 'internal:' || coalesce(o.ref, e.ref))
      IN (SELECT (channel, carry_key) FROM funds_carried)
""", p)
    con.execute("""
CREATE OR REPLACE TEMP TABLE funds_diff AS
SELECT channel, ref, p_net, c_net FROM funds_refs WHERE level = 'txn'
""")
    con.execute("""
CREATE OR REPLACE TEMP TABLE funds_cmp AS
WITH ed AS (
    SELECT e.channel, x.ref, any_value(e.order_no) AS order_no, any_value(e.currency) AS currency,
           string_agg(e.source_table || ':' || e.source_key, ', ' ORDER BY e.source_key) AS src,
           bool_or(e.expected_at < cp.pday_lo OR e.expected_at >= cp.pday_hi) AS at_cut
    FROM platform_expected_funds e JOIN funds_diff x
      ON x.channel = e.channel AND x.ref = coalesce(e.refund_no, e.order_no)
    JOIN channel_params cp ON cp.channel = e.channel
    WHERE e.business_date = $d GROUP BY ALL
), ad AS (
    SELECT m.channel, x.ref, any_value(m.currency) AS currency, any_value(m.file_id) AS file_id,
           string_agg(lf.path || ':' || m.line_no, ', ' ORDER BY m.line_no) AS src,
           bool_or(m.booked_at < cp.day_lo_c OR m.booked_at >= cp.day_hi_c) AS at_cut
    FROM channel_funds_movements m JOIN funds_diff x
      ON x.channel = m.channel AND x.ref = coalesce(m.reference, m.channel_txn_id, m.movement_id)
    JOIN loaded_files lf ON lf.file_id = m.file_id AND lf.status = 'active'
    JOIN channel_params cp ON cp.channel = m.channel
    WHERE m.business_date = $d GROUP BY ALL
), po AS (
    SELECT DISTINCT ON (o.channel, x.ref) o.channel, x.ref, o.order_no, o.merchant_id
    FROM platform_orders o JOIN funds_diff x
      ON x.channel = o.channel AND x.ref = CASE o.order_type WHEN 'payment' THEN o.order_no ELSE o.refund_no END
    WHERE o.business_date = $d
)
SELECT 'txn' AS kind, x.channel, x.ref AS match_key, x.ref AS carry_key,
       coalesce(ed.order_no, po.order_no, x.ref) AS order_no, po.merchant_id,
       x.p_net AS p_amount, x.c_net AS c_amount, coalesce(x.c_net, 0) - coalesce(x.p_net, 0) AS difference,
       coalesce(ad.currency, ed.currency) AS currency, ed.src AS platform_source, ad.src AS channel_source,
       ad.file_id, coalesce(ed.at_cut, false) OR coalesce(ad.at_cut, false) AS at_cut,
       CASE WHEN x.p_net IS NULL THEN 'no movement expected'
            WHEN x.c_net IS NULL THEN 'no movement in the channel''s account' END AS detail
FROM funds_diff x LEFT JOIN ed USING (channel, ref) LEFT JOIN ad USING (channel, ref)
LEFT JOIN po USING (channel, ref)
""", p)
    _internal(con, d)
    _batch(con, d)


def _internal(con: duckdb.DuckDBPyConnection, d: date) -> None:
    p = {"d": d}
    con.execute("""
CREATE OR REPLACE TEMP TABLE internal_diff AS
SELECT channel, ref, p_net AS o_net, c_net AS e_net FROM funds_refs WHERE level = 'internal'
""")
    con.execute("""
INSERT INTO funds_cmp
WITH od AS (
    SELECT o.channel, x.ref, any_value(o.order_no) AS order_no, any_value(o.merchant_id) AS merchant_id,
           any_value(o.currency) AS currency,
           string_agg(o.source_table || ':' || o.source_key, ', ' ORDER BY o.source_key) AS src,
           bool_or(o.event_time < cp.pday_lo OR o.event_time >= cp.pday_hi) AS at_cut
    FROM platform_orders o JOIN internal_diff x ON x.channel = o.channel AND x.ref = coalesce(o.refund_no, o.order_no)
    JOIN channel_params cp ON cp.channel = o.channel
    WHERE o.business_date = $d AND o.status = 'success' GROUP BY ALL
), ed AS (
    SELECT e.channel, x.ref, any_value(e.order_no) AS order_no, any_value(e.currency) AS currency,
           string_agg(e.source_table || ':' || e.source_key, ', ' ORDER BY e.source_key) AS src,
           bool_or(e.expected_at < cp.pday_lo OR e.expected_at >= cp.pday_hi) AS at_cut
    FROM platform_expected_funds e
    JOIN internal_diff x ON x.channel = e.channel AND x.ref = coalesce(e.refund_no, e.order_no)
    JOIN channel_params cp ON cp.channel = e.channel
    WHERE e.business_date = $d GROUP BY ALL
)
SELECT 'internal', x.channel, 'internal:' || x.ref, 'internal:' || x.ref, coalesce(od.order_no, ed.order_no),
       od.merchant_id, x.o_net, x.e_net, coalesce(x.e_net, 0) - coalesce(x.o_net, 0),
       coalesce(od.currency, ed.currency), concat_ws(', ', od.src, ed.src), NULL, NULL,
       coalesce(od.at_cut, false) OR coalesce(ed.at_cut, false),
       'internal: successful orders net ' || coalesce(x.o_net, 0) || ', expected fund movements net '
           || coalesce(x.e_net, 0)
FROM internal_diff x LEFT JOIN od USING (channel, ref) LEFT JOIN ed USING (channel, ref)
""", p)


def _batch(con: duckdb.DuckDBPyConnection, d: date) -> None:
    p = {"d": d}
    # channels a bank statement has shown a credit from, by day d, with their batch's trade date
    con.execute("""
CREATE OR REPLACE TEMP TABLE batch_channels AS
SELECT cp.*, ($d::DATE - cp.lag_days) AS trade_date
FROM batch_params cp
WHERE cp.channel IN (SELECT b.payer_channel FROM bank_statement_lines b JOIN loaded_files lf USING (file_id)
                     WHERE b.business_date <= $d AND lf.status = 'active' AND b.direction = 'in')
""", p)
    members = """
SELECT b.channel, b.trade_date, ct.txn_type,
       CASE ct.txn_type WHEN 'payment' THEN 'payment:' || coalesce(ct.merchant_order_no, ct.channel_txn_id)
            ELSE 'refund:' || coalesce(ct.merchant_refund_no, ct.channel_refund_id) END AS match_key,
       coalesce(ct.merchant_order_no, ct.channel_txn_id) AS order_no, ct.merchant_refund_no AS refund_no,
       ct.amount, ct.fee,
       coalesce(ct.net, CASE ct.txn_type WHEN 'payment' THEN ct.amount ELSE -ct.amount END - coalesce(ct.fee, 0))
           AS expected_net,
       lf.path || ':' || ct.line_no AS source, ct.currency
FROM batch_channels b JOIN channel_transactions ct ON ct.channel = b.channel AND ct.business_date = b.trade_date
JOIN loaded_files lf ON lf.file_id = ct.file_id AND lf.status = 'active'
WHERE b.has_trade AND ((ct.txn_type = 'payment' AND ct.status IN ('success', 'refunded'))
                    OR (ct.txn_type = 'refund' AND ct.status = 'success'))
UNION ALL
SELECT b.channel, b.trade_date, po.order_type,
       CASE po.order_type WHEN 'payment' THEN 'payment:' || po.order_no ELSE 'refund:' || po.refund_no END,
       po.order_no, po.refund_no, po.amount,
       -- contract fee, round(): half away from zero = half-up; refunds: no fee given back assumed
       CASE po.order_type WHEN 'payment' THEN round(po.amount * coalesce(b.fee_rate, 0), 2) END,
       CASE po.order_type WHEN 'payment' THEN po.amount - round(po.amount * coalesce(b.fee_rate, 0), 2)
            ELSE -po.amount END,
       po.source_table || ':' || po.source_key, po.currency
FROM batch_channels b JOIN platform_orders po ON po.channel = b.channel AND po.business_date = b.trade_date
WHERE NOT b.has_trade AND po.status = 'success'
"""
    con.execute(f"""
INSERT INTO funds_cmp
WITH credits AS (
    SELECT b.payer_channel AS channel, sum(b.amount) AS amount, any_value(b.currency) AS currency,
           string_agg(lf.path || ':' || b.line_no, ', ' ORDER BY lf.path, b.line_no) AS src,
           any_value(b.file_id) AS file_id
    FROM bank_statement_lines b JOIN loaded_files lf USING (file_id)
    WHERE b.business_date = $d AND lf.status = 'active' AND b.direction = 'in'
      AND b.payer_channel IN (SELECT channel FROM batch_params)
    GROUP BY ALL
), expected AS (
    SELECT channel, sum(expected_net) AS net, count(*) AS n, any_value(currency) AS currency
    FROM ({members}) GROUP BY channel
)
SELECT 'batch', bc.channel, 'batch:' || bc.trade_date, 'batch', NULL, NULL,
       coalesce(e.net, 0), coalesce(cr.amount, 0), coalesce(cr.amount, 0) - coalesce(e.net, 0),
       coalesce(cr.currency, e.currency), NULL, cr.src, cr.file_id, false,
       'settlement batch of ' || bc.trade_date || ': ' || coalesce(e.n, 0)
           || ' transactions expected net ' || coalesce(e.net, 0) || ', bank credits ' || coalesce(cr.amount, 0)
FROM batch_channels bc LEFT JOIN credits cr USING (channel) LEFT JOIN expected e USING (channel)
WHERE cr.amount IS NOT NULL OR e.net IS NOT NULL
""", p)
    # the members of the batches that differ (the ones that can become breaks): a view, read once by the
    # write of the day's batch breaks (materialising a whole batch first cost as much again)
    con.execute(f"""
CREATE OR REPLACE TEMP VIEW batch_members AS
SELECT * FROM ({members}) m
WHERE m.channel IN (SELECT channel FROM funds_cmp WHERE kind = 'batch' AND difference <> 0)
""")
