"""The out-of-scope threshold rules, on a toy probability matrix worked out by hand."""

import numpy as np
import pytest

from nlu.threshold import (
    F1_TOLERANCE,
    RULE_MACRO_F1,
    RULE_OOS_RECALL,
    apply_threshold,
    choose_threshold,
    threshold_curve,
)

LABELS = ("order", "out_of_scope", "pay")
O, X, P = 0, 1, 2
# Each row: the model's probabilities for one validation example, and its gold label.
# Out-of-scope examples the model is unsure about have top probabilities 0.35, 0.45, 0.55, 0.65
# (one is even predicted as out_of_scope at 0.9); in-scope ones are confident (0.9, 0.8, 0.7)
# except one at 0.5.
ROWS = [
    ([0.90, 0.05, 0.05], O),
    ([0.10, 0.10, 0.80], P),
    ([0.70, 0.10, 0.20], O),
    ([0.25, 0.25, 0.50], P),
    ([0.35, 0.30, 0.35], X),  # top 0.35 (order)
    ([0.45, 0.20, 0.35], X),  # top 0.45
    ([0.20, 0.25, 0.55], X),  # top 0.55
    ([0.65, 0.20, 0.15], X),  # top 0.65
    ([0.05, 0.90, 0.05], X),  # argmax out_of_scope
]
PROBS = np.array([r for r, _ in ROWS])
Y = np.array([y for _, y in ROWS])


def point(curve, t):
    return next(p for p in curve if p.threshold == t)


def test_the_curve_counts_in_scope_accuracy_oos_recall_and_false_rejects():
    curve = threshold_curve(PROBS, Y, LABELS, grid=(0.0, 0.4, 0.5, 0.6, 0.7))
    assert [(p.in_scope_accuracy, p.oos_recall, p.false_reject_rate) for p in curve] == [
        (1.0, 0.2, 0.0),   # 0.0: only the argmax out_of_scope row is caught
        (1.0, 0.4, 0.0),   # 0.4: + the 0.35 row
        (1.0, 0.6, 0.0),   # 0.5: + the 0.45 row
        (0.75, 0.8, 0.25),  # 0.6: + the 0.55 row, and the 0.5 in-scope row is rejected
        (0.75, 1.0, 0.25),  # 0.7: + the 0.65 row
    ]


def test_the_oos_recall_rule_takes_the_lowest_threshold_that_reaches_the_target():
    for target, expected in [(0.2, 0.0), (0.6, 0.46), (0.8, 0.56), (1.0, 0.66)]:
        choice = choose_threshold(PROBS, Y, LABELS, oos_recall_target=target)
        assert choice.rule == RULE_OOS_RECALL and choice.reached
        assert choice.threshold == expected, target
        assert choice.point.oos_recall >= target
        lower = [p for p in choice.curve if p.threshold < expected]
        assert all(p.oos_recall < target for p in lower)  # nothing lower would do


def test_an_unreachable_target_takes_the_highest_threshold_and_says_so():
    probs = PROBS.copy()
    probs[4] = [0.9, 0.05, 0.05]  # an out-of-scope text the model is sure is "order"
    choice = choose_threshold(probs, Y, LABELS, oos_recall_target=1.0)
    assert choice.threshold == 0.8 and choice.reached is False and "reaches" in choice.note
    assert choice.rule_dict() == {"rule": RULE_OOS_RECALL, "oos_recall_target": 1.0, "reached": False,
                                  "note": choice.note}


def test_the_default_rule_is_the_highest_threshold_within_the_macro_f1_tolerance():
    choice = choose_threshold(PROBS, Y, LABELS)
    best = max(p.macro_f1 for p in choice.curve)
    assert choice.rule == RULE_MACRO_F1
    assert choice.point.macro_f1 >= best - F1_TOLERANCE
    assert all(p.macro_f1 < best - F1_TOLERANCE for p in choice.curve if p.threshold > choice.threshold)


def test_without_out_of_scope_examples_the_target_falls_back_to_the_macro_f1_rule():
    in_scope = Y != X
    choice = choose_threshold(PROBS[in_scope], Y[in_scope], LABELS, oos_recall_target=0.6)
    assert choice.rule == RULE_MACRO_F1 and "no out_of_scope examples" in choice.note
    assert choice.point.oos_recall is None


def test_without_an_out_of_scope_label_there_is_no_threshold():
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    choice = choose_threshold(probs, np.array([0, 1]), ("a", "b"), oos_recall_target=0.6)
    assert choice.threshold == 0.0 and choice.curve == () and choice.rule == "none"


def test_apply_threshold_and_bad_targets():
    assert apply_threshold(PROBS, LABELS, 0.6).tolist() == [O, P, O, X, X, X, X, O, X]
    with pytest.raises(ValueError):
        choose_threshold(PROBS, Y, LABELS, oos_recall_target=1.5)
