"""Training examples: reading Rasa ``nlu.yml``, ``intent<TAB>text`` TSV and MASSIVE ``.jsonl`` files.

Every example remembers the file and line it came from, so that a problem in the data
("this text is under two intents") points at the line to fix.

MASSIVE (Amazon, FitzGerald et al. 2022; one ``<locale>.jsonl`` per language, e.g.
``es-ES.jsonl``): one JSON object per line with ``locale``, ``partition`` (``train``,
``dev``, ``test``), ``utt`` (the text), ``intent`` and ``annot_utt`` (the text with slot
annotations ``[date : mañana]``, used only when ``utt`` is absent). A file holds all three
partitions; readers take one (``partition=``): training reads ``train``, validation ``dev``,
evaluation ``test`` by default; ``None`` takes every line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import yaml

from . import text as textnorm

__all__ = ["DatasetError", "Example", "MASSIVE_PARTITIONS", "data_hash", "load_examples", "read_examples", "read_file"]

_YAML_SUFFIXES = {".yml", ".yaml"}
_TSV_SUFFIXES = {".tsv"}
_JSONL_SUFFIXES = {".jsonl"}
MASSIVE_PARTITIONS = ("train", "dev", "test")
# MASSIVE slot annotation in annot_utt: "[date : mañana]" -> "mañana".
_MASSIVE_SLOT_RE = re.compile(r"\[\s*[^\[\]:]+?\s*:\s*([^\[\]]*?)\s*\]")
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
    allow_conflicts: bool = False,
    partition: str | None = "train",
) -> list[Example]:
    """Read training examples from Rasa nlu.yml (``.yml``/``.yaml``), TSV (``.tsv``) and MASSIVE (``.jsonl``) files.

    With ``taxonomy`` given, an intent outside it is an error. The whole set is checked
    across files: no intent without examples, no text empty after normalisation, at least
    two intents overall, and — unless ``allow_conflicts`` — no text (after normalisation)
    under two intents (the error names both lines). With ``allow_conflicts=True`` such texts
    are kept for :func:`nlu.conflicts.resolve_conflicts` (``train(conflicts=...)`` applies
    the policy). ``partition`` chooses the lines of MASSIVE files (``None``: all).
    """
    examples, any_path = _read_all(paths, partition)
    _check(examples, taxonomy, any_path, conflicts=not allow_conflicts)
    return examples


def read_examples(paths: Iterable[str | PathLike[str]], *, partition: str | None = "test") -> list[Example]:
    """Read examples with the per-line format checks only, none across the set.

    For evaluation data, which is what it is: public test sets hold a few texts under two
    intents, and a test file may hold a single intent (e.g. only ``out_of_scope``).
    MASSIVE files give their ``test`` partition unless ``partition`` says otherwise.
    """
    return _read_all(paths, partition)[0]


def _read_all(paths: Iterable[str | PathLike[str]], partition: str | None) -> tuple[list[Example], Path]:
    examples: list[Example] = []
    any_path = None
    for raw_path in paths:
        path = Path(raw_path)
        any_path = any_path or path
        examples.extend(read_file(path, partition=partition))
    if any_path is None:
        raise DatasetError("no training data files given")
    return examples, any_path


def read_file(path: Path, *, partition: str | None = "train") -> list[Example]:
    """One Rasa ``nlu.yml``, ``intent<TAB>text`` TSV or MASSIVE ``.jsonl`` file, chosen by its suffix.

    ``partition`` applies to MASSIVE files only (``train``, ``dev``, ``test``; ``None``: every line).
    """
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return _read_rasa_yaml(path)
    if suffix in _TSV_SUFFIXES:
        return _read_tsv(path)
    if suffix in _JSONL_SUFFIXES:
        return _read_massive_jsonl(path, partition)
    raise DatasetError(
        f"unknown training data format {suffix or '(no suffix)'!r}; "
        "expected Rasa nlu.yml (.yml, .yaml), intent<TAB>text (.tsv) or MASSIVE (.jsonl)",
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


def _read_massive_jsonl(path: Path, partition: str | None) -> list[Example]:
    if partition is not None and partition not in MASSIVE_PARTITIONS:
        raise ValueError(f"unknown MASSIVE partition {partition!r}; expected one of {', '.join(MASSIVE_PARTITIONS)} or None")
    text = _read_text(path)
    file_language = _language_of(path)
    out: list[Example] = []
    seen_partitions: Counter[str] = Counter()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, number) from exc
        if not isinstance(row, dict):
            raise DatasetError("expected a JSON object per line (MASSIVE: locale, partition, utt, intent)", path, number)
        for name in ("intent", "partition"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DatasetError(f"missing or empty {name!r} (a string)", path, number)
        if row["partition"] not in MASSIVE_PARTITIONS:
            raise DatasetError(
                f"unknown partition {row['partition']!r}; expected one of {', '.join(MASSIVE_PARTITIONS)}", path, number
            )
        utt = row.get("utt")
        if utt is None and isinstance(row.get("annot_utt"), str):
            utt = _MASSIVE_SLOT_RE.sub(r"\1", row["annot_utt"])
        if not isinstance(utt, str) or not utt.strip():
            raise DatasetError(f"missing or empty 'utt' for intent {row['intent']!r}", path, number)
        locale = row.get("locale")
        if locale is not None and not isinstance(locale, str):
            raise DatasetError("'locale' must be a string like 'es-ES'", path, number)
        seen_partitions[row["partition"]] += 1
        if partition is not None and row["partition"] != partition:
            continue
        language = locale.split("-")[0].split("_")[0].lower() if locale else file_language
        out.append(Example(" ".join(utt.split()), row["intent"].strip(), language, str(path), number))
    if not out and seen_partitions:
        found = ", ".join(f"{p} ({n})" for p, n in sorted(seen_partitions.items()))
        raise DatasetError(f"no examples in partition {partition!r}; this file has {found} (choose with --partition)", path, 1)
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


def _check(examples: list[Example], taxonomy: Sequence[str] | None, any_path: Path, *, conflicts: bool = True) -> None:
    if not examples:
        raise DatasetError("no examples found", any_path, 1)
    if taxonomy is not None:
        allowed = set(taxonomy)
        for e in examples:
            if e.intent not in allowed:
                raise DatasetError(
                    f"unknown intent {e.intent!r}; allowed: {', '.join(taxonomy)}", e.source, e.line
                )
    for e in examples:
        if not textnorm.normalize(e.text):
            raise DatasetError(f"example {e.text!r} is empty after normalisation", e.source, e.line)
    if conflicts:
        from .conflicts import ConflictPolicy, resolve_conflicts  # imports this module

        resolve_conflicts(examples, ConflictPolicy.STRICT)  # raises at the first conflict
    intents = {e.intent for e in examples}
    if len(intents) < 2:
        e = examples[0]
        raise DatasetError(
            f"only one intent ({e.intent!r}) in the training data; a classifier needs at least two",
            e.source,
            e.line,
        )
