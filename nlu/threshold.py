"""The out-of-scope threshold: its trade-off curve, and the rule that picks a point on it.

Below the threshold the model answers ``out_of_scope`` (see :class:`nlu.model.IntentModel`).
Raising it rejects more real out-of-scope calls (``oos_recall`` up) and also more in-scope
callers (``false_reject_rate`` up, ``in_scope_accuracy`` down). Which point is right is a
business choice, so the curve is kept in the model's metadata and printed by
``puente nlu eval``; the rules that choose a point from validation data are:

* :data:`RULE_MACRO_F1` (default): the highest threshold whose macro-F1 is within
  :data:`F1_TOLERANCE` of the best one. Leans to rejecting (CLINC150: 89.8 % out-of-scope
  recall for 7 % in-scope false rejects).
* :data:`RULE_OOS_RECALL` (``puente nlu train --oos-recall-target R``): the lowest threshold
  whose out-of-scope recall is at least ``R`` — the fewest false rejects that still catch
  that share of out-of-scope calls. Needs ``out_of_scope`` examples in the validation data;
  without them it falls back to the macro-F1 rule. When no threshold on the grid reaches
  ``R``, the highest one on the grid is taken and ``reached`` is false.

Definitions on one data set (``y`` gold, ``ŷ`` the answer after the threshold):
``in_scope_accuracy`` = share of gold in-scope examples with ``ŷ == y``; ``oos_recall`` = share
of gold ``out_of_scope`` examples with ``ŷ == out_of_scope``; ``false_reject_rate`` = share of gold
in-scope examples with ``ŷ == out_of_scope``; ``macro_f1`` over every label. ``None`` when the
data has no example of the kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .taxonomy import OUT_OF_SCOPE

__all__ = [
    "F1_TOLERANCE",
    "GRID",
    "RULE_MACRO_F1",
    "RULE_OOS_RECALL",
    "ThresholdChoice",
    "ThresholdPoint",
    "apply_threshold",
    "choose_threshold",
    "threshold_curve",
]

GRID: tuple[float, ...] = tuple(i / 100 for i in range(0, 81))
# The default rule: the highest threshold whose macro-F1 stays within this margin of the best. Held-out
# in-scope data alone always favours a threshold near 0, while real out-of-scope calls are more varied
# than the training ones, so it leans conservative; ``oos_recall_target`` chooses another balance.
F1_TOLERANCE = 0.01
RULE_MACRO_F1 = "macro_f1_within_tolerance"
RULE_OOS_RECALL = "oos_recall_target"


@dataclass(frozen=True, slots=True)
class ThresholdPoint:
    threshold: float
    macro_f1: float
    in_scope_accuracy: float | None
    oos_recall: float | None
    false_reject_rate: float | None

    def to_dict(self) -> dict[str, float | None]:
        """Rounded to 4 decimals (the rule itself compares the exact values)."""
        return {k: v if v is None else round(v, 4) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    rule: str
    curve: tuple[ThresholdPoint, ...]
    oos_recall_target: float | None = None
    reached: bool | None = None  # RULE_OOS_RECALL only: did some threshold reach the target?
    note: str = ""

    @property
    def point(self) -> ThresholdPoint | None:
        return next((p for p in self.curve if p.threshold == self.threshold), None)

    def rule_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule}
        if self.rule == RULE_MACRO_F1:
            out["tolerance"] = F1_TOLERANCE
        if self.oos_recall_target is not None:
            out["oos_recall_target"] = self.oos_recall_target
        if self.reached is not None:
            out["reached"] = self.reached
        if self.note:
            out["note"] = self.note
        return out


def apply_threshold(probs: np.ndarray, labels: Sequence[str], threshold: float) -> np.ndarray:
    """Predicted label indices: argmax, or ``out_of_scope`` where the top probability < threshold."""
    pred = probs.argmax(axis=1)
    if OUT_OF_SCOPE in labels:
        pred = np.where(probs.max(axis=1) < threshold, labels.index(OUT_OF_SCOPE), pred)
    return pred


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    """Unweighted mean F1 over ``n_labels`` labels (F1 = 2TP / (2TP + FP + FN); 0 when TP = 0)."""
    f1s = []
    for k in range(n_labels):
        tp = int(np.sum((y_pred == k) & (y_true == k)))
        fp = int(np.sum((y_pred == k) & (y_true != k)))
        fn = int(np.sum((y_pred != k) & (y_true == k)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def threshold_curve(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    grid: Sequence[float] = GRID,
    *,
    forced_oos: np.ndarray | None = None,
) -> tuple[ThresholdPoint, ...]:
    """One :class:`ThresholdPoint` per grid threshold (empty when there is no ``out_of_scope`` label).

    ``y`` holds label indices; ``-1`` marks a gold intent the model does not know (always
    wrong, counted in-scope). ``forced_oos`` marks rows answered ``out_of_scope`` whatever the
    threshold (the model's no-content rule).
    """
    labels = list(labels)
    if OUT_OF_SCOPE not in labels:
        return ()
    oos = labels.index(OUT_OF_SCOPE)
    y = np.asarray(y)
    is_oos = y == oos
    in_scope = ~is_oos
    points = []
    for t in grid:
        pred = apply_threshold(probs, labels, t)
        if forced_oos is not None:
            pred = np.where(forced_oos, oos, pred)
        points.append(ThresholdPoint(
            threshold=float(t),
            macro_f1=macro_f1(y, pred, len(labels)),
            in_scope_accuracy=_share(pred[in_scope] == y[in_scope]),
            oos_recall=_share(pred[is_oos] == oos),
            false_reject_rate=_share(pred[in_scope] == oos),
        ))
    return tuple(points)


def choose_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    oos_recall_target: float | None = None,
    grid: Sequence[float] = GRID,
) -> ThresholdChoice:
    """Pick the threshold on validation probabilities ``probs`` (rows: examples) with gold ``y``.

    ``oos_recall_target`` selects :data:`RULE_OOS_RECALL`; ``None`` the macro-F1 rule. No
    ``out_of_scope`` label → threshold 0 and an empty curve.
    """
    if oos_recall_target is not None and not 0.0 <= oos_recall_target <= 1.0:
        raise ValueError(f"oos_recall_target must be in [0, 1], got {oos_recall_target}")
    curve = threshold_curve(probs, y, labels, grid)
    if not curve:
        return ThresholdChoice(0.0, "none", (), oos_recall_target, note="no out_of_scope label: no threshold")
    note = ""
    if oos_recall_target is not None:
        if curve[0].oos_recall is not None:
            reaching = [p.threshold for p in curve if p.oos_recall is not None and p.oos_recall >= oos_recall_target]
            if reaching:
                return ThresholdChoice(min(reaching), RULE_OOS_RECALL, curve, oos_recall_target, True)
            return ThresholdChoice(
                max(p.threshold for p in curve), RULE_OOS_RECALL, curve, oos_recall_target, False,
                note=f"no threshold up to {max(grid):.2f} reaches out-of-scope recall {oos_recall_target:.2f}",
            )
        note = "the validation data has no out_of_scope examples: macro-F1 rule used instead"
    best = max(p.macro_f1 for p in curve)
    chosen = max(p.threshold for p in curve if p.macro_f1 >= best - F1_TOLERANCE)
    return ThresholdChoice(chosen, RULE_MACRO_F1, curve, oos_recall_target, note=note)


def _share(mask: np.ndarray) -> float | None:
    return None if mask.size == 0 else float(mask.mean())
