"""Reconcile one business day in DuckDB SQL: information flow, funds flow, carry-over.

``reconcile_day(con, cfg, D)`` (inside the caller's transaction):

1. ``channel_params``: each channel's contract (fee rate, tolerance) and its day-cut windows for D
   (``recon.matching_window``).
2. ``carry``: the breaks of earlier days still ``open`` or ``pending`` as of D (plus those a later day
   auto-resolved, so that re-running D recomputes them).
3. Information flow (``recon.matching_info``): the day's platform rows and statement rows plus the
   carried rows, one full outer join. Outcome per pair, the first that applies: duplicate,
   missing_in_platform, missing_in_channel, currency_mismatch, status_mismatch, amount_mismatch,
   fee_mismatch (channel fee ≠ contract fee = round_half_up(amount × fee_rate, 2)), else matched.
4. Funds flow (``recon.matching_funds``): per reference (channel account vs expected movements), internal
   consistency (successful orders vs expected movements), and per settlement batch (bank lump sum vs the
   batch's expected net); a carried funds break is cleared when today's difference nets it to zero.
5. Write (``write_discrepancies``): the day's breaks replace the day's earlier results; statuses:
   ``pending`` for a row at the cut-off (until ``pending_days`` have passed, then ``open``), ``resolved``
   with ``resolution_note = 'explained: <name>'`` for a funds break a configured explanation covers,
   else ``open``. A break resolved by a person stays resolved (audit row ``still_found``). Carried breaks
   cleared today become ``auto_resolved`` with the file (or platform row) that cleared them. Every status
   change is appended to ``discrepancy_resolutions``. Ages are refreshed.

The vocabulary (types, statuses) is fixed; see ``docs/reconciliation.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb

from recon.config import Config
from recon.matching_funds import funds_flow
from recon.matching_info import COMPATIBLE_STATUS_SQL, drop_info_pairs, information_flow  # noqa: F401 (re-export)
from recon.matching_window import channel_params
from recon.views import age_bucket_sql
from recon.warehouse import unmatched_rows_sql

INFORMATION_TYPES = ("missing_in_channel", "missing_in_platform", "status_mismatch", "amount_mismatch",
                     "fee_mismatch", "currency_mismatch", "duplicate")
FUNDS_TYPES = ("long", "short")
TYPES = INFORMATION_TYPES + FUNDS_TYPES
STATUSES = ("open", "pending", "auto_resolved", "resolved")
UNRESOLVED = ("open", "pending")
SYSTEM = "system"

# The breaks a run over some channels owns: every break of the channels reconciled whole, and the
# settlement-batch breaks of the channels whose keyed checks ran in key-hash buckets (recon.buckets).
IN_SCOPE_SQL = ("(channel IN (SELECT channel FROM channel_params) OR (channel IN (SELECT channel FROM batch_params) "
                "AND flow = 'funds' AND match_key LIKE 'batch:%'))")

# A person's resolution (status 'resolved' by someone other than the system) is never changed by a run.
MANUAL_SQL = "({t}.status = 'resolved' AND coalesce({t}.resolved_by, '') <> 'system')"


@dataclass(frozen=True)
class ReconSummary:
    matched: int
    by_type: dict[str, int]
    auto_resolved: int = 0          # earlier breaks cleared by this day's data
    pending: int = 0                # this day's breaks at the cut-off, waiting for the next file
    explained: int = 0              # this day's funds breaks a configured explanation covers
    carried_open: dict[str, int] = field(default_factory=dict)   # earlier breaks still open/pending, by type


def _carry(con: duckdb.DuckDBPyConnection, d: date) -> None:
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE carry AS
SELECT *, status = 'auto_resolved' AND resolved_date > $d AS resolved_later,
       CASE WHEN flow = 'funds' AND match_key LIKE 'batch:%' THEN 'batch' ELSE match_key END AS carry_key
FROM discrepancies
WHERE business_date < $d AND {IN_SCOPE_SQL}
  AND (status IN ('open', 'pending') OR (status = 'auto_resolved' AND resolved_date >= $d))
""", {"d": d})
    con.execute("""
CREATE OR REPLACE TEMP TABLE funds_carried AS
SELECT channel, carry_key, sum(difference) AS difference FROM carry WHERE flow = 'funds' GROUP BY ALL
""")


def _new_breaks(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """The day's own breaks, and which carried breaks today's data clears (TEMP ``carry_cleared``)."""
    con.execute("""
CREATE OR REPLACE TEMP TABLE funds_today AS
SELECT f.*, CASE WHEN f.difference > 0 THEN 'long' WHEN f.difference < 0 THEN 'short' END AS outcome,
       k.difference IS NOT NULL AND f.difference <> 0 AND f.difference + k.difference = 0 AS clears
FROM funds_cmp f LEFT JOIN funds_carried k USING (channel, carry_key)
""")
    con.execute("""
CREATE OR REPLACE TEMP TABLE carry_cleared AS
SELECT p_carried AS discrepancy_id,
       CASE WHEN c_carried IS NULL THEN file_id END AS by_file,
       CASE WHEN c_carried IS NULL THEN channel_source ELSE platform_source END AS by_source
FROM info_sources WHERE has_p AND has_c AND p_carried IS NOT NULL
UNION ALL
SELECT c_carried, NULL, platform_source
FROM info_sources WHERE has_p AND has_c AND c_carried IS NOT NULL AND p_carried IS NULL
UNION ALL
SELECT k.discrepancy_id, f.file_id, coalesce(f.channel_source, f.platform_source)
FROM funds_today f JOIN carry k ON k.flow = 'funds' AND k.channel = f.channel AND k.carry_key = f.carry_key
WHERE f.clears
""")
    con.execute("""
CREATE OR REPLACE TEMP TABLE new_breaks AS
WITH info AS (
    SELECT 'D' || substr(md5(channel || '|information|' || outcome || '|' || match_key
                             || CASE WHEN outcome = 'duplicate' THEN '|' || occ ELSE '' END), 1, 15) AS discrepancy_id,
           channel, 'information' AS flow, outcome AS type,
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
             WHEN 'missing_in_channel' THEN CASE WHEN p_at_cut THEN 'at the channel''s day cut: expected in a '
                                                  || 'neighbouring day''s file' END
             WHEN 'missing_in_platform' THEN CASE WHEN c_at_cut THEN 'at the day cut: the platform may record '
                                                  || 'it on a neighbouring day' END
           END AS detail,
           merchant_id, order_no,
           CASE outcome WHEN 'missing_in_channel' THEN p_at_cut WHEN 'missing_in_platform' THEN c_at_cut
                ELSE false END AS at_cut,
           CASE WHEN NOT has_p THEN file_id END AS file_id, CASE WHEN NOT has_p THEN line_no END AS line_no,
           NULL::VARCHAR AS explanation, pending_days
    FROM info_sources
    WHERE outcome IS NOT NULL AND outcome <> 'matched'
      -- a carried row still alone is its own day's break, not a new one
      AND NOT (has_p AND NOT has_c AND p_carried IS NOT NULL)
      AND NOT (has_c AND NOT has_p AND c_carried IS NOT NULL)
), expl AS (
    SELECT f.channel, f.kind, f.match_key, arg_min(x.name, x.ord) AS name
    FROM funds_today f JOIN channel_explanations x
      ON x.channel = f.channel AND (x.type IS NULL OR x.type = f.outcome) AND abs(f.difference) <= x.max_abs
    WHERE f.kind <> 'internal' AND f.outcome IS NOT NULL AND NOT f.clears
    GROUP BY ALL
), funds AS (
    SELECT 'D' || substr(md5(f.channel || '|funds|' || f.outcome || '|' || f.match_key), 1, 15) AS discrepancy_id,
           f.channel, 'funds' AS flow, f.outcome AS type, f.match_key, f.p_amount AS platform_amount,
           f.c_amount AS channel_amount, f.difference, f.currency, f.platform_source, f.channel_source,
           f.detail, f.merchant_id, f.order_no, f.at_cut, NULL::VARCHAR AS file_id, NULL::INTEGER AS line_no,
           e.name AS explanation, cp.pending_days
    FROM funds_today f JOIN batch_params cp USING (channel)
    LEFT JOIN expl e USING (channel, kind, match_key)
    WHERE f.outcome IS NOT NULL AND NOT f.clears
)
SELECT *, $d::DATE AS business_date FROM info UNION ALL BY NAME SELECT *, $d::DATE AS business_date FROM funds
""", {"d": d})


COLUMNS = ("discrepancy_id, business_date, channel, flow, type, match_key, platform_amount, channel_amount, "
           "difference, currency, status, first_seen_date, last_seen_date, resolved_date, resolution_note, "
           "platform_source, channel_source, detail, merchant_id, order_no, resolved_by, resolution_action, "
           "resolved_at, resolved_by_file, resolved_by_source, timing, pending_until, file_id, line_no")


def write_discrepancies(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """Replace the day's breaks and update the carried ones; keep people's resolutions; audit every change."""
    p = {"d": d}
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE before AS
SELECT discrepancy_id, status, resolved_by FROM discrepancies
WHERE (business_date = $d AND {IN_SCOPE_SQL})
   OR discrepancy_id IN (SELECT discrepancy_id FROM carry)
   OR discrepancy_id IN (SELECT discrepancy_id FROM new_breaks)
""", p)
    # 1. the day's earlier results that today's run no longer finds (a person's resolution stays)
    con.execute(f"""
DELETE FROM discrepancies d
WHERE business_date = $d AND {IN_SCOPE_SQL} AND NOT {MANUAL_SQL.format(t='d')}
  AND discrepancy_id NOT IN (SELECT discrepancy_id FROM new_breaks)
""", p)
    con.execute("DELETE FROM discrepancy_members WHERE business_date = $d "     # members: batch breaks only
                "AND channel IN (SELECT channel FROM batch_params)", p)
    # 2. the day's breaks, merged with what the warehouse already knows about the same break
    con.execute(f"""
INSERT OR REPLACE INTO discrepancies ({COLUMNS})
WITH m AS (
    SELECT n.*, o.discrepancy_id IS NOT NULL AS known,
           coalesce({MANUAL_SQL.format(t='o')}, false) AS keep_manual,
           coalesce(o.status = 'auto_resolved' AND o.resolved_date > $d, false) AS keep_later,
           least(coalesce(o.business_date, $d), $d) AS bdate,
           least(coalesce(o.first_seen_date, $d), $d) AS first_seen,
           greatest(coalesce(o.last_seen_date, $d), $d) AS last_seen,
           o.status AS o_status, o.resolved_date AS o_resolved_date, o.resolution_note AS o_note,
           o.resolved_by AS o_by, o.resolution_action AS o_action, o.resolved_at AS o_at,
           o.resolved_by_file AS o_file, o.resolved_by_source AS o_source
    FROM new_breaks n LEFT JOIN discrepancies o USING (discrepancy_id)
), s AS (
    SELECT *, keep_manual OR keep_later AS keep,
           CASE WHEN at_cut AND pending_days > 0 THEN bdate + pending_days END AS pend_until
    FROM m
)
SELECT discrepancy_id, bdate, channel, flow, type, match_key, platform_amount, channel_amount, difference,
       currency,
       CASE WHEN keep THEN o_status WHEN explanation IS NOT NULL THEN 'resolved'
            -- pending until pend_until, as of the latest day the break was seen (a rerun of a past day
            -- keeps what later days learnt)
            WHEN pend_until > last_seen THEN 'pending' ELSE 'open' END,
       first_seen, last_seen,
       CASE WHEN keep THEN o_resolved_date WHEN explanation IS NOT NULL THEN $d END,
       CASE WHEN keep THEN o_note WHEN explanation IS NOT NULL THEN 'explained: ' || explanation END,
       platform_source, channel_source, detail, merchant_id, order_no,
       CASE WHEN keep THEN o_by WHEN explanation IS NOT NULL THEN 'system' END,
       CASE WHEN keep THEN o_action WHEN explanation IS NOT NULL THEN 'explained' END,
       CASE WHEN keep THEN o_at WHEN explanation IS NOT NULL THEN now() END,
       CASE WHEN keep THEN o_file END, CASE WHEN keep THEN o_source END,
       at_cut, pend_until, file_id, line_no
FROM s
""", p)
    # 3. carried breaks: cleared today -> auto_resolved; still alone -> pending until pending_until, then open
    con.execute("""
UPDATE discrepancies d SET status = 'auto_resolved', resolved_date = $d, resolved_by = 'system',
       resolution_action = 'auto_resolved', resolved_at = now(), resolved_by_file = cc.by_file,
       resolved_by_source = cc.by_source, resolution_note = 'cleared on ' || $d || ' by ' || cc.by_source
FROM (SELECT discrepancy_id, any_value(by_file) AS by_file, any_value(by_source) AS by_source
      FROM carry_cleared GROUP BY ALL) cc
WHERE d.discrepancy_id = cc.discrepancy_id
  AND d.discrepancy_id NOT IN (SELECT discrepancy_id FROM new_breaks)
""", p)
    con.execute("""
UPDATE discrepancies d SET
       status = CASE WHEN d.timing AND d.pending_until > greatest(d.last_seen_date, $d) THEN 'pending'
                     ELSE 'open' END,
       last_seen_date = greatest(d.last_seen_date, $d),
       resolved_date = NULL, resolved_by = NULL, resolution_action = NULL, resolved_at = NULL,
       resolved_by_file = NULL, resolved_by_source = NULL, resolution_note = NULL
FROM carry k
WHERE d.discrepancy_id = k.discrepancy_id AND NOT k.resolved_later
  AND d.discrepancy_id NOT IN (SELECT discrepancy_id FROM carry_cleared)
  AND d.discrepancy_id NOT IN (SELECT discrepancy_id FROM new_breaks)
""", p)
    # 4. the members of the day's settlement-batch breaks
    con.execute("""
INSERT INTO discrepancy_members
SELECT n.discrepancy_id, $d, m.channel, m.trade_date, m.txn_type, m.match_key, m.order_no, m.refund_no,
       m.amount, m.fee, m.expected_net, m.source
FROM (SELECT discrepancy_id, channel, try_cast(substr(match_key, 7) AS DATE) AS trade_date FROM new_breaks
      -- the batch's trade date read back from its key (exactly: only keys that are 'batch:' || that date)
      WHERE flow = 'funds' AND match_key = 'batch:' || try_cast(substr(match_key, 7) AS DATE)) n
JOIN batch_members m ON m.channel = n.channel AND m.trade_date = n.trade_date
""", p)
    _audit(con, d)
    refresh_ages(con, d)


def _audit(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """Append one system row per status change this run made (and per person's resolution found again)."""
    con.execute("""
INSERT INTO discrepancy_resolutions (discrepancy_id, recorded_at, recorded_by, action, note, old_status,
                                     new_status, business_date, file_id, origin)
SELECT discrepancy_id, now(), 'system', action, note, old_status, new_status, $d, file_id, 'run'
FROM (
    SELECT b.discrepancy_id, b.status AS old_status, coalesce(a.status, b.status) AS new_status,
           a.resolved_by_file AS file_id,
           CASE
             WHEN a.discrepancy_id IS NULL THEN 'withdrawn'
             WHEN b.status = 'resolved' AND coalesce(b.resolved_by, '') <> 'system' THEN 'still_found'
             WHEN a.status = 'auto_resolved' AND b.status <> 'auto_resolved' THEN 'auto_resolved'
             WHEN a.status = 'resolved' AND b.status <> 'resolved' THEN 'explained'
             WHEN b.status = 'pending' AND a.status = 'open' THEN 'pending_expired'
             WHEN b.status IN ('auto_resolved', 'resolved') AND a.status IN ('open', 'pending') THEN 'reopened'
           END AS action,
           CASE
             WHEN a.discrepancy_id IS NULL THEN 'no longer found when ' || $d || ' was reconciled again'
             WHEN b.status = 'resolved' AND coalesce(b.resolved_by, '') <> 'system'
               THEN 'found again by the run of ' || $d || '; stays resolved'
             WHEN b.status IN ('auto_resolved', 'resolved') AND a.status IN ('open', 'pending')
               THEN 'the run of ' || $d || ' no longer finds what cleared it'
             ELSE a.resolution_note
           END AS note
    FROM before b LEFT JOIN discrepancies a USING (discrepancy_id)
    WHERE b.discrepancy_id IN (SELECT discrepancy_id FROM new_breaks)
       OR a.discrepancy_id IS NULL OR a.status <> b.status
    UNION ALL
    SELECT a.discrepancy_id, NULL, a.status, NULL, 'explained', a.resolution_note
    FROM new_breaks n JOIN discrepancies a USING (discrepancy_id)
    WHERE a.status = 'resolved' AND a.resolved_by = 'system'
      AND n.discrepancy_id NOT IN (SELECT discrepancy_id FROM before)
) WHERE action IS NOT NULL
""", {"d": d})


def refresh_ages(con: duckdb.DuckDBPyConnection, d: date) -> None:
    """Days open as of ``d`` for breaks still unresolved; frozen at the resolution date once resolved."""
    bucket = age_bucket_sql("date_diff('day', first_seen_date, "
                            "CASE WHEN status IN ('open', 'pending') THEN $d::DATE "
                            "ELSE coalesce(resolved_date, $d::DATE) END)")
    con.execute(f"""
UPDATE discrepancies SET
    age_days = date_diff('day', first_seen_date, CASE WHEN status IN ('open', 'pending') THEN $d::DATE
                                                      ELSE coalesce(resolved_date, $d::DATE) END),
    age_bucket = {bucket}, aged_as_of = $d
WHERE first_seen_date <= $d
  AND CASE WHEN status IN ('open', 'pending') THEN aged_as_of IS NULL OR aged_as_of <= $d
           -- resolved: only rows whose frozen age is not written yet (the table only grows)
           ELSE age_days IS DISTINCT FROM date_diff('day', first_seen_date, coalesce(resolved_date, $d::DATE))
                OR aged_as_of IS NULL END
""", {"d": d})


def write_matches(con: duckdb.DuckDBPyConnection, d: date) -> int:
    """Pairs found on both sides (the input of settlement); the ones under a break stay held there.

    A carried row that finds its partner today is written under today's date.
    """
    con.execute("DELETE FROM matched_transactions WHERE business_date = $d "
                "AND channel IN (SELECT channel FROM channel_params)", {"d": d})
    con.execute("""
INSERT INTO matched_transactions (business_date, channel, match_key, txn_type, order_no, refund_no, merchant_id,
                                  amount, currency, channel_fee, event_time, platform_source, outcome, file_id,
                                  line_no)
SELECT $d, channel, match_key, txn_type, order_no, refund_no, merchant_id, p_amount, p_currency, c_fee,
       event_time, platform_source, outcome, file_id, line_no
FROM info_sources
WHERE outcome = 'matched'
   -- pairs on both sides that disagree: held by their open break, settled once a person resolves it
   OR (p_status = 'success' AND c_status IS NOT NULL
       AND outcome IN ('amount_mismatch', 'fee_mismatch', 'currency_mismatch'))
""", {"d": d})
    return con.execute("SELECT count(*) FROM info_pairs WHERE outcome = 'matched'").fetchone()[0]


def keep_unmatched_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Copy the rows of the breaks just written that a later day may pair (``unmatched_*_rows``), and drop
    those of withdrawn breaks: only the day's rows are read, whatever the history."""
    for sql in unmatched_rows_sql("SELECT discrepancy_id FROM new_breaks",
                                  "SELECT discrepancy_id FROM before EXCEPT SELECT discrepancy_id FROM discrepancies"):
        con.execute(sql)


def reconcile_day(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date,
                  channels: list[str] | None = None, batch_only: list[str] = ()) -> ReconSummary:
    """Match the day and write matched pairs and breaks (inside the caller's transaction).

    ``channels``: only these channels (default: every configured one). The others' rows, breaks and
    pairs are neither read nor touched, so channels reconciled apart (in key-hash buckets,
    ``recon.buckets``) are merged beside them; ``batch_only`` of those get their settlement-batch check
    (a bank's lump sum against the whole day, which buckets cannot split) here.
    """
    d = business_date
    channel_params(con, cfg, d, channels, batch_only)
    _carry(con, d)
    information_flow(con, d)
    funds_flow(con, d)
    _new_breaks(con, d)
    write_discrepancies(con, d)
    keep_unmatched_rows(con)
    matched = write_matches(con, d)
    by_type = dict(con.execute("SELECT type, count(*) FROM new_breaks GROUP BY type ORDER BY type").fetchall())
    counts = con.execute("""
SELECT count(*) FILTER (WHERE status = 'pending' AND business_date = $d),
       count(*) FILTER (WHERE status = 'resolved' AND resolved_by = 'system' AND business_date = $d),
       count(*) FILTER (WHERE status = 'auto_resolved' AND resolved_date = $d)
FROM discrepancies WHERE """ + IN_SCOPE_SQL, {"d": d}).fetchone()
    carried = dict(con.execute(
        "SELECT type, count(*) FROM discrepancies WHERE business_date < $d AND status IN ('open', 'pending') "
        f"AND {IN_SCOPE_SQL} GROUP BY type ORDER BY type", {"d": d}).fetchall())
    drop_info_pairs(con)   # the buffer pool is settlement's next
    return ReconSummary(matched, by_type, auto_resolved=counts[2], pending=counts[0], explained=counts[1],
                        carried_open=carried)
