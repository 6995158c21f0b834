"""The endpointer finds utterances frame-exactly: on scripted frames and on real speech."""
from __future__ import annotations

import numpy as np
import pytest

from models.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, AudioFrame, float32_to_pcm16, frames_from_pcm, load_audio
from models.corpora import JFK_FLAC, asterisk_clips
from models.endpointing import (
    Endpointer,
    EndpointerConfig,
    NoInput,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
    UtterancePaused,
)
from models.vad import SpeechExtent, VoiceActivityDetector, WebRtcVad, speech_extent

VOICED = b"\x10\x00" * (FRAME_BYTES // 2)
SILENT = bytes(FRAME_BYTES)


class NonZeroVad(VoiceActivityDetector):
    """Speech = any non-zero sample: lets tests script exactly which frames are voiced."""

    def is_speech(self, frame: AudioFrame) -> bool:
        return any(frame.pcm)


def scripted(pattern: str, start_index: int = 0) -> list[AudioFrame]:
    """'1' = a voiced frame, '0' = a silent one; spaces are ignored."""
    bits = pattern.replace(" ", "")
    return [AudioFrame(VOICED if b == "1" else SILENT, start_index + i) for i, b in enumerate(bits)]


def run(endpointer: Endpointer, frames: list[AudioFrame]) -> list[object]:
    return [event for frame in frames for event in endpointer.push(frame)]


CFG = EndpointerConfig(
    speech_start_ms=100, speech_start_ratio=0.8, end_silence_ms=600, early_silence_ms=None,
    max_utterance_ms=15_000, no_input_ms=5_000, pre_roll_ms=300, tail_ms=200,
)
EARLY = EndpointerConfig(
    speech_start_ms=100, speech_start_ratio=0.8, end_silence_ms=600, early_silence_ms=300,
    max_utterance_ms=15_000, no_input_ms=5_000, pre_roll_ms=300, tail_ms=200,
)


# --- scripted frames -----------------------------------------------------------------------


def test_speech_start_is_the_first_voiced_frame_of_the_start_window():
    events = run(Endpointer(NonZeroVad(), CFG), scripted("0" * 50 + "1" * 10))
    assert events == [SpeechStarted(start_ms=50 * FRAME_MS)]


def test_one_frame_dropout_inside_the_start_window_does_not_delay_the_start():
    events = run(Endpointer(NonZeroVad(), CFG), scripted("0" * 50 + "11011"))
    assert events == [SpeechStarted(start_ms=50 * FRAME_MS)]


def test_isolated_clicks_do_not_start_speech():
    events = run(Endpointer(NonZeroVad(), CFG), scripted("0001000100010001" * 10))
    assert not any(isinstance(e, SpeechStarted) for e in events)


def test_utterance_ends_exactly_end_silence_after_the_last_voiced_frame():
    frames = scripted("0" * 50 + "1" * 40 + "0" * 40)
    events = run(Endpointer(NonZeroVad(), CFG), frames)
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert len(ended) == 1
    u = ended[0]
    assert (u.reason, u.start_ms, u.speech_end_ms) == ("silence", 1000, 1800)
    assert u.detected_ms == 1800 + 600
    assert u.endpointing_wait_ms == CFG.end_silence_ms


def test_utterance_audio_has_the_pre_roll_and_a_trimmed_tail():
    frames = scripted("0" * 50 + "1" * 40 + "0" * 40)
    (u,) = [e for e in run(Endpointer(NonZeroVad(), CFG), frames) if isinstance(e, UtteranceEnded)]
    assert u.pcm_start_ms == 1000 - CFG.pre_roll_ms
    expected = SILENT * 15 + VOICED * 40 + SILENT * 10  # 300 ms pre-roll, speech, 200 ms tail
    assert u.pcm == expected


def test_pre_roll_never_reaches_before_the_turn():
    endpointer = Endpointer(NonZeroVad(), CFG)
    endpointer.begin_turn(100)
    (u,) = [e for e in run(endpointer, scripted("0" * 100 + "1" * 10 + "0" * 40)) if isinstance(e, UtteranceEnded)]
    assert u.pcm_start_ms == 100 * FRAME_MS  # speech began right at the turn: no pre-roll available


def test_two_sentences_separated_by_a_pause_are_two_utterances():
    frames = scripted("0" * 20 + "1" * 50 + "0" * 75 + "1" * 50 + "0" * 40)
    events = run(Endpointer(NonZeroVad(), CFG), frames)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "UtteranceEnded", "SpeechStarted", "UtteranceEnded"]
    assert events[2].start_ms == (20 + 50 + 75) * FRAME_MS


def test_pause_shorter_than_end_silence_keeps_one_utterance():
    frames = scripted("0" * 20 + "1" * 50 + "0" * 29 + "1" * 50 + "0" * 40)
    ended = [e for e in run(Endpointer(NonZeroVad(), CFG), frames) if isinstance(e, UtteranceEnded)]
    assert len(ended) == 1 and ended[0].speech_end_ms == (20 + 50 + 29 + 50) * FRAME_MS


def test_no_input_fires_once_at_exactly_no_input_ms_after_the_turn_begins():
    endpointer = Endpointer(NonZeroVad(), CFG)
    endpointer.begin_turn(at_frame_index=10)
    events = run(endpointer, scripted("0" * 600, start_index=10))
    assert events == [NoInput(at_ms=10 * FRAME_MS + 5000)]


def test_speech_before_the_deadline_prevents_no_input():
    events = run(Endpointer(NonZeroVad(), CFG), scripted("0" * 200 + "1" * 10 + "0" * 400))
    assert not any(isinstance(e, NoInput) for e in events)


def test_long_speech_is_cut_at_max_utterance():
    cfg = EndpointerConfig(max_utterance_ms=2000, no_input_ms=None)
    events = run(Endpointer(NonZeroVad(), cfg), scripted("0" * 10 + "1" * 150))
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert ended[0].reason == "max_length"
    assert ended[0].detected_ms - ended[0].start_ms == 2000


def test_flush_returns_the_unfinished_utterance_and_nothing_when_silent():
    endpointer = Endpointer(NonZeroVad(), CFG)
    run(endpointer, scripted("0" * 10 + "1" * 30))
    u = endpointer.flush()
    assert u is not None and u.reason == "flush"
    assert (u.start_ms, u.speech_end_ms, u.detected_ms) == (200, 800, 800)
    assert endpointer.flush() is None


def test_per_turn_config_shortens_the_end_silence_for_that_turn_only():
    endpointer = Endpointer(NonZeroVad(), CFG)
    endpointer.begin_turn(0, EndpointerConfig(end_silence_ms=300, early_silence_ms=None))
    first = [e for e in run(endpointer, scripted("1" * 20 + "0" * 40)) if isinstance(e, UtteranceEnded)]
    assert first[0].endpointing_wait_ms == 300
    endpointer.begin_turn(60)
    second = [e for e in run(endpointer, scripted("1" * 20 + "0" * 40, 60)) if isinstance(e, UtteranceEnded)]
    assert second[0].endpointing_wait_ms == 600


def test_lost_frames_count_as_silence_and_keep_audio_aligned():
    frames = scripted("1" * 20) + scripted("1" * 10, start_index=25) + scripted("0" * 40, start_index=35)
    (u,) = [e for e in run(Endpointer(NonZeroVad(), CFG), frames) if isinstance(e, UtteranceEnded)]
    assert u.speech_end_ms == 35 * FRAME_MS
    assert len(u.pcm) == (35 * FRAME_MS + CFG.tail_ms - u.pcm_start_ms) // FRAME_MS * FRAME_BYTES
    assert u.pcm[20 * FRAME_BYTES : 25 * FRAME_BYTES] == SILENT * 5


@pytest.mark.parametrize(
    ("turn_at", "frames"),
    [
        (None, scripted("0" * 50 + "1" * 40 + "0" * 40)),  # full pre-roll
        (100, scripted("0" * 100 + "1" * 10 + "0" * 40)),  # speech right at the turn: no pre-roll
        (None, scripted("1" * 20) + scripted("1" * 10, start_index=25) + scripted("0" * 40, start_index=35)),  # lost
        (None, scripted("0" * 10 + "1" * 30)),  # hang-up: flushed
    ],
)
def test_speech_end_in_pcm_is_where_the_last_voiced_frame_of_pcm_ends(turn_at, frames):
    endpointer = Endpointer(NonZeroVad(), CFG)
    if turn_at is not None:
        endpointer.begin_turn(turn_at)
    ended = [e for e in run(endpointer, frames) if isinstance(e, UtteranceEnded)]
    (u,) = ended or [endpointer.flush()]  # the last case hangs up mid-utterance
    assert u.speech_end_in_pcm_s == speech_extent(u.pcm, NonZeroVad()).end_ms / 1000 > 0


def test_speech_extent_counts_whole_voiced_frames_and_skips_a_partial_one():
    pcm = SILENT + VOICED + SILENT + VOICED + VOICED[: FRAME_BYTES // 2]
    assert speech_extent(pcm, NonZeroVad()) == SpeechExtent(voiced_ms=2 * FRAME_MS, end_ms=4 * FRAME_MS)
    assert speech_extent(SILENT * 3, NonZeroVad()) == SpeechExtent(voiced_ms=0, end_ms=0)


def test_out_of_order_frames_are_rejected():
    endpointer = Endpointer(NonZeroVad(), CFG)
    endpointer.push(AudioFrame(SILENT, 5))
    with pytest.raises(ValueError, match="not after"):
        endpointer.push(AudioFrame(SILENT, 5))


def test_config_rejects_values_that_cannot_work():
    with pytest.raises(ValueError):
        EndpointerConfig(speech_start_ratio=0)
    with pytest.raises(ValueError):
        EndpointerConfig(end_silence_ms=0)
    for early in (600, 700, 10):
        with pytest.raises(ValueError, match="early_silence_ms"):
            EndpointerConfig(end_silence_ms=600, early_silence_ms=early)
    assert not EndpointerConfig(early_silence_ms=0).early and not EndpointerConfig(early_silence_ms=None).early


# --- early commit: the tentative pause, resuming, committing ------------------------------------


def test_a_pause_is_reported_once_at_early_silence_then_the_utterance_ends_as_before():
    events = run(Endpointer(NonZeroVad(), EARLY), scripted("0" * 50 + "1" * 40 + "0" * 40))
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "UtterancePaused", "UtteranceEnded"]
    paused, ended = events[1], events[2]
    assert (paused.start_ms, paused.speech_end_ms, paused.detected_ms) == (1000, 1800, 1800 + 300)
    assert paused.endpointing_wait_ms == 300 and paused.pcm_start_ms == ended.pcm_start_ms == 700
    assert paused.pcm == ended.pcm == SILENT * 15 + VOICED * 40 + SILENT * 10  # the same words, trimmed the same
    assert (ended.reason, ended.detected_ms) == ("silence", 1800 + 600)


def test_speech_after_the_pause_resumes_the_utterance_and_the_pause_is_stale():
    frames = scripted("0" * 20 + "1" * 50 + "0" * 20 + "1" * 30 + "0" * 40)  # a 400 ms pause inside
    events = run(Endpointer(NonZeroVad(), EARLY), frames)
    assert [type(e).__name__ for e in events] == [
        "SpeechStarted", "UtterancePaused", "SpeechResumed", "UtterancePaused", "UtteranceEnded"]
    first, resumed, second, ended = events[1:]
    assert resumed == SpeechResumed(at_ms=90 * FRAME_MS, paused_speech_end_ms=first.speech_end_ms)
    assert first.speech_end_ms == 70 * FRAME_MS != ended.speech_end_ms == second.speech_end_ms == 120 * FRAME_MS
    assert ended.start_ms == first.start_ms  # one utterance, whole


def test_commit_ends_the_utterance_at_the_pause_and_it_is_not_reported_again():
    endpointer = Endpointer(NonZeroVad(), EARLY)
    events = run(endpointer, scripted("0" * 20 + "1" * 50 + "0" * 17))
    paused = events[-1]
    assert isinstance(paused, UtterancePaused)
    committed = endpointer.commit(paused.speech_end_ms)
    assert committed is not None and committed.reason == "early"
    assert (committed.start_ms, committed.speech_end_ms, committed.detected_ms) == (400, 1400, 87 * FRAME_MS)
    assert committed.endpointing_wait_ms == 340 and committed.pcm == paused.pcm
    assert run(endpointer, scripted("0" * 40, start_index=87)) == []  # no UtteranceEnded for it later
    assert endpointer.commit(paused.speech_end_ms) is None and endpointer.flush() is None


def test_commit_refuses_a_stale_pause():
    endpointer = Endpointer(NonZeroVad(), EARLY)
    events = run(endpointer, scripted("0" * 20 + "1" * 50 + "0" * 16 + "1" * 5))
    paused = next(e for e in events if isinstance(e, UtterancePaused))
    assert endpointer.commit(paused.speech_end_ms) is None  # the caller spoke again
    (ended,) = [e for e in run(endpointer, scripted("0" * 30, start_index=91)) if isinstance(e, UtteranceEnded)]
    assert ended.speech_end_ms == 91 * FRAME_MS


def test_a_turn_without_early_silence_reports_no_pause():
    endpointer = Endpointer(NonZeroVad(), EARLY)
    endpointer.begin_turn(0, EndpointerConfig(end_silence_ms=400, early_silence_ms=None))
    events = run(endpointer, scripted("1" * 20 + "0" * 30))
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "UtteranceEnded"]


# --- real speech with webrtcvad -------------------------------------------------------------


def energy_onset_ms(audio: np.ndarray, threshold: float = 0.01) -> int:
    """Independent ground truth: the first 10 ms window with RMS above -40 dBFS."""
    win = SAMPLE_RATE // 100
    rms = np.sqrt(np.mean(audio[: len(audio) // win * win].reshape(-1, win) ** 2, axis=1))
    return int(np.argmax(rms > threshold)) * 10


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def endpoint_audio(audio: np.ndarray, config: EndpointerConfig = CFG) -> list[object]:
    endpointer = Endpointer(WebRtcVad(2), config)
    events = run(endpointer, list(frames_from_pcm(float32_to_pcm16(audio))))
    tail = endpointer.flush()
    return events + ([tail] if tail else [])


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    if not JFK_FLAC.is_file():
        pytest.skip(f"{JFK_FLAC} absent (../shared/data not mounted)")
    return load_audio(JFK_FLAC)


@pytest.fixture(scope="module")
def spanish_prompt() -> np.ndarray:
    clips = {c.name: c for c in asterisk_clips("es")}
    if "agent-pass" not in clips:
        pytest.skip("asterisk-core-sounds-es-wav (+ asterisk-core-sounds-es) not installed")
    return load_audio(clips["agent-pass"].path)


@pytest.fixture(scope="module")
def english_prompt() -> np.ndarray:
    clips = {c.name: c for c in asterisk_clips("en")}
    if "agent-pass" not in clips:
        pytest.skip("asterisk-core-sounds-en-wav (+ asterisk-core-sounds-en) not installed")
    return load_audio(clips["agent-pass"].path)


def test_real_speech_onset_is_found_within_100ms(spanish_prompt):
    padded = np.concatenate([silence(1.5), spanish_prompt, silence(1.5)])
    truth = energy_onset_ms(padded)
    started = [e for e in endpoint_audio(padded) if isinstance(e, SpeechStarted)]
    assert started and abs(started[0].start_ms - truth) <= 100, (started, truth)


def test_one_real_sentence_is_exactly_one_utterance(spanish_prompt):
    padded = np.concatenate([silence(1.0), spanish_prompt, silence(1.5)])
    ended = [e for e in endpoint_audio(padded) if isinstance(e, UtteranceEnded)]
    assert [e.reason for e in ended] == ["silence"]
    assert ended[0].endpointing_wait_ms == CFG.end_silence_ms
    speech_end_truth = 1000 + len(spanish_prompt) * 1000 // SAMPLE_RATE - energy_onset_ms(spanish_prompt[::-1].copy())
    assert abs(ended[0].speech_end_ms - speech_end_truth) <= 200


def test_two_real_sentences_with_a_1_5s_pause_are_two_utterances(spanish_prompt, english_prompt):
    audio = np.concatenate([silence(0.5), spanish_prompt, silence(1.5), english_prompt, silence(1.0)])
    ended = [e for e in endpoint_audio(audio) if isinstance(e, UtteranceEnded)]
    assert [e.reason for e in ended] == ["silence", "silence"]
    second_truth = int((0.5 + len(spanish_prompt) / SAMPLE_RATE + 1.5) * 1000) + energy_onset_ms(english_prompt)
    assert abs(ended[1].start_ms - second_truth) <= 100


def test_silence_and_line_hiss_give_no_input_and_no_utterance():
    rng = np.random.default_rng(7)
    hiss = (rng.standard_normal(6 * SAMPLE_RATE) * 0.001).astype(np.float32)  # -60 dBFS
    events = endpoint_audio(hiss)
    assert events == [NoInput(at_ms=5000)]


def test_real_speech_longer_than_max_utterance_is_cut(jfk):
    cfg = EndpointerConfig(max_utterance_ms=4000, end_silence_ms=1500, no_input_ms=None)  # JFK pauses ~1 s
    ended = [e for e in endpoint_audio(jfk, cfg) if isinstance(e, UtteranceEnded)]
    assert ended[0].reason == "max_length"
    assert ended[0].detected_ms - ended[0].start_ms == 4000
