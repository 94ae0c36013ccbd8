"""Reconcile one business day in DuckDB SQL: information flow and funds flow.

Information flow: the platform's orders and refunds against the channel's
transaction details, one full outer join on (channel, match key, occurrence).
The match key is ``payment:<merchant order no>`` (the channel's transaction id
where the channel printed no order number) or ``refund:<merchant refund no>``.
Occurrence numbers pair repeated keys one-to-one; a key's extra rows on one
side are ``duplicate`` and the remaining pair still matches.

A pair that disagrees gets one discrepancy, the first that applies in this
order: currency_mismatch, status_mismatch, amount_mismatch, fee_mismatch
(channel fee ≠ contract fee = round_half_up(amount × channel fee_rate, 2)).

Funds flow: per (channel, reference) the net money the channel moved (in −
out) against the platform's expected net; more is ``long``, less ``short``.

The day's results replace earlier results for that day; a break resolved by a
person keeps its resolution (see ``write_discrepancies``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from recon.config import Config

INFORMATION_TYPES = ("missing_in_channel", "missing_in_platform", "status_mismatch", "amount_mismatch",
                     "fee_mismatch", "currency_mismatch", "duplicate")
FUNDS_TYPES = ("long", "short")
TYPES = INFORMATION_TYPES + FUNDS_TYPES
STATUSES = ("open", "pending", "auto_resolved", "resolved")
UNRESOLVED = ("open", "pending")

# Platform status -> the channel statuses that agree with it.
COMPATIBLE_STATUS_SQL = """
    (p.status = 'success' AND c.status = 'success')
 OR (p.status IN ('closed', 'failed') AND c.status IN ('revoked', 'closed', 'failed'))
 OR (p.status = 'pending' AND c.status = 'processing')
"""


@dataclass(frozen=True)
class ReconSummary:
    matched: int
    by_type: dict[str, int]


def _channel_params(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    rows = [(c.name, c.fee_rate, c.amount_tolerance,
             any(s.kind == "trade" for s in c.statements), any(s.kind == "funds" for s in c.statements))
            for c in cfg.channels]
    con.execute("CREATE OR REPLACE TEMP TABLE channel_params (channel VARCHAR, fee_rate DECIMAL(12,8), "
                "tolerance DECIMAL(18,2), has_trade BOOLEAN, has_funds BOOLEAN)")
    con.executemany("INSERT INTO channel_params VALUES (?, ?, ?, ?, ?)", rows)


def _information_flow(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute("""
CREATE OR REPLACE TEMP TABLE p AS
SELECT *, row_number() OVER (PARTITION BY channel, match_key ORDER BY event_time, source_key) AS occ
FROM (
    SELECT po.*, CASE order_type WHEN 'payment' THEN 'payment:' || order_no ELSE 'refund:' || refund_no END
           AS match_key
    FROM platform_orders po JOIN channel_params cp USING (channel)
    WHERE po.business_date = $d AND cp.has_trade
)""", {"d": d})
    con.execute("""
CREATE OR REPLACE TEMP TABLE c AS
SELECT *, row_number() OVER (PARTITION BY channel, match_key ORDER BY line_no) AS occ
FROM (
    SELECT ct.*, lf.path,
           CASE txn_type WHEN 'payment' THEN 'payment:' || coalesce(merchant_order_no, channel_txn_id)
                ELSE 'refund:' || coalesce(merchant_refund_no, channel_refund_id) END AS match_key
    FROM channel_transactions ct JOIN loaded_files lf USING (file_id)
    WHERE ct.business_date = $d AND lf.status = 'active'
)""", {"d": d})
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE info_pairs AS
SELECT coalesce(p.channel, c.channel) AS channel,
       coalesce(p.match_key, c.match_key) AS match_key,
       coalesce(p.occ, c.occ) AS occ,
       coalesce(p.order_type, c.txn_type) AS txn_type,
       coalesce(p.order_no, c.merchant_order_no, c.channel_txn_id) AS order_no,
       coalesce(p.refund_no, c.merchant_refund_no) AS refund_no,
       p.merchant_id, p.amount AS p_amount, c.amount AS c_amount, p.currency AS p_currency,
       c.currency AS c_currency, p.status AS p_status, c.status AS c_status, c.fee AS c_fee,
       p.event_time, c.txn_time,
       p.source_table || ':' || p.source_key AS platform_source,
       c.path || ':' || c.line_no AS channel_source,
       round(p.amount * cp.fee_rate, 2) AS contract_fee,     -- round(): half away from zero = half-up here
       cp.fee_rate, cp.tolerance,
       CASE
         WHEN p.match_key IS NULL AND c.occ > 1 THEN 'duplicate'
         WHEN c.match_key IS NULL AND p.occ > 1 THEN 'duplicate'
         WHEN p.match_key IS NULL THEN CASE WHEN c.status = 'success' THEN 'missing_in_platform' END
         WHEN c.match_key IS NULL THEN CASE WHEN p.status = 'success' THEN 'missing_in_channel' END
         WHEN p.currency <> c.currency THEN 'currency_mismatch'
         WHEN NOT ({COMPATIBLE_STATUS_SQL}) THEN 'status_mismatch'
         WHEN abs(c.amount - p.amount) > cp.tolerance THEN 'amount_mismatch'
         WHEN p.order_type = 'payment' AND cp.fee_rate IS NOT NULL AND c.fee IS NOT NULL
              AND c.fee <> round(p.amount * cp.fee_rate, 2) THEN 'fee_mismatch'
         WHEN p.status = 'success' THEN 'matched'
       END AS outcome
FROM p FULL OUTER JOIN c ON p.channel = c.channel AND p.match_key = c.match_key AND p.occ = c.occ
JOIN channel_params cp ON cp.channel = coalesce(p.channel, c.channel)
""")


def _funds_flow(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute("""
CREATE OR REPLACE TEMP TABLE funds_pairs AS
WITH expected AS (
    SELECT channel, coalesce(refund_no, order_no) AS ref, any_value(order_no) AS order_no,
           sum(CASE direction WHEN 'in' THEN amount ELSE -amount END) AS net, any_value(currency) AS currency,
           string_agg(source_table || ':' || source_key, ', ' ORDER BY source_key) AS platform_source
    FROM platform_expected_funds e JOIN channel_params cp USING (channel)
    WHERE e.business_date = $d AND cp.has_funds
    GROUP BY ALL
), actual AS (
    SELECT channel, coalesce(reference, channel_txn_id, movement_id) AS ref,
           sum(CASE direction WHEN 'in' THEN amount ELSE -amount END) AS net, any_value(currency) AS currency,
           string_agg(lf.path || ':' || line_no, ', ' ORDER BY line_no) AS channel_source
    FROM channel_funds_movements m JOIN loaded_files lf USING (file_id, channel)
    WHERE m.business_date = $d AND lf.status = 'active'
    GROUP BY ALL
)
SELECT coalesce(e.channel, a.channel) AS channel, coalesce(e.ref, a.ref) AS ref,
       coalesce(e.order_no, po.order_no, a.ref) AS order_no, po.merchant_id,
       e.net AS p_amount, a.net AS c_amount,
       coalesce(a.net, 0) - coalesce(e.net, 0) AS difference,
       coalesce(a.currency, e.currency) AS currency, e.platform_source, a.channel_source,
       CASE WHEN coalesce(a.net, 0) > coalesce(e.net, 0) THEN 'long'
            WHEN coalesce(a.net, 0) < coalesce(e.net, 0) THEN 'short' END AS outcome
FROM expected e FULL OUTER JOIN actual a ON e.channel = a.channel AND e.ref = a.ref
LEFT JOIN (SELECT DISTINCT ON (channel, k) channel, k, order_no, merchant_id FROM (
               SELECT channel, order_no AS k, order_no, merchant_id FROM platform_orders WHERE order_type = 'payment'
               UNION ALL
               SELECT channel, refund_no, order_no, merchant_id FROM platform_orders WHERE order_type = 'refund')
          ) po ON po.channel = coalesce(e.channel, a.channel) AND po.k = coalesce(e.ref, a.ref)
""", {"d": d})


def _new_breaks(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """Both flows' breaks as discrepancy rows; the id hashes what identifies the break, not the day."""
    con.execute("""
CREATE OR REPLACE TEMP TABLE new_breaks AS
SELECT 'D' || substr(md5(channel || '|information|' || outcome || '|' || match_key
                         || CASE WHEN outcome = 'duplicate' THEN '|' || occ ELSE '' END), 1, 15) AS discrepancy_id,
       $d::DATE AS business_date, channel, 'information' AS flow, outcome AS type,
       match_key || CASE WHEN outcome = 'duplicate' THEN '#' || occ ELSE '' END AS match_key,
       CASE WHEN outcome = 'fee_mismatch' THEN contract_fee ELSE p_amount END AS platform_amount,
       CASE WHEN outcome = 'fee_mismatch' THEN c_fee ELSE c_amount END AS channel_amount,
       CASE WHEN outcome = 'fee_mismatch' THEN c_fee - contract_fee
            ELSE coalesce(c_amount, 0) - coalesce(p_amount, 0) END AS difference,
       coalesce(c_currency, p_currency) AS currency,
       platform_source, channel_source,
       CASE outcome
         WHEN 'status_mismatch' THEN 'platform status ' || p_status || ', channel status ' || c_status
         WHEN 'currency_mismatch' THEN 'platform ' || p_currency || ', channel ' || c_currency
         WHEN 'fee_mismatch' THEN 'contract rate ' || fee_rate || ' on ' || p_amount
         WHEN 'duplicate' THEN 'occurrence ' || occ || ' of ' || match_key
       END AS detail,
       merchant_id, order_no
FROM info_pairs WHERE outcome IS NOT NULL AND outcome <> 'matched'
UNION ALL
SELECT 'D' || substr(md5(channel || '|funds|' || outcome || '|' || ref), 1, 15),
       $d::DATE, channel, 'funds', outcome, ref, p_amount, c_amount, difference, currency,
       platform_source, channel_source,
       CASE WHEN p_amount IS NULL THEN 'no movement expected'
            WHEN c_amount IS NULL THEN 'no movement in the channel''s account' END,
       merchant_id, order_no
FROM funds_pairs WHERE outcome IS NOT NULL
""", {"d": d})


def write_discrepancies(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """Replace the day's breaks, keeping first_seen_date and any resolution made by a person."""
    con.execute("DELETE FROM discrepancies WHERE business_date = $d AND status <> 'resolved' "
                "AND discrepancy_id NOT IN (SELECT discrepancy_id FROM new_breaks)", {"d": d})
    con.execute("""
INSERT INTO discrepancies
SELECT discrepancy_id, business_date, channel, flow, type, match_key, platform_amount, channel_amount,
       difference, currency, 'open', business_date, business_date, NULL, NULL, platform_source, channel_source,
       detail, merchant_id, order_no
FROM new_breaks
ON CONFLICT (discrepancy_id) DO UPDATE SET
    platform_amount = excluded.platform_amount, channel_amount = excluded.channel_amount,
    difference = excluded.difference, currency = excluded.currency, platform_source = excluded.platform_source,
    channel_source = excluded.channel_source, detail = excluded.detail,
    first_seen_date = least(discrepancies.first_seen_date, excluded.first_seen_date),
    last_seen_date = greatest(discrepancies.last_seen_date, excluded.last_seen_date),
    status = CASE WHEN discrepancies.status = 'resolved' THEN 'resolved' ELSE 'open' END
""")


def write_matches(con: duckdb.DuckDBPyConnection, d: date) -> int:
    """Pairs found on both sides (the input of settlement); the ones under a break stay held there."""
    con.execute("DELETE FROM matched_transactions WHERE business_date = $d", {"d": d})
    con.execute("""
INSERT INTO matched_transactions
SELECT $d, channel, match_key, txn_type, order_no, refund_no, merchant_id, p_amount, p_currency, c_fee,
       event_time, platform_source, channel_source
FROM info_pairs
WHERE outcome = 'matched'
   -- pairs on both sides that disagree: held by their open break, settled once a person resolves it
   OR (p_status = 'success' AND c_status IS NOT NULL
       AND outcome IN ('amount_mismatch', 'fee_mismatch', 'currency_mismatch'))
""", {"d": d})
    return con.execute("SELECT count(*) FROM info_pairs WHERE outcome = 'matched'").fetchone()[0]


def reconcile_day(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date) -> ReconSummary:
    """Match the day and write matched pairs and breaks (inside the caller's transaction)."""
    _channel_params(con, cfg)
    _information_flow(con, business_date)
    _funds_flow(con, business_date)
    _new_breaks(con, business_date)
    write_discrepancies(con, business_date)
    matched = write_matches(con, business_date)
    by_type = dict(con.execute("SELECT type, count(*) FROM new_breaks GROUP BY type ORDER BY type").fetchall())
    return ReconSummary(matched, by_type)
