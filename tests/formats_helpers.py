"""Canonical rows for format tests: deterministic, varied, in the sign conventions of loaders.writers."""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pyarrow.compute as pc

CENT = Decimal("0.01")
WORDS = ["咖啡", "图书", "demo goods", "会员 月卡", "Tee shirt", "外卖套餐", "电影票"]


def money(rng: random.Random, lo: int = 1, hi: int = 5_000_00) -> Decimal:
    return Decimal(rng.randint(lo, hi)) * CENT


def trade_rows(n: int, seed: int = 1, *, day: date = date(2026, 6, 5), currencies=("CNY",), refunds: bool = True,
               statuses: bool = False, comma_ok: bool = False, mch: str | None = "1900000109",
               card: bool = False) -> list[dict]:
    rng = random.Random(seed)
    out = []
    t0 = datetime.combine(day, datetime.min.time())
    for i in range(n):
        amount = money(rng)
        fee = (amount * Decimal("0.006")).quantize(CENT, rounding=ROUND_HALF_UP)   # half-up to the fen
        refund = refunds and rng.random() < 0.25
        desc = rng.choice(WORDS + (["bag, large"] if comma_ok else []))
        row = {"txn_type": "refund" if refund else "payment", "channel_txn_id": f"42000{seed:03d}{i:010d}",
               "merchant_order_no": f"P{seed}-{i}", "channel_refund_id": f"5000{i:08d}" if refund else None,
               "merchant_refund_no": f"R{seed}-{i}" if refund else None, "channel_merchant_id": mch,
               "status": "success", "currency": rng.choice(currencies), "amount": amount,
               "fee": -fee if refund else fee, "net": (-amount + fee) if refund else amount - fee,
               "txn_time": t0 + timedelta(seconds=rng.randint(0, 86399)),
               "card_no_masked": "622609******0048" if card else None, "description": desc}
        if statuses and not refund:
            row["status"] = rng.choice(["success", "success", "revoked", "closed"])
        if statuses and refund:
            row["status"] = rng.choice(["success", "processing", "failed", "closed"])
        out.append(row)
    return out


def funds_rows(n: int, seed: int = 1, day: date = date(2026, 6, 5)) -> list[dict]:
    rng = random.Random(seed)
    t0 = datetime.combine(day, datetime.min.time())
    return [{"movement_id": f"M{seed}{i:08d}", "channel_txn_id": f"42000{i:012d}", "reference": f"P{i}",
             "direction": rng.choice(["in", "in", "out"]), "amount": money(rng), "currency": "CNY",
             "booked_at": t0 + timedelta(seconds=rng.randint(0, 86399)), "biz_type": rng.choice(["交易", "退款"]),
             "memo": rng.choice([None, "结算", "退款总金额0.01元"])} for i in range(n)]


def bank_rows(n: int, seed: int = 1, day: date = date(2026, 6, 6)) -> list[dict]:
    rng = random.Random(seed)
    payers = [("财付通支付科技有限公司", "wechat"), ("支付宝（中国）网络技术有限公司", "alipay"),
              ("中国银联股份有限公司", "unionpay"), ("某某贸易有限公司", None)]
    out = []
    for i in range(n):
        cp, ch = rng.choice(payers)
        out.append({"value_date": day, "counterparty": cp, "payer_channel": ch, "reference": f"B{seed}{i:06d}",
                    "direction": "in" if ch else rng.choice(["in", "out"]), "amount": money(rng, 100, 10_000_000),
                    "currency": "CNY", "memo": rng.choice(["结算款", "settlement, daily", None])})
    return out


def project(rows: list[dict], fields) -> list[tuple]:
    return [tuple(r.get(f) for f in fields) for r in rows]


def parsed_rows(table, fields) -> list[tuple]:
    return [tuple(r[f] for f in fields) for r in table.to_pylist()]


def amount_total(table) -> Decimal:
    s = pc.sum(table.column("amount")).as_py()
    return Decimal("0.00") if s is None else s
