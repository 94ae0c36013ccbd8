"""Retries with exponential backoff and full jitter, for transient faults only.

``with_retries(fn, attempts=..., base=..., cap=..., sleep=..., rng=...)`` calls
``fn()``; a :class:`TransientFetchError` is retried after
``uniform(0, min(cap, base * 2**n))`` seconds (AWS "full jitter"), anything
else (``FetchError``, ``NotYetAvailable``) propagates at once. ``sleep`` and
``rng`` are injectable so tests run without waiting.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from loaders.fetch.base import TransientFetchError

log = logging.getLogger("loaders.fetch")
T = TypeVar("T")

Sleep = Callable[[float], None]


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): full jitter under an exponential cap."""
    return rng() * min(cap, base * (2 ** attempt))


def with_retries(fn: Callable[[], T], *, retries: int, base: float, cap: float, what: str,
                 sleep: Sleep | None = None, rng: Callable[[], float] = random.random) -> T:
    """Run ``fn``; retry transient faults up to ``retries`` more times; re-raise the last one."""
    sleep = sleep or time.sleep
    for attempt in range(retries + 1):
        try:
            return fn()
        except TransientFetchError as exc:
            if attempt >= retries:
                raise TransientFetchError(f"{exc} (gave up after {attempt + 1} attempts)") from None
            delay = backoff_delay(attempt, base, cap, rng)
            log.warning("%s: transient fault (attempt %d of %d): %s; retrying in %.1fs",
                        what, attempt + 1, retries + 1, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
