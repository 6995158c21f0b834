"""Delivers handoffs to a human chat agent: ``POST flows.handoff_webhook_url`` with the whole context.

Every attempt is recorded on the handoff. A failure is retried at once a few times
(``handoff_attempts``, shared backoff), then again in the background every
``handoff_retry_interval_s`` until ``handoff_max_attempts``; a crash leaves the handoff
``pending``, and the first background pass after the restart picks it up. The receiver gets
``Idempotency-Key: puente-handoff-<id>`` (a retried delivery is the same handoff) and, with
``flows.handoff_secret``, ``X-Puente-Signature-256: sha256=<HMAC-SHA256 hex>`` of the body.
"""
from __future__ import annotations

import json
import logging
import random
from datetime import timedelta

import httpx

from gateway.config import FlowSettings
from gateway.signing import sign
from gateway.store import Store
from gateway.timing import Clock, backoff_delay

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Puente-Signature-256"


class HandoffDelivery:
    def __init__(self, store: Store, settings: FlowSettings, http: httpx.AsyncClient, *, clock: Clock, rng: random.Random) -> None:
        self._store = store
        self._s = settings
        self._http = http
        self._clock = clock
        self._rng = rng

    async def deliver(self, handoff_id: int, *, attempts: int | None = None) -> bool:
        """Up to ``attempts`` (default ``handoff_attempts``) tries now; True once delivered."""
        s, conversations = self._s, self._store.conversations
        if not s.handoff_webhook_url:
            await conversations.handoff_not_configured(handoff_id)
            return False
        record = await conversations.handoff(handoff_id)
        if record is None or record["status"] == "delivered":
            return True
        body = json.dumps(record["payload"], ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"puente-handoff-{handoff_id}"}
        if s.handoff_secret is not None:
            headers[SIGNATURE_HEADER] = sign(s.handoff_secret, body)
        tries = attempts or s.handoff_attempts
        for attempt in range(1, tries + 1):
            error, code = await self._post(body, headers)
            now, last = self._clock.now(), attempt == tries
            if error is None:
                await conversations.handoff_attempted(handoff_id, now=now, ok=True, error=None, response_status=code, status="delivered")
                log.info("flows: handoff %s delivered (%s)", handoff_id, code)
                return True
            await conversations.handoff_attempted(
                handoff_id, now=now, ok=False, error=error, response_status=code, status="failed" if last else "pending",
                next_attempt_at=now + timedelta(seconds=s.handoff_retry_interval_s) if last else None,
            )
            log.warning("flows: handoff %s attempt failed: %s", handoff_id, error)
            if not last:
                await self._clock.sleep(
                    backoff_delay(attempt, base_s=s.handoff_backoff_s, cap_s=s.handoff_retry_interval_s, rng=self._rng)
                )
        return False

    async def redeliver_due(self, *, include_pending: bool = False) -> int:
        """One pass over failed handoffs whose time has come (``include_pending``: also those a crash left
        pending); returns how many were delivered."""
        ids = await self._store.conversations.due_handoffs(
            now=self._clock.now(), max_attempts=self._s.handoff_max_attempts, include_pending=include_pending,
        )
        delivered = 0
        for handoff_id in ids:
            delivered += await self.deliver(handoff_id, attempts=1)
        return delivered

    async def run(self) -> None:
        """Redeliver in the background until cancelled; the first pass also takes what a crash left pending."""
        first = True
        while True:
            try:
                await self.redeliver_due(include_pending=first)
            except Exception:
                log.exception("flows: handoff redelivery pass failed")
            first = False
            await self._clock.sleep(self._s.handoff_retry_interval_s)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, int | None]:
        """(error or None, HTTP status or None)."""
        try:
            response = await self._http.post(self._s.handoff_webhook_url, content=body, timeout=self._s.handoff_timeout_s, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}".strip().rstrip(":"), None
        return (None if response.is_success else f"HTTP {response.status_code}"), response.status_code
