"""Constrained short answers: which of a few expected phrases did the caller say?

Free Whisper transcription is weak on one-word answers ("sí", "no", a lone digit): with
nothing to go on the decoder guesses among 50 000 tokens. When the gateway asks a yes/no
or digit question we already know the few things a caller can sensibly answer, so we ask
Whisper a narrower question: *how probable is each expected answer, as the whole
transcript of this audio?*

How (one encoder pass, then forced decoding of the expected phrases; no free decoding):

1. The utterance (after 0.3 s of lead-in silence) is encoded once on the short window
   :class:`~models.transcribe.Transcriber` uses (utterance + padding). A webrtcvad gate comes
   first: less than 60 ms of speech → ``unclear`` without running the model.
2. Every phrase of the grammar is expanded into the surface forms Whisper writes
   (" Sí", " sí", " Si", " Sí, por favor", " Sí por favor", " 3", " Three"...). One decoder
   step gives the first-token distribution; forms whose first token is already hopeless
   are pruned, the rest are forced through the decoder (``generate`` with the phrase as
   prefix and ``return_logits_vocab``, one batch per phrase length). That gives, over the **full** vocabulary, the probability of
   every token of the phrase *and* of the transcript ending right after it (end-of-text, or
   a final "." / "!" / "?"). The product is the probability that the whole transcript is
   that phrase; summing over forms and phrases gives ``P(choice)``.
3. Whatever probability the choices do not cover is reported as ``"other"``: an unrelated
   sentence ("No hay mensajes" starts like "no" but does not end there), noise, a different
   word — and, on sub-second clips, Whisper's habit of expecting a repetition (" 3, 3").

A choice is accepted when its log-probability is at least ``min_score`` and it beats the
runner-up choice by ``min_margin`` (natural-log units); otherwise the result is ``unclear``
(``choice is None``) and the gateway reprompts or falls back to DTMF. Noise and unrelated
sentences get low absolute scores (a whole-transcript probability, end included), which is
what rejects them; the margin keeps a mumbled "two"/"seven" from being a coin toss.

Alternatives measured while building this (100 FSDD clips, asterisk digits, espeak yes/no):
CTranslate2's ``align`` (``text_token_probs``, mean log-probability per phrase) ranks
digits about as well but yes/no clearly worse (top-1 72 % vs 94 % on synthetic English
yes/no, 87 % vs 100 % Spanish), and its probabilities are normalised over text tokens only,
so it cannot say the transcript *ends* after "no": "No hay más mensajes" scores like a
confident "no". Free transcription + keyword matching is the baseline
``benchmarks/answers.py`` compares against.
"""
from __future__ import annotations

import math
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.audio import SAMPLE_RATE, as_float32, as_pcm16
from models.vad import WebRtcVad, speech_extent

if TYPE_CHECKING:
    from models.transcribe import Transcriber

# Whisper's encoder takes at most 30 s; answers are seconds long.
_MAX_ANSWER_S = 25.0
# Tokens that may close a short answer's transcript (besides end-of-text): Whisper writes
# " Sí." or " Yes!" more often than a bare " Sí".
_FINAL_PUNCTUATION = (".", "!", "?", "...")


@dataclass(frozen=True)
class Grammar:
    """The answers a prompt expects: choice → phrases that mean it.

    Phrases are written the way a person would (case, accents and commas do not matter:
    the recogniser tries the usual surface forms). Example::

        Grammar({"yes": ("sí", "sí, por favor", "claro"), "no": ("no", "no, gracias")})
    """

    choices: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if len(self.choices) < 1:
            raise ValueError("a grammar needs at least one choice")
        for choice, phrases in self.choices.items():
            if not choice or not phrases or any(not p.strip() for p in phrases):
                raise ValueError(f"choice {choice!r} needs non-empty phrases, got {phrases!r}")

    def key(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """A hashable identity (the dataclass holds a dict, so it is not hashable itself)."""
        return tuple((c, tuple(p)) for c, p in self.choices.items())


YES_NO: dict[str, Grammar] = {
    # Callers from MX/AR/CO/ES: "ándale"/"órale" (MX), "dale" (AR, CO), "va" (MX), "vale" (ES).
    "es": Grammar({
        "yes": ("sí", "sí, por favor", "sí, claro", "claro", "claro que sí", "por supuesto",
                "ándale", "órale", "dale", "va", "vale", "está bien", "ok", "sí, gracias", "correcto"),
        "no": ("no", "no, gracias", "mejor no", "no, por favor", "para nada", "no quiero",
               "ahorita no", "no, no"),
    }),
    "en": Grammar({
        "yes": ("yes", "yeah", "yep", "sure", "yes please", "okay", "ok", "of course",
                "that's right", "correct", "yes, thanks", "alright"),
        "no": ("no", "nope", "no thanks", "no thank you", "not now", "no, no", "nah"),
    }),
}

DIGITS: dict[str, Grammar] = {
    "en": Grammar({
        "0": ("zero", "oh", "0"), "1": ("one", "1"), "2": ("two", "2"), "3": ("three", "3"),
        "4": ("four", "4"), "5": ("five", "5"), "6": ("six", "6"), "7": ("seven", "7"),
        "8": ("eight", "8"), "9": ("nine", "9"),
    }),
    "es": Grammar({
        "0": ("cero", "0"), "1": ("uno", "1"), "2": ("dos", "2"), "3": ("tres", "3"),
        "4": ("cuatro", "4"), "5": ("cinco", "5"), "6": ("seis", "6"), "7": ("siete", "7"),
        "8": ("ocho", "8"), "9": ("nueve", "9"),
    }),
}


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """What the caller answered.

    Attributes:
      choice: the grammar's choice, or ``None`` when unclear (reprompt / offer DTMF).
      score: natural-log probability that the whole transcript is the best choice (≤ 0;
        -0.1 ≈ 90 %, -2.3 ≈ 10 %). ``-inf`` when the model was not run.
      margin: log-probability of the best choice minus that of the runner-up choice
        (of ``other`` for a one-choice grammar); ≥ ``min_margin`` for an accepted choice.
      scores: log-probability of every choice, plus ``"other"``: anything outside the
        grammar (a different word, a sentence, noise).
      elapsed_s: wall time of :meth:`AnswerRecognizer.recognize`, gate and encoder included.
      reason: why ``choice`` is ``None``: ``"no_speech_detected"`` (VAD gate: no speech, the
        model was not run), ``"low_score"`` or ``"low_margin"``; ``None`` when accepted.
      best: the best-scoring choice even when it was not accepted (for logs and tuning).
    """

    choice: str | None
    score: float
    margin: float
    scores: dict[str, float]
    elapsed_s: float
    reason: str | None = None
    best: str | None = None


@dataclass(frozen=True, slots=True)
class _CompiledGrammar:
    """Token sequences of every surface form, and which choice each belongs to."""

    start: tuple[int, ...]  # <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
    sequences: tuple[tuple[int, ...], ...]
    owners: tuple[str, ...]
    choices: tuple[str, ...]
    end_ids: tuple[int, ...]  # end-of-text and the final punctuation tokens


class AnswerRecognizer:
    """Scores a grammar's phrases against one utterance with the process's Whisper model.

    Built on the one :class:`~models.transcribe.Transcriber` of the process (no second
    model in memory). Thread-safe like the transcriber. Thresholds are natural-log units
    and were tuned on real digit recordings and synthetic yes/no (``benchmarks/answers.py``).
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        min_score: float = -6.0,
        min_margin: float = 2.5,
        lead_padding_s: float = 0.3,
        prune_nats: float = 8.0,
        min_voiced_ms: int = 60,
        vad_aggressiveness: int = 2,
    ) -> None:
        """Share ``transcriber``'s model; thresholds in natural-log units.

        Args:
          min_score: accept only when ``log P(best choice)`` is at least this.
          min_margin: ... and the best choice beats the runner-up choice by this much.
            Both were tuned on the benchmark so that ≤ 5 % of noise and unrelated
            sentences are accepted while ~0.5 % of real answers are misrecognised.
          lead_padding_s: silence put before the audio (short clips that start on the
            first sample score better with some lead-in).
          prune_nats: surface forms whose first token is this far below the best form's
            are not decoded further (speed; see ``_score``).
          min_voiced_ms / vad_aggressiveness: the speech gate: fewer than ``min_voiced_ms``
            of webrtcvad speech frames → unclear without running the model (silence, steady
            noise). Lower than the transcriber's 100 ms: a quiet sub-second "four" can have
            only 60–80 ms that webrtcvad calls speech (4 % of FSDD fails at 100 ms).
        """
        self.transcriber = transcriber
        self.min_score = min_score
        self.min_margin = min_margin
        self.lead_padding_s = lead_padding_s
        self.prune_nats = prune_nats
        self.min_voiced_ms = min_voiced_ms
        self.vad_aggressiveness = vad_aggressiveness
        self._compiled: dict[tuple, _CompiledGrammar] = {}
        self._lock = threading.Lock()

    def recognize(self, audio: np.ndarray | bytes, grammar: Grammar, language: str) -> AnswerResult:
        """Which choice of ``grammar`` the caller said in ``audio`` (16 kHz float32 or PCM16).

        ``language`` is the language the prompt was spoken in ("es"/"en"); the phrases are
        scored in that language. Raises ``ValueError`` for an English-only model asked for
        another language, or audio longer than one answer can be.
        """
        started = time.perf_counter()
        samples = as_float32(audio)
        if len(samples) / SAMPLE_RATE > _MAX_ANSWER_S:
            raise ValueError(f"{len(samples) / SAMPLE_RATE:.1f} s is too long for a short answer")
        compiled = self._compile(grammar, language)
        if not self._voiced(as_pcm16(audio)):
            return AnswerResult(None, -math.inf, 0.0, {c: -math.inf for c in compiled.choices} | {"other": 0.0},
                                time.perf_counter() - started, reason="no_speech_detected")
        lead = np.zeros(int(self.lead_padding_s * SAMPLE_RATE), dtype=np.float32)
        scores = self._score(np.concatenate([lead, samples]), compiled)
        return self._decide(scores, compiled.choices, time.perf_counter() - started)

    def _voiced(self, pcm: bytes) -> bool:
        """At least ``min_voiced_ms`` of frames that a fresh webrtcvad calls speech."""
        return speech_extent(pcm, WebRtcVad(self.vad_aggressiveness)).voiced_ms >= self.min_voiced_ms

    # --- scoring -------------------------------------------------------------------------

    def _score(self, samples: np.ndarray, compiled: _CompiledGrammar) -> dict[str, float]:
        """Log-probability of each choice (and ``"other"``) as the whole transcript."""
        import ctranslate2

        encoded = np.asarray(self.transcriber.encode(samples))
        # Each decoder batch row re-projects the encoder output for cross-attention, so the
        # cost grows with the number of surface forms (80 for Spanish yes/no). Most are
        # hopeless from their first token: one cheap step gives the first-token
        # distribution; forms whose first token is more than ``prune_nats`` below the best
        # form's keep that first-token log-probability as their score (an upper bound, so
        # a pruned runner-up only ever shrinks the margin) and are not decoded further.
        first = self._forced_logits(ctranslate2.StorageView.from_array(encoded), [list(compiled.start)], 0)[0][0]
        first_logp = first.astype(np.float64) - _logsumexp_rows(first[None].astype(np.float64))[0]
        seq_logp = np.array([first_logp[seq[0]] for seq in compiled.sequences])
        keep = seq_logp >= seq_logp.max() - self.prune_nats
        # One decoder call per phrase length: each returns full-vocabulary logits for every
        # step, so a batch padded to the longest phrase would cost rows × 51865 floats each.
        by_length: dict[int, list[int]] = {}
        for i, seq in enumerate(compiled.sequences):
            if keep[i]:
                by_length.setdefault(len(seq), []).append(i)
        for length, indices in by_length.items():
            features = ctranslate2.StorageView.from_array(np.repeat(encoded, len(indices), axis=0))
            prompts = [[*compiled.start, *compiled.sequences[i]] for i in indices]
            for i, logits in zip(indices, self._forced_logits(features, prompts, length)):
                seq = compiled.sequences[i]
                logits = logits[: length + 1].astype(np.float64)
                logp = logits - _logsumexp_rows(logits)[:, None]
                total = float(logp[np.arange(length), list(seq)].sum())
                # The transcript ends after the phrase: end-of-text or a final "." "!" "?".
                seq_logp[i] = total + float(np.logaddexp.reduce(logp[length, list(compiled.end_ids)]))
        scores: dict[str, float] = {}
        for choice in compiled.choices:
            mine = seq_logp[[o == choice for o in compiled.owners]]
            scores[choice] = float(np.logaddexp.reduce(mine))
        covered = float(np.exp(np.logaddexp.reduce(list(scores.values()))))
        scores["other"] = math.log(max(1.0 - covered, 1e-12))
        return scores

    def _forced_logits(self, features, prompts: list[list[int]], length: int) -> list[np.ndarray]:
        """Logits rows for each prompt's ``length`` forced tokens and the step after them.

        How ``max_length`` maps to returned rows is not the obvious (CTranslate2 4.x counts
        the forced prefix twice), so ask for enough, check, and grow if short.
        """
        max_length = max(2 * (length + 1) + 1, len(prompts[0]) - length + 1)
        for _ in range(3):
            results = self.transcriber.ct2_model.generate(
                features, prompts, beam_size=1, max_length=max_length,
                return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])
            rows = [np.asarray(r.logits[0]) if r.logits else np.empty((0, 0)) for r in results]
            if all(len(x) > length for x in rows):
                return rows
            max_length *= 2
        raise RuntimeError("CTranslate2 returned fewer logits rows than forced tokens")

    def _decide(self, scores: dict[str, float], choices: tuple[str, ...], elapsed: float) -> AnswerResult:
        ranked = sorted(choices, key=scores.__getitem__, reverse=True)
        best = ranked[0]
        # Against the runner-up *choice*, not "other": on sub-second clips the short window
        # makes Whisper expect a repetition (" 3, 3"), so "other" is large even for clear
        # answers; unrelated speech and noise are caught by the absolute score instead.
        margin = scores[best] - (scores[ranked[1]] if len(ranked) > 1 else scores["other"])
        reason = None
        if scores[best] < self.min_score:
            reason = "low_score"
        elif margin < self.min_margin:
            reason = "low_margin"
        return AnswerResult(None if reason else best, scores[best], margin, scores, elapsed, reason=reason, best=best)

    # --- grammar compilation ---------------------------------------------------------------

    def _compile(self, grammar: Grammar, language: str) -> _CompiledGrammar:
        key = (language, grammar.key())
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        if not self.transcriber.multilingual and language != "en":
            raise ValueError(f"model {self.transcriber.model_name} is English-only; cannot score {language!r}")
        tokenizer = self.transcriber.tokenizer(language)
        sequences: dict[tuple[int, ...], str] = {}
        for choice, phrases in grammar.choices.items():
            for phrase in phrases:
                for form in surface_forms(phrase):
                    ids = tuple(tokenizer.encode(" " + form))
                    if sequences.setdefault(ids, choice) != choice:
                        raise ValueError(f"phrase {phrase!r} is in two choices of the grammar")
        end_ids = [tokenizer.eot]
        for p in _FINAL_PUNCTUATION:
            ids = tokenizer.encode(p)
            if len(ids) == 1:
                end_ids.append(ids[0])
        compiled = _CompiledGrammar(
            start=(*tokenizer.sot_sequence, tokenizer.no_timestamps),
            sequences=tuple(sequences), owners=tuple(sequences.values()),
            choices=tuple(grammar.choices), end_ids=tuple(end_ids))
        with self._lock:
            self._compiled[key] = compiled
        return compiled


def surface_forms(phrase: str) -> list[str]:
    """The ways Whisper may write ``phrase``: as given / lower-case / Capitalised, with and
    without commas, with and without accents ("sí" is often written "si")."""
    base = " ".join(phrase.split())
    forms: list[str] = []
    for text in (base, base.replace(",", ""), _strip_accents(base), _strip_accents(base.replace(",", ""))):
        for cased in (text.lower(), text[:1].upper() + text[1:].lower()):
            if cased not in forms:
                forms.append(cased)
    return forms


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))
