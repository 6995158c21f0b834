"""The sender: delivers outbox rows to the Cloud API, durably and at a bounded pace.

Guarantee (read with ``gateway.store.outbox.Outbox.claim``):

* Every message is attempted until accepted, failed for a reason retrying cannot fix, or
  ``max_attempts`` is spent. Rows survive restarts: they live in the database.
* Two senders never send the same row at once: a claim is a compare-and-set with a lease,
  and the lease (``lease_s``) outlives the request timeout.
* The attempt is recorded before the request (``in_doubt_since``). If no definite answer
  comes back (timeout, dropped connection, crash, cancellation) the next sender first looks
  for a status webhook carrying the message's idempotency key in
  ``biz_opaque_callback_data``; if one arrived, the earlier attempt is adopted (its wamid
  stored) and nothing is re-sent. Only after ``in_doubt_grace_s`` with no such webhook —
  counted from the attempt, or from this sender's start if later, so webhooks Meta retries
  after an outage can land first — is the message sent again.
* So delivery is exactly-once whenever WhatsApp's status webhook for an ambiguous attempt
  arrives within the grace period, and at-least-once otherwise (the Cloud API has no
  idempotency key; a duplicate is then detected and recorded as ``whatsapp_duplicate_send``).
  Definite HTTP error answers are treated as "not sent".
* A row is not claimed before its not-before time; a recovery whose caller called back or was
  reached meanwhile is cancelled by the claim instead of being handed out.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from gateway.config import WhatsAppSettings
from gateway.store import OutboxClaim, Store
from gateway.timing import Clock, backoff_delay
from gateway.whatsapp.client import CloudApiClient
from gateway.whatsapp.errors import (
    CloudApiError,
    DeliveryInDoubt,
    MessageBuildError,
    OutsideWindowError,
    ReengagementError,
    RetryableApiError,
    SendNotAttempted,
    TemplateError,
    TokenExpiredError,
    UndeliverableError,
)
from gateway.whatsapp.pacing import Throttle
from gateway.whatsapp.templates import MessageBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """Something an operator must fix; the sender keeps running."""

    kind: str  # "token_expired" | "template_misconfigured" | "payload_invalid"
    message: str


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        client: CloudApiClient,
        builder: MessageBuilder,
        settings: WhatsAppSettings,
        *,
        clock: Clock,
        rng: random.Random,
        throttle: Throttle | None = None,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._builder = builder
        self._s = settings
        self._clock = clock
        self._rng = rng
        self._throttle = throttle or Throttle(
            clock, messages_per_second=settings.messages_per_second, per_user_interval_s=settings.per_user_interval_s
        )
        self._on_alert = on_alert
        self._stopping = False
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._listening_since = clock.now()  # built with the webhook router, so webhooks are received from here on

    # --- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``stop()``; a stop lets the message in hand finish (no attempt left in doubt)."""
        self._stopping = False
        while not self._stopping:
            pause = self._paused_until - self._clock.monotonic()
            if pause > 0:
                await self._idle(pause)
                continue
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end delivery for good
                log.exception("whatsapp outbox: delivery pass failed; retrying")
                worked = False
            if not worked:
                await self._idle(self._s.poll_interval_s)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Look for due messages now (e.g. right after a decision was written)."""
        self._wake.set()

    async def _idle(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            self._wake.clear()

    # --- one message -----------------------------------------------------------------

    async def run_once(self) -> bool:
        """Claim and handle one due message; ``False`` when none is due."""
        claim = await self._store.outbox.claim(
            now=self._clock.now(), lease_s=self._s.lease_s, in_doubt_grace_s=self._s.in_doubt_grace_s,
            listening_since=self._listening_since,
        )
        if claim is None:
            return False
        await self._deliver(claim)
        return True

    async def _deliver(self, claim: OutboxClaim) -> None:
        try:
            message = self._builder.build(claim.payload, to=claim.to_number, callback_data=claim.idempotency_key)
        except MessageBuildError as exc:
            self._alert(Alert("payload_invalid", f"outbox message {claim.id}: {exc}"))
            await self._fail(claim, str(exc), code=None, fallback=False)
            return
        if message.type != "template" and not await self._window_open(claim.to_number):
            # Decided locally, without spending an API call: WhatsApp would answer 131047.
            await self._fail(claim, f"{OutsideWindowError.code}: {OutsideWindowError.__doc__.strip()}", code=OutsideWindowError.code, fallback=False)
            return
        wait = self._throttle.wait_for_user(claim.to_number)
        if wait > 0:
            await self._retry(claim, "waiting for the per-customer interval", None, delay=wait, in_doubt=False, consume_attempt=False)
            return
        await self._throttle.acquire()
        try:
            result = await self._client.send(message)
        except SendNotAttempted as exc:
            await self._retry(claim, str(exc), None, in_doubt=False)
        except DeliveryInDoubt as exc:
            self._throttle.sent_to(claim.to_number)
            await self._retry(claim, str(exc), None, in_doubt=True)
        except TokenExpiredError as exc:
            # Every send would fail the same way: pause the sender, keep the message, alert.
            self._alert(Alert("token_expired", f"Cloud API refused the access token: {exc.describe()}"))
            self._paused_until = self._clock.monotonic() + self._s.auth_pause_s
            await self._retry(claim, exc.describe(), exc.code, delay=self._s.auth_pause_s, in_doubt=False, consume_attempt=False)
        except RetryableApiError as exc:
            await self._retry(claim, exc.describe(), exc.code, in_doubt=False)
        except UndeliverableError as exc:
            await self._fail(claim, exc.describe(), code=exc.code, fallback=True)
        except ReengagementError as exc:
            await self._fail(claim, exc.describe(), code=exc.code, fallback=False)
        except TemplateError as exc:
            self._alert(Alert("template_misconfigured", f"template of outbox message {claim.id}: {exc.describe()}"))
            await self._fail(claim, exc.describe(), code=exc.code, fallback=False)
        except CloudApiError as exc:
            await self._fail(claim, exc.describe(), code=exc.code, fallback=False)
        else:
            self._throttle.sent_to(claim.to_number)
            await self._store.outbox.accepted(claim.id, result.wamid, now=self._clock.now())
            log.info("whatsapp outbox: message %s (%s) accepted as %s", claim.id, claim.purpose, result.wamid)

    async def _window_open(self, number: str) -> bool:
        last = await self._store.whatsapp.last_inbound(number)
        return last is not None and self._clock.now() - last < timedelta(hours=self._s.window_hours)

    async def _retry(
        self, claim: OutboxClaim, error: str, code: int | None, *, in_doubt: bool,
        delay: float | None = None, consume_attempt: bool = True,
    ) -> None:
        if consume_attempt and claim.attempts >= self._s.max_attempts:
            await self._fail(claim, f"gave up after {claim.attempts} attempts; last: {error}", code=code, fallback=True)
            return
        if delay is None:
            delay = backoff_delay(claim.attempts, base_s=self._s.backoff_base_s, cap_s=self._s.backoff_cap_s, rng=self._rng)
        now = self._clock.now()
        # Waiting out our own pacing is routine; a failed attempt is worth a warning.
        log.log(logging.WARNING if consume_attempt else logging.INFO,
                "whatsapp outbox: message %s attempt %s: %s; next in %.1fs", claim.id, claim.attempts, error, delay)
        await self._store.outbox.retry_later(
            claim.id, now=now, next_attempt_at=now + timedelta(seconds=delay),
            error=error, error_code=code, in_doubt=in_doubt, consume_attempt=consume_attempt,
        )

    async def _fail(self, claim: OutboxClaim, error: str, *, code: int | None, fallback: bool) -> None:
        log.warning("whatsapp outbox: message %s (%s) failed: %s", claim.id, claim.purpose, error)
        await self._store.outbox.failed(claim.id, now=self._clock.now(), error=error, error_code=code, fallback=fallback)

    def _alert(self, alert: Alert) -> None:
        log.error("whatsapp alert (%s): %s", alert.kind, alert.message)
        if self._on_alert is not None:
            self._on_alert(alert)
