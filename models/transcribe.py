"""Whisper transcription of one utterance, sized to the utterance.

faster-whisper's ``WhisperModel.transcribe`` pads every input to a 30 s mel window, so a
1 s "sí" costs as much as 30 s of speech. The caller here always hands us one endpointed
utterance (≤ 15 s), so we keep faster-whisper for loading, features and the tokenizer and
call the CTranslate2 model directly on a window of *utterance + padding*.

Short windows have one known failure: the decoder, having run out of audio, starts the
utterance again ("Thank you. Thank you."). We decode **with timestamps** and keep only the
segments that start inside the real audio, bound the number of new tokens by the duration,
and, as a last guard, remove a trailing sentence that repeats the one before it.

Hallucination guards: the input is speech-gated (audio from the endpointer has speech by
construction; any other audio with too little webrtcvad speech is not decoded at all), nothing
is conditioned on earlier text, and a result is dropped when Whisper says it is not speech
or is not confident (``Transcript.dropped`` says why; the text is then "").
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.audio import SAMPLE_RATE, as_float32, as_pcm16
from models.biasing import echoes
from models.registry import DEFAULT_MODEL, ModelInfo, locate_model
from models.vad import WebRtcVad, speech_extent

log = logging.getLogger(__name__)

# Whisper's encoder takes at most 30 s (3000 mel frames), its decoder at most 448 tokens.
_MAX_WINDOW_S = 30.0
_MAX_DECODER_LENGTH = 448
_TIME_PRECISION_S = 0.02  # one timestamp token step


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/puente/models`` (``~/.cache/puente/models``): where ``base`` is joined."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "puente" / "models"


@dataclass(frozen=True, slots=True)
class TranscriberConfig:
    """How the one Whisper model of the process is loaded and decoded.

    Attributes:
      model: ``"base"`` (multilingual, bundled), ``"tiny.en"`` (English only, fastest)
        or a path to a CTranslate2 Whisper directory.
      cache_dir: where the split ``base`` model is joined once.
      device: ``"cpu"`` or ``"cuda"``.
      compute_type: CTranslate2 quantisation; ``int8`` is fastest on CPU at equal accuracy.
      cpu_threads: threads per worker; 0 → the machine's cores divided among the workers.
      num_workers: utterances decoded in parallel (calls from more threads wait their turn).
        On 2 cores, 1 worker × 2 threads gives the lowest latency per utterance.
      beam_size: 1 (greedy) is ~2× cheaper than 5 and as accurate on short utterances.
      languages: the languages a caller may speak; detection chooses among these only.
      window_padding_s: silence appended after the utterance before encoding; Whisper
        needs audio after the last word to close its last segment.
      no_speech_threshold / logprob_threshold: Whisper's silence rule: drop the text when
        the no-speech probability is above the first while the average token
        log-probability is below the second (with a biasing ``prompt``, the first alone).
      min_avg_logprob: drop the text below this average log-probability whatever the
        no-speech probability. Noise that slips past the VAD decodes at about -1.6 to -1.9;
        real 8 kHz telephone speech stays above about -1.3, so -1.0 alone would drop real
        callers.
      max_tokens_per_second: bound on generated tokens per second of audio (plus
        ``max_tokens_base``); stops runaway repetition. Spanish at a fast pace with
        timestamp tokens stays under 10/s.
      min_speech_ms: audio that comes without its speech end and has less voiced audio
        than this (per webrtcvad) is not decoded at all: Whisper invents words for noise
        and silence.
    """

    model: str = DEFAULT_MODEL
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    num_workers: int = 1
    beam_size: int = 1
    languages: tuple[str, ...] = ("es", "en")
    window_padding_s: float = 1.0
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    min_avg_logprob: float = -1.4
    max_tokens_per_second: float = 10.0
    max_tokens_base: int = 10
    min_speech_ms: int = 100


@dataclass(frozen=True, slots=True)
class Alternative:
    """One hypothesis of the decoder: its text and its average token log-probability."""

    text: str
    avg_logprob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """What Whisper heard in one utterance.

    ``text`` is "" whenever ``dropped`` is set; ``dropped`` says why (``"no_speech_detected"``:
    the speech gate found too little voice, the model was not run; ``"no_speech"``: Whisper
    judged it non-speech; ``"low_confidence"``: average log-probability under the threshold).
    Times are in seconds; ``elapsed_s`` also covers the VAD gate and feature extraction
    (in ``encode_s``), so ``encode_s + decode_s`` ≤ ``elapsed_s``. ``alternatives`` holds the
    decoder's hypotheses, best first (the first is ``text``), when more than one was asked for
    and the text was not dropped.
    """

    text: str
    language: str | None
    language_probability: float
    no_speech_prob: float
    avg_logprob: float
    duration_s: float
    elapsed_s: float
    encode_s: float = 0.0
    decode_s: float = 0.0
    dropped: str | None = None
    alternatives: tuple[Alternative, ...] = ()


class Transcriber:
    """One Whisper model, shared by every call of the process.

    Build it once at start-up and pass it to whoever needs it. ``transcribe`` is safe to
    call from many threads at once: CTranslate2 releases the GIL and runs up to
    ``num_workers`` decodes in parallel; the rest queue inside CTranslate2.
    """

    def __init__(self, config: TranscriberConfig | None = None) -> None:
        """Load the model (joining ``base`` into the cache on first use)."""
        # Heavy imports here, not at module import: importing models/ must stay cheap.
        import faster_whisper

        self.config = config or TranscriberConfig()
        self.info: ModelInfo = locate_model(self.config.model, self.config.cache_dir)
        threads = self.config.cpu_threads or max(1, (os.cpu_count() or 1) // self.config.num_workers)
        self._whisper = faster_whisper.WhisperModel(
            str(self.info.path),
            device=self.config.device,
            compute_type=self.config.compute_type,
            cpu_threads=threads,
            num_workers=self.config.num_workers,
        )
        self._ct2 = self._whisper.model
        self.multilingual: bool = bool(self._ct2.is_multilingual)
        #: Language codes the loaded model can transcribe (just "en" for an English-only one).
        self.supported_languages: frozenset[str] = frozenset(self._whisper.supported_languages)
        if self.multilingual:
            unknown = [lang for lang in self.config.languages if lang not in self.supported_languages]
            if unknown or not self.config.languages:
                raise ValueError(f"languages must be Whisper language codes, got {self.config.languages!r}")
        self._tokenizers: dict[str, object] = {}
        self._tokenizers_lock = threading.Lock()
        log.info("loaded Whisper %s from %s (%d thread(s) × %d worker(s))",
                 self.info.name, self.info.path, threads, self.config.num_workers)

    @property
    def model_name(self) -> str:
        """The configured model name (``"base"``, ``"tiny.en"`` or the directory given)."""
        return self.info.name

    def transcribe(
        self,
        audio: np.ndarray | bytes,
        *,
        language: str | None = None,
        languages: Sequence[str] | None = None,
        speech_end_s: float | None = None,
        prompt: Mapping[str, str] | None = None,
        alternatives: int = 1,
    ) -> Transcript:
        """Transcribe one utterance (≤ ~28 s) of 16 kHz mono audio.

        ``audio`` is float32 samples in [-1, 1] or PCM16 bytes. ``language`` forces the
        language; otherwise it is chosen among ``languages`` (default: the configured ones)
        by comparing Whisper's probabilities for those languages only. An English-only
        model always transcribes English.

        ``speech_end_s`` is where the speech ends, in seconds from the first sample of
        ``audio`` (0 < ``speech_end_s`` ≤ its duration); text that Whisper places after
        it is dropped. Given, no VAD runs here, so there is no speech gate either: for an
        endpointer's utterance it is :attr:`UtteranceEnded.speech_end_in_pcm_s
        <models.endpointing.UtteranceEnded.speech_end_in_pcm_s>`; the full duration means
        "speech throughout". ``None`` (the gateway's choice, a WAV file): it is found with a
        fresh webrtcvad, and audio with less than ``min_speech_ms`` of speech is dropped as
        ``"no_speech_detected"`` without running the model. That gate is not redundant with
        an endpointer's: a VAD that has listened to a call adapts to the line, and steady
        noise can start an utterance that a fresh VAD finds no speech in.

        ``prompt`` biases the decoder toward a domain's words: per language, a text given to
        Whisper as if it had been said just before ("pedido, envío, factura, póliza…"; see
        :func:`biasing_prompt`). Whisper is known to repeat a prompt over silence or noise, so
        a text made only of the prompt's own words in its order is dropped as ``"prompt_echo"``.

        ``alternatives`` above 1 returns that many hypotheses (``Transcript.alternatives``) from a
        beam search at least that wide: what else Whisper thought it heard, so that one misheard
        word need not decide the call. Costs a slower decode (see benchmarks/asr.py).
        """
        if alternatives < 1:
            raise ValueError(f"alternatives must be ≥ 1, got {alternatives}")
        started = time.perf_counter()
        samples = as_float32(audio)
        duration = len(samples) / SAMPLE_RATE
        candidates = self._candidate_languages(language, languages)
        if duration + self.config.window_padding_s > _MAX_WINDOW_S:
            raise ValueError(
                f"utterance of {duration:.1f} s is too long for one Whisper window; "
                "split it with the endpointer (max_utterance_ms)"
            )

        # Where speech ends bounds the text we keep (see _tokens_inside_audio).
        if speech_end_s is None:
            speech_end_s = self._measured_speech_end_s(as_pcm16(audio))
            if speech_end_s is None:
                return Transcript("", None, 0.0, 1.0, 0.0, duration, time.perf_counter() - started,
                                  dropped="no_speech_detected")
        elif not 0.0 < speech_end_s <= duration:
            raise ValueError(f"speech_end_s must be in (0, {duration:.3f}] s, the audio's duration; got {speech_end_s}")

        encoding = time.perf_counter()
        encoder_output = self._encode(samples)
        encoded = time.perf_counter()
        lang, lang_prob = self._choose_language(encoder_output, candidates)
        bias = (prompt or {}).get(lang)
        hypotheses, no_speech_prob = self._decode(encoder_output, lang, duration, speech_end_s, bias, alternatives)
        decoded = time.perf_counter()
        text, avg_logprob = hypotheses[0].text, hypotheses[0].avg_logprob

        dropped = self._drop_reason(no_speech_prob, avg_logprob, biased=bool(bias)) or (
            "prompt_echo" if bias and echoes(text, bias) else None)
        return Transcript(
            text="" if dropped else text,
            language=lang,
            language_probability=lang_prob,
            no_speech_prob=no_speech_prob,
            avg_logprob=avg_logprob,
            duration_s=duration,
            elapsed_s=decoded - started,
            encode_s=encoded - encoding,
            decode_s=decoded - encoded,
            dropped=dropped,
            alternatives=() if dropped or len(hypotheses) < 2 else hypotheses,
        )

    def transcribe_full_window(self, audio: np.ndarray | bytes, *, language: str) -> str:
        """faster-whisper's own ``WhisperModel.transcribe`` on the same loaded model: the
        input padded to a 30 s window, ``language`` forced, the configured beam, nothing
        conditioned on earlier text, and none of this class's gates or guards.

        The baseline the short window is measured against (``benchmarks/asr.py``); 3–4×
        the compute of :meth:`transcribe` on a short utterance, so not for calls.
        """
        (forced,) = self._candidate_languages(language, None)
        segments, _ = self._whisper.transcribe(
            as_float32(audio), language=forced, beam_size=self.config.beam_size,
            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments)

    # --- access for other decoders of the same model (models.answers) ---------------------

    @property
    def ct2_model(self):
        """The loaded ``ctranslate2.models.Whisper`` (shared; safe to call from many threads)."""
        return self._ct2

    def encode(self, samples: np.ndarray):
        """Encoder output of one 16 kHz float32 utterance on the short window ``transcribe`` uses."""
        return self._encode(np.asarray(samples, dtype=np.float32))

    def tokenizer(self, language: str):
        """faster-whisper's ``Tokenizer`` for ``language`` (task "transcribe"), cached."""
        return self._tokenizer(language)

    # --- steps ---------------------------------------------------------------------------

    def _candidate_languages(self, language: str | None, languages: Sequence[str] | None) -> tuple[str, ...]:
        if not self.multilingual:
            if language not in (None, "en") or (languages and "en" not in languages):
                raise ValueError(f"model {self.info.name} is English-only; cannot transcribe {language or languages!r}")
            return ("en",)
        chosen = (language,) if language else tuple(languages or self.config.languages)
        unknown = [lang for lang in chosen if lang not in self.supported_languages]
        if unknown or not chosen:
            raise ValueError(f"not Whisper language codes: {unknown or chosen!r}")
        return chosen

    def _measured_speech_end_s(self, pcm: bytes) -> float | None:
        """End of the last voiced frame, or ``None`` when there is too little speech."""
        # A fresh VAD per utterance: webrtcvad keeps state, and calls run in parallel.
        speech = speech_extent(pcm, WebRtcVad())
        return None if speech.voiced_ms < self.config.min_speech_ms else speech.end_ms / 1000

    def _encode(self, samples: np.ndarray):
        import ctranslate2

        padding = np.zeros(int(self.config.window_padding_s * SAMPLE_RATE), dtype=np.float32)
        features = self._whisper.feature_extractor(np.concatenate([samples, padding]))
        # The encoder downsamples by 2: give it an even number of mel frames.
        features = features[:, : features.shape[1] - features.shape[1] % 2]
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None]))
        return self._ct2.encode(storage, to_cpu=False)

    def _choose_language(self, encoder_output, candidates: tuple[str, ...]) -> tuple[str, float]:
        if len(candidates) == 1:
            return candidates[0], 1.0
        probs = dict(self._ct2.detect_language(encoder_output)[0])
        # Renormalise over the allowed languages: a caller of an es/en line who sounds a
        # bit Portuguese is still transcribed as Spanish, never as Portuguese.
        restricted = {lang: probs.get(f"<|{lang}|>", 0.0) for lang in candidates}
        total = sum(restricted.values()) or 1.0
        best = max(restricted, key=restricted.__getitem__)
        return best, restricted[best] / total

    def _decode(
        self, encoder_output, language: str, duration: float, speech_end: float, bias: str | None, alternatives: int,
    ) -> tuple[tuple[Alternative, ...], float]:
        tokenizer = self._tokenizer(language)
        prompt = list(tokenizer.sot_sequence)  # timestamps on: no <|notimestamps|>
        if bias:
            # Whisper's "previous text" slot, as faster-whisper's initial_prompt; at most half the window.
            previous = tokenizer.encode(" " + bias.strip())[-(_MAX_DECODER_LENGTH // 2 - 1):]
            prompt = [tokenizer.sot_prev, *previous, *prompt]
        max_new = self.config.max_tokens_base + int(self.config.max_tokens_per_second * duration)
        result = self._ct2.generate(
            encoder_output,
            [prompt],
            beam_size=max(self.config.beam_size, alternatives),
            num_hypotheses=alternatives,
            max_length=min(_MAX_DECODER_LENGTH, len(prompt) + max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens(tokenizer),
            max_initial_timestamp_index=int(round(1.0 / _TIME_PRECISION_S)),
        )[0]
        hypotheses = []
        for tokens, score in zip(result.sequences_ids, result.scores):
            # CTranslate2's score is the length-normalised log-probability; faster-whisper's
            # avg_logprob also counts the end-of-text token.
            avg_logprob = score * len(tokens) / (len(tokens) + 1)
            text_tokens = _tokens_inside_audio(tokens, tokenizer.timestamp_begin, tokenizer.eot, speech_end)
            text = drop_trailing_repeats(tokenizer.decode(text_tokens)).strip()
            hypotheses.append(Alternative(text, float(avg_logprob)))
        return tuple(hypotheses), float(result.no_speech_prob)

    def _drop_reason(self, no_speech_prob: float, avg_logprob: float, *, biased: bool = False) -> str | None:
        cfg = self.config
        # A prompt makes every token likelier, so over noise the log-probability no longer tells
        # speech from invention; the no-speech probability alone decides then (measured: real
        # telephone speech stays at or under about 0.3 with the prompt, noise above 0.6).
        if no_speech_prob > cfg.no_speech_threshold and (biased or avg_logprob < cfg.logprob_threshold):
            return "no_speech"
        if avg_logprob < cfg.min_avg_logprob:
            return "low_confidence"
        return None

    def _tokenizer(self, language: str):
        from faster_whisper.tokenizer import Tokenizer

        with self._tokenizers_lock:
            tokenizer = self._tokenizers.get(language)
            if tokenizer is None:
                tokenizer = Tokenizer(self._whisper.hf_tokenizer, self.multilingual,
                                      task="transcribe", language=language)
                self._tokenizers[language] = tokenizer
            return tokenizer

    @staticmethod
    def _suppress_tokens(tokenizer) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        return list(get_suppressed_tokens(tokenizer, [-1]))


def _tokens_inside_audio(tokens: Sequence[int], timestamp_begin: int, eot: int, speech_end: float) -> list[int]:
    """Text tokens of the timestamped segments that start before the speech ends.

    A segment that starts at or after the last voiced frame is, by construction, not in
    the audio: it is the decoder starting over in the trailing silence or the padding.
    """
    kept: list[int] = []
    # Every timestamp either opens a segment or closes one; when it closes one, the next
    # text (if any) starts there. Either way the latest timestamp is where new text starts.
    segment_start = 0.0
    for token in tokens:
        if token >= timestamp_begin:
            segment_start = (token - timestamp_begin) * _TIME_PRECISION_S
        elif token < eot and segment_start < speech_end:
            kept.append(token)
    return kept


def drop_trailing_repeats(text: str, *, min_block_words: int = 2) -> str:
    """Collapse a phrase the decoder repeats at the end of the text into one copy.

    "Thank you. Thank you." → "Thank you."; "and so my fellow Americans and so my fellow
    Americans and so" → "and so my fellow Americans" (a trailing partial copy, cut by the
    token limit, goes too). Only blocks of ≥ ``min_block_words`` words at the very end
    are touched, so "no, no, no" or a repetition followed by new words stay as spoken.
    On a short window Whisper repeats far more often than callers do, and one copy keeps
    the meaning for the intent classifier.
    """
    from models.evaluation import normalize_text

    tokens = text.split()
    norm = [normalize_text(t) for t in tokens]
    while (cut := _repetition_start(norm, min_block_words)) is not None:
        tokens, norm = tokens[:cut], norm[:cut]
    return " ".join(tokens)


def _repetition_start(norm: list[str], min_block: int) -> int | None:
    """Where to cut ``norm`` so one copy of its repeating end remains; ``None`` if none.

    The end repeats with period ``k`` from position ``s`` when ``norm[i] == norm[i + k]``
    for every ``i >= s`` and at least two full copies fit. The earliest such ``s`` (over all
    ``k``) wins, so "my card my card my card" keeps "my card", not "my card my".
    """
    n = len(norm)
    best: tuple[int, int] | None = None
    for k in range(min_block, n // 2 + 1):
        s = n - k
        while s > 0 and norm[s - 1] == norm[s - 1 + k]:
            s -= 1
        if n - s >= 2 * k and any(norm[s : s + k]) and (best is None or s < best[0]):
            best = (s, k)
    return None if best is None else best[0] + best[1]
