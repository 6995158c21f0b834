"""The model registry assembles the bundled model once, verified, and names what is wrong."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from models.errors import InvalidModelError, ModelCorruptError, ModelNotFoundError
from models.registry import (
    BASE_SHA256,
    SplitModelSource,
    assemble_split_model,
    installed_base_source,
    locate_model,
    resolve_model,
)

PART1, PART2 = b"first half of a model " * 1000, b"second half" * 777


def fake_package(root: Path, part1: bytes = PART1, part2: bytes = PART2) -> SplitModelSource:
    """A stand-in for the two PyPI packages: same layout, small parts, its own sha256."""
    (root / "pkg1" / "data").mkdir(parents=True)
    (root / "pkg2" / "data").mkdir(parents=True)
    (root / "pkg1" / "data" / "model.bin.part1").write_bytes(part1)
    (root / "pkg2" / "data" / "model.bin.part2").write_bytes(part2)
    for name, content in {"config.json": "{}", "tokenizer.json": "{}", "vocabulary.json": "[]"}.items():
        (root / "pkg2" / "data" / name).write_text(content)
    return SplitModelSource(
        parts=(root / "pkg1" / "data" / "model.bin.part1", root / "pkg2" / "data" / "model.bin.part2"),
        assets_dir=root / "pkg2" / "data",
        sha256=hashlib.sha256(PART1 + PART2).hexdigest(),
    )


def test_parts_are_joined_into_the_cache_with_their_companion_files(tmp_path):
    source = fake_package(tmp_path / "site")
    model_dir = assemble_split_model(source, tmp_path / "cache" / "m")
    assert (model_dir / "model.bin").read_bytes() == PART1 + PART2
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    assert not list(model_dir.glob("*.tmp"))


def test_a_verified_model_is_not_joined_again(tmp_path):
    source = fake_package(tmp_path / "site")
    model_bin = assemble_split_model(source, tmp_path / "m") / "model.bin"
    before = model_bin.stat()
    assemble_split_model(source, tmp_path / "m")
    after = model_bin.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_truncated_joined_model_is_rebuilt(tmp_path):
    source = fake_package(tmp_path / "site")
    model_bin = assemble_split_model(source, tmp_path / "m") / "model.bin"
    with model_bin.open("r+b") as f:
        f.truncate(100)
    assemble_split_model(source, tmp_path / "m")
    assert model_bin.read_bytes() == PART1 + PART2


def test_a_same_size_corruption_without_a_marker_is_rebuilt(tmp_path):
    source = fake_package(tmp_path / "site")
    target = assemble_split_model(source, tmp_path / "m")
    data = bytearray((target / "model.bin").read_bytes())
    data[10] ^= 0xFF
    (target / "model.bin").write_bytes(bytes(data))  # new mtime: the marker no longer vouches
    assemble_split_model(source, tmp_path / "m")
    assert (target / "model.bin").read_bytes() == PART1 + PART2


def test_the_marker_records_hash_size_and_mtime(tmp_path):
    source = fake_package(tmp_path / "site")
    target = assemble_split_model(source, tmp_path / "m")
    st = (target / "model.bin").stat()
    assert json.loads((target / ".verified.json").read_text()) == {
        "sha256": source.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def test_a_corrupt_part_raises_model_corrupt_error_and_leaves_nothing_behind(tmp_path):
    good = fake_package(tmp_path / "site")
    good.parts[1].write_bytes(PART2[:-1] + b"X")
    with pytest.raises(ModelCorruptError, match="reinstall"):
        assemble_split_model(good, tmp_path / "m")
    assert not (tmp_path / "m" / "model.bin").exists()
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_a_missing_part_raises_model_not_found_naming_it(tmp_path):
    source = fake_package(tmp_path / "site")
    source.parts[0].unlink()
    with pytest.raises(ModelNotFoundError, match="model.bin.part1"):
        assemble_split_model(source, tmp_path / "m")


def test_base_is_assembled_from_the_installed_packages_with_the_pinned_hash(tmp_path):
    try:
        source = installed_base_source()
    except ModelNotFoundError as e:
        pytest.skip(str(e))
    info = locate_model("base", tmp_path)
    assert info.path == tmp_path / "whisper-base" and info.multilingual and info.sha256 == BASE_SHA256
    assert (info.path / "model.bin").stat().st_size == sum(p.stat().st_size for p in source.parts)
    assert hashlib.sha256((info.path / "model.bin").read_bytes()).hexdigest() == BASE_SHA256


def test_tiny_en_is_found_in_its_package_and_is_english_only(tmp_path):
    try:
        info = locate_model("tiny.en", tmp_path)
    except ModelNotFoundError as e:
        pytest.skip(str(e))
    assert (info.path / "model.bin").is_file() and not info.multilingual


def test_a_user_directory_is_accepted_as_is(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (d / name).write_text("x")
    (d / "vocabulary.txt").write_text("a\nb\n")
    info = locate_model(str(d), tmp_path / "cache")
    assert info.path == d.resolve() and info.sha256 is None and not info.multilingual
    assert resolve_model(d, tmp_path / "cache") == d.resolve()


def test_a_directory_missing_files_is_rejected_naming_them(tmp_path):
    d = tmp_path / "half-model"
    d.mkdir()
    (d / "model.bin").write_text("x")
    with pytest.raises(InvalidModelError) as err:
        resolve_model(str(d), tmp_path / "cache")
    message = str(err.value)
    assert "config.json" in message and "tokenizer.json" in message and "vocabulary" in message
    assert "model.bin" not in message.split("missing")[1]


def test_an_unknown_name_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="'small'"):
        resolve_model("small", tmp_path)


def test_a_file_instead_of_a_directory_is_invalid(tmp_path):
    (tmp_path / "model.bin").write_text("x")
    with pytest.raises(InvalidModelError, match="not a directory"):
        resolve_model(str(tmp_path / "model.bin"), tmp_path / "cache")


def test_joined_model_is_readable_by_other_users(tmp_path):
    source = fake_package(tmp_path / "site")
    model_bin = assemble_split_model(source, tmp_path / "m") / "model.bin"
    assert os.stat(model_bin).st_mode & 0o044 == 0o044
