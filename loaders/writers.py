"""Write canonical rows into the real channel formats, byte for byte as the channels do.

Used by the data generator, by round-trip tests (writer -> parser gives the same
canonical rows) and by the loading benchmark. Every writer takes an *iterable* of
canonical row dicts (keys of ``TRADE_SCHEMA`` / ``FUNDS_SCHEMA`` / ``BANK_SCHEMA``,
``Decimal`` amounts, ``datetime``/``date`` values), streams it to ``path`` and keeps
only running totals in memory (the footers are written at the end).

Canonical sign conventions (the parsers produce the same):

- trade rows: ``amount`` is positive for payments and refunds; ``fee`` is what the
  channel keeps (positive on a payment, usually negative on a refund when the fee is
  given back); ``net = amount - fee`` for a payment, ``net = -amount - fee`` for a refund.
- funds / bank rows: ``amount`` is unsigned, ``direction`` is ``in`` or ``out``.

Which canonical fields a format carries is listed in ``CARRIES``; the others come
back as ``None`` (or the format's default) after a round trip.
"""
from __future__ import annotations

import codecs
import gzip as _gzip
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable

ZERO = Decimal("0.00")
TS = "%Y-%m-%d %H:%M:%S"

# Which canonical fields survive a round trip through each format.
_TRADE_CORE = ("txn_type", "channel_txn_id", "merchant_order_no", "status", "currency", "amount", "fee", "net",
               "txn_time", "description")
CARRIES: dict[str, tuple[str, ...]] = {
    "wechat_trade": _TRADE_CORE + ("channel_refund_id", "merchant_refund_no", "channel_merchant_id"),
    "wechat_fundflow": ("movement_id", "channel_txn_id", "reference", "direction", "amount", "booked_at",
                        "biz_type", "memo"),
    "alipay_trade": _TRADE_CORE + ("merchant_refund_no",),
    "alipay_funds": ("movement_id", "channel_txn_id", "reference", "direction", "amount", "booked_at",
                     "biz_type", "memo"),
    "unionpay_zm": ("txn_type", "channel_txn_id", "channel_refund_id", "merchant_order_no", "channel_merchant_id",
                    "status", "currency", "amount", "fee", "net", "txn_time", "card_no_masked"),
    "bank_csv": ("value_date", "counterparty", "reference", "direction", "amount", "currency", "memo"),
    "bank_xlsx": ("value_date", "counterparty", "reference", "direction", "amount", "currency", "memo"),
    "stripe_payout": _TRADE_CORE + ("channel_refund_id",),
    "adyen_settlement": tuple(f for f in _TRADE_CORE if f != "description") + ("channel_merchant_id",
                                                                                "channel_refund_id"),
}


def m(value: Decimal | None) -> str:
    """An amount as the channels print it: plain, two decimals, no thousands separator."""
    return "0.00" if value is None else f"{value:.2f}"


def _ts(value: datetime | None) -> str:
    return "" if value is None else value.strftime(TS)


def _s(value: Any) -> str:
    return "" if value is None else str(value)


class _GbkZipInfo(zipfile.ZipInfo):
    """A ZIP entry whose name is stored in GBK without the UTF-8 flag, as Alipay's server writes it."""

    def _encodeFilenameFlags(self):  # noqa: N802 - zipfile's own hook
        try:
            return self.filename.encode("ascii"), self.flag_bits
        except UnicodeEncodeError:
            return self.filename.encode("gbk"), self.flag_bits & ~0x800


def _zip_entry(zf: zipfile.ZipFile, name: str, gbk_name: bool = True):
    info = _GbkZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)) if gbk_name else zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return zf.open(info, "w", force_zip64=True)


class _TextSink:
    """Buffered text writer over a binary stream with a fixed encoding and line ending."""

    def __init__(self, raw, encoding: str, newline: str, bom: bool = False):
        self.raw, self.encoding, self.newline = raw, encoding, newline
        self.buf: list[str] = []
        self.size = 0
        if bom:
            raw.write(codecs.BOM_UTF8)

    def line(self, text: str) -> None:
        self.buf.append(text)
        self.size += 1
        if self.size >= 4096:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.raw.write((self.newline.join(self.buf) + self.newline).encode(self.encoding))
            self.buf, self.size = [], 0


# ------------------------------------------------------------------ WeChat Pay
WECHAT_ALL = ["交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识", "交易类型",
              "交易状态", "付款银行", "货币种类", "应结订单金额", "代金券金额", "微信退款单号", "商户退款单号", "退款金额",
              "充值券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包", "手续费", "费率", "订单金额", "申请退款金额",
              "费率备注"]
WECHAT_SUCCESS = [c for c in WECHAT_ALL if c not in ("微信退款单号", "商户退款单号", "退款金额", "充值券退款金额", "退款类型",
                                                     "退款状态", "申请退款金额")]
WECHAT_REFUND = (WECHAT_ALL[:14] + ["退款申请时间", "退款成功时间"] + WECHAT_ALL[14:])
WECHAT_SUMMARY = ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额"]
_WX_PAY_STATUS = {"success": "SUCCESS", "revoked": "REVOKED", "closed": "CLOSED", "refunded": "SUCCESS"}
_WX_REFUND_STATUS = {"success": "SUCCESS", "processing": "PROCESSING", "failed": "FAIL", "closed": "REFUNDCLOSE"}


def write_wechat_trade(rows: Iterable[dict], path: Path | str, *, bill_type: str = "ALL", gzip: bool = False,
                       encoding: str = "utf-8", bom: bool = False, newline: str = "\n",
                       appid: str = "wx2421b1c4370ec43b", fee_rate: str = "0.60%") -> Path:
    """WeChat Pay trade bill: backtick before every value, summary header + values as the last two lines.

    ``bill_type`` ALL (payments and refunds), SUCCESS (payments only, no refund columns) or
    REFUND (refunds only, with 退款申请时间/退款成功时间).
    """
    header = {"ALL": WECHAT_ALL, "SUCCESS": WECHAT_SUCCESS, "REFUND": WECHAT_REFUND}[bill_type]
    path = Path(path)
    raw = _gzip.open(path, "wb") if gzip else open(path, "wb")
    n, settle_t, refund_t, fee_t, order_t, req_t = 0, ZERO, ZERO, ZERO, ZERO, ZERO
    with raw:
        out = _TextSink(raw, encoding, newline, bom)
        out.line(",".join(header))
        for r in rows:
            refund = r["txn_type"] == "refund"
            if bill_type == "SUCCESS" and refund or bill_type == "REFUND" and not refund:
                raise ValueError(f"a {bill_type} bill cannot hold a {r['txn_type']} row")
            amount, fee = r["amount"], r.get("fee") or ZERO
            settle = ZERO if refund else amount
            v = {"交易时间": _ts(r.get("txn_time")), "公众账号ID": appid, "商户号": _s(r.get("channel_merchant_id")),
                 "特约商户号": "0", "设备号": "", "微信订单号": _s(r.get("channel_txn_id")),
                 "商户订单号": _s(r.get("merchant_order_no")), "用户标识": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                 "交易类型": "NATIVE", "交易状态": "REFUND" if refund else _WX_PAY_STATUS[r.get("status") or "success"],
                 "付款银行": "OTHERS", "货币种类": _s(r.get("currency") or "CNY"), "应结订单金额": m(settle),
                 "代金券金额": "0.00", "微信退款单号": _s(r.get("channel_refund_id")) if refund else "0",
                 "商户退款单号": _s(r.get("merchant_refund_no")) if refund else "0",
                 "退款金额": m(amount if refund else ZERO), "充值券退款金额": "0.00",
                 "退款类型": "ORIGINAL" if refund else "",
                 "退款状态": _WX_REFUND_STATUS[r.get("status") or "success"] if refund else "",
                 "商品名称": _s(r.get("description")), "商户数据包": "", "手续费": f"{fee:.5f}", "费率": fee_rate,
                 "订单金额": m(ZERO if refund else amount), "申请退款金额": m(amount if refund else ZERO),
                 "费率备注": "", "退款申请时间": _ts(r.get("txn_time")), "退款成功时间": _ts(r.get("txn_time"))}
            out.line(",".join("`" + v[c] for c in header))
            n += 1
            settle_t += settle
            fee_t += fee
            if refund:
                refund_t += amount
                req_t += amount
            else:
                order_t += amount
        out.line(",".join(WECHAT_SUMMARY))
        out.line(",".join("`" + x for x in (str(n), m(settle_t), m(refund_t), "0.00", f"{fee_t:.5f}", m(order_t),
                                             m(req_t))))
        out.flush()
    return path


WECHAT_FUNDFLOW = ["记账时间", "微信支付业务单号", "资金流水单号", "业务名称", "业务类型", "收支类型", "收支金额（元）",
                   "账户结余（元）", "资金变更提交申请人", "备注", "业务凭证号"]
WECHAT_FUNDFLOW_SUMMARY = ["资金流水总笔数", "收入笔数", "收入金额", "支出笔数", "支出金额"]


def write_wechat_fundflow(rows: Iterable[dict], path: Path | str, *, gzip: bool = False, encoding: str = "utf-8",
                          bom: bool = False, newline: str = "\n", ascii_parens: bool = False,
                          opening_balance: Decimal = Decimal("10000.00")) -> Path:
    """WeChat Pay fund-flow bill (BASIC / OPERATION / FEES share the layout)."""
    header = [h.replace("（", "(").replace("）", ")") for h in WECHAT_FUNDFLOW] if ascii_parens else WECHAT_FUNDFLOW
    path = Path(path)
    raw = _gzip.open(path, "wb") if gzip else open(path, "wb")
    balance = opening_balance
    cnt = {"in": 0, "out": 0}
    tot = {"in": ZERO, "out": ZERO}
    with raw:
        out = _TextSink(raw, encoding, newline, bom)
        out.line(",".join(header))
        for r in rows:
            d = r["direction"]
            balance += r["amount"] if d == "in" else -r["amount"]
            cnt[d] += 1
            tot[d] += r["amount"]
            vals = [_ts(r.get("booked_at")), _s(r.get("channel_txn_id")), _s(r.get("movement_id")),
                    _s(r.get("biz_type")), _s(r.get("biz_type")), "收入" if d == "in" else "支出", m(r["amount"]),
                    m(balance), "1900000109API", _s(r.get("memo")), _s(r.get("reference"))]
            out.line(",".join("`" + x for x in vals))
        out.line(",".join(WECHAT_FUNDFLOW_SUMMARY))
        out.line(",".join("`" + x for x in (str(cnt["in"] + cnt["out"]), str(cnt["in"]), m(tot["in"]),
                                             str(cnt["out"]), m(tot["out"]))))
        out.flush()
    return path


# ------------------------------------------------------------------ Alipay
ALIPAY_TRADE = ["支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称", "操作员",
                "终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）",
                "商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）", "卡消费金额（元）", "退款批次号/请求号",
                "服务费（元）", "分润（元）", "备注"]
ALIPAY_ISV_EXTRA = ["商户ID", "手续费（元）", "费率", "实收净额（元）"]
ALIPAY_FUNDS = ["账务流水号", "业务流水号", "商户订单号", "商品名称", "发生时间", "对方账号", "收入金额（+元）",
                "支出金额（-元）", "账户余额（元）", "交易渠道", "业务类型", "备注"]
DASHES = "-" * 41


def _cn_date(d: date) -> str:
    return f"{d.year}年{d.month:02d}月{d.day:02d}日"


def _alipay_head(title: str, account: str, bill_date: date, marker: str) -> list[str]:
    end = bill_date + timedelta(days=1)
    return [f"#{title}", f"#账号：[{account}]",
            f"#起始日期：[{_cn_date(bill_date)} 00:00:00]   终止日期：[{_cn_date(end)} 00:00:00]",
            f"#{DASHES}{marker}{DASHES}"]


def _alipay_trade_lines(rows: Iterable[dict], account: str, bill_date: date, isv: bool, totals: dict):
    header = ALIPAY_TRADE + (ALIPAY_ISV_EXTRA if isv else [])
    yield from _alipay_head("支付宝业务明细查询", account, bill_date, "业务明细列表")
    yield ",".join(header)
    for r in rows:
        refund = r["txn_type"] == "refund"
        amount, fee = r["amount"], r.get("fee") or ZERO
        sign = -1 if refund else 1
        recv = sign * amount
        t = _ts(r.get("txn_time"))
        vals = [_s(r.get("channel_txn_id")) + "\t", _s(r.get("merchant_order_no")) + "\t",
                ("退款" if refund else "交易") + "\t", _s(r.get("description")), t, t, "\t", "\t", "\t", "\t",
                "**明(156******89)\t", m(recv), m(recv), "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00\t", "0.00",
                (_s(r.get("merchant_refund_no")) if refund else "") + "\t", m(-fee), "0.00", ""]
        if isv:
            vals += [_s(r.get("channel_merchant_id")) + "\t", m(-fee), "0.6%", m(r["net"])]
        yield ",".join(vals)
        key = "refund" if refund else "payment"
        totals[key][0] += 1
        totals[key][1] += recv
        totals["fee"] += fee
        totals["net"] += r["net"]
    yield f"#{DASHES}业务明细列表结束{DASHES[:-5]}"
    p, f = totals["payment"], totals["refund"]
    yield f"#交易合计：{p[0]}笔，商家实收共{m(p[1])}元，商家优惠共0.00元"
    yield f"#退款合计：{f[0]}笔，商家实收共{m(f[1])}元，商家优惠共0.00元"
    yield f"#导出时间：[{_cn_date(bill_date + timedelta(days=1))} 09:30:00]"


def _alipay_funds_lines(rows: Iterable[dict], account: str, bill_date: date, totals: dict,
                        opening_balance: Decimal):
    yield from _alipay_head("支付宝账务明细查询", account, bill_date, "账务明细列表")
    yield ",".join(ALIPAY_FUNDS)
    balance = opening_balance
    for r in rows:
        d, amount = r["direction"], r["amount"]
        balance += amount if d == "in" else -amount
        vals = [_s(r.get("movement_id")) + "\t", _s(r.get("channel_txn_id")) + "\t",
                _s(r.get("reference")) + "\t", "", _ts(r.get("booked_at")), "**明(156******89)\t",
                m(amount) if d == "in" else "0.00", m(-amount) if d == "out" else "0.00", m(balance), "支付宝\t",
                _s(r.get("biz_type")) + "\t", _s(r.get("memo"))]
        yield ",".join(vals)
        totals[d][0] += 1
        totals[d][1] += amount
    yield f"#{DASHES}账务明细列表结束{DASHES[:-5]}"
    yield f"#收入合计：{totals['in'][0]}笔，共{m(totals['in'][1])}元"
    yield f"#支出合计：{totals['out'][0]}笔，共{m(-totals['out'][1])}元"
    yield f"#导出时间：[{_cn_date(bill_date + timedelta(days=1))} 09:30:00]"


def _alipay_trade_summary(account: str, bill_date: date, totals: dict) -> list[str]:
    p, f = totals["payment"], totals["refund"]
    return _alipay_head("支付宝业务汇总查询", account, bill_date, "业务汇总列表") + [
        "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,"
        "卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）",
        f"合计,,{p[0]},{f[0]},{m(p[1] + f[1])},{m(p[1] + f[1])},0.00,0.00,0.00,{m(-totals['fee'])},0.00,"
        f"{m(totals['net'])}",
        f"#{DASHES}业务汇总列表结束{DASHES[:-5]}",
        f"#导出时间：[{_cn_date(bill_date + timedelta(days=1))} 09:30:00]"]


def _alipay_funds_summary(account: str, bill_date: date, totals: dict) -> list[str]:
    return _alipay_head("支付宝账务汇总查询", account, bill_date, "账务汇总列表") + [
        "收入笔数,收入金额（+元）,支出笔数,支出金额（-元）",
        f"{totals['in'][0]},{m(totals['in'][1])},{totals['out'][0]},{m(-totals['out'][1])}",
        f"#{DASHES}账务汇总列表结束{DASHES[:-5]}"]


def _write_lines(stream, lines: Iterable[str], encoding: str, newline: str) -> None:
    out = _TextSink(stream, encoding, newline)
    for ln in lines:
        out.line(ln)
    out.flush()


def _write_alipay(path: Path, lines: Iterable[str], summary: Callable[[], list[str]], entry: str, as_zip: bool,
                  encoding: str, newline: str) -> Path:
    """The detail lines as a bare CSV, or a ZIP of ``entry.csv`` and ``entry(汇总).csv``.

    ``lines`` fills the totals as it is written, so ``summary`` is called only after it.
    """
    if not as_zip:
        with open(path, "wb") as fh:
            _write_lines(fh, lines, encoding, newline)
        return path
    with zipfile.ZipFile(path, "w") as zf:
        with _zip_entry(zf, f"{entry}.csv") as fh:
            _write_lines(fh, lines, encoding, newline)
        with _zip_entry(zf, f"{entry}(汇总).csv") as fh:
            _write_lines(fh, summary(), encoding, newline)
    return path


def write_alipay_trade(rows: Iterable[dict], path: Path | str, *, bill_date: date,
                       account: str = "20887226827483540156", isv: bool = False, as_zip: bool = True,
                       encoding: str = "gbk", newline: str = "\r\n") -> Path:
    """Alipay trade bill (业务明细). As delivered: a ZIP with GBK content and GBK entry names
    (no UTF-8 flag) holding ``…_业务明细.csv`` and ``…_业务明细(汇总).csv``. ``as_zip=False``
    writes the bare detail CSV. ``isv=True`` adds the ISV columns 商户ID, 手续费, 费率, 实收净额."""
    path = Path(path)
    totals = {"payment": [0, ZERO], "refund": [0, ZERO], "fee": ZERO, "net": ZERO}
    stem = f"{account}_{bill_date:%Y%m%d}"
    return _write_alipay(path, _alipay_trade_lines(rows, account, bill_date, isv, totals),
                         lambda: _alipay_trade_summary(account, bill_date, totals), f"{stem}_业务明细", as_zip,
                         encoding, newline)


def write_alipay_funds(rows: Iterable[dict], path: Path | str, *, bill_date: date,
                       account: str = "20887226827483540156", as_zip: bool = True, encoding: str = "gbk",
                       newline: str = "\r\n", opening_balance: Decimal = Decimal("10000.00")) -> Path:
    """Alipay fund bill (账务明细), as a GBK ZIP with GBK entry names (detail + 汇总)."""
    path = Path(path)
    totals = {"in": [0, ZERO], "out": [0, ZERO]}
    stem = f"{account}_{bill_date:%Y%m%d}"
    return _write_alipay(path, _alipay_funds_lines(rows, account, bill_date, totals, opening_balance),
                         lambda: _alipay_funds_summary(account, bill_date, totals), f"{stem}_账务明细", as_zip,
                         encoding, newline)


# ------------------------------------------------------------------ UnionPay
ZM_WIDTHS = [3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21, 15, 1, 15,
             32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98]
ZM_CODES = {"payment": "S56", "refund": "S30"}   # S56 is in the real sample; S30 (退货) is not verified


def _fen(value: Decimal) -> int:
    fen = value * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"amount {value} has digits below the fen")
    return int(fen)


def _signed(value: Decimal, credit_positive: bool = True) -> str:
    """UnionPay's sign + 12 digits: C credit to the merchant, D debit."""
    credit = value >= 0 if credit_positive else value < 0
    return ("C" if credit else "D") + f"{abs(_fen(value)):012d}"


def _zm_record(r: dict, i: int, mid: str) -> bytes:
    refund = r["txn_type"] == "refund"
    t: datetime = r["txn_time"]
    fee, net = r.get("fee") or ZERO, r["net"]
    f = [""] * 42
    f[0] = ZM_CODES["refund" if refund else "payment"]
    f[1], f[2], f[3] = "88022900", "00049993", f"{(100000 + i) % 1000000:06d}"
    f[4] = t.strftime("%m%d%H%M%S")
    f[5] = _s(r.get("card_no_masked"))
    f[6] = f"{_fen(r['amount']):012d}"
    f[7], f[8] = "4899", "07"
    f[9] = _s(r.get("channel_refund_id") if refund else r.get("channel_txn_id"))
    f[10] = "01"
    f[11] = _s(r.get("merchant_order_no"))
    f[12] = "01"
    f[15] = _signed(-fee)        # a fee the merchant pays is a debit (D)
    f[16] = _signed(net)
    f[17], f[19], f[21] = "0001", "04" if refund else "01", "000201"
    f[26] = _s(r.get("channel_txn_id")) if refund else ""
    f[27] = _s(r.get("channel_merchant_id") or mid)
    f[29] = "0" * 15
    f[31] = " " + "0" * 12
    f[32] = _signed(net)
    f[33] = "01080209"
    f[35], f[36], f[37] = " " + "0" * 12, " " + "0" * 12, " " + "0" * 11
    f[39] = "7"
    out = []
    for value, width in zip(f, ZM_WIDTHS):
        b = value.encode("gbk")
        if len(b) > width:
            raise ValueError(f"UnionPay field {value!r} is wider than {width} bytes")
        out.append(b + b" " * (width - len(b)))
    return b" ".join(out)


def _rd_report(mid: str, clearing: date, n: int, debit: Decimal, credit: Decimal, fee_d: Decimal, fee_c: Decimal,
               net_d: Decimal, net_c: Decimal) -> str:
    bar = "_" * 136
    row = (f"{n:>8}{m(debit):>16}{m(credit):>16}{m(fee_d):>16}{m(fee_c):>16}{m(net_d):>16}{m(net_c):>16}")
    zero = f"{0:>8}" + "".join(f"{'0.00':>16}" for _ in range(6))
    head = ("交易类型            交易笔数               交易金额                         费用"
            "                              资金清算差额")
    sub = " " * 41 + "借              贷              借              贷               借                  贷"
    lines = [" " * 73 + "中国银联全渠道商户交易汇总表" + " " * 12, "",
             f"商户代码:{mid}" + " " * 40 + "清算币种:人民币",
             "收单机构:88022900" + " " * 47 + f"清算日期:{clearing:%Y%m%d}",
             "商户名称:测试商户" + " " * 47 + f"生成日期:{clearing + timedelta(days=1):%Y%m%d}", "", "",
             head, sub, bar, "自助消费           " + row, bar, "总计               " + row, "",
             head.replace("交易类型", "卡性质  "), sub, bar, "借记卡             " + row, "贷记卡             " + zero,
             "准贷记卡           " + zero, "其他卡             " + zero, bar, "总计               " + row]
    return "\r\n".join(lines) + "\r\n"


def write_unionpay_zm(rows: Iterable[dict], path: Path | str, *, clearing_date: date,
                      merchant_id: str = "802310048993424", as_zip: bool = True) -> Path:
    """UnionPay 全渠道 ZM file (607-byte fixed-width GBK records, CRLF, fen with C/D signs) and its
    RD summary report, both in one ZIP as UnionPay delivers them (``as_zip=False``: bare ZM file)."""
    path = Path(path)
    yymmdd = f"{clearing_date:%y%m%d}"
    t = {"n": 0, "debit": ZERO, "credit": ZERO, "fee_d": ZERO, "fee_c": ZERO, "net_d": ZERO, "net_c": ZERO}

    def records(fh) -> None:
        chunk: list[bytes] = []
        for i, r in enumerate(rows):
            chunk.append(_zm_record(r, i, merchant_id) + b"\r\n")
            if len(chunk) >= 4096:
                fh.write(b"".join(chunk))
                chunk.clear()
            t["n"] += 1
            t["debit" if r["txn_type"] == "refund" else "credit"] += r["amount"]
            fee, net = r.get("fee") or ZERO, r["net"]
            if fee >= 0:
                t["fee_d"] += fee
            else:
                t["fee_c"] -= fee
            if net >= 0:
                t["net_c"] += net
            else:
                t["net_d"] -= net
        fh.write(b"".join(chunk))

    if not as_zip:
        with open(path, "wb") as fh:
            records(fh)
        return path
    with zipfile.ZipFile(path, "w") as zf:
        with _zip_entry(zf, f"INN{yymmdd}88ZM_{merchant_id}", gbk_name=False) as fh:
            records(fh)
        with _zip_entry(zf, f"RD2010{yymmdd}01_{merchant_id}", gbk_name=False) as fh:
            fh.write(_rd_report(merchant_id, clearing_date, t["n"], t["debit"], t["credit"], t["fee_d"], t["fee_c"],
                                t["net_d"], t["net_c"]).encode("gbk"))
    return path


# ------------------------------------------------------------------ bank statements
BANK_COLUMNS = ["交易日期", "交易流水号", "对方户名", "对方账号", "摘要", "借方发生额（支出）", "贷方发生额（收入）", "余额", "币种",
                "用途"]


def _bank_rows(rows: Iterable[dict], opening_balance: Decimal):
    balance = opening_balance
    for r in rows:
        d, amount = r["direction"], r["amount"]
        balance += amount if d == "in" else -amount
        yield r, [r["value_date"].strftime("%Y-%m-%d"), _s(r.get("reference")), _s(r.get("counterparty")),
                  _s(r.get("counterparty_account")), _s(r.get("memo")), m(amount) if d == "out" else "",
                  m(amount) if d == "in" else "", m(balance), _s(r.get("currency") or "CNY"), ""], balance


def _csv_line(values: list[str], delimiter: str = ",") -> str:
    out = []
    for v in values:
        if any(ch in v for ch in (delimiter, '"', "\n", "\r")):
            v = '"' + v.replace('"', '""') + '"'
        out.append(v)
    return delimiter.join(out)


def write_bank_csv(rows: Iterable[dict], path: Path | str, *, account: str = "6222020200112233445",
                   account_name: str = "Demo Pay Ltd", encoding: str = "gbk", newline: str = "\r\n",
                   bom: bool = False, opening_balance: Decimal = Decimal("100000.00")) -> Path:
    """Bank statement CSV: a few title lines (account), the column header, one line per movement."""
    path = Path(path)
    with open(path, "wb") as fh:
        out = _TextSink(fh, encoding, newline, bom)
        out.line(f"账号：{account}")
        out.line(f"户名：{account_name}")
        out.line(",".join(BANK_COLUMNS))
        for _, vals, _ in _bank_rows(rows, opening_balance):
            out.line(_csv_line(vals))
        out.flush()
    return path


def write_bank_xlsx(rows: Iterable[dict], path: Path | str, *, account: str = "6222020200112233445",
                    account_name: str = "Demo Pay Ltd", opening_balance: Decimal = Decimal("100000.00")) -> Path:
    """Bank statement .xlsx (streamed with openpyxl's write-only mode): title rows, header, numeric amounts."""
    from openpyxl import Workbook

    path = Path(path)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("对账单")
    ws.append([f"账号：{account}"])
    ws.append([f"户名：{account_name}"])
    ws.append(BANK_COLUMNS)
    for r, vals, balance in _bank_rows(rows, opening_balance):
        amount = r["amount"]
        vals[0] = r["value_date"]
        vals[5] = amount if r["direction"] == "out" else None
        vals[6] = amount if r["direction"] == "in" else None
        vals[7] = balance
        ws.append(vals)
    wb.save(path)
    return path


# ------------------------------------------------------------------ Stripe / Adyen
STRIPE_COLUMNS = ["balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee", "net",
                  "reporting_category", "source_id", "description", "automatic_payout_id",
                  "automatic_payout_effective_at_utc", "charge_id", "payment_intent_id", "payment_metadata[order_id]"]


def write_stripe_payout(rows: Iterable[dict], path: Path | str, *, payout_id: str = "po_1Demo",
                        payout_at: datetime | None = None) -> Path:
    """Stripe payout reconciliation report (itemized), major units, lower-case currency."""
    path = Path(path)
    with open(path, "wb") as fh:
        out = _TextSink(fh, "utf-8", "\n")
        out.line(",".join(STRIPE_COLUMNS))
        for i, r in enumerate(rows):
            refund = r["txn_type"] == "refund"
            gross = -r["amount"] if refund else r["amount"]
            t = _ts(r.get("txn_time"))
            vals = [f"txn_{i:08d}", t, t, (r.get("currency") or "usd").lower(), m(gross), m(r.get("fee") or ZERO),
                    m(r["net"]), "refund" if refund else "charge",
                    _s(r.get("channel_refund_id")) if refund else _s(r.get("channel_txn_id")),
                    _s(r.get("description")), payout_id, _ts(payout_at or r.get("txn_time")),
                    _s(r.get("channel_txn_id")), "", _s(r.get("merchant_order_no"))]
            out.line(_csv_line(vals))
        out.flush()
    return path


ADYEN_COLUMNS = ["Company Account", "Merchant Account", "Psp Reference", "Merchant Reference", "Payment Method",
                 "Creation Date", "TimeZone", "Type", "Modification Reference", "Gross Currency", "Gross Debit (GC)",
                 "Gross Credit (GC)", "Exchange Rate", "Net Currency", "Net Debit (NC)", "Net Credit (NC)",
                 "Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)", "Payment Method Variant",
                 "Modification Merchant Reference", "Batch Number"]


def write_adyen_settlement(rows: Iterable[dict], path: Path | str, *, batch: int = 1,
                           company: str = "DemoCompany", merchant_account: str = "DemoMerchantECOM") -> Path:
    """Adyen settlement details report: Settled / Refunded rows, then one MerchantPayout per currency."""
    path = Path(path)
    payout: dict[str, Decimal] = {}
    last_time = ""
    with open(path, "wb") as fh:
        out = _TextSink(fh, "utf-8", "\n")
        out.line(",".join(ADYEN_COLUMNS))
        for r in rows:
            refund = r["txn_type"] == "refund"
            ccy, amount, fee, net = r.get("currency") or "EUR", r["amount"], r.get("fee") or ZERO, r["net"]
            last_time = _ts(r.get("txn_time"))
            vals = [company, _s(r.get("channel_merchant_id") or merchant_account), _s(r.get("channel_txn_id")),
                    _s(r.get("merchant_order_no")), "visa", last_time, "CET", "Refunded" if refund else "Settled",
                    _s(r.get("channel_refund_id")) if refund else _s(r.get("channel_txn_id")), ccy,
                    m(amount) if refund else "", "" if refund else m(amount), "1", ccy,
                    m(-net) if net < 0 else "", m(net) if net >= 0 else "", m(fee), "", "", "", "visadebit",
                    "", str(batch)]
            out.line(_csv_line(vals))
            payout[ccy] = payout.get(ccy, ZERO) + net
        for ccy, total in payout.items():
            vals = [company, merchant_account, "", f"batch {batch} payout", "", last_time, "CET", "MerchantPayout",
                    f"payout-{batch}-{ccy}", "", "", "", "", ccy, m(total) if total >= 0 else "",
                    m(-total) if total < 0 else "", "", "", "", "", "", "", str(batch)]
            out.line(_csv_line(vals))
        out.flush()
    return path


WRITERS = {
    "wechat_trade": write_wechat_trade,
    "wechat_fundflow": write_wechat_fundflow,
    "alipay_trade": write_alipay_trade,
    "alipay_funds": write_alipay_funds,
    "unionpay_zm": write_unionpay_zm,
    "bank_csv": write_bank_csv,
    "bank_xlsx": write_bank_xlsx,
    "stripe_payout": write_stripe_payout,
    "adyen_settlement": write_adyen_settlement,
}
