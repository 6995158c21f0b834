"""Abandon recovery: the WhatsApp message that picks up where a caller who hung up in a queue left off.

One rule for the two ways a wait is cut short: the caller hanging up (the session asks) and the
gateway stopping with callers waiting (the next start asks, for each interrupted wait).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.config import RecoverySettings
from gateway.store import RECOVERY_PURPOSE, OutboundMessage, Recovery
from gateway.whatsapp.templates import recovery_payload


@dataclass(frozen=True)
class AbandonedWait:
    """What is known of a wait that ended without an agent."""

    intent: str | None
    language: str
    waited_s: float
    to_number: str | None  # the caller's WhatsApp number, None when unusable
    unavailable: str | None  # why WhatsApp cannot be used for them now (their number, our template), or None
    consented: bool  # consent on record, or the operator's policy does not require it
    context: dict[str, Any]  # the call's handoff context, carried into the message and the chat


def plan_recovery(policy: RecoverySettings, wait: AbandonedWait, *, template: str, now: datetime) -> Recovery | str:
    """The recovery to schedule, or why there is none."""
    if not policy.enabled:
        return "recovery is off"
    if wait.waited_s < policy.min_abandon_s:
        return f"hung up after {wait.waited_s:.0f} s < {policy.min_abandon_s:.0f} s"
    if wait.intent is None:
        return "no reason was understood"
    if wait.unavailable is not None or wait.to_number is None:
        return wait.unavailable or "no usable WhatsApp number"
    if not wait.consented:
        return "no WhatsApp consent on record"
    payload = recovery_payload(template, wait.language, wait.context, wait.waited_s)
    message = OutboundMessage(purpose=RECOVERY_PURPOSE, to_number=wait.to_number, payload=payload,
                              not_before=now + timedelta(seconds=policy.delay_s))
    return Recovery(message, window_s=policy.window_s)
