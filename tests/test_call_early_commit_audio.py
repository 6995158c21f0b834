"""Early commit on real audio: a caller who pauses mid-turn is not cut off.

The real endpointer (webrtcvad), real Whisper base and the bundled intent model, through the session's
own rule (``gateway.dev.early_commit``, which ``benchmarks/endpointing.py`` runs over many more turns).
Understanding is taken to be instant (``compute_scale=0``): every complete pause commits as soon as the
settings allow, the worst case for cut-offs and independent of this machine's speed. Not timed.
"""
from __future__ import annotations

import numpy as np
import pytest

from gateway.config import Settings
from gateway.dev.early_commit import Understander, simulate
from models.audio import SAMPLE_RATE, float32_to_pcm16, load_audio
from models.corpora import asterisk_clips
from nlu import default_cache_dir, load_or_train_default
from tests.conftest import espeak

SETTINGS = Settings()


@pytest.fixture(scope="module")
def intent_model():
    return load_or_train_default(default_cache_dir())


def _silence(ms: int) -> np.ndarray:
    return np.zeros(SAMPLE_RATE * ms // 1000, dtype=np.float32)


def _trim(audio: np.ndarray) -> np.ndarray:
    """Without the recording's own leading and trailing silence (so the pause between two parts is the one made)."""
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[max(0, loud[0] - 480): loud[-1] + 480] if len(loud) else audio


def _turn(*parts: np.ndarray) -> bytes:
    return float32_to_pcm16(np.concatenate([_silence(500), *parts, _silence(1500)]))


def _worst_case(pcm: bytes, language: str, transcriber, intent_model):
    understand = Understander(lambda audio: transcriber.transcribe(audio, language=language), intent_model.parse)
    return simulate(pcm, understand, config=SETTINGS.endpointer_config(), compute_scale=0.0,
                    min_confidence=SETTINGS.endpointing.early_commit_min_confidence,
                    commit_silence_ms=SETTINGS.endpointing.early_commit_silence_ms)


@pytest.mark.parametrize("language", ["es", "en"])
def test_two_real_prompts_joined_by_a_pause_are_not_cut_at_the_pause(transcriber, intent_model, language):
    clips = {c.name: c for c in asterisk_clips(language)}
    if not {"vm-reachoper", "vm-nobodyavail"} <= set(clips):
        pytest.skip(f"asterisk-core-sounds-{language}-wav (+ transcripts) not installed")
    first, second = (_trim(load_audio(clips[name].path)) for name in ("vm-nobodyavail", "vm-reachoper"))
    outcome = _worst_case(_turn(first, _silence(450), second), language, transcriber, intent_model)
    assert outcome.decided and outcome.pauses >= 1  # the 450 ms pause was seen, and speculated on
    assert not outcome.cut_off, outcome


def test_a_request_paused_on_an_open_word_waits_for_the_rest(transcriber, intent_model, tmp_path):
    first = _trim(load_audio(espeak("Quiero saber el estado de mi", "es", tmp_path / "first.wav")))
    rest = _trim(load_audio(espeak("pedido", "es", tmp_path / "rest.wav")))
    outcome = _worst_case(_turn(first, _silence(500), rest), "es", transcriber, intent_model)
    assert not outcome.cut_off, outcome
    assert any(why.startswith("ends with") or why.startswith("not") for why in outcome.why_not), outcome.why_not
