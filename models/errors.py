"""Errors raised by ``models/``.

One base class so callers (the gateway's start-up, /healthz) can catch every model
problem at once, and one subclass per thing an operator would fix differently.
"""
from __future__ import annotations


class ModelError(Exception):
    """Base class for every error about finding, verifying or loading a model."""


class ModelNotFoundError(ModelError):
    """The named model, its package or its directory does not exist."""


class InvalidModelError(ModelError):
    """A directory exists but is not a usable CTranslate2 Whisper model."""


class ModelCorruptError(ModelError):
    """Model bytes on disk do not match the expected sha256 (reinstall the package)."""
