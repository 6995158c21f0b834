"""evaluate(): every metric on a hand-made fixture, computed by hand below."""

import json

import pytest

from nlu.classifier import IntentResult, IntentScore
from nlu.dataset import Example
from nlu.evaluate import EvalReport, evaluate, expected_calibration_error


class TableClassifier:
    """A real (if trivial) IntentClassifier: answers from a fixed table, as a model would."""

    version = "table-1"

    def __init__(self, table: dict[str, tuple[str, float]]):
        self.table = table

    def parse(self, text: str) -> IntentResult:
        intent, confidence = self.table[text]
        return IntentResult(text, intent, confidence, (IntentScore(intent, confidence),))


# gold intent, text, predicted intent, confidence, language
ROWS = [
    ("pay", "p1", "pay", 0.95, "en"),
    ("pay", "p2", "pay", 0.85, "en"),
    ("pay", "p3", "order", 0.55, "es"),
    ("order", "o1", "order", 0.95, "es"),
    ("order", "o2", "out_of_scope", 0.40, "es"),
    ("out_of_scope", "x1", "out_of_scope", 0.35, "en"),
    ("out_of_scope", "x2", "pay", 0.65, "en"),
    ("out_of_scope", "x3", "out_of_scope", 0.45, "es"),
]


@pytest.fixture(scope="module")
def report() -> EvalReport:
    model = TableClassifier({text: (pred, conf) for _, text, pred, conf, _ in ROWS})
    examples = [Example(text, gold, lang, "fixture.tsv", i + 1) for i, (gold, text, _, _, lang) in enumerate(ROWS)]
    return evaluate(model, examples)


def test_accuracy_and_in_scope_accuracy(report):
    assert report.n == 8
    assert report.accuracy == 5 / 8  # p1 p2 o1 x1 x3
    assert report.in_scope_accuracy == 3 / 5  # p1 p2 o1 of p1 p2 p3 o1 o2


def test_per_intent_precision_recall_f1(report):
    # pay: TP 2 (p1 p2), FP 1 (x2), FN 1 (p3) -> P 2/3, R 2/3, F1 4/6
    # order: TP 1 (o1), FP 1 (p3), FN 1 (o2) -> P 1/2, R 1/2, F1 2/4
    # out_of_scope: TP 2 (x1 x3), FP 1 (o2), FN 1 (x2) -> P 2/3, R 2/3, F1 4/6
    assert report.per_intent["pay"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": 4 / 6, "support": 3}
    assert report.per_intent["order"] == {"precision": 1 / 2, "recall": 1 / 2, "f1": 2 / 4, "support": 2}
    assert report.per_intent["out_of_scope"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": 4 / 6, "support": 3}
    assert report.macro_f1 == pytest.approx((4 / 6 + 2 / 4 + 4 / 6) / 3, abs=1e-15)


def test_out_of_scope_rates(report):
    assert report.oos_recall == 2 / 3
    assert report.oos_false_accept_rate == 1 / 3  # x2 accepted as "pay"
    assert report.in_scope_false_reject_rate == 1 / 5  # o2 rejected


def test_top_confusions_are_counted_and_ordered(report):
    assert report.top_confusions == [
        {"gold": "order", "predicted": "out_of_scope", "count": 1},
        {"gold": "out_of_scope", "predicted": "pay", "count": 1},
        {"gold": "pay", "predicted": "order", "count": 1},
    ]


def test_expected_calibration_error_by_hand(report):
    # bins: [0.3,0.4): x1 0.35 ok -> |1-0.35| ; [0.4,0.5): o2 0.40 wrong, x3 0.45 ok -> acc 0.5, conf 0.425
    # [0.5,0.6): p3 0.55 wrong ; [0.6,0.7): x2 0.65 wrong ; [0.8,0.9): p2 0.85 ok ; [0.9,1]: p1, o1 0.95 ok
    expected = (1 * 0.65 + 2 * abs(0.5 - 0.425) + 1 * 0.55 + 1 * 0.65 + 1 * 0.15 + 2 * 0.05) / 8
    assert report.ece == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error([1.0, 1.0], [True, False]) == 0.5  # 1.0 falls in the last bin


def test_per_language_and_latency(report):
    assert report.per_language == {"en": {"n": 4, "accuracy": 3 / 4}, "es": {"n": 4, "accuracy": 2 / 4}}
    assert 0 <= report.latency_ms["p50"] <= report.latency_ms["p95"]


def test_json_has_the_documented_top_level_keys(report):
    data = json.loads(report.to_json())
    assert {"accuracy", "macro_f1", "oos_recall", "per_intent", "ece", "latency_ms", "top_confusions",
            "oos_false_accept_rate"} <= set(data)
    assert data["model_version"] == "table-1"


def test_asr_column_sits_beside_the_clean_one():
    model = TableClassifier({"a": ("pay", 0.9), "b": ("order", 0.9), "a'": ("order", 0.6), "b'": ("order", 0.7)})
    clean = [Example("a", "pay", "en", "c", 1), Example("b", "order", "en", "c", 2)]
    asr = [Example("a'", "pay", "en", "asr", 1), Example("b'", "order", "en", "asr", 2)]
    report = evaluate(model, clean, asr_examples=asr)
    assert report.accuracy == 1.0 and report.asr is not None and report.asr.accuracy == 0.5
    md = report.to_markdown()
    assert "| metric | clean | asr |" in md and "| accuracy | 100.0 | 50.0 |" in md
    assert json.loads(report.to_json())["asr"]["accuracy"] == 0.5


def test_no_examples_is_an_error():
    with pytest.raises(ValueError):
        evaluate(TableClassifier({}), [])
