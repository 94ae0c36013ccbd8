"""Stripe payout reconciliation report (itemized) and Adyen settlement details report.

Both are UTF-8 CSV with a header row and amounts in major units, several currencies per
file. Rows that are neither a payment nor a refund (fees, disputes, adjustments...) keep
their own ``txn_type`` (the lower-cased category / type) so that nothing is dropped and
the totals still add up; ``amount`` is then the signed gross.

Adyen's ``MerchantPayout`` lines are the batch's payout to the bank: they are not rows
but the file's own totals — per batch and currency the payout must equal the sum of
the other lines' net amounts.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import TRADE_SCHEMA, FooterCheck, ParsedFile, norm_header, register
from loaders.formats._tabular import (
    Batch, Collector, Cols, Errors, Reader, add, as_bool, const, drive, each_batch, footer_check, need_columns, neg,
    no_rows, source_for, sub, to_money, to_time, with_encoding_retry, zeros,
)

TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S%z")
STRIPE_PAYMENT = ("charge", "payment")
STRIPE_REFUND = ("refund", "payment_refund", "partial_capture_reversal")
# Stripe's reporting categories (payout reconciliation); others are refused unless listed in options["categories"]
STRIPE_CATEGORIES = ("charge", "refund", "dispute", "dispute_reversal", "fee", "adjustment", "other_adjustment",
                     "partial_capture_reversal", "payout", "payout_reversal", "transfer", "transfer_reversal",
                     "platform_earning", "platform_earning_refund", "contribution", "connect_reserved_funds",
                     "risk_reserved_funds", "topup", "topup_reversal", "tax", "network_cost", "charge_failure",
                     "payment", "payment_refund", "payment_failure_refund", "payment_reversal",
                     "refund_failure", "unreconciled_customer_funds", "anticipation_repayment",
                     "climate_order_purchase", "climate_order_refund", "financing_paydown", "obligation",
                     "connect_collection_transfer", "issuing_authorization_hold", "issuing_authorization_release",
                     "issuing_transaction", "inbound_transfer", "outbound_payment", "outbound_transfer",
                     "received_credit", "received_debit")
# Adyen's settlement detail record types; MerchantPayout lines are the file's totals
ADYEN_TYPES = ("Settled", "Refunded", "Chargeback", "ChargebackReversed", "SecondChargeback", "RefundedReversed",
               "ChargebackExternally", "RefundedExternally", "SettledExternally", "SettledBulk", "RefundedBulk",
               "SettledInstallment", "RefundedInstallment", "SettledExternallyWithInfo", "RefundedExternallyWithInfo",
               "Fee", "MiscCosts", "MerchantPayout", "PaidOut", "PaidOutReversed", "Balancetransfer",
               "DepositCorrection", "InvoiceDeduction", "ReserveAdjustment", "Correction", "CashOutFunding",
               "CashOutInstruction", "TopUp", "AdvancementCommissionExternallyCharged", "ManualCorrected",
               "InternalTransfer", "MerchantPayin", "MerchantPayinReversed", "MerchantPayoutReversed",
               "MerchantPayoutFailed", "Chargeback Reversal")
ZERO = pa.scalar(Decimal("0.00"), pa.decimal128(18, 2))


def _reader(path: Path, opts: dict[str, Any], need: tuple[str, ...]) -> tuple[Reader, dict[str, int]]:
    src = source_for(path, lambda n: n.lower().endswith(".csv"), "report")
    rd = Reader(src, encoding=opts.get("encoding"), delimiter=opts.get("delimiter", ","), quote=True)
    rd.allow_multiline = bool(opts.get("allow_multiline_values"))
    if rd.empty or rd.header is None:
        return rd, {}
    index = rd.header_map(lambda h: h.strip())
    need_columns(rd, index, need)
    return rd, index


def _odd_lines(rd: Reader, out: Collector) -> None:
    for e in rd.extras:
        if e.text.strip():
            reason = e.reason or f"expected {rd.width} columns, found {len(rd._split(e.text))}"
            out.reject(e.line_no, None, reason, e.text)


def _detect_stripe(head: bytes) -> bool:
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    return b"balance_transaction_id" in first and b"reporting_category" in first


def _detect_adyen(head: bytes) -> bool:
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    return b"Psp Reference" in first and b"Batch Number" in first


@register("stripe_payout", "trade", detect=_detect_stripe,
          description="Stripe payout reconciliation report (itemized), major units")
@with_encoding_retry
def parse_stripe(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Stripe payout reconciliation report (itemized), major units."""
    rd, index = _reader(path, opts, ("currency", "gross", "fee", "net", "reporting_category", "created_utc"))
    if not index:
        return no_rows(path, "stripe_payout", "trade", "header-only report: no rows")
    order_col = opts.get("order_column", "payment_metadata[order_id]")
    rd.include = sorted(index[norm_header(n)] for n in (
        "balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category", "source_id",
        "description", "charge_id", "automatic_payout_id", order_col) if norm_header(n) in index)
    out = Collector(TRADE_SCHEMA, rd.source)
    payouts: set[str] = set()

    @each_batch(index, rd, " \t")
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        cat = pc.utf8_lower(c.get("reporting_category"))
        known = pa.array(list(STRIPE_CATEGORIES) + [str(x).lower() for x in opts.get("categories", ())])
        raw_cat = c.get("reporting_category")
        errs.mark(~as_bool(pc.is_in(cat, value_set=known)), "reporting_category",
                  lambda i: f"unknown reporting_category {raw_cat[i].as_py()!r}")
        is_pay = pc.is_in(cat, value_set=pa.array(STRIPE_PAYMENT))
        is_ref = pc.is_in(cat, value_set=pa.array(STRIPE_REFUND))
        gross = to_money(c.get("gross"), "gross", errs)
        fee = to_money(c.get("fee"), "fee", errs, blank_zero=True)
        net = to_money(c.get("net"), "net", errs)
        errs.mark(as_bool(pc.not_equal(sub(gross, fee), net)), "net", "net is not gross - fee")
        errs.mark(as_bool(pc.and_(is_pay, pc.less(gross, ZERO))), "gross", "a charge with a negative gross")
        errs.mark(as_bool(pc.and_(is_ref, pc.greater(gross, ZERO))), "gross", "a refund with a positive gross")
        ccy = pc.utf8_upper(c.get("currency"))
        errs.mark(as_bool(pc.equal(ccy, "")), "currency", "empty currency")
        charge = c.text("charge_id")
        source = c.text("source_id")
        txn_type = pc.if_else(is_pay, "payment", pc.if_else(is_ref, "refund", cat))
        cols = {"txn_type": txn_type, "channel_txn_id": pc.coalesce(charge, source),
                "channel_refund_id": pc.if_else(is_ref, source, pa.scalar(None, pa.string())),
                "merchant_order_no": c.text(order_col) if c.has(order_col) else None,
                "status": const(n, "success"), "currency": ccy,
                "amount": pc.if_else(is_ref, neg(gross), gross), "fee": fee, "net": net,
                "txn_time": to_time(c.get("created_utc"), "created_utc", errs, TIME_FORMATS, required=True),
                "description": c.text("description")}
        out.add(cols, batch.lines, errs)
        if c.has("automatic_payout_id"):
            payouts.update(v for v in pc.unique(c.get("automatic_payout_id")).to_pylist() if v)

    drive(rd, process, lambda: (out.reset(), payouts.clear()))
    _odd_lines(rd, out)
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    footer = FooterCheck(None, "the itemized report has no totals of its own")
    return ParsedFile(path, "stripe_payout", "trade", table, quarantine, footer,
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"payouts": sorted(payouts), "encoding": rd.encoding})


ADYEN_FEES = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")


@register("adyen_settlement", "trade", detect=_detect_adyen,
          description="Adyen settlement details report (multi-currency, major units)")
@with_encoding_retry
def parse_adyen(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """Adyen settlement details report (multi-currency, major units)."""
    rd, index = _reader(path, opts, ("Psp Reference", "Type", "Gross Currency", "Net Currency", "Batch Number"))
    if not index:
        return no_rows(path, "adyen_settlement", "trade", "header-only report: no rows")
    names = ("Merchant Account", "Psp Reference", "Merchant Reference", "Creation Date", "Type",
             "Modification Reference", "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Net Currency",
             "Net Debit (NC)", "Net Credit (NC)", "Batch Number") + ADYEN_FEES
    rd.include = sorted(index[norm_header(n)] for n in names if norm_header(n) in index)
    out = Collector(TRADE_SCHEMA, rd.source)
    payout_decl: dict[tuple[str, str], Decimal] = {}
    net_by: dict[tuple[str, str], Decimal] = {}

    @each_batch(index, rd, " \t")
    def process(batch: Batch, errs: Errors, c: Cols) -> None:
        n = c.n
        typ = c.get("Type")
        known = pa.array(list(ADYEN_TYPES) + [str(x) for x in opts.get("types", ())])
        errs.mark(~as_bool(pc.is_in(typ, value_set=known)), "Type", lambda i: f"unknown Type {typ[i].as_py()!r}")
        is_payout = as_bool(pc.equal(typ, "MerchantPayout"))
        net_ccy = pc.utf8_upper(c.get("Net Currency"))
        batch_no = c.get("Batch Number")
        nd = to_money(c.get("Net Debit (NC)"), "Net Debit (NC)", errs, blank_zero=True)
        nc = to_money(c.get("Net Credit (NC)"), "Net Credit (NC)", errs, blank_zero=True)
        if is_payout.any():
            amounts = sub(nd, nc).to_pylist()
            for i in np.flatnonzero(is_payout & ~errs.bad):
                key = (batch_no[i].as_py(), net_ccy[i].as_py())
                payout_decl[key] = payout_decl.get(key, Decimal("0.00")) + amounts[i]
            errs.mark(is_payout, None, "__payout__")
        gd = to_money(c.get("Gross Debit (GC)"), "Gross Debit (GC)", errs, blank_zero=True)
        gc = to_money(c.get("Gross Credit (GC)"), "Gross Credit (GC)", errs, blank_zero=True)
        fee = zeros(n)
        for name in ADYEN_FEES:
            if c.has(name):
                fee = add(fee, to_money(c.get(name), name, errs, blank_zero=True))
        net = sub(nc, nd)
        is_pay = pc.equal(typ, "Settled")
        is_ref = pc.equal(typ, "Refunded")
        same_ccy = pc.equal(pc.utf8_upper(c.get("Gross Currency")), net_ccy)
        # in one currency the net must be gross less fees; across currencies the exchange rate decides
        gross_signed = sub(gc, gd)
        broken = pc.and_(pc.and_(same_ccy, pc.or_(is_pay, is_ref)), pc.not_equal(sub(gross_signed, fee), net))
        errs.mark(as_bool(broken), "Net Credit (NC)", "net is not gross less fees")
        txn_type = pc.if_else(is_pay, "payment", pc.if_else(is_ref, "refund", pc.utf8_lower(typ)))
        amount = pc.if_else(is_pay, gc, pc.if_else(is_ref, gd, gross_signed))
        gross_ccy = pc.utf8_upper(c.get("Gross Currency"))
        currency = pc.if_else(pc.equal(gross_ccy, ""), net_ccy, gross_ccy)
        cols = {"txn_type": txn_type, "channel_txn_id": c.text("Psp Reference"),
                "merchant_order_no": c.text("Merchant Reference"),
                "channel_refund_id": pc.if_else(is_ref, c.text("Modification Reference"),
                                                pa.scalar(None, pa.string())),
                "channel_merchant_id": c.text("Merchant Account"), "status": const(n, "success"),
                "currency": currency, "amount": amount, "fee": fee, "net": net,
                "txn_time": to_time(c.get("Creation Date"), "Creation Date", errs, TIME_FORMATS, required=True)}
        # payout lines are totals, not rows: take them out of the error list before adding
        for i in np.flatnonzero(is_payout):
            if errs.items.get(int(i), (None, ""))[1] == "__payout__":
                errs.items.pop(int(i))
        out.add(cols, batch.lines, errs)
        keep = ~errs.bad
        nets = net.to_pylist()
        for i in np.flatnonzero(keep):
            key = (batch_no[i].as_py(), net_ccy[i].as_py())
            net_by[key] = net_by.get(key, Decimal("0.00")) + nets[i]

    def reset() -> None:
        out.reset()
        payout_decl.clear()
        net_by.clear()

    drive(rd, process, reset)
    _odd_lines(rd, out)
    table = out.table()
    quarantine = out.finish_quarantine(rd)
    if payout_decl:
        checks = []
        for key in sorted(set(payout_decl) | set(net_by)):
            checks.append((f"batch {key[0]} {key[1]} payout", payout_decl.get(key), net_by.get(key,
                                                                                            Decimal("0.00"))))
        missing = [k for k in net_by if k not in payout_decl]
        footer = footer_check([("rows", None, None)] + checks, len(quarantine))
        if missing:
            footer = FooterCheck(False, footer.message + f"; no MerchantPayout line for {missing}",
                                 footer.declared_rows, footer.declared_amount, footer.parsed_rows,
                                 footer.parsed_amount)
    else:
        footer = FooterCheck(None, "report has no MerchantPayout lines")
    return ParsedFile(path, "adyen_settlement", "trade", table, quarantine, footer,
                      empty_day=table.num_rows == 0 and not quarantine,
                      meta={"payouts": {f"{b} {c}": str(v) for (b, c), v in payout_decl.items()},
                            "encoding": rd.encoding})
