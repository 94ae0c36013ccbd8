"""Exact money: parsing, rounding and formatting with ``decimal.Decimal``.

Every amount in the project is a ``Decimal`` in Python and ``DECIMAL(18,2)``
(``MONEY_SQL``) in DuckDB. Nothing passes through a float. Rounding happens
only in :func:`round_money`, whose mode is explicit (default half-up to the
fen, the convention of Chinese channels and banks).
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

MONEY_SQL = "DECIMAL(18,2)"
RATE_SQL = "DECIMAL(12,8)"
FEN = Decimal("0.01")
ZERO = Decimal("0.00")

ROUNDING_MODES = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}


class MoneyError(ValueError):
    """A text that is not an exact amount (or has digits below the fen)."""


def parse_amount(text: str, *, allow_sub_fen_zeros: bool = True) -> Decimal:
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
    if not allow_sub_fen_zeros and value.as_tuple().exponent < -2:
        raise MoneyError(f"amount has more than two decimals: {text!r}")
    return quantized


def fen_to_yuan(fen: int) -> Decimal:
    """Integer fen (UnionPay, bank files) to yuan, exactly."""
    return (Decimal(fen) / 100).quantize(FEN)


def round_money(value: Decimal, mode: str = "half_up") -> Decimal:
    """Round to the fen with an explicit, named mode."""
    return value.quantize(FEN, rounding=ROUNDING_MODES[mode])


def fmt(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"
