"""Our sending pace: a rate across customers and a least interval per customer, on an injected clock."""
from __future__ import annotations

from gateway.timing import Clock


class Throttle:
    """Our own send rate: a token bucket across customers, and a least interval per customer.

    The per-customer interval mirrors WhatsApp's pair rate limit (about one message every
    6 s to the same user, code 131056); respecting it locally avoids spending attempts on it.
    State is in memory: after a restart the first message to a customer may come sooner,
    in which case 131056 is retried like any throughput error.
    """

    def __init__(self, clock: Clock, *, messages_per_second: float, per_user_interval_s: float) -> None:
        self._clock = clock
        self._rate = messages_per_second
        self._burst = max(1.0, messages_per_second)
        self._tokens = self._burst
        self._refilled = clock.monotonic()
        self._interval = per_user_interval_s
        self._last_to: dict[str, float] = {}

    def wait_for_user(self, number: str) -> float:
        """Seconds until ``number`` may get another message (0: now)."""
        last = self._last_to.get(number)
        if last is None:
            return 0.0
        return max(0.0, last + self._interval - self._clock.monotonic())

    def sent_to(self, number: str) -> None:
        self._last_to[number] = self._clock.monotonic()
        if len(self._last_to) > 10_000:  # forget customers whose interval has long passed
            horizon = self._clock.monotonic() - self._interval
            self._last_to = {n: t for n, t in self._last_to.items() if t > horizon}

    async def acquire(self) -> None:
        """Take one send token, sleeping (on the clock) until one is available."""
        while True:
            now = self._clock.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await self._clock.sleep((1.0 - self._tokens) / self._rate)
