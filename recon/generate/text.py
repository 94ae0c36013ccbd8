"""Vectorised text building for the generator: numpy numbers in, Arrow string columns out, bytes to files.

Every line of every generated file is built column-wise with Arrow compute
(``binary_join_element_wise``) and written straight from the Arrow data buffer:
no Python loop runs per row. Amounts are integer fen all the way until they
become text here, so nothing passes through a float.
"""
from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HMS = pa.array([f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)], pa.string())
_HMS_COMPACT = pa.array([f"{h:02d}{m:02d}{s:02d}" for h in range(24) for m in range(60) for s in range(60)],
                        pa.string())


def s(values) -> pa.Array:
    """Any numpy/py sequence as an Arrow string array."""
    if isinstance(values, pa.Array):
        return values if values.type == pa.string() else pc.cast(values, pa.string())
    return pc.cast(pa.array(values), pa.string())


def zpad(values: np.ndarray, width: int) -> pa.Array:
    """Non-negative integers, zero padded to ``width`` digits."""
    return pc.utf8_lpad(pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string()), width, "0")


def yuan(fen: np.ndarray, decimals: int = 2, plus: str = "") -> pa.Array:
    """Integer fen -> '1234.56' (or '-0.12'; ``decimals`` > 2 appends zeros like WeChat's '0.60000')."""
    fen = np.asarray(fen, dtype=np.int64)
    neg = fen < 0
    a = np.abs(fen)
    body = pc.binary_join_element_wise(s(a // 100), zpad(a % 100, 2), ".")
    if decimals > 2:
        body = pc.binary_join_element_wise(body, "0" * (decimals - 2), "")
    if neg.any() or plus:
        sign = pc.if_else(pa.array(neg), "-", plus)
        body = pc.binary_join_element_wise(sign, body, "")
    return body


def yuan1(fen: int, decimals: int = 2) -> str:
    """One amount in fen as text (footers)."""
    sign = "-" if fen < 0 else ""
    a = abs(int(fen))
    return f"{sign}{a // 100}.{a % 100:02d}" + "0" * (decimals - 2)


def clock(seconds: np.ndarray) -> pa.Array:
    """Seconds of the day (0..86399) -> 'hh:mm:ss'."""
    return _HMS.take(pa.array(np.asarray(seconds, dtype=np.int64)))


def clock_compact(seconds: np.ndarray) -> pa.Array:
    return _HMS_COMPACT.take(pa.array(np.asarray(seconds, dtype=np.int64)))


def stamp(day: date, seconds: np.ndarray) -> pa.Array:
    """'YYYY-MM-DD hh:mm:ss' for seconds of ``day`` (seconds may reach into the next day)."""
    seconds = np.asarray(seconds, dtype=np.int64)
    nxt = seconds >= 86400
    if not nxt.any():
        return pc.binary_join_element_wise(day.isoformat(), clock(seconds), " ")
    from datetime import timedelta
    days = pc.if_else(pa.array(nxt), (day + timedelta(days=1)).isoformat(), day.isoformat())
    return pc.binary_join_element_wise(days, clock(seconds % 86400), " ")


def join(fields: list, sep: str = ",", end: str = "\r\n") -> pa.Array:
    """Join columns (arrays or str constants) into lines ending in ``end``."""
    line = pc.binary_join_element_wise(*fields, sep)
    return pc.binary_join_element_wise(line, "", end)


def buffer_bytes(lines: pa.Array) -> memoryview:
    """The concatenated bytes of a string/binary array, straight from its data buffer (no copy)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if len(lines) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset: lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    return memoryview(data)[int(offsets[0]): int(offsets[-1])]


def to_gbk(lines: pa.Array) -> bytes:
    """Encode lines to GBK. Lines are ASCII apart from a few constants, so this is one C-level encode."""
    return bytes(buffer_bytes(lines)).decode("utf-8").encode("gbk")


def repeat_rows(table: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.repeat(v, counts) for k, v in table.items()}
