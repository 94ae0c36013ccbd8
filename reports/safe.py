"""Making statement text safe to show: formula-injection defence and masking of personal data.

Text in statement files is attacker-controlled (a description, a memo, a merchant
name). Two rules apply to every text cell the reports write:

* **Formula injection**: a text beginning with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return could be evaluated by Excel (or LibreOffice) as a formula. The
  workbook writer stores such text as a *string* cell with the ``quotePrefix``
  style (Excel's leading-apostrophe), never as a formula; CSV exports prefix it
  with an apostrophe (:func:`csv_safe`), since CSV has no cell types.
* **Masking**: card numbers (13-19 digits, optionally grouped by spaces or dashes)
  keep at most the first 6 and last 4 digits; mainland ID-card numbers keep the
  first 6 and last 4; mobile numbers keep the first 3 and last 4; e-mail
  addresses keep the first character of the local part and the domain.
  :func:`mask_text` applies to free-text columns (detail, description, memo,
  raw statement text, counterparty names); identifiers the business needs to
  find a transaction (order numbers, match keys, channel transaction ids) are
  not free text and are shown as they are. :func:`mask_account` masks a bank
  account or card number column outright.
"""
from __future__ import annotations

import re

from recon.formula import DANGEROUS_PREFIXES, csv_safe, is_dangerous  # noqa: F401  (the rule lives there)

# 13-19 digits, possibly grouped with single spaces or dashes, not glued to other digits.
_PAN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
# Mainland resident ID: 17 digits + digit or X.
_CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
# Mainland mobile: 1[3-9] + 9 digits, optionally after +86.
_MOBILE = re.compile(r"(?<![0-9])(?:\+?86[ -]?)?1[3-9][0-9]{9}(?![0-9])")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def _mask_digits(digits: str, keep_head: int = 6, keep_tail: int = 4) -> str:
    if len(digits) <= keep_head + keep_tail:
        # Too short to keep both ends: keep the last 4 at most.
        return "*" * max(len(digits) - 4, 0) + digits[-4:]
    return digits[:keep_head] + "*" * (len(digits) - keep_head - keep_tail) + digits[-keep_tail:]


def _mask_pan(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return _mask_digits(digits)


def _mask_mobile(m: re.Match[str]) -> str:
    text = m.group(0)
    return text[:-8] + "****" + text[-4:]


def mask_text(text: str | None) -> str | None:
    """Mask card numbers, ID numbers, mobile numbers and e-mail addresses inside free text."""
    if not text:
        return text
    text = _CN_ID.sub(lambda m: _mask_digits(m.group(0)), text)
    text = _MOBILE.sub(_mask_mobile, text)  # before cards: +86 and 11 digits would look like 13 digits
    text = _PAN.sub(_mask_pan, text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return text


def mask_account(value: str | None) -> str | None:
    """Mask a whole account / card number: keep at most the first 6 and the last 4 characters."""
    if value is None:
        return None
    s = str(value).strip()
    compact = re.sub(r"[ -]", "", s)
    if len(compact) <= 4:
        return "*" * len(compact)
    if len(compact) <= 10:
        return "*" * (len(compact) - 4) + compact[-4:]
    return compact[:6] + "*" * (len(compact) - 10) + compact[-4:]
