"""Masking and formula-injection rules on their own, with hostile and innocent input."""
from __future__ import annotations

import pytest

from reports.safe import csv_safe, is_dangerous, mask_account, mask_text


@pytest.mark.parametrize("text", ["=1+1", "+86 138", "-5", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"x\")"])
def test_dangerous_prefixes(text):
    assert is_dangerous(text)
    assert csv_safe(text) == "'" + text


@pytest.mark.parametrize("text", ["abc", " =1", "1-2", "a@b", "", "（=1）"])
def test_innocent_text_is_left_alone(text):
    assert not is_dangerous(text)
    assert csv_safe(text) == text
    assert csv_safe(12) == 12


@pytest.mark.parametrize("raw, masked", [
    ("card 4111111111111111 ok", "card 411111******1111 ok"),
    ("card 4111 1111 1111 1111", "card 411111******1111"),
    ("card 4111-1111-1111-1111.", "card 411111******1111."),
    ("6222021234567890123", "622202*********0123"),          # 19 digits
    ("id 11010119900307123X here", "id 110101********123X here"),
    ("tel 13812345678", "tel 138****5678"),
    ("tel +8613812345678", "tel +86138****5678"),
    ("mail zhang.san@example.com.cn", "mail z***@example.com.cn"),
])
def test_personal_data_is_masked(raw, masked):
    assert mask_text(raw) == masked


@pytest.mark.parametrize("text", [
    "4200001234202606051234567890",   # a 28-digit WeChat transaction id is not a card number
    "order 202606050001",             # 12 digits
    "amount 1,234.56 on 2026-06-05",
    "",
    None,
])
def test_identifiers_and_amounts_are_not_masked(text):
    assert mask_text(text) == text


def test_mask_account_keeps_at_most_first_6_and_last_4():
    assert mask_account("6222 0202 0011 2233 445") == "622202*********3445"
    assert mask_account("12345678") == "****5678"
    assert mask_account("123") == "***"
    assert mask_account(None) is None
