"""Speech on the premises: voice activity, endpointing, Whisper transcription and constrained answers.

Knows nothing of SIP or intents. ``models.audio`` is the one tiny module that ``sip/`` may
import too (the shared audio-frame type). What the gateway uses is exported here::

    from models import Endpointer, EndpointerConfig, Transcriber, TranscriberConfig, WebRtcVad

    transcriber = Transcriber(TranscriberConfig(model="base"))
    print(transcriber.transcribe(load_audio("call.wav"), language="es").text)
"""
from models.answers import DIGITS, YES_NO, AnswerRecognizer, AnswerResult, Grammar
from models.audio import FRAME_MS, SAMPLE_RATE, AudioFrame, frames_from_pcm, load_audio
from models.endpointing import (
    Endpointer,
    EndpointerConfig,
    NoInput,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
    UtterancePaused,
)
from models.errors import InvalidModelError, ModelCorruptError, ModelError, ModelNotFoundError
from models.transcribe import Transcriber, TranscriberConfig, Transcript
from models.vad import SpeechExtent, VoiceActivityDetector, WebRtcVad, speech_extent

__all__ = [
    "DIGITS", "FRAME_MS", "SAMPLE_RATE", "YES_NO", "AnswerRecognizer", "AnswerResult", "AudioFrame", "Endpointer",
    "EndpointerConfig", "Grammar", "InvalidModelError", "ModelCorruptError", "ModelError", "ModelNotFoundError",
    "NoInput", "SpeechExtent", "SpeechResumed", "SpeechStarted", "Transcriber", "TranscriberConfig", "Transcript", "UtteranceEnded", "UtterancePaused",
    "VoiceActivityDetector", "WebRtcVad", "frames_from_pcm", "load_audio", "speech_extent",
]
