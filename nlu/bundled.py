"""The model Puente ships with: bundled training data, trained on first use and cached.

Training takes a few seconds, so instead of shipping weights (and keeping them in step
with the data and the featurizer) we ship the data and train once per (data, code)
version into a cache directory. Later starts only load.

The data is the written examples (``data/<lang>.yml``) and what Whisper made of them on a
phone line (``data/asr/*.tsv``, written by ``puente nlu augment``; see nlu/README.md), which the
model learns from too so that "mi penimos" still means an order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from .dataset import Example, data_hash, load_examples, read_examples
from .model import IntentModel, ModelLoadError
from .taxonomy import INTENTS
from .train import CODE_VERSION, save, train

__all__ = [
    "BUNDLED_LANGUAGES", "bundled_asr_paths", "bundled_data_paths", "default_cache_dir", "load_or_train_default",
    "default_model_dir",
]

BUNDLED_LANGUAGES = ("es", "en")


def bundled_data_paths() -> list[Path]:
    """The shipped ``nlu/data/<lang>.yml`` files, as filesystem paths."""
    root = resources.files("nlu").joinpath("data")
    paths = [Path(str(root.joinpath(f"{lang}.yml"))) for lang in BUNDLED_LANGUAGES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        # Only happens for a broken install (e.g. package data left out of a wheel).
        raise FileNotFoundError(f"bundled NLU training data missing: {', '.join(missing)}")
    return paths


def bundled_asr_paths() -> list[Path]:
    """The shipped ASR transcripts of the bundled examples (``nlu/data/asr/*.tsv``), sorted."""
    return sorted(Path(str(resources.files("nlu").joinpath("data", "asr"))).glob("*.tsv"))


def _bundled() -> tuple[list[Example], list[Example], str]:
    """The written examples, their transcripts, and the cache key of the model they train."""
    examples = load_examples(bundled_data_paths(), taxonomy=INTENTS)
    asr_paths = bundled_asr_paths()
    augmented = read_examples(asr_paths) if asr_paths else []
    return examples, augmented, f"nlu-{data_hash([*examples, *augmented])[:12]}-{CODE_VERSION}"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/puente/nlu`` (``~/.cache/puente/nlu``): where the bundled model is trained once."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "puente" / "nlu"


def default_model_dir(cache_dir: str | Path) -> Path:
    """Where :func:`load_or_train_default` keeps the model for the current data and code."""
    return Path(cache_dir) / _bundled()[2]


def load_or_train_default(cache_dir: str | Path, *, seed: int = 0) -> IntentModel:
    """Load the bundled model from ``cache_dir``, training it there first if needed.

    Safe when several processes start at once: each trains into its own temporary
    directory and renames it into place; the loser of the race discards its copy and
    loads the winner's. A cached model that no longer loads is replaced.
    """
    cache = Path(cache_dir)
    examples, augmented, key = _bundled()
    target = cache / key
    if target.exists():
        try:
            return IntentModel.load(target)
        except ModelLoadError:
            # Corrupt or half-deleted cache entry: move it out of the way and retrain.
            _discard(target)

    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-nlu-", dir=cache))
    try:
        save(train(examples, seed=seed, augmented=augmented), tmp)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the model is not secret
        try:
            tmp.rename(target)
        except OSError:
            if not target.exists():
                raise
            # Another process finished first; its model is identical (same data, code, seed).
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return IntentModel.load(target)


def _discard(path: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=".trash-nlu-", dir=path.parent))
    try:
        path.rename(trash / path.name)
    except OSError:
        pass  # someone else already moved or replaced it
    shutil.rmtree(trash, ignore_errors=True)
