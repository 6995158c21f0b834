"""The small interface ``gateway/`` depends on: text in, :class:`IntentResult` out.

Any backend (the bundled numpy model, a remote Rasa server) implements
:class:`IntentClassifier`; the gateway never needs to know which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["IntentClassifier", "IntentResult", "IntentScore", "RANKING_SIZE"]

RANKING_SIZE = 10  # Rasa's default intent_ranking length


@dataclass(frozen=True, slots=True)
class IntentScore:
    name: str
    confidence: float


@dataclass(frozen=True, slots=True)
class IntentResult:
    """The call reason for one utterance.

    ``ranking`` is sorted by confidence (highest first), at most :data:`RANKING_SIZE`
    entries, and its first entry is always ``(intent, confidence)``.

    ``fallback`` is True when ``intent`` is ``out_of_scope`` because of a rule rather
    than because the classifier preferred that class: the top intent's confidence was
    under the model's threshold, or the text had no content (empty, a bare greeting,
    "yes"). Following Rasa's FallbackClassifier, a below-threshold fallback carries the
    threshold as its confidence and the ranking keeps the other intents' scores.
    """

    text: str
    intent: str
    confidence: float
    ranking: tuple[IntentScore, ...]
    fallback: bool = False

    def to_rasa(self) -> dict[str, Any]:
        """The body Rasa's ``POST /model/parse`` returns, for tools that speak Rasa."""
        return {
            "text": self.text,
            "intent": {"name": self.intent, "confidence": float(self.confidence)},
            "entities": [],
            "intent_ranking": [{"name": s.name, "confidence": float(s.confidence)} for s in self.ranking],
        }


@runtime_checkable
class IntentClassifier(Protocol):
    """What the gateway calls. ``version`` identifies the model for logs and metrics."""

    @property
    def version(self) -> str: ...

    def parse(self, text: str) -> IntentResult: ...
