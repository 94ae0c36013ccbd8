"""Files a settlement batch produces: the bank payout instruction file and one
statement per merchant.

Payout file ``<batch>_payout.csv`` (encoding ``payout.encoding``):

* ``generic_csv``: a header with ``payout.columns``, one row per line with a
  payout above zero (sorted by currency, merchant), then one totals line per
  currency ``TOTAL,<currency>,<count>,<amount>``, then
  ``SHA256,<hex>`` = sha256 of every byte above it (header, rows, totals).
* ``cn_bank_batch``: the same with the Chinese batch-transfer header
  ``序号,收款账号,收款户名,开户行,币种,金额,用途``, totals ``合计,...`` and ``校验,SHA256,<hex>``.

A ``<batch>_payout.csv.sha256`` sidecar holds ``sha256sum``-style the digest of
the whole file. Statements ``<batch>_statement_<merchant>.csv`` list every item
(transaction or adjustment) with amount, fee and net, written by DuckDB
``COPY``, followed by summary rows per currency. Contents are deterministic:
rewriting a batch that did not change gives byte-identical files.

Statements are opened in spreadsheets by merchants, so their text is written
injection-safe by the rule of :mod:`recon.formula`, as a SQL expression inside the
``COPY`` (:func:`recon.formula.csv_safe_sql`): a text beginning
with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading apostrophe.
Ordinary identifiers are unchanged, so such files are byte-identical to before.
The payout file is the bank's import format and is written as configured.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from decimal import Decimal
from pathlib import Path

import duckdb

from recon.config import Config
from recon.formula import csv_safe, csv_safe_sql
from recon.warehouse import archived_batch_days
from settlement.engine import SettlementError, batch_info

GENERIC_FIELDS = ("seq", "batch_id", "settlement_date", "merchant_id", "merchant_name", "account_name",
                  "bank_account", "bank_name", "currency", "amount", "amount_fen", "memo")
CN_BANK_COLUMNS = ("seq", "bank_account", "account_name", "bank_name", "currency", "amount", "memo")
CN_BANK_HEADER = ("序号", "收款账号", "收款户名", "开户行", "币种", "金额", "用途")
LAYOUTS = ("generic_csv", "cn_bank_batch")

SUMMARY_FIELDS = ("gross", "refunds", "fees", "adjustments", "net", "carried_in", "reserve_held",
                  "reserve_released", "payout", "carried_forward")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _money(v: Decimal) -> str:
    return f"{v:.2f}"


def payout_rows(con: duckdb.DuckDBPyConnection, cfg: Config, batch_id: str) -> list[dict[str, str]]:
    info = batch_info(con, batch_id)
    merchants = {m.id: m for m in cfg.merchants}
    rows = []
    lines = con.execute(
        "SELECT merchant_id, currency, payout FROM settlement_lines WHERE batch_id = ? AND payout > 0 "
        "ORDER BY currency, merchant_id", [batch_id]).fetchall()
    for seq, (merchant_id, currency, amount) in enumerate(lines, start=1):
        m = merchants.get(merchant_id)
        rows.append({
            "seq": str(seq), "batch_id": batch_id, "settlement_date": info["settlement_date"].isoformat(),
            "merchant_id": merchant_id, "merchant_name": m.name if m else "",
            "account_name": (m.account_name or "") if m else "", "bank_account": (m.bank_account or "") if m else "",
            "bank_name": (m.bank_name or "") if m else "", "currency": currency, "amount": _money(amount),
            # amount in fen: exact, the amount has two decimals
            "amount_fen": str(int(amount * 100)),
            "memo": f"{batch_id} settlement {merchant_id}",
        })
    return rows


def render_payout(cfg: Config, rows: list[dict[str, str]]) -> bytes:
    layout = cfg.payout.layout
    if layout not in LAYOUTS:
        raise SettlementError(f"payout.layout: unknown layout {layout!r} (expected one of {', '.join(LAYOUTS)})")
    if layout == "generic_csv":
        columns = cfg.payout.columns
        unknown = [c for c in columns if c not in GENERIC_FIELDS]
        if unknown:
            raise SettlementError(f"payout.columns: unknown column(s) {unknown} (expected some of "
                                  f"{', '.join(GENERIC_FIELDS)})")
        header, total_tag, sum_tag = list(columns), "TOTAL", ["SHA256"]
    else:
        columns, header, total_tag, sum_tag = CN_BANK_COLUMNS, list(CN_BANK_HEADER), "合计", ["校验", "SHA256"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r[c] for c in columns])
    totals: dict[str, tuple[int, Decimal]] = {}
    for r in rows:
        n, s = totals.get(r["currency"], (0, Decimal("0.00")))
        totals[r["currency"]] = (n + 1, s + Decimal(r["amount"]))
    for ccy in sorted(totals):
        n, s = totals[ccy]
        w.writerow([total_tag, ccy, n, _money(s)])
    try:
        body = buf.getvalue().encode(cfg.payout.encoding)
    except (LookupError, UnicodeEncodeError) as exc:
        raise SettlementError(f"payout.encoding {cfg.payout.encoding!r}: {exc}") from None
    tail = io.StringIO()
    csv.writer(tail, lineterminator="\n").writerow([*sum_tag, hashlib.sha256(body).hexdigest()])
    return body + tail.getvalue().encode(cfg.payout.encoding)


def verify_payout_file(path: Path, encoding: str = "utf-8") -> bool:
    """True when the checksum line matches the bytes above it."""
    data = path.read_bytes()
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    digest = last.decode(encoding).rsplit(",", 1)[-1]
    return hashlib.sha256(body + b"\n").hexdigest() == digest


def write_payout_files(con: duckdb.DuckDBPyConnection, cfg: Config, batch_id: str,
                       out_dir: str | Path) -> list[Path]:
    """Write the payout instruction file (+ .sha256) and the merchant statements of a batch."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = batch_info(con, batch_id)
    if days := archived_batch_days(con, batch_id):
        raise SettlementError(f"payout files of {batch_id}: its items of {', '.join(str(d) for d in days)} are "
                              f"archived; restore the days first (`recon archive restore --date {days[0]}`)")
    written: list[Path] = []

    payout = out / f"{batch_id}_payout.csv"
    data = render_payout(cfg, payout_rows(con, cfg, batch_id))
    _atomic_write(payout, data)
    side = payout.with_name(payout.name + ".sha256")
    _atomic_write(side, f"{hashlib.sha256(data).hexdigest()}  {payout.name}\n".encode())
    written += [payout, side]

    lines = con.execute(
        f"SELECT merchant_id, currency, {', '.join(SUMMARY_FIELDS)} FROM settlement_lines WHERE batch_id = ? "
        "ORDER BY merchant_id, currency", [batch_id]).fetchall()
    by_merchant: dict[str, list[tuple]] = {}
    for row in lines:
        by_merchant.setdefault(row[0], []).append(row)

    # Text that comes from outside (config, platform, statements) is made safe; batch_id, channel,
    # item_kind and txn_type are the pipeline's own words (batch ids and channel names are validated).
    def safe_col(col: str) -> str:
        return f"{csv_safe_sql(col)} AS {col}"

    for merchant_id, mlines in by_merchant.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in merchant_id)
        path = out / f"{batch_id}_statement_{safe}.csv"
        tmp = path.with_name(path.name + ".tmp")
        # Items straight from DuckDB (a merchant can have millions); ordered, so deterministic.
        con.execute(f"""
            COPY (
                SELECT batch_id, DATE '{info['settlement_date'].isoformat()}' AS settlement_date,
                       {safe_col('merchant_id')}, {safe_col('currency')}, trade_date, channel, item_kind, txn_type,
                       {safe_col('order_no')}, {safe_col('refund_no')}, amount, fee, net, {safe_col('note')}
                FROM settlement_items WHERE batch_id = $B AND merchant_id = $M
                ORDER BY currency, item_kind DESC, trade_date, channel, txn_type, order_no, refund_no
            ) TO '{str(tmp).replace("'", "''")}' (FORMAT csv, HEADER true)
        """, {"B": batch_id, "M": merchant_id})
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for row in mlines:
            for name, value in zip(SUMMARY_FIELDS, row[2:]):
                w.writerow(["SUMMARY", batch_id, csv_safe(merchant_id), csv_safe(row[1]), name, _money(value)])
        with open(tmp, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
        written.append(path)
    return written
