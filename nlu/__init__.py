"""Puente NLU: the caller's reason for calling, from transcribed text (Spanish and English).

Knows nothing of audio, SIP or WhatsApp. The gateway depends on :class:`IntentClassifier`
and gets a ready model from :func:`load_or_train_default` (or asks a Rasa server through
:class:`RasaClassifier`). The ML engineer's tools are the public modules ``nlu.train``,
``nlu.evaluate``, ``nlu.lint`` and ``nlu.augment`` (``puente nlu`` runs them).
"""

from .bundled import bundled_asr_paths, bundled_data_paths, default_cache_dir, load_or_train_default
from .classifier import IntentClassifier, IntentResult, IntentScore, combine_readings
from .completeness import is_complete, open_ending
from .conflicts import ConflictPolicy, ConflictReport, resolve_conflicts
from .dataset import DatasetError, Example, data_hash, load_examples, read_examples
from .model import IntentModel, ModelLoadError
from .rasa_backend import DEFAULT_TIMEOUT_S as DEFAULT_RASA_TIMEOUT_S
from .rasa_backend import RasaAnswerError, RasaClassifier
from .taxonomy import DESCRIPTIONS, INTENTS, OUT_OF_SCOPE

__all__ = [
    "DEFAULT_RASA_TIMEOUT_S",
    "DESCRIPTIONS",
    "ConflictPolicy",
    "ConflictReport",
    "DatasetError",
    "Example",
    "INTENTS",
    "IntentClassifier",
    "IntentModel",
    "IntentResult",
    "IntentScore",
    "combine_readings",
    "ModelLoadError",
    "OUT_OF_SCOPE",
    "RasaAnswerError",
    "RasaClassifier",
    "bundled_asr_paths",
    "bundled_data_paths",
    "data_hash",
    "default_cache_dir",
    "is_complete",
    "load_examples",
    "load_or_train_default",
    "open_ending",
    "read_examples",
    "resolve_conflicts",
]
