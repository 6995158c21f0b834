"""Training examples: reading Rasa ``nlu.yml`` files and ``intent<TAB>text`` TSV files.

Every example remembers the file and line it came from, so that a problem in the data
("this text is under two intents") points at the line to fix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import yaml

from . import text as textnorm

__all__ = ["DatasetError", "Example", "data_hash", "load_examples", "read_examples"]

_YAML_SUFFIXES = {".yml", ".yaml"}
_TSV_SUFFIXES = {".tsv"}
# Rasa blocks that carry no intent examples; they are accepted and skipped.
_IGNORED_BLOCKS = ("synonym", "regex", "lookup")
# A file named like a language code ("es.yml", "en-US.tsv") gives its examples that language.
_LANGUAGE_STEM_RE = re.compile(r"^[a-z]{2}(?:[-_][A-Za-z]{2})?$")
# Rasa entity annotations: [text](entity), [text](entity:value), [text]{"entity": ...}.
_ENTITY_RE = re.compile(r"\[([^\[\]]+)\](?:\([^()]*\)|\{[^{}]*\})")


class DatasetError(ValueError):
    """Bad training data. ``path`` and ``line`` (1-based) point at the problem."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: str
    language: str | None
    source: str
    line: int


def strip_entities(text: str) -> str:
    """``"mi [pedido 123](order_id)"`` -> ``"mi pedido 123"``."""
    return _ENTITY_RE.sub(r"\1", text)


def load_examples(
    paths: Iterable[str | PathLike[str]],
    *,
    taxonomy: Sequence[str] | None = None,
) -> list[Example]:
    """Read examples from Rasa nlu.yml (``.yml``/``.yaml``) and TSV (``.tsv``) files.

    With ``taxonomy`` given, an intent outside it is an error. The whole set is checked
    across files: no intent without examples, no text (after normalisation) under two
    intents, and at least two intents overall.
    """
    examples, any_path = _read_all(paths)
    _check(examples, taxonomy, any_path)
    return examples


def read_examples(paths: Iterable[str | PathLike[str]]) -> list[Example]:
    """Read examples with the per-line format checks only, none across the set.

    For evaluation data, which is what it is: public test sets hold a few texts under two
    intents, and a test file may hold a single intent (e.g. only ``out_of_scope``).
    """
    return _read_all(paths)[0]


def _read_all(paths: Iterable[str | PathLike[str]]) -> tuple[list[Example], Path]:
    examples: list[Example] = []
    any_path = None
    for raw_path in paths:
        path = Path(raw_path)
        any_path = any_path or path
        examples.extend(read_file(path))
    if any_path is None:
        raise DatasetError("no training data files given")
    return examples, any_path


def read_file(path: Path) -> list[Example]:
    """One Rasa ``nlu.yml`` or ``intent<TAB>text`` TSV file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return _read_rasa_yaml(path)
    if suffix in _TSV_SUFFIXES:
        return _read_tsv(path)
    raise DatasetError(
        f"unknown training data format {suffix or '(no suffix)'!r}; "
        "expected Rasa nlu.yml (.yml, .yaml) or intent<TAB>text (.tsv)",
        path,
        1,
    )


def data_hash(examples: Iterable[Example]) -> str:
    """SHA-256 of the examples' content, independent of file names, lines and order.

    Training sorts its input, so two example sets with the same hash train the same model.
    """
    rows = sorted({f"{e.intent}\t{e.language or ''}\t{e.text}" for e in examples})
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# --- readers -------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read file: {exc.strerror or exc}", path) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"file is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", path, line
        ) from exc


def _language_of(path: Path) -> str | None:
    stem = path.stem
    return stem.split("_")[0].split("-")[0].lower() if _LANGUAGE_STEM_RE.match(stem) else None


def _read_tsv(path: Path) -> list[Example]:
    text = _read_text(path)
    file_language = _language_of(path)
    out: list[Example] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = raw.split("\t")
        if len(parts) not in (2, 3):
            raise DatasetError("expected 'intent<TAB>text' or 'intent<TAB>text<TAB>language'", path, number)
        intent, example = parts[0].strip(), strip_entities(parts[1]).strip()
        language = parts[2].strip() or None if len(parts) == 3 else file_language
        if not intent:
            raise DatasetError("empty intent name", path, number)
        if not example:
            raise DatasetError(f"empty example text for intent {intent!r}", path, number)
        out.append(Example(example, intent, language, str(path), number))
    return out


def _read_rasa_yaml(path: Path) -> list[Example]:
    text = _read_text(path)
    try:
        # compose() keeps node positions; safe_load() would lose the line numbers.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DatasetError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}", path, mark.line + 1 if mark else 1
        ) from exc
    if not isinstance(root, yaml.MappingNode):
        raise DatasetError("not a Rasa nlu.yml file: expected a mapping with an 'nlu:' key", path, 1)
    top = _mapping(root)
    if "nlu" not in top:
        raise DatasetError("not a Rasa nlu.yml file: no 'nlu:' key", path, root.start_mark.line + 1)
    _, nlu = top["nlu"]
    if not isinstance(nlu, yaml.SequenceNode):
        raise DatasetError("'nlu:' must be a list of '- intent:' blocks", path, nlu.start_mark.line + 1)

    language = _language_of(path)
    out: list[Example] = []
    for block in nlu.value:
        line = block.start_mark.line + 1
        if not isinstance(block, yaml.MappingNode):
            raise DatasetError("each 'nlu:' item must be a mapping ('- intent: name')", path, line)
        fields = _mapping(block)
        if "intent" not in fields:
            if any(key in fields for key in _IGNORED_BLOCKS):
                continue
            raise DatasetError(
                f"unknown nlu block (keys: {', '.join(sorted(fields))}); expected intent, synonym, regex or lookup",
                path,
                line,
            )
        intent_node = fields["intent"][1]
        intent = intent_node.value.strip() if isinstance(intent_node, yaml.ScalarNode) else ""
        if not intent:
            raise DatasetError("empty intent name", path, intent_node.start_mark.line + 1)
        if "examples" not in fields:
            raise DatasetError(f"intent {intent!r} has no 'examples:'", path, line)
        examples_node = fields["examples"][1]
        found = list(_examples_from_node(examples_node, intent, language, path))
        if not found:
            raise DatasetError(f"intent {intent!r} has no examples", path, line)
        out.extend(found)
    return out


def _mapping(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _examples_from_node(node: yaml.Node, intent: str, language: str | None, path: Path) -> Iterable[Example]:
    if isinstance(node, yaml.ScalarNode):
        # A block scalar ("examples: |") starts on the line after the "|".
        block = node.style in ("|", ">")
        first_line = node.start_mark.line + (2 if block else 1)
        for offset, raw in enumerate(node.value.splitlines()):
            stripped = raw.strip()
            if not stripped:
                continue
            number = first_line + offset if block else first_line
            if not stripped.startswith("-"):
                raise DatasetError(f"example line must start with '- ' (intent {intent!r})", path, number)
            example = strip_entities(stripped[1:]).strip()
            if not example:
                raise DatasetError(f"empty example (intent {intent!r})", path, number)
            yield Example(example, intent, language, str(path), number)
    elif isinstance(node, yaml.SequenceNode):
        # Rasa also accepts a list of "- text: ..." mappings (examples with metadata).
        for item in node.value:
            number = item.start_mark.line + 1
            if isinstance(item, yaml.MappingNode) and "text" in _mapping(item):
                value = _mapping(item)["text"][1].value
            elif isinstance(item, yaml.ScalarNode):
                value = item.value
            else:
                raise DatasetError(f"unsupported example entry (intent {intent!r})", path, number)
            example = strip_entities(str(value)).strip()
            if not example:
                raise DatasetError(f"empty example (intent {intent!r})", path, number)
            yield Example(example, intent, language, str(path), number)
    else:
        raise DatasetError(f"'examples:' must be a text block or a list (intent {intent!r})", path, node.start_mark.line + 1)


# --- whole-set checks ----------------------------------------------------------------


def _check(examples: list[Example], taxonomy: Sequence[str] | None, any_path: Path) -> None:
    if not examples:
        raise DatasetError("no examples found", any_path, 1)
    if taxonomy is not None:
        allowed = set(taxonomy)
        for e in examples:
            if e.intent not in allowed:
                raise DatasetError(
                    f"unknown intent {e.intent!r}; allowed: {', '.join(taxonomy)}", e.source, e.line
                )
    seen: dict[str, Example] = {}
    for e in examples:
        key = textnorm.normalize(e.text)
        if not key:
            raise DatasetError(f"example {e.text!r} is empty after normalisation", e.source, e.line)
        first = seen.setdefault(key, e)
        if first.intent != e.intent:
            raise DatasetError(
                f"text {e.text!r} is under intent {e.intent!r} here and under {first.intent!r} "
                f"at {first.source}:{first.line} (texts are compared after normalisation)",
                e.source,
                e.line,
            )
    intents = {e.intent for e in examples}
    if len(intents) < 2:
        e = examples[0]
        raise DatasetError(
            f"only one intent ({e.intent!r}) in the training data; a classifier needs at least two",
            e.source,
            e.line,
        )
