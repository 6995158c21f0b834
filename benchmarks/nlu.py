"""NLU benchmark through the project's own CLI, beside the published figures.

    .venv/bin/python -m benchmarks.nlu [--only clinc150,banking77,massive,own,phone] [--tfidf-only] [--embedding-weight W]

* CLINC150 (``../shared/data/clinc150/data_full.json``, "full"): train = train + oos_train,
  validation (threshold choice) = val + oos_val, test = test + oos_test; ``oos`` ->
  ``out_of_scope``. Reported: in-scope accuracy and out-of-scope recall (Larson et al. 2019)
  at the operating point ``--oos-recall-target 0.6`` (the lowest threshold whose validation
  out-of-scope recall is >= 0.6), at what targets 0.7 and 0.8 and the default rule (macro-F1)
  would choose from the same validation curve, and the test curve at a few thresholds (the
  operator's trade-off).
* Banking77 (``../shared/data/banking77/{train,test}.csv``): accuracy (Casanueva et al. 2020).
  No out-of-scope class, so no threshold. The 2 training texts under two intents are dropped
  by the CLI's default conflict policy (its count is reported).
* MASSIVE es-ES (``$PUENTE_MASSIVE`` or ``../shared/data/massive/``: an ``es-ES.jsonl`` file,
  or a folder holding one, e.g. MASSIVE 1.1's ``data/``): train on ``train`` (conflicts dropped),
  evaluate on ``test``; accuracy and training time. Skipped, with the reason, when absent —
  the data is not obtainable from PyPI or npm.
* Our data (``nlu/data/*.yml``): training time, held-out accuracy (from the model's
  metadata: seed-0 20 % split).
* ``phone``: the same held-out texts through the phone line, per voice (espeak-ng, Kokoro),
  codec (µ-law, G.722) and biasing on/off, for a model trained on the written 80 % and one with
  its ASR transcripts mixed in (``benchmarks/phone.py``; slow on the first run, then cached).

Every step runs ``puente nlu train`` / ``puente nlu eval --json`` as a subprocess (through
``python -m gateway.cli.nlu``, the same commands). Writes ``benchmarks/results/nlu.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "nlu.json"
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import phone  # noqa: E402

PUBLISHED = {
    "clinc150": [  # (system, in-scope accuracy, out-of-scope recall), Larson et al. 2019, Table 2 (full)
        ("SVM", 91.0, 14.5), ("FastText", 89.0, 9.7), ("MLP on USE", 93.5, 47.4),
        ("BERT", 96.9, 40.3), ("BERT + threshold", 96.2, 52.3),
    ],
    "banking77": [("BERT fine-tuned", 93.66), ("USE+ConveRT", 93.36)],  # Casanueva et al. 2020
}


def cli(*args: str) -> str:
    """Run ``puente nlu ARGS`` as a subprocess; its stdout. Progress (stderr) passes through."""
    cmd = [sys.executable, "-m", "gateway.cli.nlu", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done.stdout


OOS_RECALL_TARGET = 0.6
OTHER_TARGETS = (0.7, 0.8)
CURVE_POINTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def write_tsv(rows: list[tuple[str, str]], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for intent, text in rows:
            fh.write(f"{intent}\t{' '.join(text.split())}\ten\n")
    return path


def train_and_eval(name: str, train: Path, test: Path, tmp: Path, extra: list[str]) -> dict:
    model = tmp / f"model-{name}"
    started = time.perf_counter()
    summary = json.loads(cli("train", "--data", str(train), "--out", str(model), *extra))
    train_s = time.perf_counter() - started
    report = json.loads(cli("eval", "--model", str(model), "--data", str(test), "--json"))
    return {"train": summary, "train_wall_s": round(train_s, 1), "report": report}


def clinc150(tmp: Path, extra: list[str]) -> dict:
    from nlu.threshold import F1_TOLERANCE

    data = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    label = lambda r: (r[1] if r[1] != "oos" else "out_of_scope", r[0])  # noqa: E731
    train = write_tsv([label(r) for r in data["train"] + data["oos_train"]], tmp / "clinc_train.tsv")
    val = write_tsv([label(r) for r in data["val"] + data["oos_val"]], tmp / "clinc_val.tsv")
    test = write_tsv([label(r) for r in data["test"] + data["oos_test"]], tmp / "clinc_test.tsv")
    out = train_and_eval("clinc150", train, test, tmp,
                         ["--val", str(val), "--oos-recall-target", str(OOS_RECALL_TARGET), *extra])
    r = out["report"]
    metadata = json.loads((tmp / "model-clinc150" / "metadata.json").read_text())
    val_curve = metadata["metrics"]["threshold_curve"]
    test_curve = {round(p["threshold"], 2): p for p in r.pop("threshold_curve")}
    # The default rule's threshold on the same validation curve (what training without the target picks).
    best = max(p["macro_f1"] for p in val_curve)
    default_t = max(p["threshold"] for p in val_curve if p["macro_f1"] >= best - F1_TOLERANCE)

    def at(t: float) -> dict:
        p = test_curve[round(t, 2)]
        return {"threshold": t, "in_scope_accuracy": 100 * p["in_scope_accuracy"], "oos_recall": 100 * p["oos_recall"],
                "false_reject_rate": 100 * p["false_reject_rate"]}

    out["dropped_conflicting_train_rows"] = out["train"]["dropped_examples"]
    out["ours"] = {"in_scope_accuracy": 100 * r["in_scope_accuracy"], "oos_recall": 100 * r["oos_recall"]}
    out["operating_points"] = {
        f"oos_recall_target_{OOS_RECALL_TARGET}": at(metadata["threshold"]),
        "default_rule_macro_f1": at(default_t),
    }
    # Other targets need no retraining: the rule reads only the validation curve (in the metadata).
    for target in OTHER_TARGETS:
        reaching = [p["threshold"] for p in val_curve if p["oos_recall"] is not None and p["oos_recall"] >= target]
        if reaching:
            out["operating_points"][f"oos_recall_target_{target}"] = at(min(reaching))
    out["test_curve"] = [at(t) for t in CURVE_POINTS]
    out["threshold_rule"] = metadata["threshold_rule"]
    return out


def banking77(tmp: Path, extra: list[str]) -> dict:
    def rows(name: str) -> list[tuple[str, str]]:
        with open(DATA / "banking77" / name, newline="", encoding="utf-8") as fh:
            return [(r["category"], r["text"]) for r in csv.DictReader(fh)]

    train = write_tsv(rows("train.csv"), tmp / "banking_train.tsv")
    test = write_tsv(rows("test.csv"), tmp / "banking_test.tsv")
    # No out_of_scope class: the whole training set trains the final model, no held-out split.
    out = train_and_eval("banking77", train, test, tmp, ["--holdout", "0", *extra])
    out["dropped_conflicting_train_rows"] = out["train"]["dropped_examples"]
    out["ours"] = {"accuracy": 100 * out["report"]["accuracy"]}
    return out


def massive_file() -> tuple[Path | None, str]:
    """MASSIVE es-ES: ``$PUENTE_MASSIVE`` (file or folder), else ``../shared/data/massive/``."""
    candidates = [Path(os.environ["PUENTE_MASSIVE"])] if os.environ.get("PUENTE_MASSIVE") else []
    candidates.append(DATA / "massive")
    for place in candidates:
        if place.is_file():
            return place, ""
        if place.is_dir():
            found = sorted(place.rglob("es-ES.jsonl"))
            if found:
                return found[0], ""
    where = " or ".join(str(c) for c in candidates)
    return None, (f"no MASSIVE es-ES.jsonl at {where} (MASSIVE is not on PyPI or npm; put MASSIVE 1.1's "
                  "data/es-ES.jsonl there or point $PUENTE_MASSIVE at it)")


def massive(tmp: Path, extra: list[str]) -> dict:
    path, reason = massive_file()
    if path is None:
        return {"skipped": reason}
    out = train_and_eval("massive", path, path, tmp, ["--holdout", "0", *extra])
    out["data"] = str(path)
    out["ours"] = {"accuracy": 100 * out["report"]["accuracy"]}
    out["dropped_conflicting_train_rows"] = out["train"]["dropped_examples"]
    return out


def own(tmp: Path, extra: list[str]) -> dict:
    from nlu import bundled_data_paths
    paths = [str(p) for p in bundled_data_paths()]
    model = tmp / "model-own"
    started = time.perf_counter()
    summary = json.loads(cli("train", "--data", *paths, "--out", str(model), *extra))
    wall = time.perf_counter() - started
    metadata = json.loads((model / "metadata.json").read_text())
    out: dict = {"train": summary, "train_wall_s": round(wall, 1), "held_out": metadata["metrics"]}
    out["ours"] = {"held_out_accuracy": 100 * metadata["metrics"]["accuracy"]}
    return out


def table(results: dict) -> str:
    lines = []
    if "clinc150" in results:
        r = results["clinc150"]
        lines += ["CLINC150 (full)                 in-scope acc   oos recall"]
        for system, acc, rec in PUBLISHED["clinc150"]:
            lines.append(f"  {system:<28} {acc:>10.1f}   {rec:>10.1f}")
        lines.append(f"  {'Puente (ours)':<28} {r['ours']['in_scope_accuracy']:>10.1f}   {r['ours']['oos_recall']:>10.1f}"
                     f"   (train {r['train_wall_s']:.0f} s, p95 {r['report']['latency_ms']['p95']:.2f} ms)")
        for name, p in r.get("operating_points", {}).items():
            lines.append(f"    {name:<26} t={p['threshold']:.2f}: in-scope {p['in_scope_accuracy']:.1f}, "
                         f"oos recall {p['oos_recall']:.1f}, false rejects {p['false_reject_rate']:.1f}")
        if r.get("test_curve"):
            lines.append("    test curve (threshold: in-scope acc / oos recall / false rejects): " + "; ".join(
                f"{p['threshold']:.1f}: {p['in_scope_accuracy']:.1f}/{p['oos_recall']:.1f}/{p['false_reject_rate']:.1f}"
                for p in r["test_curve"]))
    if "banking77" in results:
        r = results["banking77"]
        lines += ["", "Banking77                       accuracy"]
        for system, acc in PUBLISHED["banking77"]:
            lines.append(f"  {system:<28} {acc:>10.2f}")
        lines.append(f"  {'Puente (ours)':<28} {r['ours']['accuracy']:>10.2f}"
                     f"   (train {r['train_wall_s']:.0f} s, p95 {r['report']['latency_ms']['p95']:.2f} ms)")
    if "massive" in results:
        r = results["massive"]
        lines += ["", "MASSIVE es-ES (train -> test)   accuracy"]
        if "skipped" in r:
            lines.append(f"  skipped: {r['skipped']}")
        else:
            lines.append(f"  {'Puente (ours)':<28} {r['ours']['accuracy']:>10.2f}   (train {r['train']['training_seconds']:.0f} s, "
                         f"{r['dropped_conflicting_train_rows']} conflicting train rows dropped)")
    if "own" in results:
        r = results["own"]
        lines += ["", "Our data (nlu/data, es+en, 20 % held out, seed 0)"]
        lines.append(f"  held-out accuracy {r['ours']['held_out_accuracy']:.1f}, macro-F1 {100 * r['held_out']['macro_f1']:.1f}, "
                     f"training {r['train']['training_seconds']:.1f} s (CLI wall {r['train_wall_s']:.1f} s)")
    if "phone" in results:
        lines += ["", phone.table(results["phone"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="own,phone,banking77,clinc150,massive", help="comma-separated subset (default %(default)s)")
    parser.add_argument("--tfidf-only", action="store_true", help="train without the sentence embedding")
    parser.add_argument("--embedding-weight", type=float, help="passed to puente nlu train (default: its own)")
    args = parser.parse_args()
    extra = ["--tfidf-only"] if args.tfidf_only else []
    if args.embedding_weight is not None:
        extra += ["--embedding-weight", str(args.embedding_weight)]
    results: dict = {}
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="puente-nlu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.only.split(","):
            fn = {"clinc150": clinc150, "banking77": banking77, "massive": massive, "own": own,
                  "phone": lambda tmp, extra: phone.run(tmp, cli, extra)}[name]
            if name not in ("own", "phone", "massive") and not DATA.is_dir():
                print(f"skipping {name}: {DATA} not found", file=sys.stderr)
                continue
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = fn(tmp, extra)
            if "skipped" in results[name]:
                print(f"skipping {name}: {results[name]['skipped']}", file=sys.stderr)
            # Keep the per-intent detail out of the summary file; the CLI prints it on demand.
            for key in ("per_intent", "training_threshold", "threshold_curve"):
                results[name].get("report", {}).pop(key, None)
    merged = {**previous.get("results", {}), **results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "features": "tfidf" if args.tfidf_only else "tfidf+use-multilingual-v3",
        "embedding_weight": args.embedding_weight,  # None: the CLI's default (FeatureConfig)
        "published": PUBLISHED,
        "results": merged,
    }, indent=2, ensure_ascii=False) + "\n")
    print(table(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
