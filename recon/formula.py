"""The formula-injection rule for text that spreadsheets will open, in one place.

A text beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage return could be
evaluated as a formula; CSV files get a leading apostrophe (OWASP's advice). The
bottom layer holds it so that ``reports`` (workbooks, exports) and ``settlement``
(merchant statements) apply the same rule without importing each other.
"""
from __future__ import annotations

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def is_dangerous(text: str) -> bool:
    """True when spreadsheet software could read ``text`` as a formula."""
    return text.startswith(DANGEROUS_PREFIXES)


def csv_safe(value: object) -> object:
    """For CSV exports: prefix a dangerous text with an apostrophe; other values unchanged."""
    if isinstance(value, str) and is_dangerous(value):
        return "'" + value
    return value


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def csv_safe_sql(expr: str) -> str:
    """The same rule as a SQL expression over the text expression ``expr`` (for DuckDB ``COPY``)."""
    firsts = ", ".join(sql_literal(c) for c in DANGEROUS_PREFIXES)
    return f"CASE WHEN left({expr}, 1) IN ({firsts}) THEN {sql_literal(chr(39))} || {expr} ELSE {expr} END"
