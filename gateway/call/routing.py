"""Routing policy: from the call reason to a decision, with the reason for it.

Pure functions of their inputs, so every rule is tested without a call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config import RoutingSettings

RouteName = Literal["whatsapp", "voice", "reprompt"]


@dataclass(frozen=True)
class Understanding:
    """What the NLU said about one utterance (``intent`` is None when nothing was heard)."""

    intent: str | None
    confidence: float


@dataclass(frozen=True)
class Decision:
    route: RouteName
    reason: str


class RoutingPolicy:
    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings

    def decide(self, heard: Understanding, *, reprompts_used: int, whatsapp_unavailable: str | None) -> Decision:
        """Decide for one understood utterance.

        ``whatsapp_unavailable`` is why the caller cannot be deflected to WhatsApp (an anonymous or
        invalid number, our follow-up template paused in their language), or None when they can; then
        WhatsApp routes stay in voice.
        """
        s = self._settings
        unsure = heard.intent is None or heard.intent == "out_of_scope" or heard.confidence < s.min_confidence
        if unsure:
            what = "nothing understood" if heard.intent is None else (
                f"{heard.intent} at confidence {heard.confidence:.2f} < {s.min_confidence:.2f}"
                if heard.intent != "out_of_scope" else "out of scope"
            )
            if reprompts_used < s.max_reprompts:
                return Decision("reprompt", f"{what}; reprompt {reprompts_used + 1} of {s.max_reprompts}")
            return Decision("voice", f"{what} after {reprompts_used} reprompt(s)")
        route = s.routes.get(heard.intent, "voice")
        if route == "whatsapp" and whatsapp_unavailable is not None:
            return Decision("voice", f"{heard.intent} routes to whatsapp, but {whatsapp_unavailable}")
        return Decision(route, f"{heard.intent} routes to {route}")

    def after_silence(self, no_inputs: int) -> Decision | None:
        """After the ``no_inputs``-th silent turn: None to prompt again, or the final decision."""
        if no_inputs <= self._settings.max_no_input:
            return None
        return Decision("voice", f"no input after {self._settings.max_no_input} prompt(s)")
