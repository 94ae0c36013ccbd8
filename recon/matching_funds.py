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
earlier unresolved breaks it can clear (same reference; for batches, any earlier batch of the channel).
"""
from __future__ import annotations

from datetime import date

import duckdb

SIGNED = "CASE direction WHEN 'in' THEN amount ELSE -amount END"


def funds_flow(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE funds_cmp AS
WITH expected AS (
    SELECT channel, coalesce(refund_no, order_no) AS ref, any_value(order_no) AS order_no,
           sum({SIGNED}) AS net, any_value(currency) AS currency,
           string_agg(source_table || ':' || source_key, ', ' ORDER BY source_key) AS platform_source,
           bool_or(expected_at < cp.pday_lo OR expected_at >= cp.pday_hi) AS at_cut
    FROM platform_expected_funds e JOIN channel_params cp USING (channel)
    WHERE e.business_date = $d AND cp.has_funds
    GROUP BY ALL
), actual AS (
    SELECT channel, coalesce(reference, channel_txn_id, movement_id) AS ref,
           sum({SIGNED}) AS net, any_value(currency) AS currency,
           string_agg(lf.path || ':' || line_no, ', ' ORDER BY line_no) AS channel_source,
           any_value(file_id) AS file_id,
           bool_or(booked_at < cp.day_lo_c OR booked_at >= cp.day_hi_c) AS at_cut
    FROM channel_funds_movements m JOIN loaded_files lf USING (file_id, channel)
    JOIN channel_params cp USING (channel)
    WHERE m.business_date = $d AND lf.status = 'active'
    GROUP BY ALL
)
SELECT 'txn' AS kind, coalesce(e.channel, a.channel) AS channel, coalesce(e.ref, a.ref) AS match_key,
       coalesce(e.ref, a.ref) AS carry_key,
       coalesce(e.order_no, po.order_no, a.ref) AS order_no, po.merchant_id,
       e.net AS p_amount, a.net AS c_amount, coalesce(a.net, 0) - coalesce(e.net, 0) AS difference,
       coalesce(a.currency, e.currency) AS currency, e.platform_source, a.channel_source, a.file_id,
       coalesce(e.at_cut, false) OR coalesce(a.at_cut, false) AS at_cut,
       CASE WHEN e.net IS NULL THEN 'no movement expected'
            WHEN a.net IS NULL THEN 'no movement in the channel''s account' END AS detail
FROM expected e FULL OUTER JOIN actual a ON e.channel = a.channel AND e.ref = a.ref
LEFT JOIN (SELECT DISTINCT ON (channel, k) channel, k, order_no, merchant_id FROM (
               SELECT channel, CASE order_type WHEN 'payment' THEN order_no ELSE refund_no END AS k,
                      order_no, merchant_id
               FROM platform_orders WHERE business_date = $d)
          ) po ON po.channel = coalesce(e.channel, a.channel) AND po.k = coalesce(e.ref, a.ref)
""", {"d": d})
    _internal(con, d)
    _batch(con, d)


def _internal(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute(f"""
INSERT INTO funds_cmp
WITH orders AS (
    SELECT channel, coalesce(refund_no, order_no) AS ref, any_value(order_no) AS order_no,
           any_value(merchant_id) AS merchant_id,
           sum(CASE order_type WHEN 'payment' THEN amount ELSE -amount END) AS net, any_value(currency) AS currency,
           string_agg(source_table || ':' || source_key, ', ' ORDER BY source_key) AS src,
           bool_or(event_time < cp.pday_lo OR event_time >= cp.pday_hi) AS at_cut
    FROM platform_orders po JOIN channel_params cp USING (channel)
    WHERE po.business_date = $d AND po.status = 'success'
    GROUP BY ALL
), expected AS (
    SELECT channel, coalesce(refund_no, order_no) AS ref, any_value(order_no) AS order_no,
           sum({SIGNED}) AS net, any_value(currency) AS currency,
           string_agg(source_table || ':' || source_key, ', ' ORDER BY source_key) AS src,
           bool_or(expected_at < cp.pday_lo OR expected_at >= cp.pday_hi) AS at_cut
    FROM platform_expected_funds e JOIN channel_params cp USING (channel)
    WHERE e.business_date = $d
    GROUP BY ALL
)
SELECT 'internal', coalesce(o.channel, e.channel), 'internal:' || coalesce(o.ref, e.ref),
       'internal:' || coalesce(o.ref, e.ref), coalesce(o.order_no, e.order_no), o.merchant_id,
       o.net, e.net, coalesce(e.net, 0) - coalesce(o.net, 0), coalesce(o.currency, e.currency),
       concat_ws(', ', o.src, e.src), NULL, NULL,
       coalesce(o.at_cut, false) OR coalesce(e.at_cut, false),
       'internal: successful orders net ' || coalesce(o.net, 0) || ', expected fund movements net '
           || coalesce(e.net, 0)
FROM orders o FULL OUTER JOIN expected e ON o.channel = e.channel AND o.ref = e.ref
WHERE coalesce(e.net, 0) <> coalesce(o.net, 0)
""", {"d": d})


def _batch(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute("""
CREATE OR REPLACE TEMP TABLE batch_members AS
WITH checked AS (   -- channels a bank statement has shown a credit from, by day d
    SELECT DISTINCT b.payer_channel AS channel
    FROM bank_statement_lines b JOIN loaded_files lf USING (file_id)
    WHERE b.business_date <= $d AND lf.status = 'active' AND b.direction = 'in'
), batch AS (
    SELECT cp.*, ($d::DATE - cp.lag_days) AS trade_date
    FROM channel_params cp JOIN checked USING (channel)
)
SELECT b.channel, b.trade_date, ct.txn_type,
       CASE ct.txn_type WHEN 'payment' THEN 'payment:' || coalesce(ct.merchant_order_no, ct.channel_txn_id)
            ELSE 'refund:' || coalesce(ct.merchant_refund_no, ct.channel_refund_id) END AS match_key,
       coalesce(ct.merchant_order_no, ct.channel_txn_id) AS order_no, ct.merchant_refund_no AS refund_no,
       ct.amount, ct.fee,
       coalesce(ct.net, CASE ct.txn_type WHEN 'payment' THEN ct.amount ELSE -ct.amount END - coalesce(ct.fee, 0))
           AS expected_net,
       lf.path || ':' || ct.line_no AS source, ct.currency
FROM batch b JOIN channel_transactions ct ON ct.channel = b.channel AND ct.business_date = b.trade_date
JOIN loaded_files lf ON lf.file_id = ct.file_id AND lf.status = 'active'
WHERE b.has_trade AND ((ct.txn_type = 'payment' AND ct.status IN ('success', 'refunded'))
                    OR (ct.txn_type = 'refund' AND ct.status = 'success'))
UNION ALL
SELECT b.channel, b.trade_date, po.order_type,
       CASE po.order_type WHEN 'payment' THEN 'payment:' || po.order_no ELSE 'refund:' || po.refund_no END,
       po.order_no, po.refund_no, po.amount,
       CASE po.order_type WHEN 'payment' THEN round(po.amount * coalesce(b.fee_rate, 0), 2) END,
       -- contract fee, round(): half away from zero = half-up; refunds: no fee given back assumed
       CASE po.order_type WHEN 'payment' THEN po.amount - round(po.amount * coalesce(b.fee_rate, 0), 2)
            ELSE -po.amount END,
       po.source_table || ':' || po.source_key, po.currency
FROM batch b JOIN platform_orders po ON po.channel = b.channel AND po.business_date = b.trade_date
WHERE NOT b.has_trade AND po.status = 'success'
""", {"d": d})
    con.execute("""
INSERT INTO funds_cmp
WITH credits AS (
    SELECT b.payer_channel AS channel, sum(b.amount) AS amount, any_value(b.currency) AS currency,
           string_agg(lf.path || ':' || b.line_no, ', ' ORDER BY lf.path, b.line_no) AS src,
           any_value(b.file_id) AS file_id
    FROM bank_statement_lines b JOIN loaded_files lf USING (file_id)
    WHERE b.business_date = $d AND lf.status = 'active' AND b.direction = 'in'
      AND b.payer_channel IN (SELECT channel FROM channel_params)
    GROUP BY ALL
), expected AS (
    SELECT channel, any_value(trade_date) AS trade_date, sum(expected_net) AS net, count(*) AS n,
           any_value(currency) AS currency
    FROM batch_members GROUP BY channel
), checked AS (
    SELECT DISTINCT b.payer_channel AS channel
    FROM bank_statement_lines b JOIN loaded_files lf USING (file_id)
    WHERE b.business_date <= $d AND lf.status = 'active' AND b.direction = 'in'
)
SELECT 'batch', ck.channel, 'batch:' || ($d::DATE - cp.lag_days), 'batch', NULL, NULL,
       coalesce(e.net, 0), coalesce(cr.amount, 0), coalesce(cr.amount, 0) - coalesce(e.net, 0),
       coalesce(cr.currency, e.currency), NULL, cr.src, cr.file_id, false,
       'settlement batch of ' || ($d::DATE - cp.lag_days) || ': ' || coalesce(e.n, 0)
           || ' transactions expected net ' || coalesce(e.net, 0) || ', bank credits ' || coalesce(cr.amount, 0)
FROM checked ck JOIN channel_params cp USING (channel)
LEFT JOIN credits cr USING (channel) LEFT JOIN expected e USING (channel)
WHERE cr.amount IS NOT NULL OR e.net IS NOT NULL
""", {"d": d})
