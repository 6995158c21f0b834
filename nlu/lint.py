"""Training-data linter: ``puente nlu lint PATH...``.

Reads the same files as training (Rasa ``nlu.yml``, ``intent<TAB>text`` TSV, MASSIVE ``.jsonl``)
and reports, each with the file and line to fix:

* ``format`` (error): the file cannot be read as training data (the loader's message);
* ``conflict`` (error): one text (after normalisation) under two or more intents — one
  finding per text, at its first copy under a second intent, listing every copy. Training
  drops such texts by default (``--conflicts``, see :mod:`nlu.conflicts`); fix the data;
* ``duplicate`` (warning): the same text again under the same intent; training merges the
  copies, so it costs nothing but is usually a copy-paste slip;
* ``thin`` (error): an intent with fewer than ``min_per_language`` examples in a language;
* ``language`` (warning): a line that looks like another language than its file's
  (e.g. English in ``es.yml``), by a cheap stopword count — a hint, not a verdict.

Exit status of the CLI: 1 when any error was found, 0 otherwise (warnings do not fail).
After the findings the CLI prints :func:`summary_lines`: the count of each kind, what the
conflict policies would do, and one ``N error(s), M warning(s) in K file(s)`` line.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from . import text as textnorm
from .conflicts import find_conflicts
from .dataset import DatasetError, Example, read_file
from .taxonomy import OUT_OF_SCOPE

__all__ = ["Finding", "MIN_PER_LANGUAGE", "guess_language", "has_errors", "lint", "lint_examples", "summary_lines"]

KINDS = ("format", "conflict", "duplicate", "thin", "language")

MIN_PER_LANGUAGE = 40

# Frequent function words that exist in one language only (after accent stripping).
# Words shared by both ("no", "a", "me", "la"…) or common in ASR fillers are left out.
_STOPWORDS = {
    "es": frozenset(
        "el los las del que por para con una unos unas esta este estoy quiero necesito tengo mi mis "
        "pero como donde cuando porque hola buenas gracias usted ustedes puedo puede hacer ya muy "
        "es son hay le les su sus lo al se nos fue era pues bueno tarjeta pedido cita factura".split()
    ),
    "en": frozenset(
        "the and is are was were my your you i i'm im it its this that what where when why how "
        "can could would should do does did have has want need please with for from of to "
        "hello hi thanks thank just about account order card bill".split()
    ),
}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning"
    kind: str  # format | conflict | duplicate | thin | language
    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path and self.line else f"{self.path}: " if self.path else ""
        return f"{where}{self.severity}: [{self.kind}] {self.message}"


def guess_language(text: str) -> str | None:
    """'es', 'en' or None (too little evidence), by counting language-only stopwords."""
    words = textnorm.tokens(text.replace("'", ""))
    hits = {code: sum(w in stop for w in words) for code, stop in _STOPWORDS.items()}
    best = max(hits, key=hits.get)
    other = min(hits, key=hits.get)
    if hits[best] >= 2 and hits[other] == 0:
        return best
    if hits[best] >= 3 and hits[best] >= 3 * hits[other]:
        return best
    return None


def lint(
    paths: Iterable[str | PathLike[str]],
    *,
    min_per_language: int = MIN_PER_LANGUAGE,
    partition: str | None = "train",
) -> list[Finding]:
    """Read the files (without the loader's stop-at-first-problem checks) and lint them.

    ``partition``: which lines of MASSIVE ``.jsonl`` files (``None``: all).
    """
    examples: list[Example] = []
    findings: list[Finding] = []
    for raw in paths:
        try:
            examples.extend(read_file(Path(raw), partition=partition))
        except DatasetError as exc:
            findings.append(Finding("error", "format", exc.reason, exc.path, exc.line))
    return findings + lint_examples(examples, min_per_language=min_per_language)


def lint_examples(examples: Sequence[Example], *, min_per_language: int = MIN_PER_LANGUAGE) -> list[Finding]:
    findings: list[Finding] = []
    for e in examples:
        if not textnorm.normalize(e.text):
            findings.append(Finding("error", "format", f"example {e.text!r} is empty after normalisation", e.source, e.line))
    conflicts, _ = find_conflicts(examples)
    for c in conflicts:
        first = c.copies[0]
        here = next(e for e in c.copies if e.intent != first.intent)
        others = sorted(set(c.votes) - {here.intent})
        findings.append(Finding(
            "error", "conflict",
            f"text {here.text!r} is under intent {here.intent!r} here and under "
            f"{', '.join(repr(i) for i in others)} — every copy: {c.describe()}",
            here.source, here.line,
        ))
    in_conflict = {c.key for c in conflicts}
    first_copy: dict[tuple[str, str], Example] = {}
    for e in examples:
        key = textnorm.normalize(e.text)
        if not key or key in in_conflict:
            continue
        seen = first_copy.setdefault((e.intent, key), e)
        if seen is not e:
            findings.append(Finding(
                "warning", "duplicate",
                f"text {e.text!r} (intent {e.intent!r}) duplicates {seen.source}:{seen.line} "
                "(compared after normalisation; training merges the copies)",
                e.source, e.line,
            ))

    counts: dict[tuple[str, str], int] = Counter((e.intent, e.language or "?") for e in examples)
    languages = sorted({e.language or "?" for e in examples})
    first_line: dict[tuple[str, str], Example] = {}
    for e in examples:
        first_line.setdefault((e.intent, e.language or "?"), e)
    by_intent: dict[str, set[str]] = defaultdict(set)
    for intent, lang in counts:
        by_intent[intent].add(lang)
    for intent in sorted(by_intent):
        for lang in languages:
            n = counts.get((intent, lang), 0)
            if n < min_per_language:
                where = first_line.get((intent, lang)) or next(e for e in examples if e.intent == intent)
                findings.append(Finding(
                    "error", "thin",
                    f"intent {intent!r} has {n} example(s) in language {lang!r}; at least {min_per_language} wanted",
                    where.source, where.line,
                ))
    if len(by_intent) < 2 and examples:
        findings.append(Finding(
            "error", "format", f"only one intent ({examples[0].intent!r}); a classifier needs at least two",
            examples[0].source, examples[0].line,
        ))

    for e in examples:
        if e.language not in _STOPWORDS:
            continue
        guess = guess_language(e.text)
        if guess is not None and guess != e.language:
            findings.append(Finding(
                "warning", "language", f"{e.text!r} looks like {guess!r} but the file is {e.language!r}",
                e.source, e.line,
            ))
    findings.sort(key=lambda f: (f.path or "", f.line or 0, f.kind))
    return findings


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def summary_lines(findings: Sequence[Finding], n_files: int) -> list[str]:
    """What ``puente nlu lint`` prints after the findings: counts per kind, then one total line.

    ``format: 0 · conflict: 25 · duplicate: 180 (warnings) · thin: 2 · language: 0 (warnings)``
    """
    counts = Counter(f.kind for f in findings)
    warning_kinds = {f.kind for f in findings if f.severity == "warning"} | {"duplicate", "language"}
    parts = [f"{kind}: {counts.get(kind, 0)}" + (" (warnings)" if kind in warning_kinds else "") for kind in KINDS]
    parts += [f"{kind}: {n}" for kind, n in sorted(counts.items()) if kind not in KINDS]
    out = ["findings per kind: " + " · ".join(parts)]
    if counts.get("conflict"):
        out.append(f"conflicts: `puente nlu train` drops every copy of these {counts['conflict']} text(s) by default "
                   "(--conflicts majority keeps the majority intent; --strict refuses the data)")
    errors = sum(f.severity == "error" for f in findings)
    out.append(f"{errors} error(s), {len(findings) - errors} warning(s) in {n_files} file(s)")
    return out


_ = OUT_OF_SCOPE  # out_of_scope is linted like any intent: it needs examples in every language too
