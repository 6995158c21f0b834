"""The approved-template registry and the translation of outbox payloads into Cloud API messages.

The registry comes from ``WhatsAppSettings.templates``; the sender builds messages from it
and the sandbox validates against the same one, so a template that works in the sandbox
has the same name, language and parameter count the real account must have approved.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from gateway.config import WhatsAppTemplate
from gateway.whatsapp import wire
from gateway.whatsapp.errors import MessageBuildError

# Cloud API rejects template parameters with newlines, tabs or more than 4 consecutive spaces.
_BAD_WHITESPACE = re.compile(r"[\n\t\r]+| {5,}")
PARAMETER_MAX = 600  # keeps the rendered body well under the 1024-character template limit
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


def clean_parameter(value: Any) -> str:
    text = _BAD_WHITESPACE.sub(" ", str(value if value is not None else "")).strip() or "-"
    return text if len(text) <= PARAMETER_MAX else text[: PARAMETER_MAX - 1] + "…"


def parameter_problem(text: str) -> str | None:
    """What the real API would object to in one body parameter, or ``None``."""
    if not text:
        return "Parameter text cannot be empty"
    if _BAD_WHITESPACE.search(text):
        return "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
    return None


class TemplateRegistry:
    def __init__(self, templates: Iterable[WhatsAppTemplate]) -> None:
        self._templates = {(t.name, t.language): t for t in templates}

    def get(self, name: str, language: str) -> WhatsAppTemplate | None:
        """Exact language code first, then the same language's regional variant ("es" ↔ "es_MX")."""
        exact = self._templates.get((name, language))
        if exact is not None:
            return exact
        base = language.split("_")[0].lower()
        for (n, lang), template in self._templates.items():
            if n == name and lang.split("_")[0].lower() == base:
                return template
        return None

    def exact(self, name: str, language: str) -> WhatsAppTemplate | None:
        return self._templates.get((name, language))

    def names(self) -> list[tuple[str, str]]:
        return sorted(self._templates)

    @staticmethod
    def render(template: WhatsAppTemplate, parameters: Sequence[str]) -> str:
        return _PLACEHOLDER.sub(lambda m: parameters[int(m.group(1)) - 1] if int(m.group(1)) <= len(parameters) else m.group(0), template.body)


def followup_payload(template: str, language: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The outbox payload of the first message after a deflection: ``template`` quotes the call's
    reason ({{1}}) and the caller's words ({{2}}); ``context`` (the handoff context) travels along
    for the self-service flow."""
    # The template quotes the words and ends the sentence itself.
    return _call_payload(template, language, context, str(context["transcript"]).rstrip(" ."))


def recovery_payload(template: str, language: str, context: Mapping[str, Any], waited_s: float) -> dict[str, Any]:
    """The outbox payload of the message after an abandoned call: ``template`` quotes the call's reason
    ({{1}}) and how long the caller waited ({{2}}, in words of ``language``); the context carries the wait too."""
    return _call_payload(template, language, {**context, "waited_s": round(waited_s, 1)}, spoken_duration(waited_s, language))


def documents_payload(template: str, language: str, context: Mapping[str, Any], flow: str) -> dict[str, Any]:
    """The outbox payload of the link for documents during a voice call: ``template`` quotes the call's
    reason ({{1}}); a reply opens ``flow`` (the one that collects files) with the call's context."""
    return {"template": template, "language": language, "parameters": [context["intent"]],
            "context": {**context, "flow": flow}}


def _call_payload(template: str, language: str, context: Mapping[str, Any], detail: str) -> dict[str, Any]:
    """A template about a call: {{1}} its reason (an intent id put into words by ``MessageBuilder``), {{2}}
    ``detail``; the context is what the conversation a reply opens starts from."""
    return {"template": template, "language": language, "parameters": [context["intent"], detail], "context": dict(context)}


#: (singular, plural) of hours, minutes and seconds, and the word before the last part, per language.
_DURATION_WORDS = {
    "es": ((("hora", "horas"), ("minuto", "minutos"), ("segundo", "segundos")), "y"),
    "en": ((("hour", "hours"), ("minute", "minutes"), ("second", "seconds")), "and"),
}


def spoken_duration(seconds: float, language: str) -> str:
    """``seconds`` as a person says it: "2 minutos y 31 segundos", "1 hour and 5 minutes" (two largest units;
    a language without words here reads as Spanish)."""
    units, conjunction = _DURATION_WORDS.get(language.split("_")[0].lower(), _DURATION_WORDS["es"])
    total = max(1, round(seconds))
    amounts = (total // 3600, total % 3600 // 60, total % 60)
    parts = [f"{n} {words[n != 1]}" for n, words in zip(amounts, units) if n][:2]
    return f" {conjunction} ".join(parts)


class MessageBuilder:
    """Outbox payload → typed Cloud API message.

    Payload shapes (``payload["type"]``, default ``"template"``):
    ``{"template", "language", "parameters", "context"?, "buttons"?}`` (what a deflection or a recovery writes),
    ``{"type": "text", "text"}``, ``{"type": "interactive", "interactive": {...wire format...}}``,
    ``{"type": "buttons", "text", "buttons": [{"id", "title"}, ...≤3], "header"?, "footer"?}`` (reply buttons) and
    ``{"type": "list", "text", "button", "rows": [{"id", "title", "description"?}, ...≤10], "header"?, "footer"?}``;
    titles longer than WhatsApp allows are shortened with "…" rather than refused.
    """

    def __init__(
        self, registry: TemplateRegistry, intent_labels: Mapping[str, Mapping[str, str]], reason_templates: Collection[str],
    ) -> None:
        """``reason_templates``: the templates whose {{1}} is the call reason (``WhatsAppSettings.reason_templates``)."""
        self.registry = registry
        self._labels = intent_labels
        self._reason_templates = frozenset(reason_templates)

    def build(self, payload: Mapping[str, Any], *, to: str, callback_data: str | None) -> wire.TemplateMessage | wire.TextMessage | wire.InteractiveMessage:
        kind = payload.get("type", "template")
        try:
            if kind == "template":
                return self._template(payload, to=to, callback_data=callback_data)
            if kind == "text":
                return wire.TextMessage(to=to, text=wire.Text(body=str(payload["text"])), biz_opaque_callback_data=callback_data)
            if kind == "interactive":
                return wire.InteractiveMessage(to=to, interactive=payload["interactive"], biz_opaque_callback_data=callback_data)
            if kind in ("buttons", "list"):
                return wire.InteractiveMessage(to=to, interactive=interactive_of(payload), biz_opaque_callback_data=callback_data)
        except (KeyError, TypeError, ValidationError) as exc:
            raise MessageBuildError(f"invalid {kind} payload: {exc}") from exc
        raise MessageBuildError(f"unknown message type {kind!r}")

    def _template(self, payload: Mapping[str, Any], *, to: str, callback_data: str | None) -> wire.TemplateMessage:
        name, language = str(payload["template"]), str(payload.get("language") or "es")
        template = self.registry.get(name, language)
        if template is None:
            raise MessageBuildError(f"template {name!r} in language {language!r} is not in whatsapp.templates")
        raw = list(payload.get("parameters") or [])
        if name in self._reason_templates and raw:  # {{1}} is the call reason: say it in words, not as an intent id
            raw[0] = self._labels.get(language.split("_")[0], {}).get(str(raw[0]), str(raw[0]).replace("_", " "))
        if len(raw) != template.body_parameters:
            raise MessageBuildError(
                f"template {name!r} ({template.language}) takes {template.body_parameters} body parameters, payload has {len(raw)}"
            )
        components: list[Any] = []
        if raw:
            components.append(wire.BodyComponent(parameters=[wire.TextParameter(text=clean_parameter(p)) for p in raw]))
        # Quick-reply payloads carry the button id and our key, so a tap maps back to its call
        # even if the customer replies to an older message.
        for index, button in enumerate(template.buttons):
            button_payload = f"{button.id}|{callback_data}" if callback_data else button.id
            components.append(wire.QuickReplyComponent(index=str(index), parameters=[wire.PayloadParameter(payload=button_payload[:256])]))
        return wire.TemplateMessage(
            to=to,
            template=wire.Template(name=template.name, language=wire.TemplateLanguage(code=template.language), components=components),
            biz_opaque_callback_data=callback_data,
        )


def _fit(text: Any, limit: int) -> str:
    value = str(text if text is not None else "").strip() or "-"
    return value if len(value) <= limit else value[: limit - 1] + "…"


def interactive_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The wire ``interactive`` object of a ``buttons`` or ``list`` outbox payload."""
    out: dict[str, Any] = {"body": {"text": _fit(payload["text"], 1024)}}
    if payload.get("header"):
        out["header"] = {"type": "text", "text": _fit(payload["header"], 60)}
    if payload.get("footer"):
        out["footer"] = {"text": _fit(payload["footer"], 60)}
    if payload.get("type") == "buttons":
        out["type"] = "button"
        out["action"] = {"buttons": [
            {"type": "reply", "reply": {"id": str(b["id"]), "title": _fit(b["title"], wire.BUTTON_TITLE_MAX)}} for b in payload["buttons"]
        ]}
        return out
    rows = []
    for r in payload["rows"]:
        row = {"id": str(r["id"]), "title": _fit(r["title"], wire.LIST_ROW_TITLE_MAX)}
        if r.get("description"):
            row["description"] = _fit(r["description"], wire.LIST_ROW_DESCRIPTION_MAX)
        rows.append(row)
    out["type"] = "list"
    out["action"] = {"button": _fit(payload.get("button") or "Options", wire.BUTTON_TITLE_MAX), "sections": [{"rows": rows}]}
    return out
