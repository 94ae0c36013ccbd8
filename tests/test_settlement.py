"""Settlement (issue 6): fees, holds, batches, confirmation, carry, reserve, adjustments, payout files.

Warehouse data is built with plain SQL inserts into a temporary DuckDB; every expected amount is
computed here by hand or by the independent Decimal reference ``ref_fee`` below, never read back
from the engine.
"""
from __future__ import annotations

import hashlib
from datetime import date
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from recon.cli import main as cli_main
from recon.config import Config, parse_config
from recon.warehouse import connect, transaction
from settlement.engine import SettlementError, confirm_batch, settle_day
from settlement.payout import verify_payout_file, write_payout_files

D = Decimal
FRI = date(2026, 6, 5)
MON = date(2026, 6, 8)
TUE = date(2026, 6, 9)
WED = date(2026, 6, 10)


# ----------------------------------------------------------------------------- helpers
def make_cfg(tmp_path: Path, merchants: list[dict[str, Any]] | None = None, **extra: Any) -> Config:
    raw = {
        "warehouse": str(tmp_path / "w.duckdb"), "output_dir": str(tmp_path / "out"),
        "landing_dir": str(tmp_path / "landing"),
        "channels": [{"name": "wechat", "statements": [
            {"kind": "trade", "format": "wechat", "source": {"type": "folder", "path": str(tmp_path / "x")}}]}],
        "internal_source": {"url": "sqlite://"},
        "merchants": merchants if merchants is not None else [
            {"id": "M001", "name": "Shop One", "fee_rate": "0.006", "bank_account": "6222000011112222",
             "bank_name": "ICBC Shanghai", "account_name": "Shop One Ltd"},
            {"id": "M002", "name": "Shop Two", "fee_rate": "0.01"},
        ],
        **extra,
    }
    return parse_config(raw)


def add_txn(con, day: date, txn_type: str, order_no: str, merchant: str | None, amount: str,
            refund_no: str | None = None, currency: str = "CNY", channel: str = "wechat") -> None:
    con.execute(
        "INSERT INTO matched_transactions (business_date, channel, match_key, txn_type, order_no, refund_no, "
        "merchant_id, amount, currency, event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [day, channel, f"{txn_type}:{refund_no or order_no}", txn_type, order_no, refund_no, merchant,
         D(amount), currency, f"{day} 10:00:00"])


def add_disc(con, disc_id: str, day: date, order_no: str, type_: str = "amount_mismatch",
             status: str = "open", channel: str = "wechat", resolved: date | None = None) -> None:
    con.execute(
        "INSERT INTO discrepancies (discrepancy_id, business_date, channel, flow, type, match_key, status, "
        "first_seen_date, last_seen_date, resolved_date, order_no) "
        "VALUES (?, ?, ?, 'information', ?, ?, ?, ?, ?, ?, ?)",
        [disc_id, day, channel, type_, order_no, status, day, day, resolved, order_no])


def resolve(con, disc_id: str, day: date) -> None:
    con.execute("UPDATE discrepancies SET status = 'resolved', resolved_date = ? WHERE discrepancy_id = ?",
                [day, disc_id])


def run(con, cfg: Config, day: date):
    with transaction(con):
        return settle_day(con, cfg, day)


def line(con, batch_id: str, merchant: str, currency: str = "CNY") -> dict[str, Any]:
    cols = ["trade_count", "gross", "refunds", "fees", "adjustments", "net", "carried_in", "reserve_held",
            "reserve_released", "payout", "carried_forward"]
    row = con.execute(f"SELECT {', '.join(cols)} FROM settlement_lines WHERE batch_id = ? AND merchant_id = ? "
                      "AND currency = ?", [batch_id, merchant, currency]).fetchone()
    return dict(zip(cols, row)) if row else {}


def ref_fee(amount: Decimal, rate: str, fixed: str = "0", fmin: str | None = None, fmax: str | None = None,
            mode=ROUND_HALF_UP) -> Decimal:
    """Independent reference: percentage + fixed, clamped, rounded per transaction."""
    raw = amount * D(rate) + D(fixed)
    if fmin is not None and raw < D(fmin):
        raw = D(fmin)
    if fmax is not None and raw > D(fmax):
        raw = D(fmax)
    return raw.quantize(D("0.01"), rounding=mode)


def snapshot(con, status: str = "confirmed") -> tuple:
    """Everything stored for batches of one status, ordered (to prove they do not change)."""
    items = con.execute(
        "SELECT i.* EXCLUDE (event_time) FROM settlement_items i JOIN settlement_batches b USING (batch_id) "
        "WHERE b.status = ? ORDER BY ALL", [status]).fetchall()
    lines = con.execute(
        "SELECT l.* FROM settlement_lines l JOIN settlement_batches b USING (batch_id) WHERE b.status = ? "
        "ORDER BY ALL", [status]).fetchall()
    return items, lines


def assert_conservation(con) -> None:
    """Per batch and per line: payouts + fee revenue + carried + reserved
    = signed transaction amounts + adjustments + balances carried in + reserve released."""
    rows = con.execute("""
        WITH it AS (
            SELECT batch_id, merchant_id, currency,
                   coalesce(sum(CASE WHEN txn_type = 'payment' THEN amount ELSE -amount END)
                            FILTER (WHERE item_kind = 'transaction'), 0) AS signed,
                   coalesce(sum(amount) FILTER (WHERE item_kind = 'transaction' AND txn_type = 'payment'), 0) AS gross,
                   coalesce(sum(amount) FILTER (WHERE item_kind = 'transaction' AND txn_type = 'refund'), 0) AS refunds,
                   coalesce(sum(fee) FILTER (WHERE item_kind = 'transaction'), 0) AS fees,
                   coalesce(sum(net) FILTER (WHERE item_kind = 'adjustment'), 0) AS adj,
                   coalesce(sum(net) FILTER (WHERE item_kind = 'transaction'), 0) AS item_net
            FROM settlement_items GROUP BY ALL)
        SELECT l.batch_id, l.merchant_id, l.currency, l.payout, l.fees, l.carried_forward, l.reserve_held,
               l.carried_in, l.reserve_released, l.gross, l.refunds, l.adjustments, l.net,
               coalesce(it.signed, 0), coalesce(it.gross, 0), coalesce(it.refunds, 0), coalesce(it.fees, 0),
               coalesce(it.adj, 0), coalesce(it.item_net, 0)
        FROM settlement_lines l LEFT JOIN it USING (batch_id, merchant_id, currency)""").fetchall()
    items_without_line = con.execute("""
        SELECT count(*) FROM settlement_items i ANTI JOIN settlement_lines l USING (batch_id, merchant_id, currency)
    """).fetchone()[0]
    assert items_without_line == 0
    per_batch: dict[str, list[Decimal]] = {}
    for (bid, m, c, payout, fees, cf, rh, ci, rr, gross, refunds, adj, net,
         signed, igross, irefunds, ifees, iadj, inet) in rows:
        assert (gross, refunds, fees, adj) == (igross, irefunds, ifees, iadj), (bid, m, c)
        assert net == gross - refunds - fees + adj == inet + iadj, (bid, m, c)
        assert payout >= 0 and rh >= 0
        assert payout + fees + cf + rh == signed + adj + ci + rr, (bid, m, c)
        acc = per_batch.setdefault(bid, [D(0), D(0)])
        acc[0] += payout + fees + cf + rh
        acc[1] += signed + adj + ci + rr
    for bid, (left, right) in per_batch.items():
        assert left == right, bid
    # the carry chain: what a line carries in is what the merchant's previous line carried forward
    chain = con.execute("""
        SELECT l.merchant_id, l.currency, l.carried_in,
               lag(l.carried_forward, 1, 0) OVER (PARTITION BY l.merchant_id, l.currency ORDER BY b.settlement_date)
        FROM settlement_lines l JOIN settlement_batches b USING (batch_id)""").fetchall()
    for m, c, ci, prev in chain:
        assert ci == prev, (m, c)
    # reserves: every release was held by an earlier batch
    rel = con.execute("""
        SELECT l.batch_id, l.merchant_id, l.currency, l.reserve_released, coalesce(sum(r.amount), 0)
        FROM settlement_lines l LEFT JOIN settlement_reserves r
          ON r.released_batch_id = l.batch_id AND r.merchant_id = l.merchant_id AND r.currency = l.currency
        GROUP BY ALL""").fetchall()
    for bid, m, c, released, held in rel:
        assert released == held, (bid, m, c)


def assert_settled_at_most_once(con) -> None:
    dup = con.execute("""
        SELECT channel, txn_type, order_no, refund_no, count(*) FROM settlement_items
        WHERE item_kind = 'transaction' GROUP BY ALL HAVING count(*) > 1""").fetchall()
    assert dup == []


@pytest.fixture
def env(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    yield cfg, con
    con.close()


def demo_day(con) -> None:
    for order, amount in (("A1", "100.00"), ("A2", "200.00"), ("A3", "500.00"), ("A4", "99.90")):
        add_txn(con, FRI, "payment", order, "M001", amount)
    add_txn(con, FRI, "refund", "A1", "M001", "20.00", refund_no="RA1")
    add_txn(con, FRI, "refund", "A2", "M001", "50.00", refund_no="RA2")
    add_txn(con, FRI, "payment", "B1", "M002", "40.00")
    add_txn(con, FRI, "payment", "B2", "M002", "250.00")


# ----------------------------------------------------------------------------- fees
@pytest.mark.parametrize("amount,rate,fixed,fmin,fmax,mode", [
    ("99.90", "0.006", "0", None, None, "half_up"),       # 0.5994 -> 0.60
    ("0.75", "0.006", "0", None, None, "half_up"),        # 0.0045 -> 0.00
    ("125.00", "0.0002", "0", None, None, "half_up"),     # 0.025 -> 0.03 (half-up)
    ("125.00", "0.0002", "0", None, None, "half_even"),   # 0.025 -> 0.02 (banker's)
    ("135.00", "0.0002", "0", None, None, "half_even"),   # 0.027 -> 0.03
    ("10.00", "0.006", "0.10", None, None, "half_up"),    # 0.06 + 0.10
    ("10.00", "0.006", "0", "0.50", None, "half_up"),     # clamped up to the minimum
    ("100000.00", "0.006", "0", None, "25.00", "half_up"),  # clamped down to the maximum
    ("1234.57", "0.0038", "0.20", "1.00", "30.00", "half_up"),
])
def test_fee_rules_and_rounding(tmp_path, amount, rate, fixed, fmin, fmax, mode):
    merchant = {"id": "M9", "name": "x", "fee_rate": rate, "fee_fixed": fixed, "fee_rounding": mode}
    if fmin:
        merchant["fee_min"] = fmin
    if fmax:
        merchant["fee_max"] = fmax
    cfg = make_cfg(tmp_path, [merchant])
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "P1", "M9", amount)
    run(con, cfg, FRI)
    fee = con.execute("SELECT fee FROM settlement_items").fetchone()[0]
    expected = ref_fee(D(amount), rate, fixed, fmin, fmax, ROUND_HALF_EVEN if mode == "half_even" else ROUND_HALF_UP)
    assert fee == expected
    assert line(con, "STL-20260608", "M9")["net"] == D(amount) - expected


def test_refund_fee_policies(tmp_path):
    cfg = make_cfg(tmp_path, [
        {"id": "K", "name": "kept", "fee_rate": "0.006"},
        {"id": "P", "name": "pro rata", "fee_rate": "0.006", "fee_fixed": "0.05", "refund_fee_policy": "pro_rata"},
    ])
    con = connect(cfg.warehouse)
    for m in ("K", "P"):
        add_txn(con, FRI, "payment", f"{m}1", m, "300.00")
        add_txn(con, FRI, "refund", f"{m}1", m, "125.50", refund_no=f"{m}R1")
    run(con, cfg, FRI)
    kept, pro = line(con, "STL-20260608", "K"), line(con, "STL-20260608", "P")
    assert kept["fees"] == D("1.80") and kept["net"] == D("300.00") - D("125.50") - D("1.80")
    # pro rata: 0.006 x 125.50 = 0.753 -> 0.75 returned; the fixed 0.05 is kept
    assert pro["fees"] == D("1.85") - D("0.75")
    assert pro["net"] == D("300.00") - D("125.50") - D("1.10")
    assert_conservation(con)


def test_demo_day_exact_to_the_fen(env):
    cfg, con = env
    demo_day(con)
    summary = run(con, cfg, FRI)   # a Friday: T+1 is Monday
    assert summary.batch_ids == ["STL-20260608"]
    assert con.execute("SELECT settlement_date, status FROM settlement_batches").fetchall() == [(MON, "draft")]
    m1, m2 = line(con, "STL-20260608", "M001"), line(con, "STL-20260608", "M002")
    assert (m1["gross"], m1["refunds"], m1["fees"], m1["net"], m1["payout"]) == (
        D("899.90"), D("70.00"), D("5.40"), D("824.50"), D("824.50"))
    assert (m2["gross"], m2["refunds"], m2["fees"], m2["net"], m2["payout"]) == (
        D("290.00"), D("0.00"), D("2.90"), D("287.10"), D("287.10"))
    assert m1["trade_count"] == 6 and m2["trade_count"] == 2
    assert summary.settled == 8 and summary.held == 0
    assert_conservation(con)


def test_rerun_is_identical_and_never_duplicates(env):
    cfg, con = env
    demo_day(con)
    first = run(con, cfg, FRI)
    before = snapshot(con, "draft")
    for _ in range(3):
        again = run(con, cfg, FRI)
    assert again.to_dict() == first.to_dict()
    assert snapshot(con, "draft") == before
    assert con.execute("SELECT count(*) FROM settlement_batches").fetchone()[0] == 1
    assert_settled_at_most_once(con)


def test_weekend_trade_days_share_the_monday_batch(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "F1", "M001", "10.00")
    add_txn(con, date(2026, 6, 6), "payment", "S1", "M001", "20.00")
    add_txn(con, date(2026, 6, 7), "payment", "U1", "M001", "30.00")
    for d in (FRI, date(2026, 6, 6), date(2026, 6, 7)):
        run(con, cfg, d)
    assert con.execute("SELECT batch_id FROM settlement_batches").fetchall() == [("STL-20260608",)]
    assert line(con, "STL-20260608", "M001")["gross"] == D("60.00")
    assert sorted(r[0] for r in con.execute("SELECT trade_date FROM settlement_items").fetchall()) == [
        FRI, date(2026, 6, 6), date(2026, 6, 7)]


def test_d_plus_n_cycle_uses_natural_days(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "N", "name": "n", "cycle": "D+1"}, {"id": "B", "name": "b", "cycle": "T+2"}])
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "N1", "N", "10.00")
    add_txn(con, FRI, "payment", "B1", "B", "10.00")
    summary = run(con, cfg, FRI)
    assert summary.batch_ids == ["STL-20260606", "STL-20260609"]   # Saturday; Tuesday
    assert line(con, "STL-20260606", "N")["payout"] == D("10.00")
    assert line(con, "STL-20260609", "B")["payout"] == D("10.00")


def test_multi_currency_settled_per_currency(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "C1", "M001", "100.00")
    add_txn(con, FRI, "payment", "U1", "M001", "10.00", currency="USD")
    add_txn(con, FRI, "refund", "U1", "M001", "2.50", refund_no="UR1", currency="USD")
    run(con, cfg, FRI)
    cny, usd = line(con, "STL-20260608", "M001", "CNY"), line(con, "STL-20260608", "M001", "USD")
    assert cny["net"] == D("99.40")
    assert usd["gross"] == D("10.00") and usd["refunds"] == D("2.50") and usd["fees"] == D("0.06")
    assert usd["net"] == D("7.44")
    assert_conservation(con)


def test_items_are_stored_merchant_by_merchant(env):
    """Each merchant's items lie together (each statement then reads only its own row groups), whatever
    order the trades came in: interleaved merchants and currencies, two trade days into one batch."""
    cfg, con = env
    for i in range(60):
        merchant = ("M002", "M001")[i % 2]
        add_txn(con, FRI if i < 30 else date(2026, 6, 6), "payment", f"O{i:03d}", merchant, f"{i + 1}.00",
                currency="USD" if i % 3 == 0 else "CNY")
    run(con, cfg, FRI)
    run(con, cfg, date(2026, 6, 6))
    stored = [r[0] for r in con.execute(
        "SELECT batch_id || '/' || merchant_id || '/' || currency FROM settlement_items "
        "WHERE item_kind = 'transaction' AND run_date = DATE '2026-06-06' ORDER BY rowid").fetchall()]
    assert len(stored) == 30
    runs = [k for j, k in enumerate(stored) if j == 0 or stored[j - 1] != k]
    assert sorted(runs) == runs and len(runs) == len(set(stored)) == 4


# ----------------------------------------------------------------------------- holds
def test_held_transaction_released_after_resolution_with_original_trade_date(env):
    cfg, con = env
    demo_day(con)
    add_txn(con, FRI, "payment", "H1", "M002", "60.00")
    add_txn(con, FRI, "refund", "H1", "M002", "5.00", refund_no="HR1")
    add_disc(con, "D-H1", FRI, "H1")
    add_disc(con, "D-DUP", FRI, "B1", type_="duplicate")   # duplicates never hold
    s = run(con, cfg, FRI)
    assert s.held == 2 and s.held_amount == {"CNY": D("65.00")}
    assert line(con, "STL-20260608", "M002")["gross"] == D("290.00")
    held = con.execute("SELECT order_no, reason, discrepancy_ids FROM settlement_holds ORDER BY ALL").fetchall()
    assert held == [("H1", "discrepancy", "D-H1"), ("H1", "discrepancy", "D-H1")]

    run(con, cfg, MON)   # still open on Monday: still held, nothing new
    assert con.execute("SELECT count(*) FROM settlement_items WHERE order_no = 'H1'").fetchone()[0] == 0
    resolve(con, "D-H1", TUE)
    run(con, cfg, MON)   # a rerun of Monday sees the state as of Monday: resolved only on Tuesday
    assert con.execute("SELECT count(*) FROM settlement_items WHERE order_no = 'H1'").fetchone()[0] == 0
    s = run(con, cfg, TUE)
    assert s.released == 2 and s.batch_ids == ["STL-20260610"]
    items = con.execute("SELECT batch_id, trade_date, run_date, note FROM settlement_items WHERE order_no = 'H1'"
                        ).fetchall()
    assert items == [("STL-20260610", FRI, TUE, "released from hold")] * 2
    assert line(con, "STL-20260610", "M002")["net"] == D("60.00") - D("5.00") - D("0.60")
    run(con, cfg, TUE)
    run(con, cfg, FRI)
    run(con, cfg, TUE)
    assert con.execute("SELECT count(*) FROM settlement_items WHERE order_no = 'H1'").fetchone()[0] == 2
    assert_settled_at_most_once(con)
    assert_conservation(con)


def test_unknown_merchant_is_held_not_paid(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "X1", "M404", "10.00")
    add_txn(con, FRI, "payment", "X2", None, "10.00")
    s = run(con, cfg, FRI)
    assert s.settled == 0 and s.held == 2
    assert sorted(r[0] for r in con.execute("SELECT reason FROM settlement_holds").fetchall()) == [
        "no_merchant", "unknown_merchant"]


# ----------------------------------------------------------------------------- confirm / adjustments
def test_confirm_locks_the_batch_and_late_corrections_become_adjustments(env):
    cfg, con = env
    demo_day(con)
    run(con, cfg, FRI)
    with transaction(con):
        info = confirm_batch(con, "STL-20260608", "alice")
    assert info["status"] == "confirmed" and info["confirmed_by"] == "alice"
    locked = snapshot(con)
    with pytest.raises(SettlementError, match="already confirmed"):
        confirm_batch(con, "STL-20260608", "bob")

    # the channel restates Friday: A4 was 99.90, is 89.90; B2 disappears; a new late match arrives
    con.execute("UPDATE matched_transactions SET amount = 89.90 WHERE order_no = 'A4'")
    con.execute("DELETE FROM matched_transactions WHERE order_no = 'B2'")
    add_txn(con, FRI, "payment", "A5", "M001", "10.00")
    s = run(con, cfg, FRI)
    assert snapshot(con) == locked                       # the confirmed batch never changes
    assert s.batch_ids == ["STL-20260609"] and s.adjustments == 2
    m1, m2 = line(con, "STL-20260609", "M001"), line(con, "STL-20260609", "M002")
    # A4: -10.00 amount, fee 0.60 -> 0.54 (0.5394): net delta -9.94; A5 new: 10.00 - 0.06
    assert m1["adjustments"] == D("-9.94") and m1["gross"] == D("10.00") and m1["net"] == D("0.00")
    # B2 clawed back: -(250.00 - 2.50)
    assert m2["adjustments"] == D("-247.50") and m2["payout"] == 0 and m2["carried_forward"] == D("-247.50")
    again = run(con, cfg, FRI)                            # reruns: same adjustments, not doubled
    assert again.to_dict() == s.to_dict()
    assert_conservation(con)
    assert_settled_at_most_once(con)


def test_confirm_requires_earlier_batches_first_and_unknown_batch_is_clear(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "A", "M001", "10.00")
    add_txn(con, MON, "payment", "B", "M001", "10.00")
    run(con, cfg, FRI)
    run(con, cfg, MON)
    with pytest.raises(SettlementError, match="earlier draft batches first: STL-20260608"):
        confirm_batch(con, "STL-20260609", "alice")
    with pytest.raises(SettlementError, match="no settlement batch 'STL-2026'"):
        confirm_batch(con, "STL-2026", "alice")
    with pytest.raises(SettlementError, match="--by"):
        confirm_batch(con, "STL-20260608", " ")


def test_a_run_targeting_a_confirmed_date_goes_to_the_next_draft(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "A", "M001", "10.00")
    run(con, cfg, FRI)
    confirm_batch(con, "STL-20260608", "alice")
    add_txn(con, date(2026, 6, 7), "payment", "S", "M001", "20.00")   # Sunday, T+1 = Monday (locked)
    s = run(con, cfg, date(2026, 6, 7))
    assert s.batch_ids == ["STL-20260609"]
    assert line(con, "STL-20260609", "M001")["gross"] == D("20.00")


# ----------------------------------------------------------------------------- carry / reserve
def test_negative_net_is_carried_to_the_next_batch(env):
    cfg, con = env
    add_txn(con, FRI, "refund", "OLD1", "M001", "80.00", refund_no="R1")
    add_txn(con, FRI, "payment", "P1", "M001", "50.00")
    run(con, cfg, FRI)
    first = line(con, "STL-20260608", "M001")
    assert first["net"] == D("50.00") - D("80.00") - D("0.30") == D("-30.30")
    assert first["payout"] == 0 and first["carried_forward"] == D("-30.30")
    add_txn(con, MON, "payment", "P2", "M001", "100.00")
    run(con, cfg, MON)
    second = line(con, "STL-20260609", "M001")
    assert second["carried_in"] == D("-30.30")
    assert second["payout"] == D("100.00") - D("0.60") - D("30.30")
    assert second["carried_forward"] == 0
    assert_conservation(con)


def test_net_below_min_payout_is_carried_forward(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "M", "name": "m", "fee_rate": "0.01", "min_payout": "100.00"}])
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "P1", "M", "60.00")
    run(con, cfg, FRI)
    assert line(con, "STL-20260608", "M")["payout"] == 0
    assert line(con, "STL-20260608", "M")["carried_forward"] == D("59.40")
    add_txn(con, MON, "payment", "P2", "M", "50.00")
    run(con, cfg, MON)
    assert line(con, "STL-20260609", "M")["payout"] == D("59.40") + D("49.50")
    assert_conservation(con)


def test_rolling_reserve_is_held_then_released(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "R", "name": "r", "fee_rate": "0.006", "reserve_rate": "0.10",
                               "reserve_days": 2}])
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "P1", "R", "1000.05")
    run(con, cfg, FRI)
    first = line(con, "STL-20260608", "R")
    # 10% of 1000.05 = 100.005 -> 100.01 (half-up); fee 6.0003 -> 6.00
    assert first["reserve_held"] == D("100.01") and first["payout"] == D("1000.05") - D("6.00") - D("100.01")
    assert con.execute("SELECT due_date FROM settlement_reserves").fetchone()[0] == WED
    add_txn(con, MON, "payment", "P2", "R", "10.00")
    run(con, cfg, MON)                                   # Tuesday batch: not due yet
    assert line(con, "STL-20260609", "R")["reserve_released"] == 0
    add_txn(con, TUE, "payment", "P3", "R", "10.00")
    run(con, cfg, TUE)                                   # Wednesday batch: released
    third = line(con, "STL-20260610", "R")
    assert third["reserve_released"] == D("100.01")
    assert third["payout"] == D("10.00") - D("0.06") - D("1.00") + D("100.01")
    run(con, cfg, TUE)
    run(con, cfg, MON)
    assert line(con, "STL-20260610", "R") == third       # recomputed in order: same answer
    assert_conservation(con)


def test_merchant_config_errors_are_clear(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "M", "name": "m", "fee_min": "2.00", "fee_max": "1.00"}])
    con = connect(cfg.warehouse)
    with pytest.raises(SettlementError, match="fee_min 2.00 is above fee_max 1.00"):
        run(con, cfg, FRI)
    cfg = make_cfg(tmp_path, [{"id": "M", "name": "m", "fee_fixed": "0.001"}])
    with pytest.raises(SettlementError, match="fee_fixed must be a non-negative amount in fen"):
        run(con, cfg, FRI)


# ----------------------------------------------------------------------------- files
def test_payout_file_totals_checksum_and_statements(env, tmp_path):
    cfg, con = env
    demo_day(con)
    add_txn(con, FRI, "payment", "U1", "M002", "10.00", currency="USD")
    run(con, cfg, FRI)
    out = tmp_path / "files"
    paths = write_payout_files(con, cfg, "STL-20260608", out)
    names = sorted(p.name for p in paths)
    assert names == ["STL-20260608_payout.csv", "STL-20260608_payout.csv.sha256",
                     "STL-20260608_statement_M001.csv", "STL-20260608_statement_M002.csv"]
    payout = out / "STL-20260608_payout.csv"
    text = payout.read_text(encoding="utf-8").splitlines()
    assert text[0] == "merchant_id,account_name,bank_account,bank_name,currency,amount,memo"
    assert text[1] == "M001,Shop One Ltd,6222000011112222,ICBC Shanghai,CNY,824.50,STL-20260608 settlement M001"
    assert text[3].startswith("M002,,,,USD,9.90,")
    assert text[4:6] == ["TOTAL,CNY,2,1111.60", "TOTAL,USD,1,9.90"]
    body = "\n".join(text[:-1]) + "\n"
    assert text[-1] == "SHA256," + hashlib.sha256(body.encode()).hexdigest()
    assert verify_payout_file(payout)
    side = (out / "STL-20260608_payout.csv.sha256").read_text().split()
    assert side == [hashlib.sha256(payout.read_bytes()).hexdigest(), payout.name]
    stmt = (out / "STL-20260608_statement_M001.csv").read_text(encoding="utf-8").splitlines()
    assert stmt[0].startswith("batch_id,settlement_date,merchant_id,currency,trade_date")
    assert sum(1 for r in stmt if ",transaction," in r) == 6
    assert "SUMMARY,STL-20260608,M001,CNY,net,824.50" in stmt
    assert "SUMMARY,STL-20260608,M001,CNY,fees,5.40" in stmt
    first = {p.name: p.read_bytes() for p in paths}
    run(con, cfg, FRI)
    assert {p.name: p.read_bytes() for p in write_payout_files(con, cfg, "STL-20260608", out)} == first
    payout.write_bytes(payout.read_bytes().replace(b"824.50", b"824.59"))
    assert not verify_payout_file(payout)


def test_statements_are_injection_safe(tmp_path):
    """Text from outside (merchant ids, order and refund numbers) cannot become a formula in a spreadsheet."""
    cfg = make_cfg(tmp_path, [{"id": "=M1", "name": "m"}])
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "=HYPERLINK(1)", "=M1", "12.34")
    add_txn(con, FRI, "refund", "@SUM(A1)", "=M1", "1.00", refund_no="-2+3")
    add_txn(con, FRI, "payment", "P-1", "=M1", "5.00")
    run(con, cfg, FRI)
    paths = write_payout_files(con, cfg, "STL-20260608", tmp_path / "o")
    stmt = [p for p in paths if "_statement_" in p.name][0]
    import csv
    rows = list(csv.reader(stmt.read_text(encoding="utf-8").splitlines()))
    items = {r[8]: r for r in rows[1:] if r[0] != "SUMMARY"}
    assert set(items) == {"'=HYPERLINK(1)", "'@SUM(A1)", "P-1"}       # ordinary ids unchanged
    assert items["'@SUM(A1)"][9] == "'-2+3" and items["P-1"][9] == ""
    assert {r[2] for r in rows[1:]} == {"'=M1"}
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r"))
               for r in rows for c in (r[:5] if r[0] == "SUMMARY" else r[:10]))  # text columns
    con.close()


def test_cn_bank_layout_in_gbk(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "M", "name": "m", "bank_account": "6222", "account_name": "上海某某有限公司",
                               "bank_name": "工商银行"}], payout={"layout": "cn_bank_batch", "encoding": "gbk"})
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "P1", "M", "12.34")
    run(con, cfg, FRI)
    path = write_payout_files(con, cfg, "STL-20260608", tmp_path / "o")[0]
    text = path.read_bytes().decode("gbk").splitlines()
    assert text[0] == "序号,收款账号,收款户名,开户行,币种,金额,用途"
    assert text[1].startswith("1,6222,上海某某有限公司,工商银行,CNY,12.34,")
    assert text[2] == "合计,CNY,1,12.34" and text[3].startswith("校验,SHA256,")
    assert verify_payout_file(path, "gbk")


def test_unknown_payout_column_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, [{"id": "M", "name": "m"}], payout={"columns": ["merchant_id", "iban"]})
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "P1", "M", "1.00")
    run(con, cfg, FRI)
    with pytest.raises(SettlementError, match="unknown column.*iban"):
        write_payout_files(con, cfg, "STL-20260608", tmp_path / "o")


# ----------------------------------------------------------------------------- CLI
def test_cli_show_and_confirm(tmp_path, capsys):
    import yaml

    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    demo_day(con)
    run(con, cfg, FRI)
    con.close()
    raw = {"warehouse": str(cfg.warehouse), "output_dir": str(cfg.output_dir), "landing_dir": str(cfg.landing_dir),
           "channels": [{"name": "wechat", "statements": [
               {"kind": "trade", "format": "wechat", "source": {"type": "folder", "path": "x"}}]}],
           "internal_source": {"url": "sqlite://"},
           "merchants": [{"id": "M001", "name": "a", "fee_rate": "0.006"}, {"id": "M002", "name": "b"}]}
    path = tmp_path / "recon.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert cli_main(["settlement", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "STL-20260608" in out and "draft" in out and "CNY 1,111.60" in out
    assert cli_main(["settlement", "show", "STL-20260608", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "824.50" in out and "287.10" in out
    assert cli_main(["settlement", "confirm", "STL-20260608", "--config", str(path), "--by", "alice"]) == 0
    assert "confirmed by alice" in capsys.readouterr().out
    assert cli_main(["settlement", "confirm", "STL-20260608", "--config", str(path), "--by", "bob"]) == 1
    err = capsys.readouterr().err
    assert "already confirmed (by alice" in err and "Traceback" not in err
    assert cli_main(["settlement", "show", "NOPE", "--config", str(path)]) == 1
    assert "no settlement batch 'NOPE'" in capsys.readouterr().err


def test_a_transaction_matched_again_on_another_day_is_not_paid_again(env):
    cfg, con = env
    add_txn(con, FRI, "payment", "A", "M001", "10.00")
    add_txn(con, MON, "payment", "A", "M001", "10.00")    # the same payment, matched again later
    add_txn(con, MON, "payment", "A", "M001", "10.00")    # ... and twice on the same day
    run(con, cfg, MON)
    run(con, cfg, FRI)                                    # an older day run after the newer one
    run(con, cfg, MON)
    assert con.execute("SELECT trade_date FROM settlement_items").fetchall() == [(MON,)]
    assert_settled_at_most_once(con)


@pytest.mark.parametrize("lookback, paid_again", [(3, False), (2, True)])
def test_the_double_pay_guard_reads_the_configured_window(tmp_path, lookback, paid_again):
    """settlement.duplicate_lookback_days: FRI's item is in MON's window at 3 days, outside it at 2 (the cost of
    a shorter window, which a platform chooses only if its channels never report a transaction again that late)."""
    cfg = make_cfg(tmp_path, settlement={"duplicate_lookback_days": lookback})
    con = connect(cfg.warehouse)
    add_txn(con, FRI, "payment", "A", "M001", "10.00")
    run(con, cfg, FRI)
    add_txn(con, MON, "payment", "A", "M001", "10.00")    # the same payment, matched again three days later
    run(con, cfg, MON)
    dates = [d for (d,) in con.execute("SELECT trade_date FROM settlement_items ORDER BY 1").fetchall()]
    assert dates == ([FRI, MON] if paid_again else [FRI])
    con.close()
