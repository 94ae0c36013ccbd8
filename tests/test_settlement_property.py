"""Property: across any sequence of matches, duplicates, discrepancies, resolutions, restatements,
runs, reruns and confirmations, no transaction is settled twice, every batch conserves money to
the fen, confirmed batches never change, a rerun is identical, and once everything is resolved
and rerun each transaction has been paid exactly its (reference) net -- no more, no less."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.warehouse import connect
from settlement.engine import confirm_batch
from tests.test_settlement import (
    add_disc,
    add_txn,
    assert_conservation,
    assert_settled_at_most_once,
    make_cfg,
    run,
    snapshot,
)

D = Decimal
DAY0 = date(2026, 6, 1)
N_DAYS = 10
FINAL = DAY0 + timedelta(days=30)
MERCHANTS = [
    {"id": "M1", "name": "a", "fee_rate": "0.006", "min_payout": "50.00"},
    {"id": "M2", "name": "b", "fee_rate": "0.0125", "fee_fixed": "0.05", "fee_min": "0.10", "fee_max": "5.00",
     "refund_fee_policy": "pro_rata", "reserve_rate": "0.10", "reserve_days": 2},
    {"id": "M3", "name": "c", "fee_rate": "0.02", "cycle": "D+1", "fee_rounding": "half_even"},
]
IDS = ["M1", "M2", "M3", "M9"]          # M9 is not configured: held, never paid


def ref_net(merchant: str, txn_type: str, amount: Decimal) -> Decimal:
    """Independent Decimal reference of the merchant's net for one transaction."""
    m = next(x for x in MERCHANTS if x["id"] == merchant)
    rate, fixed = D(m["fee_rate"]), D(m.get("fee_fixed", "0"))
    mode = ROUND_HALF_EVEN if m.get("fee_rounding") == "half_even" else ROUND_HALF_UP
    if txn_type == "payment":
        raw = amount * rate + fixed
        if "fee_min" in m:
            raw = max(raw, D(m["fee_min"]))
        if "fee_max" in m:
            raw = min(raw, D(m["fee_max"]))
        return amount - raw.quantize(D("0.01"), rounding=mode)
    if m.get("refund_fee_policy") == "pro_rata":
        return -amount + (amount * rate).quantize(D("0.01"), rounding=mode)
    return -amount


day = st.integers(0, N_DAYS - 1)
ops = st.one_of(
    st.tuples(st.just("pay"), day, st.sampled_from(IDS), st.integers(1, 200_00)),
    st.tuples(st.just("refund"), st.integers(0, 50), day, st.integers(1, 300_00)),
    st.tuples(st.just("dup"), st.integers(0, 50), day),
    st.tuples(st.just("open"), st.integers(0, 50), day),
    st.tuples(st.just("resolve"), st.integers(0, 50), st.integers(0, 3)),
    st.tuples(st.just("change"), st.integers(0, 50), st.integers(1, 200_00)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("run"), day),
    st.tuples(st.just("run"), day),
    st.tuples(st.just("confirm")),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=24))
def test_no_transaction_settled_twice_and_money_conserved(tmp_path_factory, program):
    cfg = make_cfg(tmp_path_factory.mktemp("prop"), MERCHANTS)
    con = connect(":memory:")
    orders: list[tuple[str, str]] = []          # (order_no, merchant)
    keys: list[tuple[str, str, str | None]] = []  # (txn_type, order_no, refund_no)
    discs: list[tuple[str, date]] = []
    locked = snapshot(con)

    def check() -> None:
        nonlocal locked
        assert_settled_at_most_once(con)
        assert_conservation(con)
        items, lines = snapshot(con)
        assert set(locked[0]) <= set(items) and set(locked[1]) <= set(lines)   # confirmed = frozen
        locked = (items, lines)

    for op in program:
        kind = op[0]
        if kind == "pay":
            _, d, merchant, fen = op
            order = f"O{len(orders)}"
            orders.append((order, merchant))
            keys.append(("payment", order, None))
            add_txn(con, DAY0 + timedelta(days=d), "payment", order, merchant, str(D(fen) / 100))
        elif kind == "refund" and orders:
            _, i, d, fen = op
            order, merchant = orders[i % len(orders)]
            refund_no = f"R{len(keys)}"
            keys.append(("refund", order, refund_no))
            add_txn(con, DAY0 + timedelta(days=d), "refund", order, merchant, str(D(fen) / 100), refund_no=refund_no)
        elif kind == "dup" and keys:        # the same transaction matched again on another day
            _, i, d = op
            t, o, r = keys[i % len(keys)]
            con.execute("""
                INSERT INTO matched_transactions
                SELECT ? AS business_date, * EXCLUDE (business_date) FROM matched_transactions
                WHERE txn_type = ? AND order_no = ? AND coalesce(refund_no, '') = coalesce(?, '') LIMIT 1""",
                        [DAY0 + timedelta(days=d), t, o, r])
        elif kind == "open" and orders:
            _, i, d = op
            disc_id = f"D{len(discs)}"
            discs.append((disc_id, DAY0 + timedelta(days=d)))
            add_disc(con, disc_id, DAY0 + timedelta(days=d), orders[i % len(orders)][0])
        elif kind == "resolve" and discs:
            _, i, later = op
            disc_id, seen = discs[i % len(discs)]
            con.execute("UPDATE discrepancies SET status = 'resolved', resolved_date = ? "
                        "WHERE discrepancy_id = ? AND status = 'open'", [seen + timedelta(days=later), disc_id])
        elif kind == "change" and keys:      # a restatement: every row of the transaction
            _, i, fen = op
            t, o, r = keys[i % len(keys)]
            con.execute("UPDATE matched_transactions SET amount = ? WHERE txn_type = ? AND order_no = ? "
                        "AND coalesce(refund_no, '') = coalesce(?, '')", [D(fen) / 100, t, o, r])
        elif kind == "delete" and keys:
            t, o, r = keys[op[1] % len(keys)]
            con.execute("DELETE FROM matched_transactions WHERE txn_type = ? AND order_no = ? "
                        "AND coalesce(refund_no, '') = coalesce(?, '')", [t, o, r])
        elif kind == "run":
            d = DAY0 + timedelta(days=op[1])
            first = run(con, cfg, d)
            before = snapshot(con, "draft"), con.execute("SELECT * FROM settlement_holds ORDER BY ALL").fetchall()
            again = run(con, cfg, d)
            after = snapshot(con, "draft"), con.execute("SELECT * FROM settlement_holds ORDER BY ALL").fetchall()
            assert again.to_dict() == first.to_dict() and after == before          # reruns are identical
        elif kind == "confirm":
            first = con.execute("SELECT batch_id FROM settlement_batches WHERE status = 'draft' "
                                "ORDER BY settlement_date LIMIT 1").fetchone()
            if first:
                confirm_batch(con, first[0], "prop")
        check()

    # Everything resolves; every day is rerun in order, then a final day; all batches are paid.
    con.execute("UPDATE discrepancies SET status = 'resolved', resolved_date = ? WHERE status = 'open'", [FINAL])
    for d in range(N_DAYS):
        run(con, cfg, DAY0 + timedelta(days=d))
        check()
    run(con, cfg, FINAL)
    check()
    for (bid,) in con.execute("SELECT batch_id FROM settlement_batches WHERE status = 'draft' "
                              "ORDER BY settlement_date").fetchall():
        confirm_batch(con, bid, "prop")

    paid = {(t, o, r): (m, n) for t, o, r, m, n in con.execute(
        "SELECT txn_type, order_no, refund_no, any_value(merchant_id), sum(net) FROM settlement_items "
        "GROUP BY ALL").fetchall()}
    current = {(t, o, r): (m, a) for t, o, r, m, a in con.execute(
        "SELECT DISTINCT txn_type, order_no, refund_no, merchant_id, amount FROM matched_transactions").fetchall()}
    for key in set(keys):
        if key in current and current[key][0] != "M9":
            merchant, amount = current[key]
            assert key in paid, key
            assert paid[key] == (merchant, ref_net(merchant, key[0], amount)), key
        else:
            assert paid.get(key, (None, D(0)))[1] == 0, key

    # what each merchant was paid, plus what is still carried or reserved, is the net of its items
    totals = con.execute("""
        WITH last AS (
            SELECT l.merchant_id, l.currency, arg_max(l.carried_forward, b.settlement_date) AS carried
            FROM settlement_lines l JOIN settlement_batches b USING (batch_id) GROUP BY ALL),
        paid AS (SELECT merchant_id, currency, sum(payout) AS payout FROM settlement_lines GROUP BY ALL),
        res AS (SELECT merchant_id, currency, sum(amount) AS reserved FROM settlement_reserves
                WHERE released_batch_id IS NULL GROUP BY ALL),
        items AS (SELECT merchant_id, currency, sum(net) AS net FROM settlement_items GROUP BY ALL)
        SELECT i.merchant_id, i.net, p.payout + l.carried + coalesce(r.reserved, 0)
        FROM items i JOIN paid p USING (merchant_id, currency) JOIN last l USING (merchant_id, currency)
        LEFT JOIN res r USING (merchant_id, currency)""").fetchall()
    for merchant, net, accounted in totals:
        assert net == accounted, merchant
    con.close()
