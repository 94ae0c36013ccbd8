"""A consistent multi-day world of orders, statements and injected breaks, at any size.

One business day of N platform orders over three channels (wechat, alipay,
unionpay) is generated in chunks of ``chunk_rows`` orders: numpy draws the
numbers (integer fen, seconds of the day) from a seed derived from
(seed, day, chunk), Arrow builds the text, the format writers stream it out.
Memory is bounded by the chunk, not the day; the same seed gives the same bytes.

Breaks are injected on a fixed share (``break_rate``) of each day's orders,
each of every type the matching knows, and written to ``ground_truth.csv``
with the discrepancy rows the reconciliation must produce for them and their
status once every day has run (``recon.matching`` semantics, carry-over included: match_key ``payment:<order_no>`` /
``refund:<refund_no>``, contract fee = round_half_up(amount × fee_rate, 2),
funds compared per reference, net in − out):

==================== ======================================================= =====================================
code / type          what the generator does                                 discrepancy rows expected
==================== ======================================================= =====================================
missing_in_channel   the channel never lists the order (nor moves its money) info missing_in_channel (+ funds short*)
missing_in_platform  the platform has no record of the order                  info missing_in_platform (+ funds long*)
status_mismatch      the platform still says pending, the channel success    info status_mismatch (+ funds long*)
amount_mismatch      the channel's amount is off by 0.01..4.99               info amount_mismatch (+ funds long/short*)
fee_mismatch         the channel charges 0.01..0.05 more than the contract    info fee_mismatch
currency_mismatch    the channel lists it in HKD (WeChat only: the others     info currency_mismatch
                     print no currency)
duplicate            the channel lists the same transaction twice            info duplicate (match_key …#2)
long / short         WeChat's fund flow moves 0.01..0.99 more / less          funds long / short
day_cut              paid at 23:59:30+ on day d, the channel lists it at      day d: missing_in_channel (+ funds short),
                     00:00:05+ in day d+1's file                             ``pending`` at the cut-off, then
                                                                             ``auto_resolved`` by day d+1's file
restated             the first WeChat trade bill of one day lacks the order;  missing_in_channel in the first file
                     the restated file lists it                              only (``superseded = true``)
==================== ======================================================= =====================================

Ordinary orders keep 5 minutes away from midnight, so only the day-cut cases
are at the cut-off. Refunds (``refund_rate`` of WeChat and Alipay orders,
partial, same day, the fee given back pro rata) are clean. UnionPay carries payments only
(its refund records are not generated). * funds rows: WeChat only (the channel with a fund-flow bill).
The bank statement of day D holds one lump-sum credit per channel: the net of
that channel's statement of D − 1 (T+1): exactly what the batch check expects,
so settlement-level (bank) breaks are not injected.
"""
from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recon.generate import formats as F
from recon.generate.text import clock_compact, stamp, yuan, zpad

CHANNELS = ("wechat", "alipay", "unionpay")
SHARE = (0.45, 0.35, 0.20)
FEE_RATES = {"wechat": (6, 1000), "alipay": (6, 1000), "unionpay": (5, 1000)}   # exact: num / den
ALIPAY_ACCOUNT = "20887226827483540156"
UNIONPAY_MERCHANT = "802310048993424"

TYPES = {1: "missing_in_channel", 2: "missing_in_platform", 3: "status_mismatch", 4: "amount_mismatch",
         5: "fee_mismatch", 6: "currency_mismatch", 7: "duplicate", 8: "long", 9: "short", 10: "day_cut",
         11: "restated"}
REFUND = 12
ELIGIBLE = {6: (0,), 8: (0,), 9: (0,), 11: (0,)}          # channel indexes a code may hit (default: all three)
GROUND_TRUTH_COLUMNS = ("business_date", "channel", "flow", "type", "match_key", "order_no", "platform_amount",
                        "channel_amount", "difference", "status", "case", "superseded")
EDGE = 300        # seconds: ordinary orders keep 5 minutes away from midnight (the matching's cut-off margin)
DEFAULT_START = date(2026, 6, 1)


def half_up_fee(amount_fen: np.ndarray, rate: tuple[int, int]) -> np.ndarray:
    """round_half_up(amount × num/den) in fen, exactly, in integers (amounts are positive)."""
    num, den = rate
    return (2 * amount_fen * num + den) // (2 * den)


@dataclass
class Carry:
    """Day-cut rows of day d that the channels list in day d+1's file."""

    rows: dict[int, dict[str, object]] = field(default_factory=dict)


@dataclass
class WorldSpec:
    out: Path
    orders: int
    days: int
    seed: int
    break_rate: float = 0.0005
    refund_rate: float = 0.02
    start: date = DEFAULT_START
    chunk_rows: int = 500_000
    merchants: int = 20
    platform_db: bool = True
    backend: str = "fast"           # fast | writers (loaders.writers, small worlds)
    parallel_db: bool | None = None  # platform.db in a second process (same draws); None: when the world is big


def _pick(rng: np.random.Generator, code: np.ndarray, ch: np.ndarray, k: int, allowed: tuple[int, ...]) -> np.ndarray:
    """k distinct order indexes not yet used, on the allowed channels (deterministic oversampling)."""
    if k <= 0:
        return np.empty(0, np.int64)
    n = len(code)
    got: list[int] = []
    seen: set[int] = set()
    tries = 0
    while len(got) < k and tries < 50:
        cand = rng.integers(0, n, size=4 * k + 16)
        for c in cand.tolist():
            if c not in seen and code[c] == 0 and ch[c] in allowed:
                seen.add(c)
                got.append(c)
                if len(got) == k:
                    break
        tries += 1
    return np.array(sorted(got), dtype=np.int64)


def _count(rate: float, n: int) -> int:
    return 0 if rate <= 0 else max(1, int(round(rate * n)))


def _fen(v) -> str:
    return "" if v is None else F.yuan1(int(v))


class World:
    def __init__(self, spec: WorldSpec, progress: Callable[[str], None] | None = None):
        self.spec = spec
        self.out = Path(spec.out)
        self.progress = progress or (lambda msg: None)
        self.truth: list[tuple] = []
        self.files: list[str] = []
        self.restatements: list[dict] = []
        self.funds_balance = 100_000_000       # fen: the WeChat account's opening balance
        self.bank_balance = 500_000_000
        self.nets: dict[date, dict[str, int]] = {}
        self.restate_day = min(1, spec.days - 1)
        self.files_too = True

    # ------------------------------------------------------------------ paths
    def paths(self, d: date) -> dict[str, Path]:
        c = self.out / "channels"
        ymd = f"{d:%Y%m%d}"
        return {"wechat_trade": c / "wechat" / f"tradebill_all_{ymd}.csv",
                "wechat_funds": c / "wechat" / f"fundflowbill_basic_{ymd}.csv",
                "alipay": c / "alipay" / f"{ALIPAY_ACCOUNT}_{ymd}.csv.zip",
                "unionpay": c / "unionpay" / f"{UNIONPAY_MERCHANT}_{ymd}.zip",
                "bank": c / "bank" / f"bank_statement_{ymd}.csv",
                "wechat_trade_v1": self.out / "restated" / "wechat" / f"tradebill_all_{ymd}.csv"}

    # ------------------------------------------------------------------ the whole world
    def generate(self) -> dict:
        sp = self.spec
        if self.out.exists():
            for sub in ("channels", "restated"):
                shutil.rmtree(self.out / sub, ignore_errors=True)
            for name in ("platform.db", "ground_truth.csv", "world.json", "recon.yml", "load_postgres.py"):
                (self.out / name).unlink(missing_ok=True)
        for sub in ("wechat", "alipay", "unionpay", "bank"):
            (self.out / "channels" / sub).mkdir(parents=True, exist_ok=True)
        (self.out / "restated" / "wechat").mkdir(parents=True, exist_ok=True)
        child, self.db = None, None
        parallel = sp.parallel_db if sp.parallel_db is not None else sp.orders * sp.days >= 200_000
        if sp.platform_db and parallel:
            import multiprocessing
            child = multiprocessing.get_context("spawn").Process(target=_platform_only, args=(sp,), daemon=True)
            child.start()
        elif sp.platform_db:
            self.db = _PlatformDb(self.out / "platform.db")
        carry = Carry()
        for j in range(sp.days):
            d = sp.start + timedelta(days=j)
            self.progress(f"day {d}: {sp.orders} orders")
            carry = self.day(j, d, carry)
        for j in range(sp.days):       # bank statements: T+1 lump sums of the channels' statements of D - 1
            d = sp.start + timedelta(days=j)
            prev = self.nets.get(d - timedelta(days=1), {})
            credits = [(c, d - timedelta(days=1), prev[c]) for c in CHANNELS if c in prev]
            path = self.paths(d)["bank"]
            self.bank_balance = F.write_bank(path, d, credits, self.bank_balance)
            self.files.append(str(path.relative_to(self.out)))
        if self.db:
            self.db.finish()
        if child:
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"writing {self.out / 'platform.db'} failed (exit code {child.exitcode})")
        self._write_truth()
        from recon.generate.config import write_config, write_postgres_loader
        write_config(self.out, sp)
        write_postgres_loader(self.out)
        meta = {"orders": sp.orders, "days": sp.days, "seed": sp.seed, "break_rate": sp.break_rate,
                "refund_rate": sp.refund_rate, "start": sp.start.isoformat(),
                "dates": [(sp.start + timedelta(days=j)).isoformat() for j in range(sp.days)],
                "files": sorted(self.files), "restatements": self.restatements,
                "ground_truth_rows": len(self.truth)}
        (self.out / "world.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return meta

    def _write_truth(self) -> None:
        rows = sorted(self.truth, key=lambda r: tuple("" if v is None else str(v) for v in r))
        with open(self.out / "ground_truth.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(GROUND_TRUTH_COLUMNS)
            w.writerows(rows)

    # ------------------------------------------------------------------ one day
    def day(self, j: int, d: date, carry: Carry) -> Carry:
        sp = self.spec
        n = sp.orders
        rng = np.random.default_rng([sp.seed, j, 0])
        ch = rng.choice(len(CHANNELS), size=n, p=SHARE).astype(np.int8)
        code = np.zeros(n, np.int8)
        k = _count(sp.break_rate, n)
        for c in TYPES:
            if c == 11 and j != self.restate_day:
                continue
            idx = _pick(rng, code, ch, k, ELIGIBLE.get(c, (0, 1, 2)))
            code[idx] = c
        code[_pick(rng, code, ch, _count(sp.refund_rate, n), (0, 1))] = REFUND

        if not self.files_too:                  # the platform database only (a second process)
            nch = max(1, -(-n // sp.chunk_rows))
            for i in range(nch):
                lo, hi = i * n // nch, (i + 1) * n // nch
                self.chunk(j, d, i, nch, np.arange(lo, hi, dtype=np.int64), ch[lo:hi], code[lo:hi], None, None)
            return carry
        p = self.paths(d)
        B = F.BACKENDS[sp.backend]
        w = {"wechat_trade": B["wechat_trade"](p["wechat_trade"], FEE_RATES["wechat"]),
             "wechat_funds": B["wechat_funds"](p["wechat_funds"], self.funds_balance),
             "alipay": B["alipay"](p["alipay"], ALIPAY_ACCOUNT, d),
             "unionpay": B["unionpay"](p["unionpay"], UNIONPAY_MERCHANT, d)}
        if j == self.restate_day:
            w["wechat_trade_v1"] = B["wechat_trade"](p["wechat_trade_v1"], FEE_RATES["wechat"])
        self._write_carry(d, carry, w)
        nxt = Carry()
        nch = max(1, -(-n // sp.chunk_rows))
        for i in range(nch):
            lo, hi = i * n // nch, (i + 1) * n // nch
            self.chunk(j, d, i, nch, np.arange(lo, hi, dtype=np.int64), ch[lo:hi], code[lo:hi], w, nxt)
        self.funds_balance = w["wechat_funds"].balance
        for wr in w.values():
            wr.close()
        self.nets[d] = {"wechat": w["wechat_trade"].net, "alipay": F.alipay_net(w["alipay"]),
                        "unionpay": w["unionpay"].net}
        for key in ("wechat_trade", "wechat_funds", "alipay", "unionpay"):
            self.files.append(str(p[key].relative_to(self.out)))
        if j == self.restate_day:
            self.files.append(str(p["wechat_trade_v1"].relative_to(self.out)))
            self.restatements.append({"business_date": d.isoformat(), "channel": "wechat", "kind": "trade",
                                      "first": str(p["wechat_trade_v1"].relative_to(self.out)),
                                      "final": str(p["wechat_trade"].relative_to(self.out))})
        return nxt if j + 1 < sp.days else Carry()

    def _write_carry(self, d: date, carry: Carry, w: dict) -> None:
        """Yesterday's day-cut orders, at the top of today's files (00:00:05 onwards)."""
        for c, r in sorted(carry.rows.items()):
            sec, amount, fee = r["sec"], r["amount"], r["fee"]
            if c == 0:
                for key in ("wechat_trade", "wechat_trade_v1"):
                    if key in w:
                        w[key].payments(d, sec, r["txn"], r["order"], pa.array(["CNY"] * len(sec)), amount, fee)
                w["wechat_funds"].rows(d, sec, r["txn"], _ids(f"1{d:%y%m%d}9", r["seq"]), r["order"], amount, True)
            elif c == 1:
                w["alipay"].payments(d, sec, r["txn"], r["order"], amount, fee)
            else:
                w["unionpay"].payments(d, sec, r["txn"], r["order"], amount, fee)

    # ------------------------------------------------------------------ one chunk
    def chunk(self, j: int, d: date, i: int, nch: int, seq: np.ndarray, ch: np.ndarray, code: np.ndarray,
              w: dict, nxt: Carry) -> None:
        sp = self.spec
        n = len(seq)
        rng = np.random.default_rng([sp.seed, j, 1, i])
        span = 86400 - 2 * EDGE
        t0, t1 = EDGE + i * span // nch, EDGE + (i + 1) * span // nch
        sec = np.sort(rng.integers(t0, t1, n))
        amount = rng.integers(100, 200_000, n)                    # fen: 1.00 .. 1999.99
        merchant = rng.integers(1, sp.merchants + 1, n)
        delta = rng.integers(1, 100, n)                           # fen, for injected differences
        cut_sec = rng.integers(86370, 86400, n)                   # 23:59:30 .. 23:59:59
        ramt = 100 + rng.integers(0, 1 << 40, n) % (amount - 99)  # partial refunds: 1.00 .. amount
        rsec = sec + rng.integers(0, 1 << 40, n) % (86400 - sec)  # refunded later the same day
        ymd, yymmdd = f"{d:%Y%m%d}", f"{d:%y%m%d}"

        order = pc.binary_join_element_wise("P" + yymmdd, zpad(seq, 9), "")
        refund_no = pc.binary_join_element_wise("R" + yymmdd, zpad(seq, 9), "")
        merchant_id = pc.binary_join_element_wise("M", zpad(merchant, 3), "")
        txn = {0: pc.binary_join_element_wise("4200" + ymd, zpad(seq, 10), ""),
               1: pc.binary_join_element_wise(ymd + "22001", zpad(seq, 9), ""),
               2: pc.binary_join_element_wise(ymd, clock_compact(sec), zpad(seq % 10_000_000, 7), "")}
        wx_refund_id = pc.binary_join_element_wise("5030" + ymd, zpad(seq, 11), "")
        names = pa.array(CHANNELS).take(pa.array(ch.astype(np.int64)))
        txn_all = pc.if_else(pa.array(ch == 0), txn[0], pc.if_else(pa.array(ch == 1), txn[1], txn[2]))

        # ---------------------------------------------------------- platform
        paid = np.where(code == 10, cut_sec, sec)
        in_platform = code != 2
        status = np.where(code == 3, "pending", "success")
        if self.db:
            m = pa.array(in_platform)
            self.db.insert("payment_orders", [
                order.filter(m), names.filter(m), txn_all.filter(m), merchant_id.filter(m),
                yuan(amount[in_platform]), pa.array(["CNY"] * int(in_platform.sum())),
                pa.array(status[in_platform]), stamp(d, paid[in_platform])])
            r = code == REFUND
            rm = pa.array(r)
            self.db.insert("refund_orders", [
                refund_no.filter(rm), order.filter(rm), names.filter(rm),
                pc.if_else(pa.array(ch[r] == 0), wx_refund_id.filter(rm), pa.nulls(int(r.sum()), pa.string())),
                merchant_id.filter(rm), yuan(ramt[r]), pa.array(["CNY"] * int(r.sum())),
                pa.array(["success"] * int(r.sum())), stamp(d, rsec[r])])
            e = (code != 2) & (code != 3)
            em = pa.array(e)
            self.db.insert("expected_fund_movements", [
                pc.binary_join_element_wise("F" + yymmdd + "P", zpad(seq[e], 9), ""), names.filter(em),
                order.filter(em), pa.nulls(int(e.sum()), pa.string()), pa.array(["in"] * int(e.sum())),
                yuan(amount[e]), pa.array(["CNY"] * int(e.sum())), stamp(d, paid[e])])
            self.db.insert("expected_fund_movements", [
                pc.binary_join_element_wise("F" + yymmdd + "R", zpad(seq[r], 9), ""), names.filter(rm),
                order.filter(rm), refund_no.filter(rm), pa.array(["out"] * int(r.sum())), yuan(ramt[r]),
                pa.array(["CNY"] * int(r.sum())), stamp(d, rsec[r])])
        if w is None:
            return

        # ---------------------------------------------------------- the channels
        up = (delta % 2 == 1)
        chan_amount = np.where(code == 4, np.where(up, amount + delta * 5, amount - delta), amount)
        for c, name in enumerate(CHANNELS):
            rate = FEE_RATES[name]
            fee = half_up_fee(chan_amount, rate) + np.where(code == 5, 1 + delta % 5, 0)
            mine = ch == c
            listed = mine & (code != 1) & (code != 10)
            times = np.where(code == 7, 2, 1)
            idx = np.repeat(np.flatnonzero(listed), times[listed])
            ia = pa.array(idx)
            o, t = order.take(ia), txn[c].take(ia)
            if c == 0:
                ccy = pc.if_else(pa.array(code[idx] == 6), "HKD", "CNY")
                w["wechat_trade"].payments(d, sec[idx], t, o, ccy, chan_amount[idx], fee[idx])
                if "wechat_trade_v1" in w:
                    keep = code[idx] != 11
                    km = pa.array(keep)
                    w["wechat_trade_v1"].payments(d, sec[idx][keep], t.filter(km), o.filter(km), ccy.filter(km),
                                                  chan_amount[idx][keep], fee[idx][keep])
                f = np.flatnonzero(listed)
                fa = pa.array(f)
                famount = chan_amount[f] + np.where(code[f] == 8, delta[f], 0) - np.where(code[f] == 9, delta[f], 0)
                w["wechat_funds"].rows(d, sec[f], txn[0].take(fa), _ids(f"1{yymmdd}0", seq[f]), order.take(fa),
                                       famount, True)
            elif c == 1:
                w["alipay"].payments(d, sec[idx], t, o, chan_amount[idx], fee[idx])
            else:
                w["unionpay"].payments(d, sec[idx], t, o, chan_amount[idx], fee[idx])
            # refunds (WeChat, Alipay)
            r = np.flatnonzero(mine & (code == REFUND))
            if len(r) and c in (0, 1):
                ra = pa.array(r)
                rs = np.argsort(rsec[r], kind="stable")
                r, ra = r[rs], ra.take(pa.array(rs))
                rfee = half_up_fee(ramt[r], rate)                 # the fee given back, pro rata
                if c == 0:
                    args = (d, rsec[r], txn[0].take(ra), order.take(ra), wx_refund_id.take(ra), refund_no.take(ra),
                            ramt[r], rfee)
                    w["wechat_trade"].refunds(*args)
                    if "wechat_trade_v1" in w:
                        w["wechat_trade_v1"].refunds(*args)
                    w["wechat_funds"].rows(d, rsec[r], wx_refund_id.take(ra), _ids(f"1{yymmdd}5", seq[r]),
                                           refund_no.take(ra), ramt[r], False)
                else:
                    w["alipay"].refunds(d, rsec[r], txn[1].take(ra), order.take(ra), refund_no.take(ra), ramt[r],
                                        rfee)
            # day-cut orders: into tomorrow's file
            cut = np.flatnonzero(mine & (code == 10))
            if len(cut):
                ca = pa.array(cut)
                nxt.rows[c] = _concat(nxt.rows.get(c), {
                    "sec": cut_sec[cut] - 86400 + 35, "txn": txn[c].take(ca), "order": order.take(ca),
                    "amount": amount[cut], "fee": half_up_fee(amount[cut], rate), "seq": seq[cut]})
        self._truth(j, d, seq, ch, code, amount, chan_amount, delta, order)

    # ------------------------------------------------------------------ ground truth
    def _truth(self, j, d, seq, ch, code, amount, chan_amount, delta, order) -> None:
        sp = self.spec
        victims = np.flatnonzero((code > 0) & (code != REFUND))
        if not len(victims):
            return
        nxt_day = d + timedelta(days=1) if j + 1 < sp.days else None
        orders = order.take(pa.array(victims)).to_pylist()
        for v, o in zip(victims.tolist(), orders):
            c, name, a = int(code[v]), CHANNELS[ch[v]], int(amount[v])
            wx = ch[v] == 0
            key = f"payment:{o}"

            def add(day, flow, typ, mk, pa_, ca, status="open", superseded=False):
                diff = (0 if ca is None else ca) - (0 if pa_ is None else pa_)
                self.truth.append((day.isoformat(), name, flow, typ, mk, o, _fen(pa_), _fen(ca), F.yuan1(diff),
                                   status, TYPES[c], "true" if superseded else "false"))

            if c == 1:
                add(d, "information", "missing_in_channel", key, a, None)
                if wx:
                    add(d, "funds", "short", o, a, None)
            elif c == 10:      # pending at the cut-off, cleared by the next day's file (if there is one)
                status = "auto_resolved" if nxt_day else "pending"
                add(d, "information", "missing_in_channel", key, a, None, status)
                if wx:
                    add(d, "funds", "short", o, a, None, status)
            elif c == 2:
                add(d, "information", "missing_in_platform", key, None, a)
                if wx:
                    add(d, "funds", "long", o, None, a)
            elif c == 3:
                add(d, "information", "status_mismatch", key, a, a)
                if wx:
                    add(d, "funds", "long", o, None, a)
            elif c == 4:
                ca = int(chan_amount[v])
                add(d, "information", "amount_mismatch", key, a, ca)
                if wx:
                    add(d, "funds", "long" if ca > a else "short", o, a, ca)
            elif c == 5:
                fee = int(half_up_fee(np.array([a]), FEE_RATES[name])[0])
                add(d, "information", "fee_mismatch", key, fee, fee + 1 + int(delta[v]) % 5)
            elif c == 6:
                add(d, "information", "currency_mismatch", key, a, a)
            elif c == 7:
                add(d, "information", "duplicate", key + "#2", None, a)
            elif c == 8:
                add(d, "funds", "long", o, a, a + int(delta[v]))
            elif c == 9:
                add(d, "funds", "short", o, a, a - int(delta[v]))
            elif c == 11:
                add(d, "information", "missing_in_channel", key, a, None, "withdrawn", superseded=True)


def _platform_only(spec: WorldSpec) -> None:
    """The platform database of ``spec``, alone: the same draws as the statements, in another process."""
    world = World(spec)
    world.files_too = False
    world.db = _PlatformDb(world.out / "platform.db")
    for j in range(spec.days):
        world.day(j, spec.start + timedelta(days=j), Carry())
    world.db.finish()


def _ids(prefix: str, seq: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, zpad(seq, 12), "")


def _concat(old: dict | None, new: dict) -> dict:
    if old is None:
        return new
    out = {}
    for k, v in new.items():
        out[k] = (pa.concat_arrays([old[k], v]) if isinstance(v, pa.Array) else np.concatenate([old[k], v]))
    return out


class _PlatformDb:
    """The platform's SQLite database, tables exactly as ``recon.demo`` builds them (amounts as TEXT)."""

    COLUMNS = {
        "payment_orders": ("order_no", "channel", "channel_txn_id", "merchant_id", "amount", "currency", "status",
                           "paid_at"),
        "refund_orders": ("refund_no", "order_no", "channel", "channel_refund_id", "merchant_id", "amount",
                          "currency", "status", "refunded_at"),
        "expected_fund_movements": ("movement_id", "channel", "order_no", "refund_no", "direction", "amount",
                                    "currency", "expected_at"),
    }

    def __init__(self, path: Path):
        from recon.demo import _column_type
        self.con = sqlite3.connect(path)
        self.con.execute("PRAGMA journal_mode = OFF")
        self.con.execute("PRAGMA synchronous = OFF")
        for table, cols in self.COLUMNS.items():
            ddl = ", ".join(f"{c} {_column_type(c, 'TEXT', 'TEXT')}" for c in cols)
            self.con.execute(f"CREATE TABLE {table} ({ddl})")

    def insert(self, table: str, columns: list[pa.Array]) -> None:
        if not len(columns[0]):
            return
        cols = self.COLUMNS[table]
        marks = ", ".join("?" * len(cols))
        self.con.executemany(f"INSERT INTO {table} VALUES ({marks})", zip(*(c.to_pylist() for c in columns)))

    def finish(self) -> None:
        self.con.execute("CREATE INDEX payment_orders_paid_at ON payment_orders (paid_at)")
        self.con.execute("CREATE INDEX refund_orders_refunded_at ON refund_orders (refunded_at)")
        self.con.execute("CREATE INDEX expected_fund_movements_expected_at ON expected_fund_movements (expected_at)")
        self.con.commit()
        self.con.close()
