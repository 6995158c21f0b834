"""Writes one call's facts to the context store, and keeps the call going when the store fails.

A full disk or a lost database must not drop a caller: the first failed write is remembered in
``failure``, later writes are skipped, and the session (which reads ``failure``) keeps the caller
in voice, since a WhatsApp promise needs its outbox row.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.store import DecisionRecord, NewCall, OutboundMessage, Recovery, Store, StoreError, UtteranceRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


class CallRecorder:
    def __init__(self, store: Store, call_id: str) -> None:
        self._store = store
        self.call_id = call_id
        self.failure: str | None = None  # the first write that failed, and why

    async def start(self, call: NewCall, state: str) -> None:
        await self._write("call start", lambda: self._store.calls.create(call, state))

    async def event(self, type_: str, data: dict[str, Any], *, state: str | None = None, language: str | None = None) -> None:
        await self._write(f"event {type_}", lambda: self._store.calls.record_event(self.call_id, type_, data, state=state, language=language))

    async def utterance(self, utterance: UtteranceRecord, *, language: str | None) -> None:
        await self._write("utterance", lambda: self._store.calls.record_utterance(self.call_id, utterance, language=language))

    async def decision(self, decision: DecisionRecord, message: OutboundMessage | None) -> None:
        await self._write("decision", lambda: self._store.calls.record_decision(self.call_id, decision, message))

    async def message(self, message: OutboundMessage, *, event: str, data: dict[str, Any]) -> bool:
        """Queue a message during the call; False when one of its purpose was already queued (or the store failed)."""
        return bool(await self._write(f"message {message.purpose}", lambda: self._store.calls.record_message(
            self.call_id, message, event=event, data=data)))

    async def consent_on_record(self, number: str) -> bool:
        """Whether ``number`` granted WhatsApp consent last time it was asked (unknown when the store fails: no)."""
        return bool(await self._write("consent lookup", lambda: self._store.consents.latest(number)))

    async def consent(self, number: str, *, granted: bool, method: str) -> None:
        await self._write("consent", lambda: self._store.consents.record(number, granted=granted, method=method, call_id=self.call_id))

    async def end(self, *, outcome: str, ended_by: str, reason: str, recovery: Recovery | None = None) -> None:
        """``recovery``: the WhatsApp message an abandoned call schedules (see ``Calls.end``)."""
        await self._write("call end", lambda: self._store.calls.end(
            self.call_id, outcome=outcome, ended_by=ended_by, reason=reason, recovery=recovery))

    async def _write(self, what: str, operation: Callable[[], Awaitable[T]]) -> T | None:
        if self.failure is not None:
            return None
        try:
            return await operation()
        except StoreError as exc:
            self.failure = f"{what}: {exc}".splitlines()[0]
            log.error("call %s: context store failed, the call continues unrecorded: %s", self.call_id, self.failure)
            return None
