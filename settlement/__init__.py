"""Merchant settlement: ``settle_day`` (engine), ``write_payout_files`` (payout), business-day calendar."""
from settlement.engine import SettlementError, SettlementSummary, confirm_batch, settle_day
from settlement.payout import write_payout_files

__all__ = ["SettlementError", "SettlementSummary", "confirm_batch", "settle_day", "write_payout_files"]
