"""Exact money: parsing and formatting with ``decimal.Decimal``.

Every amount in the project is a ``Decimal`` in Python and ``DECIMAL(18,2)`` in
DuckDB. Nothing passes through a float. Amounts are parsed exactly and never
rounded on the way in (a digit below the fen is an error). The roundings that
do happen are fee computations, in DuckDB SQL, each named where it is made:
``round(x, 2)`` (half away from zero = half-up for the positive amounts fees
are computed on; the contract fee in ``recon.matching_info``, the default
merchant fee in ``settlement.engine``) or ``round_even(x, 2)`` (banker's, a
merchant's ``fee_rounding: half_even``).
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

FEN = Decimal("0.01")


class MoneyError(ValueError):
    """A text that is not an exact amount (or has digits below the fen)."""


def parse_amount(text: str) -> Decimal:
    """Parse a statement amount exactly.

    Accepts ``1,234.50``, ``-0.01``, ``+3``, full-width digits are not accepted.
    Digits below the fen are allowed only when they are zeros (WeChat writes
    fees as ``0.06000``); ``0.005`` is an error, never silently rounded.
    """
    cleaned = text.strip().replace(",", "")
    if not cleaned:
        raise MoneyError("empty amount")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise MoneyError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {text!r}")
    try:
        quantized = value.quantize(FEN)
    except InvalidOperation:                      # e.g. 1e999: too many digits for any amount
        raise MoneyError(f"amount out of range: {text!r}") from None
    if quantized != value:
        raise MoneyError(f"amount has digits below the fen: {text!r}")
    return quantized


def fmt(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"
