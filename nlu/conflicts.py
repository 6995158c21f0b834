"""Conflicting and duplicated training examples, and the policy that resolves them.

Texts are compared after :func:`nlu.text.normalize` (case, accents, punctuation, numbers).

* A **conflict** is one text under two or more intents. Real data has them (MASSIVE es-ES
  train: 25 texts; Banking77: 2): an annotator's slip, or a text that truly means either.
  The policy (:class:`ConflictPolicy`) says what training does with them:

  - ``drop`` (default): drop every copy of the text, under every intent — the model learns
    nothing from a text whose label is in doubt;
  - ``majority``: keep the copies under the intent that has most of them and drop the
    others; a tie drops them all (as ``drop``);
  - ``strict``: refuse the data, naming both lines (what :func:`nlu.dataset.load_examples`
    does by default, and what our own ``nlu/data`` is held to).

* A **duplicate** is the same text twice under one intent. It is harmless: training merges
  the copies (:func:`nlu.train.train` deduplicates), so it is counted and reported, never
  refused.

:func:`resolve_conflicts` applies a policy and returns what was kept and a
:class:`ConflictReport`; ``puente nlu train`` prints the report and stores it in the model's
``metadata.json`` (``data_conflicts``); ``puente nlu lint`` lists every finding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import text as textnorm
from .dataset import DatasetError, Example

__all__ = ["Conflict", "ConflictPolicy", "ConflictReport", "find_conflicts", "resolve_conflicts"]

# At most this many conflicts are listed in metadata.json (the counts are always complete).
METADATA_LIMIT = 500


class ConflictPolicy(str, Enum):
    """What training does with a text that appears under two or more intents."""

    DROP = "drop"  # drop every copy (default)
    MAJORITY = "majority"  # keep the majority intent's copies; a tie drops all
    STRICT = "strict"  # refuse the data, naming both lines

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Conflict:
    """One normalised text found under several intents: every copy, in input order."""

    key: str
    copies: tuple[Example, ...]
    kept_intent: str | None = None  # after resolution: the intent kept (majority), or None

    @property
    def text(self) -> str:
        return self.copies[0].text

    @property
    def votes(self) -> Counter[str]:
        return Counter(e.intent for e in self.copies)

    def places(self) -> dict[str, list[str]]:
        """``{intent: ["file:line", ...]}``, intents in order of first appearance."""
        out: dict[str, list[str]] = {}
        for e in self.copies:
            out.setdefault(e.intent, []).append(f"{e.source}:{e.line}")
        return out

    def describe(self) -> str:
        where = "; ".join(f"{intent} at {', '.join(p)}" for intent, p in self.places().items())
        return f"{self.text!r} under {len(self.votes)} intents: {where}"

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "intents": self.places(), "kept_intent": self.kept_intent}


@dataclass(frozen=True, slots=True)
class ConflictReport:
    policy: ConflictPolicy
    conflicts: tuple[Conflict, ...]  # in order of each text's first appearance
    dropped: int  # examples removed by the policy
    duplicates: int  # extra copies of a text under one intent, among the kept examples (merged by training)

    @property
    def relabelled(self) -> int:
        """Conflicting texts kept under their majority intent."""
        return sum(c.kept_intent is not None for c in self.conflicts)

    def summary(self) -> str:
        if not self.conflicts:
            head = "no text is under two intents"
        else:
            kept = f", {self.relabelled} kept under their majority intent" if self.relabelled else ""
            head = (f"{len(self.conflicts)} text(s) under two or more intents: {self.dropped} example(s) dropped"
                    f"{kept} (--conflicts {self.policy.value})")
        return f"{head}; {self.duplicates} duplicate example(s) under one intent merged"

    def lines(self, limit: int | None = 20) -> list[str]:
        """The summary, then one line per conflict (at most ``limit``), for progress output."""
        out = [self.summary()]
        shown = self.conflicts if limit is None else self.conflicts[:limit]
        for c in shown:
            action = f"kept as {c.kept_intent!r}" if c.kept_intent else "dropped"
            out.append(f"  {action}: {c.describe()}")
        if len(shown) < len(self.conflicts):
            out.append(f"  … and {len(self.conflicts) - len(shown)} more (all in metadata.json: data_conflicts)")
        return out

    def to_dict(self, limit: int = METADATA_LIMIT) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "conflicting_texts": len(self.conflicts),
            "dropped_examples": self.dropped,
            "relabelled_texts": self.relabelled,
            "duplicates_merged": self.duplicates,
            "conflicts": [c.to_dict() for c in self.conflicts[:limit]],
            "conflicts_listed": min(limit, len(self.conflicts)),
        }


def find_conflicts(examples: Sequence[Example]) -> tuple[list[Conflict], int]:
    """Every text under two or more intents, and the number of duplicate copies under one intent.

    Texts empty after normalisation are skipped (the loader refuses them as format errors).
    """
    groups: dict[str, list[Example]] = {}
    for e in examples:
        key = textnorm.normalize(e.text)
        if key:
            groups.setdefault(key, []).append(e)
    conflicts = []
    duplicates = 0
    for key, copies in groups.items():
        intents = Counter(e.intent for e in copies)
        if len(intents) > 1:
            conflicts.append(Conflict(key, tuple(copies)))
        else:
            duplicates += len(copies) - 1
    return conflicts, duplicates


def resolve_conflicts(
    examples: Sequence[Example], policy: ConflictPolicy | str = ConflictPolicy.DROP
) -> tuple[list[Example], ConflictReport]:
    """Apply ``policy`` to the texts under two or more intents.

    Returns the examples kept (input order; duplicates under one intent are all kept, for
    training to merge) and a :class:`ConflictReport`. ``strict`` raises :class:`DatasetError`
    at the first conflicting copy, naming the line of the other intent's copy too.
    """
    policy = ConflictPolicy(policy)
    conflicts, _ = find_conflicts(examples)
    if not conflicts:
        kept = list(examples)
        return kept, ConflictReport(policy, (), 0, _duplicates(kept))
    if policy is ConflictPolicy.STRICT:
        first = conflicts[0]
        other = first.copies[0]
        here = next(e for e in first.copies if e.intent != other.intent)
        more = f"; {len(conflicts) - 1} more text(s) conflict (puente nlu lint lists them all)" if len(conflicts) > 1 else ""
        raise DatasetError(
            f"text {here.text!r} is under intent {here.intent!r} here and under {other.intent!r} "
            f"at {other.source}:{other.line} (texts are compared after normalisation){more}",
            here.source,
            here.line,
        )
    resolved: list[Conflict] = []
    drop: set[int] = set()  # ids of the Example objects to drop
    for c in conflicts:
        keep = None
        if policy is ConflictPolicy.MAJORITY:
            (top, n), (_, runner_up) = c.votes.most_common(2)
            keep = top if n > runner_up else None
        drop.update(id(e) for e in c.copies if e.intent != keep)
        resolved.append(Conflict(c.key, c.copies, keep))
    kept = [e for e in examples if id(e) not in drop]
    return kept, ConflictReport(policy, tuple(resolved), len(examples) - len(kept), _duplicates(kept))


def _duplicates(examples: Sequence[Example]) -> int:
    keys = [(e.intent, textnorm.normalize(e.text)) for e in examples]
    return len(keys) - len(set(keys))
