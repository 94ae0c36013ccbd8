"""Several consecutive days with known ground truth: day cut, carry-over, pending -> open, manual resolutions
surviving reruns, restated files, re-running a range.

The world: ``wechat`` clears at midnight, ``unionpay`` at 23:00 the previous day (both Asia/Shanghai, both
written as WeChat-format bills so one writer serves). Every platform payment has its expected fund movement,
so internal consistency holds unless a test breaks it.
"""
from __future__ import annotations

from datetime import date

import pytest

from recon.resolution import list_discrepancies, resolve
from tests.recon_world import World

D1, D2, D3, D4 = date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 3), date(2026, 6, 4)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, [{"name": "wechat"}, {"name": "unionpay", "day_cut": "23:00", "pending_days": 3}])
    # wechat: W1 normal; W3 missing for good (not at the cut); W9 at 23:58:30 lands in the next file
    w.pay("W1", "wechat", "100.00", "2026-06-01 10:00:00")
    w.pay("W3", "wechat", "30.00", "2026-06-01 11:00:00")
    w.pay("W9", "wechat", "90.00", "2026-06-01 23:58:30")
    # the channel has X7 at 23:59:50 on day 1; the platform stamps it 00:00:05 on day 2
    w.pay("X7", "wechat", "70.00", "2026-06-02 00:00:05")
    w.pay("W2", "wechat", "20.00", "2026-06-02 09:00:00")
    # unionpay (cut 23:00): U9 at 23:30 is in the channel's day 2; U8 at 23:45 never arrives
    w.pay("U1", "unionpay", "50.00", "2026-06-01 12:00:00")
    w.pay("U9", "unionpay", "60.00", "2026-06-01 23:30:00")
    w.pay("U8", "unionpay", "80.00", "2026-06-01 23:45:00")
    w.pay("U2", "unionpay", "40.00", "2026-06-02 08:00:00")
    return w


def day1_files(w):
    return [w.trade_file("wechat", D1, [{"order": "W1", "amount": "100.00", "at": "2026-06-01 10:00:01"},
                                        {"order": "X7", "amount": "70.00", "at": "2026-06-01 23:59:50"}]),
            w.trade_file("unionpay", D1, [{"order": "U1", "amount": "50.00", "at": "2026-06-01 12:00:01"}])]


def day2_files(w, w2_amount="20.00", with_w9=True):
    rows = [{"order": "W2", "amount": w2_amount, "at": "2026-06-02 09:00:01"}]
    if with_w9:
        rows.append({"order": "W9", "amount": "90.00", "at": "2026-06-02 00:00:20"})
    return [w.trade_file("wechat", D2, rows),
            w.trade_file("unionpay", D2, [{"order": "U9", "amount": "60.00", "at": "2026-06-01 23:30:02"},
                                          {"order": "U2", "amount": "40.00", "at": "2026-06-02 08:00:01"}])]


def empty_files(w, day):
    return [w.trade_file("wechat", day, []), w.trade_file("unionpay", day, [])]


def test_cut_off_transactions_are_pending_on_day_one_and_auto_resolved_by_the_next_file(world):
    w = world
    s1 = w.run(D1, day1_files(w))
    b = w.breaks()
    assert {k: v["status"] for k, v in b.items()} == {
        ("missing_in_channel", "payment:W9"): "pending",       # 23:58:30, within the margin of midnight
        ("missing_in_channel", "payment:U9"): "pending",       # after unionpay's 23:00 cut
        ("missing_in_channel", "payment:U8"): "pending",
        ("missing_in_channel", "payment:W3"): "open",          # mid-day: a real break at once
        ("missing_in_platform", "payment:X7"): "pending",      # the channel's 23:59:50, platform says day 2
    }
    assert s1.pending == 4 and s1.matched == 2
    assert b[("missing_in_channel", "payment:U9")]["pending_until"] == date(2026, 6, 4)

    files = day2_files(w)
    s2 = w.run(D2, files)
    b = w.breaks()
    wechat_file = files[0].sha256
    for key, by_file in ((("missing_in_channel", "payment:W9"), wechat_file),
                         (("missing_in_channel", "payment:U9"), files[1].sha256),
                         (("missing_in_platform", "payment:X7"), None)):
        assert b[key]["status"] == "auto_resolved", key
        assert b[key]["resolved_date"] == D2 and b[key]["resolved_by"] == "system"
        assert b[key]["resolved_by_file"] == by_file
    assert b[("missing_in_platform", "payment:X7")]["resolved_by_source"] == "payment_orders:X7"
    assert b[("missing_in_channel", "payment:U8")]["status"] == "pending"
    assert b[("missing_in_channel", "payment:W3")]["status"] == "open"
    assert s2.by_type == {} and s2.auto_resolved == 3
    # the late pairs are matched today (and so reach settlement)
    assert w.matched(D2) == {"payment:W2", "payment:W9", "payment:X7", "payment:U9", "payment:U2"}
    audit = w.audit(b[("missing_in_channel", "payment:W9")]["discrepancy_id"])
    assert audit == [("system", "auto_resolved", "pending", "auto_resolved", D2, wechat_file)]


def test_a_cut_off_break_that_never_clears_turns_open_after_pending_days(world):
    w = world
    w.run(D1, day1_files(w))
    w.run(D2, day2_files(w))
    w.run(D3, empty_files(w, D3))
    u8 = w.breaks()[("missing_in_channel", "payment:U8")]
    assert u8["status"] == "pending" and u8["age_days"] == 2 and u8["last_seen_date"] == D3
    w.run(D4, empty_files(w, D4))
    b = w.breaks()
    u8 = b[("missing_in_channel", "payment:U8")]
    assert (u8["status"], u8["age_days"], u8["business_date"], u8["first_seen_date"]) == ("open", 3, D1, D1)
    assert w.audit(u8["discrepancy_id"])[-1][:4] == ("system", "pending_expired", "pending", "open")
    w3 = b[("missing_in_channel", "payment:W3")]
    assert (w3["status"], w3["age_days"], w3["age_bucket"]) == ("open", 3, "0-3 days")
    listed = {r["match_key"] for r in list_discrepancies(w.con, statuses=("open",), older_than=2)}
    assert listed == {"payment:W3", "payment:U8"}
    assert {r["match_key"] for r in list_discrepancies(w.con, statuses=("open",), channel="unionpay")} \
        == {"payment:U8"}


def test_a_manual_resolution_survives_a_rerun_and_the_rerun_is_audited(world):
    w = world
    files = day1_files(w)
    w.run(D1, files)
    w3 = w.breaks()[("missing_in_channel", "payment:W3")]
    resolve(w.con, w3["discrepancy_id"], by="alice", note="customer never paid", action="write_off", today=D2)
    w.run(D1, files)                     # rerun: still finds the break
    w.run(D2, day2_files(w))             # next day: a resolved break is not carried, stays resolved
    b = w.breaks()[("missing_in_channel", "payment:W3")]
    assert (b["status"], b["resolved_by"], b["resolution_note"]) == ("resolved", "alice", "customer never paid")
    assert [a[:4] for a in w.audit(w3["discrepancy_id"])] == [
        ("alice", "write_off", "open", "resolved"), ("system", "still_found", "resolved", "resolved")]
    with pytest.raises(Exception, match="already resolved by alice"):
        resolve(w.con, w3["discrepancy_id"], by="bob", note="again")


def test_a_restated_file_changes_the_outcome_and_undoes_what_the_old_file_cleared(world):
    w = world
    w.run(D1, day1_files(w))
    w.run(D2, day2_files(w, w2_amount="21.00"))
    b = w.breaks()
    assert b[("amount_mismatch", "payment:W2")]["status"] == "open"
    assert b[("missing_in_channel", "payment:W9")]["status"] == "auto_resolved"
    # the channel restates day 2: W2 corrected to 20.00, and W9 is no longer in it
    w.run(D2, day2_files(w, w2_amount="20.00", with_w9=False))
    b = w.breaks()
    assert ("amount_mismatch", "payment:W2") not in b
    assert b[("missing_in_channel", "payment:W9")]["status"] == "pending"
    assert b[("missing_in_channel", "payment:W9")]["resolved_by_file"] is None
    assert "payment:W2" in w.matched(D2) and "payment:W9" not in w.matched(D2)
    actions = [a[1] for a in w.audit(b[("missing_in_channel", "payment:W9")]["discrepancy_id"])]
    assert actions == ["auto_resolved", "reopened"]
    withdrawn = w.con.execute("SELECT count(*) FROM discrepancy_resolutions WHERE action = 'withdrawn'").fetchone()
    assert withdrawn == (1,)
    assert w.con.execute("SELECT count(*) FROM loaded_files WHERE status = 'superseded'").fetchone() == (1,)


def _state(w):
    return sorted((k, v["status"], v["resolved_date"], v["first_seen_date"], v["last_seen_date"], v["age_days"])
                  for k, v in w.breaks().items())


def test_rerunning_a_range_in_order_reproduces_the_same_state(world):
    w = world
    plan = [(D1, day1_files(w)), (D2, day2_files(w)), (D3, empty_files(w, D3)), (D4, empty_files(w, D4))]
    for d, files in plan:
        w.run(d, files)
    first = _state(w)
    audit_rows = w.con.execute("SELECT count(*) FROM discrepancy_resolutions").fetchone()
    for d, files in plan:                # `recon run --from D1 --to D4` after the fact
        w.run(d, files)
    assert _state(w) == first
    # a rerun of one past day alone keeps what later days cleared
    w.run(D1, plan[0][1])
    assert _state(w) == first
    assert w.con.execute("SELECT count(*) FROM discrepancy_resolutions").fetchone() == audit_rows
