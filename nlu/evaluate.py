"""Evaluation of an intent classifier on labelled examples: what ``puente nlu eval`` prints.

Definitions (``y`` the gold intent, ``ŷ`` what :meth:`IntentClassifier.parse` answered, i.e.
after the out-of-scope threshold and the no-content rule, exactly what the gateway sees):

* ``accuracy``: fraction of all examples with ``ŷ == y`` (out-of-scope examples included).
* ``in_scope_accuracy``: the same over examples whose gold intent is not ``out_of_scope``
  (CLINC150's "in-scope accuracy": an in-scope example answered ``out_of_scope`` is wrong).
* ``macro_f1``: unweighted mean of per-intent F1 over every intent that occurs as gold or
  as prediction (F1 = 2·TP / (2·TP + FP + FN); 0 when TP = 0).
* ``oos_recall``: among gold ``out_of_scope`` examples, the fraction answered ``out_of_scope``
  (CLINC150's "out-of-scope recall"). ``oos_false_accept_rate``: among the same examples,
  the fraction answered with some in-scope intent (= 1 − recall). ``in_scope_false_reject_rate``:
  among in-scope examples, the fraction answered ``out_of_scope``. All three are ``None``
  when the data has no examples of the relevant kind.
* ``ece``: expected calibration error of ``confidence`` against correctness, 10 equal-width
  bins over [0, 1] (the last bin includes 1.0): Σ_b (n_b / N) · |accuracy_b − mean confidence_b|.
* ``latency_ms``: p50/p95 of one ``parse`` call per example, wall clock, one at a time.
* ``threshold_curve`` (models with ``probabilities_many`` and an ``out_of_scope`` label, on data
  with out-of-scope examples): for each threshold on :data:`nlu.threshold.GRID`, the in-scope
  accuracy, out-of-scope recall and in-scope false-reject rate this data would get with it
  (definitions in :mod:`nlu.threshold`). ``training_threshold`` is what the model's metadata
  recorded at training: the rule, the chosen threshold and the curve on its validation data.
  The Markdown report prints both side by side, so the operator sees the trade-off.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import text as textnorm
from .classifier import IntentClassifier
from .dataset import Example
from .taxonomy import OUT_OF_SCOPE
from .threshold import threshold_curve

__all__ = ["EvalReport", "evaluate", "expected_calibration_error"]

ECE_BINS = 10
TOP_CONFUSIONS = 10
# Thresholds shown in the Markdown trade-off table (the JSON has the whole grid), plus the model's own.
MARKDOWN_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class EvalReport:
    n: int
    accuracy: float
    in_scope_accuracy: float | None
    macro_f1: float
    oos_recall: float | None
    oos_false_accept_rate: float | None
    in_scope_false_reject_rate: float | None
    ece: float
    per_intent: dict[str, dict[str, float | int]]
    top_confusions: list[dict[str, Any]]
    per_language: dict[str, dict[str, float | int]]
    latency_ms: dict[str, float]
    model_version: str = ""
    label: str = "clean"
    asr: EvalReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_version": self.model_version,
            "label": self.label,
            "n": self.n,
            "accuracy": self.accuracy,
            "in_scope_accuracy": self.in_scope_accuracy,
            "macro_f1": self.macro_f1,
            "oos_recall": self.oos_recall,
            "oos_false_accept_rate": self.oos_false_accept_rate,
            "in_scope_false_reject_rate": self.in_scope_false_reject_rate,
            "ece": self.ece,
            "per_intent": self.per_intent,
            "top_confusions": self.top_confusions,
            "per_language": self.per_language,
            "latency_ms": self.latency_ms,
            **self.extra,
        }
        if self.asr is not None:
            out["asr"] = self.asr.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        reports = [self] + ([self.asr] if self.asr is not None else [])
        lines = [f"# Intent evaluation — model {self.model_version or '?'}", ""]
        lines.append("| metric | " + " | ".join(r.label for r in reports) + " |")
        lines.append("|---|" + "---:|" * len(reports))
        rows = [
            ("examples", lambda r: str(r.n)),
            ("accuracy", lambda r: _pct(r.accuracy)),
            ("in-scope accuracy", lambda r: _pct(r.in_scope_accuracy)),
            ("macro-F1", lambda r: _pct(r.macro_f1)),
            ("out-of-scope recall", lambda r: _pct(r.oos_recall)),
            ("out-of-scope false accepts", lambda r: _pct(r.oos_false_accept_rate)),
            ("in-scope false rejects", lambda r: _pct(r.in_scope_false_reject_rate)),
            ("ECE (10 bins)", lambda r: f"{r.ece:.3f}"),
            ("latency p50 / p95 (ms)", lambda r: f"{r.latency_ms['p50']:.2f} / {r.latency_ms['p95']:.2f}"),
        ]
        for name, fmt in rows:
            lines.append(f"| {name} | " + " | ".join(fmt(r) for r in reports) + " |")
        for code in sorted(set().union(*(r.per_language for r in reports))):
            lines.append(
                f"| accuracy ({code}) | "
                + " | ".join(_pct(r.per_language.get(code, {}).get("accuracy")) for r in reports) + " |"
            )
        lines += ["", "## Per intent" + (f" ({self.label})" if self.asr is not None else ""), ""]
        lines.append("| intent | precision | recall | F1 | support |" + (" F1 (asr) |" if self.asr else ""))
        lines.append("|---|---:|---:|---:|---:|" + ("---:|" if self.asr else ""))
        for intent, m in self.per_intent.items():
            row = f"| {intent} | {_pct(m['precision'])} | {_pct(m['recall'])} | {_pct(m['f1'])} | {m['support']} |"
            if self.asr is not None:
                row += f" {_pct(self.asr.per_intent.get(intent, {}).get('f1'))} |"
            lines.append(row)
        for r in reports:
            lines += ["", f"## Top confusions ({r.label})", ""]
            if not r.top_confusions:
                lines.append("none")
                continue
            lines += ["| gold | predicted | count |", "|---|---|---:|"]
            lines += [f"| {c['gold']} | {c['predicted']} | {c['count']} |" for c in r.top_confusions]
        lines += _threshold_markdown(self.extra.get("training_threshold"), self.extra.get("threshold_curve"))
        return "\n".join(lines) + "\n"


def evaluate(
    model: IntentClassifier,
    examples: Sequence[Example],
    *,
    asr_examples: Sequence[Example] | None = None,
    label: str = "clean",
) -> EvalReport:
    """Parse every example one at a time (as the gateway does) and compute the report.

    ``asr_examples`` (e.g. the output of ``puente nlu augment``) are evaluated the same
    way and attached as ``report.asr`` so the two columns sit side by side.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    gold, pred, conf, langs, times = [], [], [], [], []
    for e in examples:
        started = time.perf_counter()
        result = model.parse(e.text)
        times.append(time.perf_counter() - started)
        gold.append(e.intent)
        pred.append(result.intent)
        conf.append(float(result.confidence))
        langs.append(e.language or "?")
    report = _report(gold, pred, conf, langs, times, label)
    report.model_version = str(getattr(model, "version", ""))
    if label == "clean":
        report.extra.update(_threshold_extra(model, examples))
    if asr_examples:
        report.asr = evaluate(model, asr_examples, label="asr")
    return report


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() / len(conf) * abs(ok[mask].mean() - conf[mask].mean())
    return float(total)


# --- internals -----------------------------------------------------------------------


def _threshold_extra(model: IntentClassifier, examples: Sequence[Example]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metadata = getattr(model, "metadata", None)
    if isinstance(metadata, dict) and metadata.get("metrics", {}).get("threshold_curve"):
        curve = metadata["metrics"]["threshold_curve"]
        if curve and isinstance(curve[0], dict):  # models before the curve had its columns: macro-F1 only
            out["training_threshold"] = {
                "threshold": metadata.get("threshold"), "rule": metadata.get("threshold_rule", {}), "curve": curve,
            }
    labels = list(getattr(model, "labels", ()))
    many = getattr(model, "probabilities_many", None)
    if OUT_OF_SCOPE in labels and callable(many) and any(e.intent == OUT_OF_SCOPE for e in examples):
        texts = [e.text for e in examples]
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index.get(e.intent, -1) for e in examples])
        forced = np.array([not textnorm.has_content(t) for t in texts])
        points = threshold_curve(many(texts), y, labels, forced_oos=forced)
        out["threshold_curve"] = [p.to_dict() for p in points]
    return out


def _threshold_markdown(training: dict[str, Any] | None, here: list[dict[str, Any]] | None) -> list[str]:
    if not training and not here:
        return []
    lines = ["", "## Out-of-scope threshold trade-off", ""]
    chosen = training.get("threshold") if training else None
    if training:
        rule = training.get("rule", {})
        target = f", target out-of-scope recall {rule['oos_recall_target']:.2f}" if "oos_recall_target" in rule else ""
        lines.append(f"This model answers `out_of_scope` below {chosen:.2f} (rule: {rule.get('rule', '?')}{target}"
                     + (f"; {rule['note']}" if rule.get("note") else "") + "). Retrain with "
                     "`--oos-recall-target R` or `--threshold T` to move along the curve. "
                     "*At training*: the held-out split or `--val` data the threshold was chosen on.")
        lines.append("")
    columns = []
    if training:
        columns.append(("at training", {round(p["threshold"], 2): p for p in training["curve"]}))
    if here:
        columns.append(("this data", {round(p["threshold"], 2): p for p in here}))
    header = "| threshold |" + "".join(f" in-scope acc. ({n}) | oos recall ({n}) | false rejects ({n}) |" for n, _ in columns)
    lines += [header, "|---:|" + "---:|---:|---:|" * len(columns)]
    shown = sorted(set(MARKDOWN_THRESHOLDS) | ({round(chosen, 2)} if chosen is not None else set()))
    for t in shown:
        cells = []
        for _, points in columns:
            p = points.get(round(t, 2), {})
            cells += [_pct(p.get("in_scope_accuracy")), _pct(p.get("oos_recall")), _pct(p.get("false_reject_rate"))]
        if all(c == "–" for c in cells):
            continue
        mark = " **(model)**" if chosen is not None and round(t, 2) == round(chosen, 2) else ""
        lines.append(f"| {t:.2f}{mark} | " + " | ".join(cells) + " |")
    return lines


def _report(
    gold: list[str], pred: list[str], conf: list[float], langs: list[str], times: list[float], label: str
) -> EvalReport:
    n = len(gold)
    correct = [g == p for g, p in zip(gold, pred)]
    intents = sorted(set(gold) | set(pred))
    per_intent: dict[str, dict[str, float | int]] = {}
    for intent in intents:
        tp = sum(1 for g, p in zip(gold, pred) if g == intent and p == intent)
        fp = sum(1 for g, p in zip(gold, pred) if g != intent and p == intent)
        fn = sum(1 for g, p in zip(gold, pred) if g == intent and p != intent)
        per_intent[intent] = {
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "support": tp + fn,
        }
    oos = [p for g, p in zip(gold, pred) if g == OUT_OF_SCOPE]
    ins = [(g, p) for g, p in zip(gold, pred) if g != OUT_OF_SCOPE]
    oos_recall = sum(p == OUT_OF_SCOPE for p in oos) / len(oos) if oos else None
    confusions = Counter((g, p) for g, p in zip(gold, pred) if g != p)
    per_language: dict[str, dict[str, float | int]] = {}
    for code in sorted(set(langs)):
        idx = [i for i, lang in enumerate(langs) if lang == code]
        per_language[code] = {"n": len(idx), "accuracy": sum(correct[i] for i in idx) / len(idx)}
    ms = np.asarray(times) * 1000.0
    return EvalReport(
        n=n,
        accuracy=sum(correct) / n,
        in_scope_accuracy=sum(g == p for g, p in ins) / len(ins) if ins else None,
        macro_f1=float(np.mean([m["f1"] for m in per_intent.values()])),
        oos_recall=oos_recall,
        oos_false_accept_rate=None if oos_recall is None else sum(p != OUT_OF_SCOPE for p in oos) / len(oos),
        in_scope_false_reject_rate=sum(p == OUT_OF_SCOPE for _, p in ins) / len(ins) if ins else None,
        ece=expected_calibration_error(conf, correct),
        per_intent=per_intent,
        top_confusions=[
            {"gold": g, "predicted": p, "count": c}
            for (g, p), c in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONFUSIONS]
        ],
        per_language=per_language,
        latency_ms={
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean()),
        },
        label=label,
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"
