"""What Meta says about our WhatsApp account, and whether callers may be deflected to WhatsApp now.

Meta posts more than messages to the webhook: template reviews (approved, paused, disabled,
rejected, deleted…), template quality and category changes, the phone number's quality and
limits, account updates (violations, restrictions). The webhook records each one as received
(``store.whatsapp.ingest``); ``AccountHealth`` is their in-memory view, rebuilt from those records
at start and shown in ``/healthz``.

One of them changes what calls do: while the deflection template (``whatsapp.template``) is paused,
disabled, rejected or deleted in a language, callers who would get it stay in voice (the follow-up a
deflection promises could not be sent) until Meta approves or reinstates it. The rest is shown and
logged and stops nothing.

Meta may deliver late or out of order, so each part of the state follows the event with the latest
time (the webhook entry's ``time``); replaying the records in the order received therefore rebuilds
the state the live webhooks left.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gateway.store import AccountEvent
from gateway.whatsapp import wire
from gateway.whatsapp.templates import TemplateRegistry

log = logging.getLogger(__name__)

#: Template events after which Meta refuses to send the template.
STOPPING = frozenset({"PAUSED", "DISABLED", "REJECTED", "PENDING_DELETION", "DELETED"})
#: Template events after which it can be sent again.
RESUMING = frozenset({"APPROVED", "REINSTATED"})
#: A template event that names no language is about all of them.
ALL_LANGUAGES = "all"
# Worth an operator's attention, though nothing stops: a RED template is close to being paused, and a
# flagged number or a restricted account comes before Meta limits what the number may send.
_LOW_QUALITY = "RED"
_PHONE_ALERTS = frozenset({"FLAGGED", "DOWNGRADE"})
_ACCOUNT_ALERTS = frozenset({"ACCOUNT_VIOLATION", "ACCOUNT_RESTRICTION", "DISABLED_UPDATE", "ACCOUNT_DELETED"})

_Log = list[tuple[int, str]]


@dataclass(frozen=True)
class Mark:
    """One value Meta reported, since when, and its words beside it (a reason, a limit…)."""

    value: str
    since: datetime
    note: str | None = None

    def newer_than(self, other: Mark | None) -> bool:
        return other is None or self.since >= other.since


@dataclass
class TemplateState:
    """One template in one language (``ALL_LANGUAGES`` for events that name none)."""

    language: str  # as Meta wrote it
    status: Mark | None = None  # the latest review event: APPROVED, PAUSED, FLAGGED, IN_APPEAL…
    sendable: Mark | None = None  # the latest of STOPPING and RESUMING, which say whether it can be sent
    quality: Mark | None = None
    category: Mark | None = None


class AccountHealth:
    """The account as the management webhooks describe it; ``deflection_unavailable`` is what routing asks."""

    def __init__(self, template: str, registry: TemplateRegistry) -> None:
        self.template = template
        self._registry = registry
        self._templates: dict[tuple[str, str], TemplateState] = {}  # by (template name, language key)
        self._phone_numbers: dict[str, Mark] = {}
        self._account: Mark | None = None

    # --- what routing and /healthz ask ---------------------------------------------------

    def deflection_unavailable(self, language: str) -> str | None:
        """Why a deflection in ``language`` cannot go now (its template cannot be sent), or None."""
        return self.unavailable(self.template, language)

    def unavailable(self, template: str, language: str) -> str | None:
        """Why ``template`` cannot be sent in ``language`` now (Meta paused, disabled or rejected it), or None."""
        approved = self._registry.get(template, language)
        return self._stopped(template, _language_key(approved.language if approved else language))

    def stopped(self) -> dict[str, str]:
        """The deflection template's configured languages that cannot be sent now, each with why."""
        languages = [lang for name, lang in self._registry.names() if name == self.template]
        reasons = {lang: self._stopped(self.template, _language_key(lang)) for lang in languages}
        return {lang: why for lang, why in reasons.items() if why is not None}

    def as_dict(self) -> dict[str, Any]:
        templates: dict[str, dict[str, Any]] = {}
        for (name, _), state in sorted(self._templates.items()):
            templates.setdefault(name, {})[state.language] = {
                "status": state.status.value if state.status else None,
                "since": _iso(state.status),
                "reason": state.status.note if state.status else None,
                "quality": state.quality.value if state.quality else None,
                "category": state.category.value if state.category else None,
            }
        return {
            "deflections": {"template": self.template, "stopped": self.stopped()},
            "templates": templates,
            "phone_numbers": {
                number: {"event": mark.value, "since": _iso(mark), "limit": mark.note}
                for number, mark in sorted(self._phone_numbers.items())
            },
            "account": None if self._account is None else {
                "event": self._account.value, "since": _iso(self._account), "info": self._account.note,
            },
        }

    # --- what the webhook and the start-up tell -------------------------------------------

    def record(self, event: AccountEvent) -> None:
        """Take a new event, logging what it changes (an alert at WARNING)."""
        for level, message in self._apply(event):
            log.log(level, "whatsapp: %s", message)

    def restore(self, events: Iterable[AccountEvent]) -> None:
        """Rebuild from the recorded events, in the order received (at start); logs what still stops deflections."""
        for event in events:
            try:
                self._apply(event)
            except ValidationError as exc:  # recorded by a version that read the field differently
                log.warning("whatsapp: a recorded %s event does not read as one and is left out: %s", event.field, exc)
        for language, why in self.stopped().items():
            log.warning("whatsapp: alert: %s (recorded before this start); callers in %s stay in voice "
                        "until Meta approves it again", why, language)

    # --- applying one event ----------------------------------------------------------------

    def _apply(self, event: AccountEvent) -> _Log:
        match wire.account_change(event.field, event.value):
            case wire.TemplateStatusChange(value=update):
                lines = self._template_status(update, event.at)
            case wire.TemplateQualityChange(value=update):
                lines = self._template_quality(update, event.at)
            case wire.TemplateCategoryChange(value=update):
                lines = self._template_category(update, event.at)
            case wire.PhoneNumberQualityChange(value=update):
                lines = self._phone_number(update, event.at)
            case wire.AccountUpdateChange(value=update):
                lines = self._account_update(update, event.at)
            case _:
                return [(logging.INFO, f"webhook field {event.field!r} recorded, not acted on")]
        if lines is None:  # delivered late: a later event of the same kind already arrived
            return [(logging.INFO, f"{event.field} event of {event.at.isoformat()} is older than what is known; recorded only")]
        return lines

    def _template_status(self, update: wire.TemplateStatusUpdate, at: datetime) -> _Log | None:
        state = self._state(update)
        mark = Mark(update.event, at, _status_reason(update))
        if not mark.newer_than(state.status):
            return None
        before = self.stopped()
        state.status = mark
        if update.event in STOPPING | RESUMING:
            state.sendable = mark
        after = self.stopped()
        what = f"template {_named(update.message_template_name, state.language)} is {_words(update.event)}"
        because = f" ({mark.note})" if mark.note else ""
        key = _language_key(state.language)
        hit = sorted(lang for lang in after if key in (ALL_LANGUAGES, _language_key(lang)))
        if update.message_template_name == self.template and update.event in STOPPING and hit:
            return [(logging.WARNING, f"alert: {what}{because}; callers in {', '.join(hit)} stay in voice "
                                      "until Meta approves it again")]
        resumed = sorted(before.keys() - after.keys())
        if resumed:
            return [(logging.INFO, f"{what}: deflections resume in {', '.join(resumed)}")]
        return [(logging.INFO, f"{what}{because}")]

    def _template_quality(self, update: wire.TemplateQualityUpdate, at: datetime) -> _Log | None:
        state = self._state(update)
        mark = Mark(update.new_quality_score, at)
        if not mark.newer_than(state.quality):
            return None
        state.quality = mark
        what = f"template {_named(update.message_template_name, state.language)} quality {mark.value}"
        was = f" (was {update.previous_quality_score})" if update.previous_quality_score else ""
        if mark.value == _LOW_QUALITY:
            return [(logging.WARNING, f"alert: {what}{was}; Meta pauses templates that stay low")]
        return [(logging.INFO, f"{what}{was}")]

    def _template_category(self, update: wire.TemplateCategoryUpdate, at: datetime) -> _Log | None:
        state = self._state(update)
        category = update.new_category or update.correct_category
        if category is None:
            return []
        note = f"becomes {update.correct_category}" if update.correct_category else None
        mark = Mark(category, at, note)
        if not mark.newer_than(state.category):
            return None
        state.category = mark
        return [(logging.INFO, f"template {_named(update.message_template_name, state.language)} category {category}"
                               + (f", {note}" if note else ""))]

    def _phone_number(self, update: wire.PhoneNumberQualityUpdate, at: datetime) -> _Log | None:
        number = update.display_phone_number or "?"
        mark = Mark(update.event, at, update.current_limit or update.max_daily_conversations_per_business)
        if not mark.newer_than(self._phone_numbers.get(number)):
            return None
        self._phone_numbers[number] = mark
        level = logging.WARNING if update.event in _PHONE_ALERTS else logging.INFO
        return [(level, f"phone number {number}: {update.event}" + (f", limit {mark.note}" if mark.note else ""))]

    def _account_update(self, update: wire.AccountUpdate, at: datetime) -> _Log | None:
        info = json.dumps(update.model_extra, sort_keys=True) if update.model_extra else None
        mark = Mark(update.event, at, info)
        if not mark.newer_than(self._account):
            return None
        self._account = mark
        level = logging.WARNING if update.event in _ACCOUNT_ALERTS else logging.INFO
        return [(level, f"account update {update.event}" + (f": {info}" if info else ""))]

    # --- helpers -------------------------------------------------------------------------

    def _state(self, ref: wire.TemplateStatusUpdate | wire.TemplateQualityUpdate | wire.TemplateCategoryUpdate) -> TemplateState:
        language = ref.message_template_language or ALL_LANGUAGES
        key = (ref.message_template_name, _language_key(language))
        return self._templates.setdefault(key, TemplateState(language))

    def _stopped(self, template: str, language_key: str) -> str | None:
        """Why ``template`` cannot be sent in ``language_key``: the latest word on it, whether it named that
        language or none."""
        candidates = [
            (state.sendable, state.language) for (name, key), state in self._templates.items()
            if name == template and key in (language_key, ALL_LANGUAGES) and state.sendable is not None
        ]
        if not candidates:
            return None
        mark, language = max(candidates, key=lambda c: c[0].since)
        if mark.value not in STOPPING:
            return None
        return f"WhatsApp template {_named(template, language)} is {_words(mark.value)}"


def _language_key(language: str) -> str:
    """Meta writes "en_US" in the API and "en-US" in some webhooks; both name the same template."""
    return language if language == ALL_LANGUAGES else language.replace("-", "_").lower()


def _named(template: str, language: str) -> str:
    return template if language == ALL_LANGUAGES else f"{template} ({language})"


def _words(event: str) -> str:
    return event.lower().replace("_", " ")


def _status_reason(update: wire.TemplateStatusUpdate) -> str | None:
    """Meta's reason in its own words: the rejection reason ("NONE" for a pause), the pause's description."""
    parts = [update.reason if update.reason and update.reason != "NONE" else None]
    if update.other_info is not None:
        parts.append(update.other_info.description or update.other_info.title)
    if update.rejection_info is not None:
        parts.append(update.rejection_info.reason)
    return "; ".join(p for p in parts if p) or None


def _iso(mark: Mark | None) -> str | None:
    return None if mark is None else mark.since.isoformat()
