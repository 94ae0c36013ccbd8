"""Streaming writers for the generated channel statements: a fast path and the project's reference writers.

Two back ends with the same interface (``payments(...)``, ``refunds(...)``,
``rows(...)``, ``close()``), fed chunk by chunk with numpy integer fen and
Arrow string columns:

- ``fast`` builds every line column-wise with Arrow compute and writes the
  data buffer straight out (no Python loop per row): a 10M-order day in
  seconds, memory bounded by the chunk.
- ``writers`` turns the same chunks into canonical row dicts and hands them to
  ``loaders.writers`` (the formats' reference writers) at ``close()``: slow,
  for small worlds, and the proof that the fast path is right, because both
  back ends give the same bytes (``tests/test_generate.py``).

Layouts are therefore exactly those of ``loaders.writers``: WeChat trade bill
(ALL) and fund-flow bill, CRLF; Alipay 业务明细 + 汇总 in a ZIP with GBK content
and GBK entry names; UnionPay ZM (607-byte records) + RD report in a ZIP; bank
statement CSV (GBK).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders import writers as W
from recon.generate.text import buffer_bytes, clock_compact, join, s, stamp, to_gbk, yuan, yuan1, zpad

NL = "\r\n"
APPID, MCHID, OPENID = "wx2421b1c4370ec43b", "1900000109", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
CARD = "622609******0048"
GOODS = "goods"


def dec(fen: int) -> Decimal:
    """Integer fen -> exact Decimal yuan."""
    return Decimal(int(fen)).scaleb(-2)


def _rate_text(num: int, den: int) -> str:
    return f"{num * 100 / den:.2f}%"


def _bt(col) -> pa.Array:
    """Prefix every value with WeChat's backtick."""
    return pc.binary_join_element_wise("`", s(col), "")


def _tab(col) -> pa.Array:
    return pc.binary_join_element_wise(s(col), "\t", "")


def _ts(day: date, sec: int) -> datetime:
    return datetime.combine(day, datetime.min.time()) + timedelta(seconds=int(sec))


# ============================================================================ fast path
class WechatTrade:
    def __init__(self, path: Path, rate: tuple[int, int]):
        self.f = open(path, "wb")
        self.f.write((",".join(W.WECHAT_ALL) + NL).encode())
        self.rate = _rate_text(*rate)
        self.rows = self.settle = self.refund = self.fee = self.order = 0

    def payments(self, day: date, sec, txn, order, ccy, amount, fee) -> None:
        if not len(amount):
            return
        b, a = "`", _bt(yuan(amount))
        lines = join([_bt(stamp(day, sec)), b + APPID, b + MCHID, "`0", b, _bt(txn), _bt(order), b + OPENID,
                      "`NATIVE", "`SUCCESS", "`OTHERS", _bt(ccy), a, "`0.00", "`0", "`0", "`0.00", "`0.00", b, b,
                      b + GOODS, b, _bt(yuan(fee, 5)), b + self.rate, a, "`0.00", b], ",", NL)
        self.f.write(buffer_bytes(lines))
        self.rows += len(amount)
        self.settle += int(amount.sum())
        self.order += int(amount.sum())
        self.fee += int(fee.sum())

    def refunds(self, day: date, sec, txn, order, rid, rno, ramt, rfee) -> None:
        """``rfee``: the fee given back (positive fen); canonical fee = −rfee."""
        if not len(ramt):
            return
        b, r = "`", _bt(yuan(ramt))
        lines = join([_bt(stamp(day, sec)), b + APPID, b + MCHID, "`0", b, _bt(txn), _bt(order), b + OPENID,
                      "`NATIVE", "`REFUND", "`OTHERS", "`CNY", "`0.00", "`0.00", _bt(rid), _bt(rno), r, "`0.00",
                      "`ORIGINAL", "`SUCCESS", b + GOODS, b, _bt(yuan(-rfee, 5)), b + self.rate, "`0.00", r, b],
                     ",", NL)
        self.f.write(buffer_bytes(lines))
        self.rows += len(ramt)
        self.refund += int(ramt.sum())
        self.fee -= int(rfee.sum())

    def close(self) -> None:
        self.f.write((",".join(W.WECHAT_SUMMARY) + NL).encode())
        vals = (str(self.rows), yuan1(self.settle), yuan1(self.refund), "0.00", yuan1(self.fee, 5), yuan1(self.order),
                yuan1(self.refund))
        self.f.write((",".join("`" + x for x in vals) + NL).encode())
        self.f.close()

    @property
    def net(self) -> int:
        return self.settle - self.fee - self.refund


class WechatFunds:
    def __init__(self, path: Path, opening_balance: int):
        self.f = open(path, "wb")
        self.f.write((",".join(W.WECHAT_FUNDFLOW) + NL).encode())
        self.balance = opening_balance
        self.n = {"in": 0, "out": 0}
        self.amt = {"in": 0, "out": 0}

    def rows(self, day: date, sec, biz, movement, ref, amount, incoming: bool) -> None:
        if not len(amount):
            return
        bal = self.balance + np.cumsum(amount if incoming else -amount)
        self.balance = int(bal[-1])
        word = "`交易" if incoming else "`退款"
        lines = join([_bt(stamp(day, sec)), _bt(biz), _bt(movement), word, word, "`收入" if incoming else "`支出",
                      _bt(yuan(amount)), _bt(yuan(bal)), "`" + MCHID + "API", "`", _bt(ref)], ",", NL)
        self.f.write(buffer_bytes(lines))
        d = "in" if incoming else "out"
        self.n[d] += len(amount)
        self.amt[d] += int(amount.sum())

    def close(self) -> None:
        self.f.write((",".join(W.WECHAT_FUNDFLOW_SUMMARY) + NL).encode())
        vals = (str(self.n["in"] + self.n["out"]), str(self.n["in"]), yuan1(self.amt["in"]), str(self.n["out"]),
                yuan1(self.amt["out"]))
        self.f.write((",".join("`" + x for x in vals) + NL).encode())
        self.f.close()


class AlipayTrade:
    """The 业务明细 CSV streamed into a GBK-named ZIP entry; the 汇总 file written at close."""

    def __init__(self, path: Path, account: str, day: date):
        import zipfile
        self.day, self.account = day, account
        self.zf = zipfile.ZipFile(path, "w")
        self.stem = f"{account}_{day:%Y%m%d}"
        self.out = W._zip_entry(self.zf, f"{self.stem}_业务明细.csv")
        head = W._alipay_head("支付宝业务明细查询", account, day, "业务明细列表") + [",".join(W.ALIPAY_TRADE)]
        self.out.write((NL.join(head) + NL).encode("gbk"))
        self.n = {"payment": 0, "refund": 0}
        self.recv = {"payment": 0, "refund": 0}
        self.fee = self.net = 0

    def _write(self, day, sec, txn, order, kind: str, recv, fee, refund_no) -> None:
        t = stamp(day, sec)
        r = yuan(recv)
        lines = join([_tab(txn), _tab(order), kind + "\t", GOODS, t, t, "\t", "\t", "\t", "\t", "**明(156******89)\t",
                      r, r, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00\t", "0.00",
                      "\t" if refund_no is None else _tab(refund_no), yuan(-fee), "0.00", ""], ",", NL)
        self.out.write(to_gbk(lines))

    def payments(self, day: date, sec, txn, order, amount, fee) -> None:
        if not len(amount):
            return
        self._write(day, sec, txn, order, "交易", amount, fee, None)
        self.n["payment"] += len(amount)
        self.recv["payment"] += int(amount.sum())
        self.fee += int(fee.sum())
        self.net += int((amount - fee).sum())

    def refunds(self, day: date, sec, txn, order, rno, ramt, rfee) -> None:
        if not len(ramt):
            return
        self._write(day, sec, txn, order, "退款", -ramt, -rfee, rno)
        self.n["refund"] += len(ramt)
        self.recv["refund"] -= int(ramt.sum())
        self.fee -= int(rfee.sum())
        self.net += int((-ramt + rfee).sum())

    def _totals(self) -> dict:
        return {"payment": [self.n["payment"], dec(self.recv["payment"])],
                "refund": [self.n["refund"], dec(self.recv["refund"])], "fee": dec(self.fee), "net": dec(self.net)}

    def close(self) -> None:
        t = self._totals()
        p, f = t["payment"], t["refund"]
        tail = [f"#{W.DASHES}业务明细列表结束{W.DASHES[:-5]}",
                f"#交易合计：{p[0]}笔，商家实收共{W.m(p[1])}元，商家优惠共0.00元",
                f"#退款合计：{f[0]}笔，商家实收共{W.m(f[1])}元，商家优惠共0.00元",
                f"#导出时间：[{W._cn_date(self.day + timedelta(days=1))} 09:30:00]"]
        self.out.write((NL.join(tail) + NL).encode("gbk"))
        self.out.close()
        with W._zip_entry(self.zf, f"{self.stem}_业务明细(汇总).csv") as fh:
            fh.write((NL.join(W._alipay_trade_summary(self.account, self.day, t)) + NL).encode("gbk"))
        self.zf.close()


# The constant fields of a ZM record (0-based, as in loaders.writers._zm_record).
_ZM_CONST = {0: "S56", 1: "88022900", 2: "00049993", 7: "4899", 8: "07", 10: "01", 12: "01", 17: "0001", 19: "01",
             21: "000201", 29: "0" * 15, 31: " " + "0" * 12, 33: "01080209", 35: " " + "0" * 12,
             36: " " + "0" * 12, 37: " " + "0" * 11, 39: "7"}


class UnionpayZip:
    """``{merchant}_{yyyymmdd}.zip`` holding ``INN{yymmdd}88ZM_{merchant}`` and ``RD2010{yymmdd}01_{merchant}``."""

    def __init__(self, path: Path, merchant: str, day: date):
        import zipfile
        self.day, self.merchant = day, merchant
        self.zf = zipfile.ZipFile(path, "w")
        self.out = W._zip_entry(self.zf, f"INN{day:%y%m%d}88ZM_{merchant}", gbk_name=False)
        self.n = self.amount = self.fee = 0

    def payments(self, day: date, sec, txn, order, amount, fee) -> None:
        n = len(amount)
        if not n:
            return
        net = zpad(amount - fee, 12)
        signed_net = pc.binary_join_element_wise("C", net, "")
        var = {3: zpad((100000 + np.arange(self.n, self.n + n)) % 1_000_000, 6),
               4: pc.binary_join_element_wise(f"{day:%m%d}", clock_compact(sec), ""), 5: CARD,
               6: zpad(amount, 12), 9: s(txn), 11: s(order),
               15: pc.binary_join_element_wise("D", zpad(fee, 12), ""), 16: signed_net, 27: self.merchant,
               32: signed_net}
        fields = []
        for i, w in enumerate(W.ZM_WIDTHS):
            v = var.get(i, _ZM_CONST.get(i, ""))
            fields.append(v.ljust(w) if isinstance(v, str) else pc.utf8_rpad(v, w, " "))
        self.out.write(buffer_bytes(join(fields, " ", "\r\n")))
        self.n += n
        self.amount += int(amount.sum())
        self.fee += int(fee.sum())

    def close(self) -> None:
        self.out.close()
        z = Decimal("0.00")
        rd = W._rd_report(self.merchant, self.day, self.n, z, dec(self.amount), dec(self.fee), z, z,
                          dec(self.amount - self.fee))
        with W._zip_entry(self.zf, f"RD2010{self.day:%y%m%d}01_{self.merchant}", gbk_name=False) as fh:
            fh.write(rd.encode("gbk"))
        self.zf.close()

    @property
    def net(self) -> int:
        return self.amount - self.fee


# ============================================================================ reference writers (small worlds)
class _Collect:
    """Canonical rows kept in memory and written by ``loaders.writers`` at close."""

    def __init__(self):
        self.rows: list[dict] = []


class RefWechatTrade(_Collect):
    def __init__(self, path: Path, rate: tuple[int, int]):
        super().__init__()
        self.path, self.rate = path, _rate_text(*rate)
        self.settle = self.fee = self.refund = 0

    def payments(self, day, sec, txn, order, ccy, amount, fee) -> None:
        for sc, t, o, c, a, f in zip(sec, s(txn).to_pylist(), s(order).to_pylist(), s(ccy).to_pylist(), amount, fee):
            self.rows.append({"txn_type": "payment", "txn_time": _ts(day, sc), "channel_merchant_id": MCHID,
                              "channel_txn_id": t, "merchant_order_no": o, "status": "success", "currency": c,
                              "amount": dec(a), "fee": dec(f), "description": GOODS})
            self.settle += int(a)
            self.fee += int(f)

    def refunds(self, day, sec, txn, order, rid, rno, ramt, rfee) -> None:
        for sc, t, o, ri, rn, a, f in zip(sec, s(txn).to_pylist(), s(order).to_pylist(), s(rid).to_pylist(),
                                          s(rno).to_pylist(), ramt, rfee):
            self.rows.append({"txn_type": "refund", "txn_time": _ts(day, sc), "channel_merchant_id": MCHID,
                              "channel_txn_id": t, "merchant_order_no": o, "channel_refund_id": ri,
                              "merchant_refund_no": rn, "status": "success", "currency": "CNY", "amount": dec(a),
                              "fee": dec(-int(f)), "description": GOODS})
            self.refund += int(a)
            self.fee -= int(f)

    def close(self) -> None:
        W.write_wechat_trade(self.rows, self.path, newline=NL, fee_rate=self.rate)

    @property
    def net(self) -> int:
        return self.settle - self.fee - self.refund


class RefWechatFunds:
    def __init__(self, path: Path, opening_balance: int):
        self.path, self.opening = path, opening_balance
        self.balance = opening_balance
        self.canonical: list[dict] = []

    def rows(self, day, sec, biz, movement, ref, amount, incoming: bool) -> None:
        for sc, b, mv, r, a in zip(sec, s(biz).to_pylist(), s(movement).to_pylist(), s(ref).to_pylist(), amount):
            self.canonical.append({"booked_at": _ts(day, sc), "channel_txn_id": b, "movement_id": mv,
                                   "biz_type": "交易" if incoming else "退款", "direction": "in" if incoming else "out",
                                   "amount": dec(a), "reference": r})
            self.balance += int(a) if incoming else -int(a)

    def close(self) -> None:
        W.write_wechat_fundflow(self.canonical, self.path, newline=NL, opening_balance=dec(self.opening))


class RefAlipayTrade(_Collect):
    def __init__(self, path: Path, account: str, day: date):
        super().__init__()
        self.path, self.account, self.day = path, account, day
        self.recv = {"payment": 0, "refund": 0}
        self.fee = 0

    def payments(self, day, sec, txn, order, amount, fee) -> None:
        for sc, t, o, a, f in zip(sec, s(txn).to_pylist(), s(order).to_pylist(), amount, fee):
            self.rows.append({"txn_type": "payment", "txn_time": _ts(day, sc), "channel_txn_id": t,
                              "merchant_order_no": o, "amount": dec(a), "fee": dec(f), "net": dec(a - f),
                              "description": GOODS})
            self.recv["payment"] += int(a)
            self.fee += int(f)

    def refunds(self, day, sec, txn, order, rno, ramt, rfee) -> None:
        for sc, t, o, rn, a, f in zip(sec, s(txn).to_pylist(), s(order).to_pylist(), s(rno).to_pylist(), ramt, rfee):
            self.rows.append({"txn_type": "refund", "txn_time": _ts(day, sc), "channel_txn_id": t,
                              "merchant_order_no": o, "merchant_refund_no": rn, "amount": dec(a),
                              "fee": dec(-int(f)), "net": dec(-int(a) + int(f)), "description": GOODS})
            self.recv["refund"] -= int(a)
            self.fee -= int(f)

    def close(self) -> None:
        W.write_alipay_trade(self.rows, self.path, bill_date=self.day, account=self.account)


class RefUnionpayZip(_Collect):
    def __init__(self, path: Path, merchant: str, day: date):
        super().__init__()
        self.path, self.merchant, self.day = path, merchant, day
        self.amount = self.fee = 0

    def payments(self, day, sec, txn, order, amount, fee) -> None:
        for sc, t, o, a, f in zip(sec, s(txn).to_pylist(), s(order).to_pylist(), amount, fee):
            self.rows.append({"txn_type": "payment", "txn_time": _ts(day, sc), "card_no_masked": CARD,
                              "channel_txn_id": t, "merchant_order_no": o, "amount": dec(a), "fee": dec(f),
                              "net": dec(a - f)})
            self.amount += int(a)
            self.fee += int(f)

    def close(self) -> None:
        W.write_unionpay_zm(self.rows, self.path, clearing_date=self.day, merchant_id=self.merchant)

    @property
    def net(self) -> int:
        return self.amount - self.fee


BACKENDS = {
    "fast": {"wechat_trade": WechatTrade, "wechat_funds": WechatFunds, "alipay": AlipayTrade,
             "unionpay": UnionpayZip},
    "writers": {"wechat_trade": RefWechatTrade, "wechat_funds": RefWechatFunds, "alipay": RefAlipayTrade,
                "unionpay": RefUnionpayZip},
}


def alipay_net(w) -> int:
    if isinstance(w, AlipayTrade):
        return w.net
    return w.recv["payment"] + w.recv["refund"] - w.fee


# ============================================================================ bank
PAYERS = {"wechat": ("财付通支付科技有限公司", "1100000000000001", "微信支付结算"),
          "alipay": ("支付宝（中国）网络技术有限公司", "1100000000000002", "支付宝结算"),
          "unionpay": ("中国银联股份有限公司", "1100000000000003", "银联清算")}
BANK_ACCOUNT, BANK_ACCOUNT_NAME = "6222020200112233445", "Generated Pay Ltd"


def write_bank(path: Path, value_date: date, credits: list[tuple[str, date, int]], opening: int) -> int:
    """One lump-sum credit per channel (the net of its statement of ``trade_date``); returns the closing balance."""
    rows = []
    for i, (channel, trade_date, fen) in enumerate(credits, start=1):
        name, account, memo = PAYERS[channel]
        rows.append({"value_date": value_date, "reference": f"B{value_date:%Y%m%d}{i:05d}", "counterparty": name,
                     "counterparty_account": account, "memo": f"{memo} {trade_date:%Y%m%d}",
                     "direction": "in" if fen >= 0 else "out", "amount": dec(abs(fen)), "currency": "CNY"})
    W.write_bank_csv(rows, path, account=BANK_ACCOUNT, account_name=BANK_ACCOUNT_NAME, opening_balance=dec(opening))
    return opening + sum(f for _, _, f in credits)
