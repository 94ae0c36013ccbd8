"""Alipay trade bill (业务明细) and fund bill (账务明细), as a bare CSV or straight from the ZIP
Alipay delivers (GBK content, GBK entry names without the UTF-8 flag, a detail file and a
``(汇总)`` summary file).

``#`` lines carry the account, the period and the footer totals; text values end in a
tab; columns are found by header name (ISV variants add 商户ID, 手续费, 费率, 实收净额).
"""
from __future__ import annotations

import csv
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import FUNDS_SCHEMA, TRADE_SCHEMA, FileError, FooterCheck, ParsedFile, norm_header, register
from loaders.formats._tabular import (
    Batch, Collector, Cols, Errors, Reader, Source, as_bool, cols_for, const, decimal_of, drive, each_batch,
    footer_check, is_zip, map_values, msum, need_columns, neg, no_rows, sub, to_money, to_time, with_encoding_retry,
    zeros, zip_members,
)

PERIOD = re.compile(r"起始日期[:：]\s*\[(\d{4})年(\d{1,2})月(\d{1,2})日\s*([\d:]*)\].*?"
                    r"终止日期[:：]\s*\[(\d{4})年(\d{1,2})月(\d{1,2})日\s*([\d:]*)\]")
TRADE_TOTAL = re.compile(r"#(交易|退款)合计[:：](\d+)笔[,，]商家实收共([-+]?[\d.,]+)元")
FUNDS_TOTAL = re.compile(r"#(收入|支出)合计[:：](\d+)笔[,，]共([-+]?[\d.,]+)元")
TYPES = {"交易": "payment", "退款": "refund"}
CLEAN = " \t`"


def period_of(lines: list[str]) -> tuple[date, date] | None:
    """[start, end) from ``#起始日期：[…]   终止日期：[…]``; an end at 23:59:59 means the next day."""
    for ln in lines:
        m = PERIOD.search(ln)
        if m:
            y1, m1, d1, t1, y2, m2, d2, t2 = m.groups()
            start, end = date(int(y1), int(m1), int(d1)), date(int(y2), int(m2), int(d2))
            if t2 and t2.strip() not in ("00:00:00", "0:00:00", ""):
                end += timedelta(days=1)
            return start, end
    return None


def _sources(path: Path, detail: str) -> tuple[Source, Source | None]:
    """The detail file and (inside a ZIP) its ``(汇总)`` summary file."""
    if not Path(path).exists():
        raise FileError(path, "no such file")
    if not is_zip(Path(path)):
        return Source(Path(path)), None
    members = zip_members(Path(path))
    details = [(n, i) for n, i in members if detail in n and "汇总" not in n and n.lower().endswith(".csv")]
    if not details:
        details = [(n, i) for n, i in members if "汇总" not in n and n.lower().endswith(".csv")]
    if not details:
        raise FileError(path, f"ZIP has no {detail} CSV (entries: {[n for n, _ in members]})")
    summaries = [(n, i) for n, i in members if "汇总" in n]
    d = Source(Path(path), details[0][1], details[0][0])
    s = Source(Path(path), summaries[0][1], summaries[0][0]) if summaries else None
    return d, s


def _find_header(line_no: int, text: str) -> str:
    t = text.strip()
    if not t or t.startswith("#"):
        return "skip"
    return "header"


def _reader(src: Source, opts: dict[str, Any]) -> Reader:
    return Reader(src, encoding=opts.get("encoding"), quote=False, find_header=_find_header)


def _open(path: Path, opts: dict[str, Any], detail: str
          ) -> tuple[Source, Source | None, Reader, tuple[date, date] | None]:
    """The detail and 汇总 sources, the detail's reader and the period its ``#`` lines state."""
    src, summary_src = _sources(path, detail)
    rd = _reader(src, opts)
    return src, summary_src, rd, period_of([t for _, t in rd.prefix if t.startswith("#")])


def _split_extras(rd: Reader, out: Collector) -> list[str]:
    """``#`` lines after the header are footer lines; any other odd line is a broken row."""
    comments = []
    for e in rd.extras:
        t = e.text.strip()
        if not t:
            continue
        if t.startswith("#"):
            comments.append(t)
        else:
            reason = e.reason or f"expected {rd.width} columns, found {len(e.text.split(','))}"
            out.reject(e.line_no, None, reason, e.text)
    return comments


def _summary_rows(src: Source | None, opts: dict[str, Any]) -> dict[str, str] | None:
    """The 合计 row of a ``(汇总)`` file as {normalised header: value}."""
    if src is None:
        return None
    try:
        text = src.read_all()
        enc = opts.get("encoding")
        body = None
        for e in ([enc] if enc else ["utf-8-sig", "gb18030"]):
            try:
                body = text.decode(e)
                break
            except UnicodeDecodeError:
                continue
        if body is None:
            return None
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("#")]
        if len(lines) < 2:
            return None
        rows = list(csv.reader(lines))
        header = [norm_header(h.strip()) for h in rows[0]]
        for r in rows[1:]:
            if r and r[0].strip() in ("合计", "总计"):
                return {h: v.strip() for h, v in zip(header, r)}
        if len(rows) == 2:
            return {h: v.strip() for h, v in zip(header, rows[1])}
    except FileError:
        return None
    return None


def _detect_trade(head: bytes) -> bool:
    return "#支付宝业务明细查询".encode() in head or "#支付宝业务明细查询".encode("gbk") in head


def _detect_funds(head: bytes) -> bool:
    return "#支付宝账务明细查询".encode() in head or "#支付宝账务明细查询".encode("gbk") in head


@register("alipay_trade", "trade", detect=_detect_trade, description="Alipay trade bill (业务明细), CSV or ZIP")
@with_encoding_retry
def parse_trade(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Alipay trade bill (业务明细), CSV or ZIP."""
    src, summary_src, rd, period = _open(path, opts, "业务明细")
    if rd.empty or rd.header is None:
        return no_rows(path, "alipay_trade", "trade", "header-only file: no trades", period=period,
                       meta={"entry": src.member_name})
    index = rd.header_map(lambda h: h.strip(CLEAN))
    need_columns(rd, index, ("支付宝交易号", "业务类型", "订单金额(元)", "商家实收(元)"))
    cols_for(rd, index, "支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "订单金额(元)",
             "商家实收(元)", "服务费(元)", "服务费", "手续费(元)", "手续费", "退款批次号/请求号", "商户ID", "实收净额(元)",
             "实收净额")
    out = Collector(TRADE_SCHEMA, src)
    sums = {"payment": [0, Decimal("0.00")], "refund": [0, Decimal("0.00")], "fee": Decimal("0.00"),
            "net": Decimal("0.00"), "order": Decimal("0.00")}
    ccy = opts.get("currency", "CNY")

    @each_batch(index, rd, CLEAN)
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        txn = c.get("支付宝交易号")
        errs.mark(as_bool(pc.starts_with(txn, "#")), None, "a # line with the column count of a row")
        errs.mark(as_bool(pc.equal(txn, "")), "支付宝交易号", "empty 支付宝交易号")
        kind_raw = c.get("业务类型")
        kind = map_values(kind_raw, TYPES)
        errs.mark(as_bool(pc.is_null(kind)), "业务类型", lambda i: f"expected 交易 or 退款, got {kind_raw[i].as_py()!r}")
        refund = pc.equal(kind, "refund")
        order_amount = to_money(c.get("订单金额(元)"), "订单金额(元)", errs)
        amount = pc.abs(order_amount)
        recv = to_money(c.get("商家实收(元)"), "商家实收(元)", errs)
        fee_col = c.get("服务费(元)", "服务费", "手续费(元)", "手续费")
        # Alipay always prints the fee (0.00 when none): a blank one is a damaged row, not a zero
        fee_abs = pc.abs(to_money(fee_col, "服务费(元)", errs)) if fee_col is not None \
            else zeros(n)
        fee = pc.if_else(refund, neg(fee_abs), fee_abs)
        done = c.get("完成时间")
        created = c.get("创建时间")
        when_text = done if created is None else (created if done is None else
                                                    pc.if_else(pc.equal(done, ""), created, done))
        if when_text is None:
            raise FileError(src.label, "header has neither 完成时间 nor 创建时间", line_no=rd.header_line)
        when = to_time(when_text, "完成时间", errs, required=True)
        net = pc.if_else(refund, sub(neg(amount), fee), sub(amount, fee))
        cols = {"txn_type": kind, "channel_txn_id": c.text("支付宝交易号"), "merchant_order_no": c.text("商户订单号"),
                "merchant_refund_no": pc.if_else(refund, c.text("退款批次号/请求号"), pa.scalar(None, pa.string())),
                "channel_merchant_id": c.text("商户ID") if c.has("商户ID") else None,
                "status": const(n, "success"), "currency": const(n, ccy), "amount": amount, "fee": fee, "net": net,
                "txn_time": when, "description": c.text("商品名称")}
        if c.has("实收净额(元)", "实收净额"):
            declared_net = to_money(c.get("实收净额(元)", "实收净额"), "实收净额(元)", errs, blank_zero=True)
            differs = as_bool(pc.and_(pc.not_equal(declared_net, net), pc.invert(refund)))
            errs.mark(differs, "实收净额(元)", "实收净额 differs from 订单金额 - 服务费")
        out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        is_refund = as_bool(refund)
        for key, mask in (("payment", keep & ~is_refund), ("refund", keep & is_refund)):
            sums[key][0] += int(mask.sum())
            sums[key][1] += msum(recv, mask)
        sums["fee"] += msum(fee, keep)
        sums["net"] += msum(net, keep)
        sums["order"] += msum(order_amount, keep)

    def reset() -> None:
        out.reset()
        sums.update({"payment": [0, Decimal("0.00")], "refund": [0, Decimal("0.00")], "fee": Decimal("0.00"),
                     "net": Decimal("0.00"), "order": Decimal("0.00")})

    drive(rd, process, reset)
    footer_lines = _split_extras(rd, out)
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    footer = _ended(footer_lines, _trade_footer(footer_lines, sums, len(quarantine), _summary_rows(summary_src, opts)))
    return ParsedFile(path, "alipay_trade", "trade", table, quarantine, footer, period,
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"entry": src.member_name, "encoding": rd.encoding,
                            "summary_entry": summary_src.member_name if summary_src else None})


def _ended(footer_lines: list[str], footer: FooterCheck) -> FooterCheck:
    """Alipay closes the list with ``#-----…明细列表结束-----``; without it the file was cut short."""
    if any("结束" in ln for ln in footer_lines):
        return footer
    return FooterCheck(False, "no #…明细列表结束 line after the rows: the file is cut short (truncated?); "
                       + footer.message, footer.declared_rows, footer.declared_amount, footer.parsed_rows,
                       footer.parsed_amount)


def _trade_footer(comments: list[str], sums: dict, quarantined: int, summary: dict[str, str] | None) -> FooterCheck:
    """Check ``#交易合计`` / ``#退款合计`` (and the 汇总 file's 合计 row when there is one).

    Real bills keep refunds in their own ``#退款合计`` line; some files (the
    public fixture among them) count refunds into ``#交易合计`` and have no
    refund line. Both readings are checked as the file presents itself.
    """
    totals: dict[str, tuple[int, Decimal]] = {}
    for ln in comments:
        m = TRADE_TOTAL.match(ln.replace(" ", ""))
        if m:
            amount = decimal_of(m.group(3))
            if amount is None:
                return FooterCheck(False, f"footer amount is not a number: {ln!r}")
            totals[m.group(1)] = (int(m.group(2)), amount)
    pay_n, pay_amt = sums["payment"]
    ref_n, ref_amt = sums["refund"]
    checks: list[tuple[str, Any, Any]] = []
    if "退款" in totals:
        checks += [("rows", totals["交易"][0] if "交易" in totals else None, pay_n + quarantined),
                   ("交易合计 商家实收", totals.get("交易", (0, None))[1], pay_amt),
                   ("退款合计 笔数", totals["退款"][0], ref_n), ("退款合计 商家实收", totals["退款"][1], ref_amt)]
    elif "交易" in totals:
        checks += [("rows", totals["交易"][0], pay_n + ref_n + quarantined),
                   ("交易合计 商家实收", totals["交易"][1], pay_amt + ref_amt)]
    if summary:
        for name, parsed in (("交易订单总笔数", pay_n), ("退款订单总笔数", ref_n), ("订单金额(元)", sums["order"]),
                             ("商家实收(元)", pay_amt + ref_amt), ("实收净额(元)", sums["net"])):
            raw = summary.get(norm_header(name))
            if raw not in (None, ""):
                declared = int(raw) if raw.isdigit() else decimal_of(raw)
                checks.append((f"汇总 {name}", declared, parsed))
    if not checks:
        rows = pay_n + ref_n + quarantined
        if rows:
            return FooterCheck(False, f"file has {rows} row(s) but no #交易合计 footer (truncated?)", None, None,
                               rows, None)
        return FooterCheck(None, "file has no #交易合计 footer")
    return footer_check(checks, quarantined)


@register("alipay_funds", "funds", detect=_detect_funds, description="Alipay fund bill (账务明细), CSV or ZIP")
@with_encoding_retry
def parse_funds(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Alipay fund bill (账务明细), CSV or ZIP."""
    src, summary_src, rd, period = _open(path, opts, "账务明细")
    if rd.empty or rd.header is None:
        return no_rows(path, "alipay_funds", "funds", "header-only file: no movements", period=period)
    index = rd.header_map(lambda h: h.strip(CLEAN))
    need_columns(rd, index, ("账务流水号", "发生时间", "收入金额(+元)", "支出金额(-元)"))
    cols_for(rd, index, "账务流水号", "业务流水号", "商户订单号", "发生时间", "收入金额(+元)", "支出金额(-元)", "业务类型", "备注")
    out = Collector(FUNDS_SCHEMA, src)
    sums = {"in": [0, Decimal("0.00")], "out": [0, Decimal("0.00")]}
    ccy = opts.get("currency", "CNY")
    zero = pa.scalar(Decimal("0.00"), pa.decimal128(18, 2))

    @each_batch(index, rd, CLEAN)
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        mid = c.get("账务流水号")
        errs.mark(as_bool(pc.starts_with(mid, "#")), None, "a # line with the column count of a row")
        income = pc.abs(to_money(c.get("收入金额(+元)"), "收入金额(+元)", errs, blank_zero=True))
        outgo = pc.abs(to_money(c.get("支出金额(-元)"), "支出金额(-元)", errs, blank_zero=True))
        both = as_bool(pc.and_(pc.not_equal(income, zero), pc.not_equal(outgo, zero)))
        errs.mark(both, "支出金额(-元)", "both 收入金额 and 支出金额 are filled")
        is_out = pc.not_equal(outgo, zero)
        when = to_time(c.get("发生时间"), "发生时间", errs, required=True)
        cols = {"movement_id": c.text("账务流水号"), "channel_txn_id": c.text("业务流水号"), "reference": c.text("商户订单号"),
                "direction": pc.if_else(is_out, "out", "in"), "amount": pc.if_else(is_out, outgo, income),
                "currency": const(n, ccy), "booked_at": when, "biz_type": c.text("业务类型"), "memo": c.text("备注")}
        out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        o = as_bool(is_out)
        sums["in"][0] += int((keep & ~o).sum())
        sums["in"][1] += msum(income, keep & ~o)
        sums["out"][0] += int((keep & o).sum())
        sums["out"][1] += msum(outgo, keep & o)

    def reset() -> None:
        out.reset()
        sums.update({"in": [0, Decimal("0.00")], "out": [0, Decimal("0.00")]})

    drive(rd, process, reset)
    footer_lines = _split_extras(rd, out)
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    totals = {}
    for ln in footer_lines:
        m = FUNDS_TOTAL.match(ln.replace(" ", ""))
        if m:
            amount = decimal_of(m.group(3))
            totals[m.group(1)] = (int(m.group(2)), abs(amount) if amount is not None else None)
    checks = []
    if totals:
        checks = [("rows", sum(v[0] for v in totals.values()), table.num_rows + len(quarantine))]
        for key, name in (("收入", "in"), ("支出", "out")):
            if key in totals:
                checks += [(f"{key}合计 笔数", totals[key][0], sums[name][0]),
                           (f"{key}合计 金额", totals[key][1], sums[name][1])]
    summary = _summary_rows(summary_src, opts)
    if summary:
        for name, parsed, as_int in (("收入笔数", sums["in"][0], True), ("收入金额(+元)", sums["in"][1], False),
                                     ("支出笔数", sums["out"][0], True), ("支出金额(-元)", sums["out"][1], False)):
            raw = summary.get(norm_header(name))
            if raw not in (None, ""):
                value = (int(raw) if raw.isdigit() else None) if as_int else decimal_of(raw)
                checks.append((f"汇总 {name}", abs(value) if isinstance(value, Decimal) else value, parsed))
    if checks:
        footer = footer_check(checks, len(quarantine))
    elif table.num_rows or quarantine:
        footer = FooterCheck(False, f"file has {table.num_rows + len(quarantine)} row(s) but no #收入合计/#支出合计 "
                             "footer (truncated?)", None, None, table.num_rows + len(quarantine), None)
    else:
        footer = FooterCheck(None, "file has no #收入合计 footer")
    footer = _ended(footer_lines, footer)
    return ParsedFile(path, "alipay_funds", "funds", table, quarantine, footer, period,
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"entry": src.member_name, "encoding": rd.encoding})
