"""A small multi-day world for reconciliation scenario tests: real statement files, a real SQLite platform DB.

Statement files are written with ``loaders.writers`` (WeChat trade bills), loaded with ``loaders.load`` and
the platform rows with ``loaders.internal`` — the same code as ``recon.pipeline.process_day`` minus
settlement — then ``recon.matching.reconcile_day`` runs, all in one warehouse transaction.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from loaders.fetch.base import FetchedFile
from loaders.internal import load_platform
from loaders.load import load_file, parse_fetched
from loaders.writers import write_wechat_trade
from recon.config import Config, parse_config
from recon.demo import build_platform_db
from recon.matching import ReconSummary, reconcile_day
from recon.warehouse import connect, transaction

D = Decimal
PAYMENT_COLS = ["order_no", "channel", "channel_txn_id", "merchant_id", "amount", "currency", "status", "paid_at"]
REFUND_COLS = ["refund_no", "order_no", "channel", "channel_refund_id", "merchant_id", "amount", "currency", "status",
               "refunded_at"]
FUNDS_COLS = ["movement_id", "channel", "order_no", "refund_no", "direction", "amount", "currency", "expected_at"]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class World:
    root: Path
    channels: list[dict]
    payments: list[dict] = field(default_factory=list)
    refunds: list[dict] = field(default_factory=list)
    funds: list[dict] = field(default_factory=list)
    versions: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        raw = {
            "warehouse": str(self.root / "w.duckdb"), "output_dir": str(self.root / "out"),
            "landing_dir": str(self.root / "landing"), "timezone": "Asia/Shanghai",
            "channels": [{"statements": [{"kind": "trade", "format": "wechat_trade",
                                          "source": {"type": "folder", "path": str(self.root / "unused")}}],
                          "fee_rate": "0.006", **c} for c in self.channels],
            "internal_source": {"url": f"sqlite:///{self.root / 'platform.db'}"},
        }
        self.raw = raw
        self.cfg: Config = parse_config(raw)
        self.con = connect(self.cfg.warehouse)

    def config_file(self) -> Path:
        """The world's config as a YAML file (for the CLI)."""
        import yaml
        path = self.root / "recon.yml"
        path.write_text(yaml.safe_dump(self.raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    # ---- the platform
    def pay(self, order_no: str, channel: str, amount: str, at: str, *, status: str = "success",
            txn: str | None = None, merchant: str = "M001", currency: str = "CNY") -> None:
        self.payments.append({"order_no": order_no, "channel": channel, "channel_txn_id": txn or f"T{order_no}",
                              "merchant_id": merchant, "amount": amount, "currency": currency, "status": status,
                              "paid_at": at})
        if status == "success":
            self.funds.append({"movement_id": f"F{order_no}", "channel": channel, "order_no": order_no,
                               "refund_no": "", "direction": "in", "amount": amount, "currency": currency,
                               "expected_at": at})

    def refund(self, refund_no: str, order_no: str, channel: str, amount: str, at: str, *,
               rid: str | None = None) -> None:
        self.refunds.append({"refund_no": refund_no, "order_no": order_no, "channel": channel,
                             "channel_refund_id": rid or f"RT{refund_no}", "merchant_id": "M001", "amount": amount,
                             "currency": "CNY", "status": "success", "refunded_at": at})
        self.funds.append({"movement_id": f"F{refund_no}", "channel": channel, "order_no": order_no,
                           "refund_no": refund_no, "direction": "out", "amount": amount, "currency": "CNY",
                           "expected_at": at})

    def _platform_db(self) -> None:
        src = self.root / "platform_csv"
        src.mkdir(exist_ok=True)
        for name, cols, rows in (("payment_orders", PAYMENT_COLS, self.payments),
                                 ("refund_orders", REFUND_COLS, self.refunds),
                                 ("expected_fund_movements", FUNDS_COLS, self.funds)):
            with open(src / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, cols)
                w.writeheader()
                w.writerows(rows)
        build_platform_db(f"sqlite:///{self.root / 'platform.db'}", src)

    # ---- the channels' statement files
    def trade_file(self, channel: str, day: date, rows: list[dict]) -> FetchedFile:
        """A WeChat-format trade bill for ``channel``/``day``; rows: order, amount, at, [fee, txn, ...]."""
        canon = []
        for r in rows:
            amount = D(r["amount"])
            refund = "refund" in r
            fee = D(r["fee"]) if "fee" in r else (amount * D("0.006")).quantize(D("0.01"), ROUND_HALF_UP)  # = contract
            canon.append({
                "txn_type": "refund" if refund else "payment", "channel_txn_id": r.get("txn", f"T{r['order']}"),
                "merchant_order_no": r["order"] if r.get("with_order", True) else None,
                "channel_refund_id": r.get("rid", f"RT{r.get('refund')}") if refund else None,
                "merchant_refund_no": r.get("refund"), "status": r.get("status", "success"),
                "currency": r.get("currency", "CNY"), "amount": amount, "fee": -fee if refund else fee,
                "txn_time": ts(r["at"]), "channel_merchant_id": "1900000109"})
        v = self.versions[(channel, day)] = self.versions.get((channel, day), 0) + 1
        path = self.root / "files" / f"{channel}_{day:%Y%m%d}_v{v}.csv"
        path.parent.mkdir(exist_ok=True)
        write_wechat_trade(canon, path)
        data = path.read_bytes()
        return FetchedFile(channel, day, "trade", "wechat_trade", path, path.name, "test", len(data),
                           hashlib.sha256(data).hexdigest(), datetime.now(timezone.utc))

    # ---- a run
    def run(self, day: date, files: list[FetchedFile]) -> ReconSummary:
        self._platform_db()
        with transaction(self.con):
            for f in files:
                load_file(self.con, f, parse_fetched(f, {}), day, "fail")
            load_platform(self.con, self.cfg, day)
            return reconcile_day(self.con, self.cfg, day)

    # ---- reading the warehouse
    def breaks(self, *, status: str | None = None) -> dict[tuple[str, str], dict]:
        """(type, match_key) -> row dict of every break (optionally of one status)."""
        cols = ["discrepancy_id", "business_date", "channel", "flow", "type", "match_key", "status", "difference",
                "first_seen_date", "last_seen_date", "resolved_date", "resolved_by", "resolved_by_file",
                "resolved_by_source", "resolution_note", "age_days", "age_bucket", "pending_until"]
        sql = f"SELECT {', '.join(cols)} FROM discrepancies" + (" WHERE status = ?" if status else "")
        rows = self.con.execute(sql, [status] if status else []).fetchall()
        return {(r[4], r[5]): dict(zip(cols, r)) for r in rows}

    def audit(self, discrepancy_id: str) -> list[tuple]:
        return self.con.execute(
            "SELECT recorded_by, action, old_status, new_status, business_date, file_id FROM discrepancy_resolutions "
            "WHERE discrepancy_id = ? ORDER BY resolution_id", [discrepancy_id]).fetchall()

    def matched(self, day: date) -> set[str]:
        return {k for (k,) in self.con.execute("SELECT match_key FROM matched_transactions WHERE business_date = ?",
                                                [day]).fetchall()}
