"""Per-source admission of new calls: one source address cannot take the node.

Pure logic with an injected clock, no pjsua2: :class:`SipEndpoint` asks :meth:`Admission.admit`
for every new INVITE (after the ``allowed_networks`` ACL and the node's own ``max_calls``) and
calls :meth:`Admission.release` when an admitted call ends. Two limits per source IP, both off for
sources in ``trusted_networks`` (the carrier trunks / SBC that legitimately carry many callers):

* concurrency: at most ``max_calls`` admitted calls up at once → **486 Busy Here** (the source is
  busy, not the node; a retry after one of its calls ends can succeed);
* rate: a token bucket of ``burst`` tokens refilled at ``rate`` per second, one per new INVITE →
  **503 Service Unavailable** with ``Retry-After`` (whole seconds until the next token).

A refused INVITE costs no call slot of ours and no bucket state beyond the source's own entry;
entries of sources with no call up and a full bucket are dropped, so the table stays as small as
the set of sources that are active right now.
"""
from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sip.config import in_networks

BUSY_HERE = 486
SERVICE_UNAVAILABLE = 503
# Prune idle entries at most this often (seconds), so admit() stays O(1) amortised.
_PRUNE_EVERY_S = 10.0


@dataclass(frozen=True)
class Refusal:
    """Why a new INVITE is refused, and the final response to send."""

    status_code: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    in_a_row: int = 1  # INVITEs of this source refused since it last had one admitted


@dataclass
class _Source:
    tokens: float
    stamp: float
    calls: int = 0
    refused: int = 0


class Admission:
    """Concurrency cap and INVITE rate limit per source IP; call from one thread only.

    ``max_calls`` 0 means no concurrency cap, ``rate`` 0 no rate limit.
    """

    def __init__(
        self,
        *,
        max_calls: int,
        rate: float,
        burst: int,
        trusted_networks: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_calls < 0 or rate < 0 or burst < 1:
            raise ValueError(f"admission limits out of range: max_calls={max_calls} rate={rate} burst={burst}")
        self.max_calls = max_calls
        self.rate = rate
        self.burst = burst
        self._trusted = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted_networks)
        self._clock = clock
        self._sources: dict[str, _Source] = {}
        self._pruned_at = clock()

    def is_trusted(self, source: str) -> bool:
        return in_networks(source, self._trusted)

    def admit(self, source: str) -> Refusal | None:
        """Count a new INVITE from ``source`` (an IP, no port): ``None`` admits it (and counts the
        call until :meth:`release`), a :class:`Refusal` says how to answer it."""
        if self.is_trusted(source):
            return None
        now = self._clock()
        self._prune(now)
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source(tokens=float(self.burst), stamp=now)
        else:
            self._refill(entry, now)
        if self.max_calls and entry.calls >= self.max_calls:
            entry.refused += 1
            return Refusal(
                BUSY_HERE, f"{entry.calls} calls from {source} already up (max_calls_per_source)", in_a_row=entry.refused
            )
        if self.rate:
            if entry.tokens < 1.0:
                entry.refused += 1
                wait = max(1, math.ceil((1.0 - entry.tokens) / self.rate))
                return Refusal(
                    SERVICE_UNAVAILABLE,
                    f"INVITEs from {source} over {self.rate:g}/s (burst {self.burst})",
                    {"Retry-After": str(wait)},
                    in_a_row=entry.refused,
                )
            entry.tokens -= 1.0
        entry.calls += 1
        entry.refused = 0
        return None

    def release(self, source: str) -> None:
        """An admitted call from ``source`` ended."""
        entry = self._sources.get(source)
        if entry is not None and entry.calls > 0:
            entry.calls -= 1

    def calls(self, source: str) -> int:
        """Admitted calls from ``source`` now up (0 for trusted or unknown sources)."""
        entry = self._sources.get(source)
        return entry.calls if entry is not None else 0

    def tracked_sources(self) -> int:
        return len(self._sources)

    def _refill(self, entry: _Source, now: float) -> None:
        if self.rate:
            entry.tokens = min(float(self.burst), entry.tokens + (now - entry.stamp) * self.rate)
        entry.stamp = now

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for source, entry in list(self._sources.items()):
            self._refill(entry, now)
            if entry.calls == 0 and entry.tokens >= self.burst:
                del self._sources[source]
