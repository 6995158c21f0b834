"""The small interface ``gateway/`` depends on: text in, :class:`IntentResult` out.

Any backend (the bundled numpy model, a remote Rasa server) implements
:class:`IntentClassifier`; the gateway never needs to know which one it has.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["ALTERNATIVES_SHARPNESS", "IntentClassifier", "IntentResult", "IntentScore", "RANKING_SIZE", "combine_readings"]

RANKING_SIZE = 10  # Rasa's default intent_ranking length
# How much a hypothesis's average log-probability weighs: a hypothesis 0.23 (= ln 2 / 3) less likely
# per token than another counts half as much. Chosen on ASR transcripts of held-out texts (1, 3, 10 tried).
ALTERNATIVES_SHARPNESS = 3.0


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


def combine_readings(readings: Sequence[tuple[IntentResult, float]], *, sharpness: float = ALTERNATIVES_SHARPNESS) -> IntentResult:
    """One result from the results of several hypotheses of one utterance, each with its average
    token log-probability: every intent's confidence is the mean of its confidences in the
    readings, weighted by ``softmax(sharpness · log-probability)``. A fallback's stand-in
    out-of-scope entry (the threshold, not a score) is left out; the text is the best hypothesis's.

    Works with any classifier's results (it reads their rankings), so a remote backend's too.
    """
    if not readings:
        raise ValueError("no readings to combine")
    best_logprob = max(logprob for _, logprob in readings)
    weights = [math.exp(sharpness * (logprob - best_logprob)) for _, logprob in readings]
    total = sum(weights)
    scores: dict[str, float] = defaultdict(float)
    for (result, _), weight in zip(readings, weights):
        for score in result.ranking[1:] if result.fallback else result.ranking:
            scores[score.name] += weight / total * score.confidence
    if not scores:  # every reading had no content
        return readings[0][0]
    ranking = tuple(IntentScore(name, conf) for name, conf in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))
    text = readings[weights.index(1.0)][0].text  # the best log-probability's weight is exp(0)
    return IntentResult(text, ranking[0].name, ranking[0].confidence, ranking[:RANKING_SIZE])
