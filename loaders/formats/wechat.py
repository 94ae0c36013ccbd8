"""WeChat Pay trade bill (ALL / SUCCESS / REFUND, v2 and v3, optional gzip) and fund-flow bill
(BASIC / OPERATION / FEES).

Every value carries a leading backtick; the last two lines are a summary
header and its values, checked against the parsed rows. Columns are found by
header name. ``NO_STATEMENT_EXIST`` (or an empty / header-only file) is a
valid day without a statement.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import (
    FUNDS_SCHEMA, TRADE_SCHEMA, FileError, FooterCheck, ParsedFile, Quarantined, money, norm_header, register,
)
from loaders.formats._tabular import (
    Batch, Collector, Cols, Errors, Extra, Reader, as_bool, const, drive, each_batch, footer_check,
    map_values, msum, need_columns, neg, no_rows, extras_batch, cols_for, source_for, sub, to_money, to_time,
    with_encoding_retry, zeros,
)

NO_STATEMENT = "NO_STATEMENT_EXIST"
NO_STATEMENT_DAY = "no statement for this day (NO_STATEMENT_EXIST / empty file)"
TRADE_STATUS = {"SUCCESS": "success", "REFUND": "refunded", "REVOKED": "revoked", "CLOSED": "closed",
                "PAYERROR": "failed", "NOTPAY": "processing", "USERPAYING": "processing"}
REFUND_STATUS = {"SUCCESS": "success", "PROCESSING": "processing", "FAIL": "failed", "CHANGE": "failed",
                 "REFUNDCLOSE": "closed", "ABNORMAL": "failed", "": "success"}


def _find_header(first: str):
    def find(line_no: int, text: str) -> str:
        if NO_STATEMENT in text:
            return "empty"
        if not text.strip(" \t\r\n\ufeff"):
            return "skip"
        if norm_header(text.split(",")[0]) == norm_header(first):
            return "header"
        raise FileError("", f"expected the column header starting with {first}, found {text[:60]!r}",
                        line_no=line_no)
    return find


def _reader(path: Path, opts: dict[str, Any], first: str) -> Reader:
    src = source_for(path, lambda n: n.lower().endswith((".csv", ".txt")) or "." not in n, "bill")
    try:
        return Reader(src, encoding=opts.get("encoding"), quote=False, find_header=_find_header(first))
    except FileError as exc:
        if not exc.path:
            raise FileError(src.label, str(exc).split(": ", 1)[-1], line_no=exc.line_no) from None
        raise


def _split_extras(rd: Reader, summary_first: str, out: Collector, lenient: list[Extra]):
    """Find the summary (header, values) among the odd-width lines; quarantine the rest."""
    summary = None
    extras = [e for e in rd.extras if e.text.strip()]
    for k, e in enumerate(extras):
        if norm_header(e.text.split(",")[0].strip().strip("`")) == norm_header(summary_first):
            if k + 1 >= len(extras):
                raise FileError(rd.source.label, "summary header has no values line", line_no=e.line_no)
            summary = (e, extras[k + 1])
            rest = extras[:k] + extras[k + 2:]
            break
    else:
        rest = extras
    for e in rest:
        fields = e.text.split(",")
        if len(fields) == rd.width + 1 and not fields[-1].strip():
            lenient.append(e)           # a trailing comma after the last value: harmless
        else:
            reason = e.reason or f"expected {rd.width} columns, found {len(fields)}"
            out.reject(e.line_no, None, reason, e.text)
    return summary


def _no_summary(rows: int) -> FooterCheck:
    """WeChat always ends a bill with its summary: rows without one mean a cut-off file."""
    if rows:
        return FooterCheck(False, f"file has {rows} row(s) but no summary lines at the end (truncated?)",
                           None, None, rows, None)
    return FooterCheck(None, "file has no summary lines")


def _summary_values(summary: tuple[Extra, Extra]) -> dict[str, str]:
    head, vals = summary
    names = [norm_header(h) for h in head.text.split(",")]
    values = [v.strip().lstrip("`").strip() for v in vals.text.split(",")]
    return dict(zip(names, values))


def _run(rd: Reader, out: Collector, process: Callable[[Batch], None], reset: Callable[[], None],
         summary_first: str) -> tuple[pa.Table, list[Quarantined], dict[str, str] | None]:
    """Parse the body, take trailing-comma lines as rows, quarantine other odd lines.

    Returns the rows, the quarantine and the summary's values (None when the bill has no summary).
    """
    drive(rd, process, reset)
    lenient: list[Extra] = []
    summary = _split_extras(rd, summary_first, out, lenient)
    if lenient:
        process(extras_batch(rd, lenient, lambda t: t.split(",")))
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    return table, quarantine, (_summary_values(summary) if summary is not None else None)


def _decl(values: dict[str, str], name: str, label: str, as_int: bool = False):
    raw = values.get(norm_header(name))
    if raw is None:
        return None
    try:
        return int(raw) if as_int else money(raw, name)
    except ValueError:
        raise FileError(label, f"summary value {name} is not a number: {raw!r}") from None


def _detect_trade(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf")
    return h.startswith("交易时间,公众账号ID".encode()) or h.startswith("交易时间,公众账号ID".encode("gbk"))


def _detect_fundflow(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf")
    return h.startswith("记账时间,微信支付业务单号".encode()) or h.startswith("记账时间,微信支付业务单号".encode("gbk"))


@register("wechat_trade", "trade", detect=_detect_trade, description="WeChat Pay trade bill (ALL/SUCCESS/REFUND)")
@with_encoding_retry
def parse_trade(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """WeChat Pay trade bill (ALL/SUCCESS/REFUND)."""
    rd = _reader(path, opts, "交易时间")
    if rd.empty or rd.header is None:
        return no_rows(path, "wechat_trade", "trade", NO_STATEMENT_DAY)
    index = rd.header_map(lambda h: h.strip("`"))
    need_columns(rd, index, ("交易时间", "微信订单号", "商户订单号", "交易状态"))
    if norm_header("应结订单金额") not in index and norm_header("订单金额") not in index:
        raise FileError(rd.source.label, "header has neither 应结订单金额 nor 订单金额", line_no=rd.header_line)
    refund_layout = norm_header("退款申请时间") in index
    cols_for(rd, index, "交易时间", "微信订单号", "商户订单号", "交易状态", "应结订单金额", "订单金额", "手续费", "退款金额",
             "申请退款金额", "退款成功时间", "退款状态", "特约商户号", "商户号", "货币种类", "微信退款单号", "商户退款单号",
             "商品名称")
    out = Collector(TRADE_SCHEMA, rd.source)
    sums = {"settle": Decimal("0.00"), "refund": Decimal("0.00"), "fee": Decimal("0.00"),
            "order": Decimal("0.00"), "req": Decimal("0.00")}
    default_ccy = opts.get("currency", "CNY")

    @each_batch(index, rd)
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        status = c.get("交易状态")
        is_refund = as_bool(pc.equal(status, "REFUND"))
        if refund_layout:
            is_refund |= True
        errs.mark(as_bool(pc.invert(pc.is_in(status, value_set=pa.array(list(TRADE_STATUS))))), "交易状态",
                  lambda i: f"unknown status {status[i].as_py()!r}")
        txn = c.get("微信订单号")
        errs.mark(as_bool(pc.equal(txn, "")), "微信订单号", "empty 微信订单号")
        settle = to_money(c.get("应结订单金额"), "应结订单金额", errs, blank_zero=True) if c.has("应结订单金额") else None
        total = to_money(c.get("订单金额"), "订单金额", errs, blank_zero=True) if c.has("订单金额") else settle
        if c.has("订单金额"):
            errs.mark(as_bool(pc.equal(c.get("订单金额"), "")) & ~is_refund, "订单金额", "empty amount")
        if settle is None:
            settle = total
        zero = zeros(n)
        fee = to_money(c.get("手续费"), "手续费", errs, blank_zero=True) if c.has("手续费") else zero
        if c.has("退款金额"):
            ramt = to_money(c.get("退款金额"), "退款金额", errs, blank_zero=True)
            errs.mark(as_bool(pc.equal(c.get("退款金额"), "")) & is_refund, "退款金额", "empty amount")
        else:
            ramt = zero
            errs.mark(is_refund, "退款金额", "a refund row but the bill has no 退款金额 column")
        req = to_money(c.get("申请退款金额"), "申请退款金额", errs, blank_zero=True) if c.has("申请退款金额") else zero
        refund_mask = pa.array(is_refund)
        when = to_time(c.get("交易时间"), "交易时间", errs, required=True)
        if c.has("退款成功时间"):
            done = to_time(c.get("退款成功时间"), "退款成功时间", errs)
            when = pc.if_else(pc.and_(refund_mask, pc.is_valid(done)), done, when)
        pay_status = map_values(status, {k: v for k, v in TRADE_STATUS.items()})
        rstatus_raw = c.get("退款状态")
        if rstatus_raw is not None:
            rstatus = pc.coalesce(map_values(rstatus_raw, REFUND_STATUS), pa.scalar("processing"))
        else:
            rstatus = const(n, "success")
        sub_mch, mch = c.get("特约商户号"), c.get("商户号")
        if sub_mch is not None and mch is not None:
            mch_id = pc.if_else(pc.is_in(sub_mch, value_set=pa.array(["", "0"])), mch, sub_mch)
        else:
            mch_id = sub_mch if sub_mch is not None else mch
        ccy = c.text("货币种类")
        cols = {
            "txn_type": pc.if_else(refund_mask, "refund", "payment"),
            "channel_txn_id": c.text("微信订单号"),
            "merchant_order_no": c.text("商户订单号"),
            "channel_refund_id": pc.if_else(refund_mask, c.text("微信退款单号"), pa.scalar(None, pa.string())),
            "merchant_refund_no": pc.if_else(refund_mask, c.text("商户退款单号"), pa.scalar(None, pa.string())),
            "channel_merchant_id": pc.if_else(pc.equal(mch_id, ""), pa.scalar(None, pa.string()), mch_id)
            if mch_id is not None else None,
            "status": pc.if_else(refund_mask, rstatus, pay_status),
            "currency": pc.coalesce(ccy, pa.scalar(default_ccy)),
            "amount": pc.if_else(refund_mask, ramt, total),
            "fee": fee,
            "net": pc.if_else(refund_mask, sub(neg(ramt), fee), sub(settle, fee)),
            "txn_time": when,
            "description": c.text("商品名称"),
        }
        out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        sums["settle"] += msum(settle, keep)
        sums["fee"] += msum(fee, keep)
        sums["refund"] += msum(ramt, keep)
        sums["order"] += msum(total, keep) if c.has("订单金额") else Decimal("0.00")
        sums["req"] += msum(req, keep)

    def reset() -> None:
        out.reset()
        for k in sums:
            sums[k] = Decimal("0.00")

    table, quarantine, v = _run(rd, out, process, reset, "总交易单数")
    footer = _no_summary(table.num_rows + len(quarantine))
    if v is not None:
        label = rd.source.label
        checks = [("rows", _decl(v, "总交易单数", label, True), table.num_rows + len(quarantine))]
        for name, parsed in (("应结订单总金额", sums["settle"]), ("退款总金额", sums["refund"]),
                             ("手续费总金额", sums["fee"]), ("订单总金额", sums["order"] if norm_header("订单金额") in index
                                                       else None), ("申请退款总金额", sums["req"])):
            if parsed is None:
                continue
            checks.append((name, _decl(v, name, label), parsed))
        footer = footer_check(checks, len(quarantine))
    return ParsedFile(path, "wechat_trade", "trade", table, quarantine, footer,
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"encoding": rd.encoding, "layout": "REFUND" if refund_layout else
                            ("ALL" if "退款金额" in index or norm_header("退款金额") in index else "SUCCESS")})


@register("wechat_fundflow", "funds", detect=_detect_fundflow,
          description="WeChat Pay fund-flow bill (BASIC/OPERATION/FEES)")
@with_encoding_retry
def parse_fundflow(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """WeChat Pay fund-flow bill (BASIC/OPERATION/FEES)."""
    rd = _reader(path, opts, "记账时间")
    if rd.empty or rd.header is None:
        return no_rows(path, "wechat_fundflow", "funds", NO_STATEMENT_DAY)
    index = rd.header_map(lambda h: h.strip("`"))
    need_columns(rd, index, ("记账时间", "微信支付业务单号", "资金流水单号", "收支类型", "收支金额(元)"))
    cols_for(rd, index, "记账时间", "微信支付业务单号", "资金流水单号", "收支类型", "收支金额(元)", "业务凭证号", "业务类型", "备注")
    out = Collector(FUNDS_SCHEMA, rd.source)
    sums = {"in": [0, Decimal("0.00")], "out": [0, Decimal("0.00")]}
    ccy = opts.get("currency", "CNY")

    @each_batch(index, rd)
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        d = map_values(c.get("收支类型"), {"收入": "in", "支出": "out"})
        kinds = c.get("收支类型")
        errs.mark(as_bool(pc.is_null(d)), "收支类型", lambda i: f"expected 收入 or 支出, got {kinds[i].as_py()!r}")
        amount = to_money(c.get("收支金额(元)"), "收支金额(元)", errs)
        errs.mark(as_bool(pc.less(amount, pa.scalar(Decimal("0.00"), pa.decimal128(18, 2)))), "收支金额(元)",
                  "negative amount (收支类型 carries the direction)")
        when = to_time(c.get("记账时间"), "记账时间", errs, required=True)
        cols = {"movement_id": c.text("资金流水单号"), "channel_txn_id": c.text("微信支付业务单号"),
                "reference": c.text("业务凭证号"), "direction": d, "amount": amount, "currency": const(n, ccy),
                "booked_at": when, "biz_type": c.text("业务类型"), "memo": c.text("备注")}
        out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        is_in = as_bool(pc.equal(d, "in"))
        for key, mask in (("in", keep & is_in), ("out", keep & ~is_in)):
            sums[key][0] += int(mask.sum())
            sums[key][1] += msum(amount, mask)

    def reset() -> None:
        out.reset()
        for k in sums:
            sums[k] = [0, Decimal("0.00")]

    table, quarantine, v = _run(rd, out, process, reset, "资金流水总笔数")
    footer = _no_summary(table.num_rows + len(quarantine))
    if v is not None:
        label = rd.source.label
        footer = footer_check([("rows", _decl(v, "资金流水总笔数", label, True), table.num_rows + len(quarantine)),
                               ("收入笔数", _decl(v, "收入笔数", label, True), sums["in"][0]),
                               ("收入金额", _decl(v, "收入金额", label), sums["in"][1]),
                               ("支出笔数", _decl(v, "支出笔数", label, True), sums["out"][0]),
                               ("支出金额", _decl(v, "支出金额", label), sums["out"][1])], len(quarantine))
    return ParsedFile(path, "wechat_fundflow", "funds", table, quarantine, footer,
                      empty_day=table.num_rows == 0 and not quarantine, meta={"encoding": rd.encoding})
