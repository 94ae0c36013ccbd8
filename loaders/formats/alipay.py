"""Alipay trade bill (业务明细), as a CSV or inside the ZIP Alipay delivers.

``#`` lines carry the account, the period and the footer totals; text values
end in a tab; columns are found by header name (ISV variants add columns).
"""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loaders.base import (
    TRADE_SCHEMA, FileError, FooterCheck, HeaderMap, ParsedFile, RowBuilder, RowError, decode, iter_csv,
    lines_of, money, read_bytes, register,
)

PERIOD = re.compile(r"起始日期[:：]\[(\d{4})年(\d{2})月(\d{2})日.*?终止日期[:：]\[(\d{4})年(\d{2})月(\d{2})日")
TOTAL = re.compile(r"#(交易|退款)合计[:：](\d+)笔[,，]商家实收共(-?[\d.,]+)元")
TYPES = {"交易": "payment", "退款": "refund"}


def _clean(value: str) -> str:
    return value.replace("\t", "").strip()


def _time(value: str, fieldname: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise RowError(fieldname, f"not a time (YYYY-MM-DD hh:mm:ss): {value!r}") from None


def _period(comments: list[str]) -> tuple[date, date] | None:
    for ln in comments:
        m = PERIOD.search(ln)
        if m:
            y1, m1, d1, y2, m2, d2 = map(int, m.groups())
            return date(y1, m1, d1), date(y2, m2, d2)
    return None


@register("alipay_trade", "trade", detect=lambda head: "#支付宝业务明细查询".encode() in head
          or "#支付宝业务明细查询".encode("gbk") in head, description="Alipay trade bill (业务明细)")
def parse_trade(path: Path, opts: dict[str, Any]) -> ParsedFile:
    text = decode(path, read_bytes(path), opts.get("encoding"))
    lines = [(i + 1, ln) for i, ln in enumerate(lines_of(text))]
    comments = [ln for _, ln in lines if ln.startswith("#")]
    data = [(n, ln) for n, ln in lines if ln.strip() and not ln.startswith("#")]
    if not data:
        return ParsedFile(path, "alipay_trade", "trade", RowBuilder(TRADE_SCHEMA).table(), empty_day=True,
                          period=_period(comments), footer=FooterCheck(True, "header-only file: no trades", 0))
    (hno, hline), body = data[0], data[1:]
    hm = HeaderMap(path, [_clean(h) for h in next(iter_csv([(hno, hline)]))[2]], hno)
    c = {"txn": hm.need("支付宝交易号"), "order": hm.need("商户订单号"), "type": hm.need("业务类型"),
         "goods": hm.find("商品名称"), "done": hm.find("完成时间"), "created": hm.find("创建时间"),
         "amount": hm.need("订单金额(元)"), "recv": hm.need("商家实收(元)"), "fee": hm.find("服务费(元)"),
         "refund": hm.find("退款批次号/请求号"), "mch": hm.find("商户ID")}
    out = RowBuilder(TRADE_SCHEMA)
    sums = {"payment": [0, Decimal("0.00")], "refund": [0, Decimal("0.00")]}

    def get(f: list[str], key: str) -> str:
        i = c[key]
        return _clean(f[i]) if i is not None and i < len(f) else ""

    for line_no, raw, f in iter_csv(body):
        if len(f) != hm.width:
            out.reject(line_no, raw, None, f"expected {hm.width} columns, found {len(f)}")
            continue

        def build() -> dict[str, Any]:
            kind = TYPES.get(get(f, "type"))
            if kind is None:
                raise RowError("业务类型", f"expected 交易 or 退款, got {get(f, 'type')!r}")
            amount = abs(money(get(f, "amount"), "订单金额（元）"))
            recv = money(get(f, "recv"), "商家实收（元）")
            fee = abs(money(get(f, "fee"), "服务费（元）", blank_is_zero=True))
            when = _time(get(f, "done") or get(f, "created"), "完成时间")
            row = {"txn_type": kind, "channel_txn_id": get(f, "txn") or None,
                   "merchant_order_no": get(f, "order") or None, "status": "success", "currency": "CNY",
                   "amount": amount, "fee": fee if kind == "payment" else -fee, "txn_time": when,
                   "channel_merchant_id": get(f, "mch") or None, "description": get(f, "goods") or None,
                   "recv": recv}
            if kind == "refund":
                row.update(merchant_refund_no=get(f, "refund") or None, net=-amount + fee)
            else:
                row.update(net=amount - fee)
            return row

        row = out.try_add(line_no, raw, build)
        if row:
            sums[row["txn_type"]][0] += 1
            sums[row["txn_type"]][1] += row["recv"]
    return ParsedFile(path, "alipay_trade", "trade", out.table(), out.quarantine,
                      _footer(path, comments, sums, len(out.quarantine)), _period(comments))


def _footer(path: Path, comments: list[str], sums: dict, quarantined: int) -> FooterCheck:
    """Check ``#交易合计`` / ``#退款合计``.

    Real bills keep refunds in their own ``#退款合计`` line; some files (the
    public fixture among them) count refunds into ``#交易合计`` and have no
    refund line. Both readings are checked as the file presents itself.
    """
    totals = {}
    for ln in comments:
        m = TOTAL.match(ln.replace(" ", ""))
        if m:
            totals[m.group(1)] = (int(m.group(2)), money(m.group(3), m.group(1) + "合计"))
    if not totals:
        return FooterCheck(None, "file has no #交易合计 footer")
    pay_n, pay_amt = sums["payment"]
    ref_n, ref_amt = sums["refund"]
    if "退款" in totals:
        expect = {"交易": (pay_n, pay_amt), "退款": (ref_n, ref_amt)}
    else:
        expect = {"交易": (pay_n + ref_n, pay_amt + ref_amt)}
    bad = []
    for key, (n, amt) in totals.items():
        pn, pamt = expect.get(key, (0, Decimal("0.00")))
        if key == "交易":
            pn += quarantined
        if (n, amt) != (pn, pamt):
            bad.append(f"{key}合计: file says {n} rows / {amt}, rows give {pn} / {pamt}")
    n, amt = totals.get("交易", (None, None))
    pn, pamt = expect["交易"]
    if bad:
        return FooterCheck(False, "; ".join(bad), n, amt, pn, pamt)
    return FooterCheck(True, "totals agree: " + ", ".join(f"{k}合计 {v[0]} rows / {v[1]}" for k, v in totals.items()),
                       n, amt, pn, pamt)
