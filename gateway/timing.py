"""Time and retries for every room: one clock protocol and one backoff rule.

Everything that waits, retries or stamps a time takes a ``Clock``, so tests drive time
instead of sleeping (``tests/support/whatsapp.py`` has a fake one).
"""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...           # wall time (UTC), stored in the database
    def monotonic(self) -> float: ...        # for rates and intervals
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait before retry ``attempt`` (1, 2, …): exponential backoff with "equal jitter", half the
    step fixed, half random.

    The fixed half keeps retries from hammering a recovering server; the random half spreads
    many senders (or many messages after one outage) apart.
    """
    step = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return step / 2 + rng.uniform(0, step / 2)
