"""WeChat Pay trade bill (ALL / SUCCESS / REFUND, v2 and v3) and fund-flow bill.

Every value carries a leading backtick; the last two lines are a summary
header and its values. Columns are found by header name.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loaders.base import (
    FUNDS_SCHEMA, TRADE_SCHEMA, FileError, FooterCheck, HeaderMap, ParsedFile, RowBuilder, RowError,
    decode, iter_csv, lines_of, money, norm_header, read_bytes, register,
)

NO_STATEMENT = "NO_STATEMENT_EXIST"
TRADE_STATUS = {"SUCCESS": "success", "REFUND": "refunded", "REVOKED": "revoked", "CLOSED": "closed"}
REFUND_STATUS = {"SUCCESS": "success", "PROCESSING": "processing", "FAIL": "failed", "CHANGE": "failed",
                 "REFUNDCLOSE": "closed", "ABNORMAL": "failed"}


def _clean(value: str) -> str:
    return value.strip().lstrip("`").strip()


def _time(value: str, fieldname: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise RowError(fieldname, f"not a time (YYYY-MM-DD hh:mm:ss): {value!r}") from None


def _split(path: Path, opts: dict[str, Any], summary_first: str):
    """Header, body lines and the summary (header, values) of a WeChat bill."""
    text = decode(path, read_bytes(path), opts.get("encoding"))
    lines = [(i + 1, ln) for i, ln in enumerate(lines_of(text))]
    content = [(n, ln) for n, ln in lines if ln.strip()]
    if not content or content[0][1].strip().strip("`") == NO_STATEMENT:
        return None, [], None
    header_no, header_line = content[0]
    header = next(iter_csv([(header_no, header_line)]))[2]
    body, summary = content[1:], None
    for idx, (n, ln) in enumerate(body):
        if norm_header(ln.split(",")[0]) == summary_first:
            if idx + 1 < len(body):
                summary = (body[idx], body[idx + 1])
            else:
                raise FileError(path, "summary header has no values line", line_no=n)
            body = body[:idx] + body[idx + 2:]
            break
    return HeaderMap(path, header, header_no), body, summary


def _summary_values(summary) -> dict[str, str]:
    (_, head), (_, vals) = summary
    names = [norm_header(h) for h in next(iter_csv([(0, head)]))[2]]
    values = [_clean(v) for v in next(iter_csv([(0, vals)]))[2]]
    return dict(zip(names, values))


def _empty(path: Path, fmt: str, kind: str, schema) -> ParsedFile:
    return ParsedFile(path, fmt, kind, RowBuilder(schema).table(), empty_day=True,
                      footer=FooterCheck(True, "no statement for this day (NO_STATEMENT_EXIST / empty file)", 0,
                                         Decimal("0.00"), 0, Decimal("0.00")))


def _footer(checks: list[tuple[str, Any, Any]]) -> FooterCheck:
    bad = [f"{name}: file says {declared}, rows give {parsed}" for name, declared, parsed in checks
           if declared != parsed]
    rows = next((d for n, d, _ in checks if n == "rows"), None)
    prow = next((p for n, _, p in checks if n == "rows"), None)
    amount = next((d for n, d, _ in checks if isinstance(d, Decimal)), None)
    pamount = next((p for _, d, p in checks if isinstance(d, Decimal)), None)
    if bad:
        return FooterCheck(False, "; ".join(bad), rows, amount, prow, pamount)
    return FooterCheck(True, "totals agree: " + ", ".join(f"{n} {p}" for n, _, p in checks), rows, amount,
                       prow, pamount)


def _decl(values: dict[str, str], name: str, path: Path, as_int: bool = False):
    raw = values.get(norm_header(name))
    if raw is None:
        return None
    try:
        return int(raw) if as_int else money(raw, name)
    except (ValueError, RowError):
        raise FileError(path, f"summary value {name} is not a number: {raw!r}") from None


@register("wechat_trade", "trade", detect=lambda head: head.lstrip(b"\xef\xbb\xbf").startswith(
    "交易时间,公众账号ID".encode()), description="WeChat Pay trade bill (ALL/SUCCESS/REFUND)")
def parse_trade(path: Path, opts: dict[str, Any]) -> ParsedFile:
    hm, body, summary = _split(path, opts, "总交易单数")
    if hm is None:
        return _empty(path, "wechat_trade", "trade", TRADE_SCHEMA)
    c = {
        "time": hm.need("交易时间"), "txn": hm.need("微信订单号"), "order": hm.need("商户订单号"),
        "status": hm.need("交易状态"), "mch": hm.find("特约商户号"), "mch0": hm.find("商户号"),
        "ccy": hm.find("货币种类"), "settle": hm.find("应结订单金额"), "total": hm.find("订单金额"),
        "rid": hm.find("微信退款单号"), "rno": hm.find("商户退款单号"), "ramt": hm.find("退款金额"),
        "rstatus": hm.find("退款状态"), "fee": hm.find("手续费"), "goods": hm.find("商品名称"),
    }
    if c["settle"] is None and c["total"] is None:
        raise FileError(path, "header has neither 应结订单金额 nor 订单金额", line_no=hm.line_no)
    out = RowBuilder(TRADE_SCHEMA)
    settle_sum = refund_sum = fee_sum = Decimal("0.00")

    def get(f: list[str], key: str) -> str:
        i = c[key]
        return _clean(f[i]) if i is not None and i < len(f) else ""

    for line_no, raw, f in iter_csv(body):
        if len(f) != hm.width and not (len(f) == hm.width + 1 and not f[-1].strip()):
            out.reject(line_no, raw, None, f"expected {hm.width} columns, found {len(f)}")
            continue

        def build() -> dict[str, Any]:
            status = get(f, "status")
            if status not in TRADE_STATUS:
                raise RowError("交易状态", f"unknown status {status!r}")
            settle = money(get(f, "settle"), "应结订单金额", blank_is_zero=True) if c["settle"] is not None else None
            total = money(get(f, "total"), "订单金额") if c["total"] is not None else settle
            fee = money(get(f, "fee"), "手续费", blank_is_zero=True)
            mch = get(f, "mch") if get(f, "mch") not in ("", "0") else get(f, "mch0")
            row = {"channel_txn_id": get(f, "txn"), "merchant_order_no": get(f, "order") or None,
                   "channel_merchant_id": mch or None, "currency": get(f, "ccy") or "CNY", "fee": fee,
                   "txn_time": _time(get(f, "time"), "交易时间"), "description": get(f, "goods") or None}
            if status == "REFUND":
                ramt = money(get(f, "ramt"), "退款金额")
                rstatus = get(f, "rstatus")
                row.update(txn_type="refund", amount=ramt, net=-(ramt) - fee,
                           channel_refund_id=get(f, "rid") or None, merchant_refund_no=get(f, "rno") or None,
                           status=REFUND_STATUS.get(rstatus, "success" if not rstatus else "processing"))
            else:
                row.update(txn_type="payment", amount=total, net=(settle if settle is not None else total) - fee,
                           status=TRADE_STATUS[status], settle=settle or Decimal("0.00"))
            return row

        row = out.try_add(line_no, raw, build)
        if row:
            fee_sum += row["fee"]
            if row["txn_type"] == "refund":
                refund_sum += row["amount"]
            else:
                settle_sum += row["settle"]
    table = out.table()
    footer = FooterCheck(None, "file has no summary lines")
    if summary is not None:
        v = _summary_values(summary)
        checks = [("rows", _decl(v, "总交易单数", path, True), len(out) + len(out.quarantine))]
        for name, parsed in (("应结订单总金额", settle_sum), ("退款总金额", refund_sum), ("手续费总金额", fee_sum)):
            declared = _decl(v, name, path)
            if declared is not None:
                checks.append((name, declared, parsed))
        footer = _footer(checks)
    return ParsedFile(path, "wechat_trade", "trade", table, out.quarantine, footer)


@register("wechat_fundflow", "funds", detect=lambda head: head.lstrip(b"\xef\xbb\xbf").startswith(
    "记账时间,微信支付业务单号".encode()), description="WeChat Pay fund-flow bill (BASIC/OPERATION/FEES)")
def parse_fundflow(path: Path, opts: dict[str, Any]) -> ParsedFile:
    hm, body, summary = _split(path, opts, "资金流水总笔数")
    if hm is None:
        return _empty(path, "wechat_fundflow", "funds", FUNDS_SCHEMA)
    c = {"time": hm.need("记账时间"), "biz": hm.need("微信支付业务单号"), "flow": hm.need("资金流水单号"),
         "type": hm.find("业务类型"), "dir": hm.need("收支类型"), "amt": hm.need("收支金额(元)"),
         "memo": hm.find("备注"), "ref": hm.find("业务凭证号")}
    out = RowBuilder(FUNDS_SCHEMA)
    sums = {"in": [0, Decimal("0.00")], "out": [0, Decimal("0.00")]}

    def get(f: list[str], key: str) -> str:
        i = c[key]
        return _clean(f[i]) if i is not None and i < len(f) else ""

    for line_no, raw, f in iter_csv(body):
        if len(f) != hm.width and not (len(f) == hm.width + 1 and not f[-1].strip()):
            out.reject(line_no, raw, None, f"expected {hm.width} columns, found {len(f)}")
            continue

        def build() -> dict[str, Any]:
            d = {"收入": "in", "支出": "out"}.get(get(f, "dir"))
            if d is None:
                raise RowError("收支类型", f"expected 收入 or 支出, got {get(f, 'dir')!r}")
            return {"movement_id": get(f, "flow") or None, "channel_txn_id": get(f, "biz") or None,
                    "reference": get(f, "ref") or None, "direction": d, "amount": money(get(f, "amt"), "收支金额"),
                    "currency": opts.get("currency", "CNY"), "booked_at": _time(get(f, "time"), "记账时间"),
                    "biz_type": get(f, "type") or None, "memo": get(f, "memo") or None}

        row = out.try_add(line_no, raw, build)
        if row:
            sums[row["direction"]][0] += 1
            sums[row["direction"]][1] += row["amount"]
    footer = FooterCheck(None, "file has no summary lines")
    if summary is not None:
        v = _summary_values(summary)
        checks = [("rows", _decl(v, "资金流水总笔数", path, True), len(out) + len(out.quarantine)),
                  ("收入笔数", _decl(v, "收入笔数", path, True), sums["in"][0]),
                  ("收入金额", _decl(v, "收入金额", path), sums["in"][1]),
                  ("支出笔数", _decl(v, "支出笔数", path, True), sums["out"][0]),
                  ("支出金额", _decl(v, "支出金额", path), sums["out"][1])]
        footer = _footer([ch for ch in checks if ch[1] is not None])
    return ParsedFile(path, "wechat_fundflow", "funds", out.table(), out.quarantine, footer)
