"""What a team would otherwise write: the same day's matching in plain pandas, on the same files.

Read every statement with pandas (``read_csv`` / ``read_fwf``, ZIPs opened with
``zipfile``), read the platform's day from SQLite with ``pandas.read_sql``, then

- information flow: platform orders + refunds against the channel rows, one
  ``merge(how="outer", indicator=True)`` on (channel, match key, occurrence),
  classified with ``numpy.select`` in the pipeline's order (duplicate,
  missing_in_platform, missing_in_channel, currency, status, amount, fee);
- funds flow: WeChat's fund-flow entries against the expected movements per
  reference (``groupby`` + outer merge), long/short; internal consistency
  (successful orders against expected movements); and the bank's lump sum per
  channel against the net of the channel's statement of T−1 (many-to-one).

Amounts become integer fen (``to_numeric`` × 100, rounded: exact for these
magnitudes), as a careful team would do. It runs in its own process
(``python -m benchmarks.pandas_baseline``) so its peak memory is its own, and
prints one JSON object: seconds per stage and breaks per type, for the
benchmark to compare with the pipeline's.

``--datacompy`` also compares the WeChat payments (platform vs channel, joined
on the order number) with datacompy, the off-the-shelf tool where it applies.
"""
from __future__ import annotations

import argparse
import io
import json
import sqlite3
import sys
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

FEE = {"wechat": (6, 1000), "alipay": (6, 1000), "unionpay": (5, 1000)}
ZM_WIDTHS = (3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21, 15, 1, 15,
             32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)


def fen(s: pd.Series) -> pd.Series:
    return (pd.to_numeric(s) * 100).round().astype("int64")


def _bt(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: df[c].str.lstrip("`") for c in cols})


# ------------------------------------------------------------------ readers
def read_wechat_trade(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[df["交易时间"].str.startswith("`20")]                    # drop the two summary lines
    df = _bt(df, ["交易时间", "微信订单号", "商户订单号", "交易状态", "货币种类", "应结订单金额", "商户退款单号", "退款金额",
                  "退款状态", "手续费", "订单金额"])
    refund = df["交易状态"] == "REFUND"
    return pd.DataFrame({
        "channel": "wechat", "txn_type": np.where(refund, "refund", "payment"),
        "key": np.where(refund, "refund:" + df["商户退款单号"], "payment:" + df["商户订单号"]),
        "status": np.where(refund, df["退款状态"].str.lower(), df["交易状态"].map({"SUCCESS": "success", "REVOKED": "revoked",
                                                                              "CLOSED": "closed"})),
        "currency": df["货币种类"],
        "amount": np.where(refund, fen(df["退款金额"]), fen(df["订单金额"])),
        "fee": fen(df["手续费"]), "time": df["交易时间"],
        "net": np.where(refund, -fen(df["退款金额"]), fen(df["应结订单金额"])) - fen(df["手续费"]),
    })


def read_wechat_funds(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[df["记账时间"].str.startswith("`20")]
    df = _bt(df, ["微信支付业务单号", "资金流水单号", "收支类型", "收支金额（元）", "业务凭证号"])
    amount = fen(df["收支金额（元）"])
    ref = df["业务凭证号"].where(df["业务凭证号"] != "", df["微信支付业务单号"])
    return pd.DataFrame({"channel": "wechat", "ref": ref,
                         "net": np.where(df["收支类型"] == "收入", amount, -amount)})


def read_alipay(path: Path) -> pd.DataFrame:
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.encode("cp437").decode("gbk").endswith("业务明细.csv"))
        with zf.open(info) as raw:
            df = pd.read_csv(io.TextIOWrapper(raw, encoding="gbk"), dtype=str, comment="#", keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    df = pd.DataFrame({c: df[c].str.strip() for c in ("商户订单号", "业务类型", "完成时间", "订单金额（元）", "服务费（元）",
                                                      "退款批次号/请求号")})
    refund = df["业务类型"] == "退款"
    amount = fen(df["订单金额（元）"]).abs()
    fee = fen(df["服务费（元）"]).abs()
    fee = np.where(refund, -fee, fee)
    return pd.DataFrame({
        "channel": "alipay", "txn_type": np.where(refund, "refund", "payment"),
        "key": np.where(refund, "refund:" + df["退款批次号/请求号"], "payment:" + df["商户订单号"]),
        "status": "success", "currency": "CNY", "amount": amount, "fee": fee, "time": df["完成时间"],
        "net": np.where(refund, -amount, amount) - fee})


def read_unionpay(path: Path) -> pd.DataFrame:
    starts = np.cumsum((0,) + tuple(w + 1 for w in ZM_WIDTHS))
    spec = {"time": 4, "amount": 6, "order": 11, "fee": 15, "net": 16}
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "ZM_" in i.filename)
        with zf.open(info) as raw:
            df = pd.read_fwf(io.TextIOWrapper(raw, encoding="gbk"), header=None, dtype=str,
                             colspecs=[(int(starts[i]), int(starts[i] + ZM_WIDTHS[i])) for i in spec.values()],
                             names=list(spec))
    sign = lambda s: np.where(s.str[0] == "C", 1, -1) * s.str[1:].astype("int64")  # noqa: E731
    return pd.DataFrame({"channel": "unionpay", "txn_type": "payment", "key": "payment:" + df["order"],
                         "status": "success", "currency": "CNY", "amount": df["amount"].astype("int64"),
                         "fee": -sign(df["fee"]), "time": df["time"], "net": sign(df["net"])})


def read_bank(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, skiprows=2, encoding="gbk", keep_default_na=False)
    payer = {"财付通支付科技有限公司": "wechat", "支付宝（中国）网络技术有限公司": "alipay", "中国银联股份有限公司": "unionpay"}
    credit = df["贷方发生额（收入）"] != ""
    return pd.DataFrame({"channel": df["对方户名"].map(payer)[credit],
                         "amount": fen(df["贷方发生额（收入）"][credit])})


def read_platform(db: Path, d: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    start, end = f"{d} 00:00:00", f"{d + timedelta(days=1)} 00:00:00"
    con = sqlite3.connect(db)
    orders = pd.read_sql("SELECT order_no, channel, amount, currency, status, paid_at FROM payment_orders "
                         "WHERE paid_at >= ? AND paid_at < ?", con, params=[start, end])
    refunds = pd.read_sql("SELECT refund_no, order_no, channel, amount, currency, status, refunded_at "
                          "FROM refund_orders WHERE refunded_at >= ? AND refunded_at < ?", con, params=[start, end])
    funds = pd.read_sql("SELECT channel, order_no, refund_no, direction, amount FROM expected_fund_movements "
                        "WHERE expected_at >= ? AND expected_at < ?", con, params=[start, end])
    con.close()
    p = pd.concat([
        pd.DataFrame({"channel": orders["channel"], "txn_type": "payment", "key": "payment:" + orders["order_no"],
                      "ref": orders["order_no"], "status": orders["status"], "currency": orders["currency"],
                      "amount": fen(orders["amount"]), "time": orders["paid_at"]}),
        pd.DataFrame({"channel": refunds["channel"], "txn_type": "refund", "key": "refund:" + refunds["refund_no"],
                      "ref": refunds["refund_no"], "status": refunds["status"], "currency": refunds["currency"],
                      "amount": fen(refunds["amount"]), "time": refunds["refunded_at"]})], ignore_index=True)
    e = pd.DataFrame({"channel": funds["channel"], "ref": funds["refund_no"].fillna(funds["order_no"]),
                      "net": np.where(funds["direction"] == "in", 1, -1) * fen(funds["amount"])})
    return p, e


# ------------------------------------------------------------------ matching
def match(p: pd.DataFrame, c: pd.DataFrame, e: pd.DataFrame, f: pd.DataFrame, bank: pd.DataFrame | None,
          prev_net: dict[str, int]) -> dict[str, int]:
    p = p.sort_values("time", kind="stable")
    p["occ"] = p.groupby(["channel", "key"]).cumcount() + 1
    c = c.sort_values("time", kind="stable")
    c["occ"] = c.groupby(["channel", "key"]).cumcount() + 1
    m = p.merge(c, on=["channel", "key", "occ"], how="outer", suffixes=("_p", "_c"), indicator=True)
    num = m["channel"].map({k: v[0] for k, v in FEE.items()})
    den = m["channel"].map({k: v[1] for k, v in FEE.items()})
    contract = (2 * m["amount_p"] * num + den) // (2 * den)            # round_half_up(amount × rate) in fen
    only_p, only_c, both = m["_merge"] == "left_only", m["_merge"] == "right_only", m["_merge"] == "both"
    compatible = ((m["status_p"] == "success") & m["status_c"].isin(["success", "refunded"])) | (
        m["status_p"].isin(["closed", "failed"]) & m["status_c"].isin(["revoked", "closed", "failed"])) | (
        (m["status_p"] == "pending") & (m["status_c"] == "processing"))
    outcome = np.select(
        [only_c & (m["occ"] > 1), only_p & (m["occ"] > 1),
         only_c & m["status_c"].isin(["success", "refunded"]), only_p & (m["status_p"] == "success"),
         both & (m["currency_p"] != m["currency_c"]), both & ~compatible, both & (m["amount_p"] != m["amount_c"]),
         both & (m["txn_type_p"] == "payment") & (m["fee"] != contract), both & (m["status_p"] == "success")],
        ["duplicate", "duplicate", "missing_in_platform", "missing_in_channel", "currency_mismatch",
         "status_mismatch", "amount_mismatch", "fee_mismatch", "matched"], default="none")
    counts = pd.Series(outcome).value_counts().to_dict()
    # funds, per reference (channels with a fund-flow statement)
    exp = e[e["channel"].isin(f["channel"].unique())].groupby(["channel", "ref"], as_index=False)["net"].sum()
    act = f.groupby(["channel", "ref"], as_index=False)["net"].sum()
    fm = exp.merge(act, on=["channel", "ref"], how="outer", suffixes=("_e", "_a"), indicator=True)
    diff = fm["net_a"].fillna(0) - fm["net_e"].fillna(0)
    counts["long"] = int((diff > 0).sum())
    counts["short"] = int((diff < 0).sum())
    # internal: successful orders vs expected movements, per reference
    ok = p[p["status"] == "success"]
    orders = ok.assign(net=np.where(ok["txn_type"] == "payment", ok["amount"], -ok["amount"])).groupby(
        ["channel", "ref"], as_index=False)["net"].sum()
    allexp = e.groupby(["channel", "ref"], as_index=False)["net"].sum()
    im = orders.merge(allexp, on=["channel", "ref"], how="outer", suffixes=("_o", "_e"))
    idiff = im["net_e"].fillna(0) - im["net_o"].fillna(0)
    counts["long"] += int((idiff > 0).sum())
    counts["short"] += int((idiff < 0).sum())
    # batch: the bank's lump sum per channel against the net of the channel's statement of T-1
    if bank is not None and len(bank):
        credits = bank.groupby("channel")["amount"].sum()
        for ch, amount in credits.items():
            if ch in prev_net and amount != prev_net[ch]:
                counts["long" if amount > prev_net[ch] else "short"] += 1
    counts.pop("none", None)
    return {k: int(v) for k, v in counts.items()}


def run(world: Path, d: date, channels: list[str], with_datacompy: bool = False) -> dict:
    from recon.config import expand_path
    import glob
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    files = {}
    pattern = {"wechat_trade": "channels/wechat/tradebill_all_{yyyymmdd}.csv",
               "wechat_funds": "channels/wechat/fundflowbill_basic_{yyyymmdd}.csv",
               "alipay": "channels/alipay/*_{yyyymmdd}.csv.zip", "unionpay": "channels/unionpay/*_{yyyymmdd}.zip",
               "bank": "channels/bank/bank_statement_{yyyymmdd}.csv"}
    for k, v in pattern.items():
        hits = sorted(glob.glob(expand_path(str(world / v), d)))
        files[k] = Path(hits[0]) if hits else None
    frames, funds = [], []
    if "wechat" in channels:
        frames.append(read_wechat_trade(files["wechat_trade"]))
        funds.append(read_wechat_funds(files["wechat_funds"]))
    if "alipay" in channels:
        frames.append(read_alipay(files["alipay"]))
    if "unionpay" in channels:
        frames.append(read_unionpay(files["unionpay"]))
    bank = read_bank(files["bank"]) if "bank" in channels and files["bank"] else None
    c = pd.concat(frames, ignore_index=True)
    f = pd.concat(funds, ignore_index=True) if funds else pd.DataFrame({"channel": [], "ref": [], "net": []})
    secs["read_statements"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    p, e = read_platform(world / "platform.db", d)
    p, e = p[p["channel"].isin(channels)], e[e["channel"].isin(channels)]
    secs["read_platform"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = match(p, c, e, f, bank, {})
    secs["match"] = time.perf_counter() - t0
    out = {"seconds": secs, "rows": {"statements": int(len(c) + len(f)), "platform": int(len(p) + len(e))},
           "breaks": counts}
    if with_datacompy and "wechat" in channels:
        out["datacompy"] = run_datacompy(p, c)
    return out


def run_datacompy(p: pd.DataFrame, c: pd.DataFrame) -> dict:
    """datacompy where it applies: one channel's payments, joined on the order number."""
    import datacompy
    a = p[(p["channel"] == "wechat") & (p["txn_type"] == "payment")][["key", "amount", "currency", "status"]]
    b = c[(c["channel"] == "wechat") & (c["txn_type"] == "payment")][["key", "amount", "currency", "status"]]
    b = b.drop_duplicates("key")             # datacompy needs unique join keys: duplicates are out of its reach
    t0 = time.perf_counter()
    cmp = datacompy.PandasCompare(a, b, join_columns="key", df1_name="platform", df2_name="channel")
    out = {"seconds": time.perf_counter() - t0, "rows": int(len(a) + len(b)),
           "only_platform": int(len(cmp.df1_unq_rows)), "only_channel": int(len(cmp.df2_unq_rows)),
           "mismatched_rows": int(len(cmp.all_mismatch()))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--channels", default="wechat,alipay,unionpay,bank")
    ap.add_argument("--datacompy", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = run(Path(args.world), date.fromisoformat(args.date), args.channels.split(","), args.datacompy)
    out["total"] = time.perf_counter() - t0
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
