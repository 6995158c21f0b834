"""Optional backend for teams that already run Rasa: ask its HTTP server, fall back locally.

``nlu.backend: rasa`` with a URL makes the gateway use :class:`RasaClassifier`, which
``POST``s ``{"text": ...}`` to ``{url}/model/parse`` and turns Rasa's answer into an
:class:`IntentResult`. When Rasa times out, is unreachable, answers non-2xx, or answers
something that is not a parse result, the embedded model (``fallback``) answers instead:
:meth:`RasaClassifier.parse_with_source` says which (``"rasa"`` or ``"fallback:<reason>"``),
``last_fallback_reason`` says why for the calling thread, ``fallbacks`` counts them, and
each fallback is logged as a warning.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import httpx

from .classifier import RANKING_SIZE, IntentClassifier, IntentResult, IntentScore

__all__ = ["DEFAULT_TIMEOUT_S", "RasaClassifier", "RasaAnswerError"]

log = logging.getLogger(__name__)

#: How long one parse may wait for Rasa before the fallback answers: it is paid on every turn.
DEFAULT_TIMEOUT_S = 0.5


class RasaAnswerError(ValueError):
    """Rasa answered, but not with a ``/model/parse`` body."""


class RasaClassifier:
    """:class:`IntentClassifier` backed by a Rasa server, with a local fallback.

    ``version`` is ``rasa:<url>`` (Rasa's own model id is not part of its parse answer).
    Thread-safe: one pooled ``httpx.Client`` shared by every call; ``fallback`` may be
    replaced while serving (each fallback reads it once), as a model reload does.
    """

    def __init__(
        self, url: str, fallback: IntentClassifier, timeout_s: float = DEFAULT_TIMEOUT_S, *, token: str | None = None
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Rasa URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.fallback = fallback
        self.timeout_s = float(timeout_s)
        self._params = {"token": token} if token else None
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s))
        self._local = threading.local()
        self.fallbacks = 0  # calls answered by the fallback since start

    @property
    def version(self) -> str:
        return f"rasa:{self.url}"

    @property
    def last_fallback_reason(self) -> str | None:
        """Why the latest call *of this thread* used the fallback (None: Rasa answered)."""
        return getattr(self._local, "reason", None)

    def parse(self, text: str) -> IntentResult:
        return self.parse_with_source(text)[0]

    def parse_with_source(self, text: str) -> tuple[IntentResult, str]:
        """``(result, source)``: source is ``"rasa"`` or ``"fallback:<reason>"``."""
        try:
            response = self._client.post(f"{self.url}/model/parse", json={"text": text}, params=self._params)
            response.raise_for_status()
            result = result_from_rasa(text, response.json())
        except httpx.TimeoutException:
            return self._fall_back(text, "timeout")
        except httpx.HTTPStatusError as exc:
            return self._fall_back(text, f"http_{exc.response.status_code}")
        except httpx.HTTPError as exc:
            return self._fall_back(text, f"unreachable ({type(exc).__name__})")
        except (ValueError, RasaAnswerError) as exc:  # json.JSONDecodeError is a ValueError
            return self._fall_back(text, f"malformed answer ({exc})")
        self._local.reason = None
        return result, "rasa"

    def close(self) -> None:
        self._client.close()

    def _fall_back(self, text: str, reason: str) -> tuple[IntentResult, str]:
        self._local.reason = reason
        self.fallbacks += 1
        log.warning("Rasa at %s did not answer usably (%s); using the embedded model", self.url, reason)
        return self.fallback.parse(text), f"fallback:{reason}"


def result_from_rasa(text: str, body: Any) -> IntentResult:
    """Rasa's ``/model/parse`` body -> :class:`IntentResult` (raises :class:`RasaAnswerError`)."""
    if not isinstance(body, dict) or not isinstance(body.get("intent"), dict):
        raise RasaAnswerError("no 'intent' object")
    name, confidence = _score(body["intent"])
    ranking_raw = body.get("intent_ranking") or [body["intent"]]
    if not isinstance(ranking_raw, list):
        raise RasaAnswerError("'intent_ranking' is not a list")
    ranking = [IntentScore(*_score(r)) for r in ranking_raw]
    ranking.sort(key=lambda s: -s.confidence)
    ranking = [s for s in ranking if s.name != name]
    ranking.insert(0, IntentScore(name, confidence))
    return IntentResult(text, name, confidence, tuple(ranking[:RANKING_SIZE]))


def _score(item: Any) -> tuple[str, float]:
    if not isinstance(item, dict):
        raise RasaAnswerError("intent entry is not an object")
    name, confidence = item.get("name"), item.get("confidence")
    if not isinstance(name, str) or not name:
        raise RasaAnswerError("intent without a name")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
        raise RasaAnswerError(f"intent {name!r} without a numeric confidence")
    return name, float(confidence)
