"""Puente NLU: the caller's reason for calling, from transcribed text (Spanish and English).

Knows nothing of audio, SIP or WhatsApp. The gateway depends on :class:`IntentClassifier`
and gets a ready model from :func:`load_or_train_default`.
"""

from .bundled import bundled_data_paths, load_or_train_default
from .classifier import IntentClassifier, IntentResult, IntentScore
from .dataset import DatasetError, Example, data_hash, load_examples
from .model import IntentModel, ModelLoadError
from .taxonomy import DESCRIPTIONS, INTENTS, OUT_OF_SCOPE

__all__ = [
    "DESCRIPTIONS",
    "DatasetError",
    "Example",
    "INTENTS",
    "IntentClassifier",
    "IntentModel",
    "IntentResult",
    "IntentScore",
    "ModelLoadError",
    "OUT_OF_SCOPE",
    "bundled_data_paths",
    "data_hash",
    "load_examples",
    "load_or_train_default",
]
