"""NLU benchmark through the project's own CLI, beside the published figures.

    .venv/bin/python -m benchmarks.nlu [--only clinc150,banking77,own] [--tfidf-only]

* CLINC150 (``../shared/data/clinc150/data_full.json``, "full"): train = train + oos_train,
  validation (threshold tuning) = val + oos_val, test = test + oos_test; ``oos`` ->
  ``out_of_scope``. Reported: in-scope accuracy and out-of-scope recall (Larson et al. 2019).
* Banking77 (``../shared/data/banking77/{train,test}.csv``): accuracy (Casanueva et al. 2020).
  No out-of-scope class, so no threshold.
* Our data (``nlu/data/*.yml``): training time, held-out accuracy (from the model's
  metadata: seed-0 20 % split), and, when an augment output exists
  (``benchmarks/results/nlu_asr.tsv``, made by ``puente nlu augment``), accuracy on ASR
  transcripts of the held-out texts next to the same texts clean.

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
ASR_TSV = REPO_ROOT / "benchmarks" / "results" / "nlu_asr.tsv"
ASR_LIMIT = 4  # the --limit given to `puente nlu augment` for ASR_TSV (see README)
sys.path.insert(0, str(REPO_ROOT))

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


DROPPED: dict[str, int] = {}


def without_conflicts(rows: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """Drop training texts that occur under two intents (Banking77 has a few): our loader
    refuses such data, rightly for our own files. The count is reported."""
    from nlu.text import normalize

    intents: dict[str, set[str]] = {}
    for intent, text in rows:
        intents.setdefault(normalize(text), set()).add(intent)
    kept = [(i, t) for i, t in rows if len(intents[normalize(t)]) == 1 and normalize(t)]
    DROPPED[name] = len(rows) - len(kept)
    return kept


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
    data = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    label = lambda r: (r[1] if r[1] != "oos" else "out_of_scope", r[0])  # noqa: E731
    train = write_tsv(without_conflicts([label(r) for r in data["train"] + data["oos_train"]], "clinc150"),
                      tmp / "clinc_train.tsv")
    val = write_tsv([label(r) for r in data["val"] + data["oos_val"]], tmp / "clinc_val.tsv")
    test = write_tsv([label(r) for r in data["test"] + data["oos_test"]], tmp / "clinc_test.tsv")
    out = train_and_eval("clinc150", train, test, tmp, ["--val", str(val), *extra])
    r = out["report"]
    out["dropped_conflicting_train_rows"] = DROPPED["clinc150"]
    out["ours"] = {"in_scope_accuracy": 100 * r["in_scope_accuracy"], "oos_recall": 100 * r["oos_recall"]}
    return out


def banking77(tmp: Path, extra: list[str]) -> dict:
    def rows(name: str) -> list[tuple[str, str]]:
        with open(DATA / "banking77" / name, newline="", encoding="utf-8") as fh:
            return [(r["category"], r["text"]) for r in csv.DictReader(fh)]

    train = write_tsv(without_conflicts(rows("train.csv"), "banking77"), tmp / "banking_train.tsv")
    test = write_tsv(rows("test.csv"), tmp / "banking_test.tsv")
    # No out_of_scope class: the whole training set trains the final model, no held-out split.
    out = train_and_eval("banking77", train, test, tmp, ["--holdout", "0", *extra])
    out["dropped_conflicting_train_rows"] = DROPPED["banking77"]
    out["ours"] = {"accuracy": 100 * out["report"]["accuracy"]}
    return out


def own(tmp: Path, extra: list[str]) -> dict:
    from nlu import bundled_data_paths, load_examples
    paths = [str(p) for p in bundled_data_paths()]
    model = tmp / "model-own"
    started = time.perf_counter()
    summary = json.loads(cli("train", "--data", *paths, "--out", str(model), *extra))
    wall = time.perf_counter() - started
    metadata = json.loads((model / "metadata.json").read_text())
    out: dict = {"train": summary, "train_wall_s": round(wall, 1), "held_out": metadata["metrics"]}
    out["ours"] = {"held_out_accuracy": 100 * metadata["metrics"]["accuracy"]}
    if ASR_TSV.is_file():
        # Clean vs ASR on the same held-out 20 %: train on the other 80 % (with the full
        # model's threshold) and evaluate the held-out texts and their transcripts
        # (ASR_TSV: `puente nlu augment` of nlu_heldout.tsv, see --write-heldout).
        from sklearn.model_selection import train_test_split

        examples = load_examples(paths)
        strata = [f"{e.intent}|{e.language}" for e in examples]
        train_idx, test_idx = train_test_split(range(len(examples)), test_size=0.2, random_state=0, stratify=strata)
        # The same texts augment spoke (it subsamples deterministically with --limit/--seed).
        from nlu.augment import subsample
        from nlu.dataset import read_examples

        heldout = read_examples([REPO_ROOT / "benchmarks" / "results" / "nlu_heldout.tsv"])
        clean_rows = subsample(heldout, ASR_LIMIT, seed=0)
        train_tsv = tmp / "own_train.tsv"
        with open(train_tsv, "w", encoding="utf-8") as fh:
            for i in sorted(train_idx):
                e = examples[i]
                fh.write(f"{e.intent}\t{e.text}\t{e.language}\n")
        clean_tsv = tmp / "own_heldout.tsv"
        with open(clean_tsv, "w", encoding="utf-8") as fh:
            for e in clean_rows:
                fh.write(f"{e.intent}\t{e.text}\t{e.language}\n")
        model80 = tmp / "model-own-80"
        cli("train", "--data", str(train_tsv), "--out", str(model80), "--holdout", "0",
            "--threshold", str(metadata["threshold"]), *extra)
        report = json.loads(cli("eval", "--model", str(model80), "--data", str(clean_tsv),
                                "--asr-data", str(ASR_TSV), "--json"))
        full = json.loads(cli("eval", "--model", str(model80), "--data",
                              str(REPO_ROOT / "benchmarks" / "results" / "nlu_heldout.tsv"), "--json"))
        out["asr"] = {
            "heldout_all_clean_accuracy": 100 * full["accuracy"], "latency_ms": full["latency_ms"],
            "n_clean": report["n"], "n_asr": report["asr"]["n"],
            "clean_accuracy": 100 * report["accuracy"], "asr_accuracy": 100 * report["asr"]["accuracy"],
            "per_language": {"clean": report["per_language"], "asr": report["asr"]["per_language"]},
        }
    return out


def write_heldout_source() -> Path:
    """The held-out 20 % (seed 0) as TSV: the input for ``puente nlu augment``."""
    from sklearn.model_selection import train_test_split

    from nlu import bundled_data_paths, load_examples

    examples = load_examples(bundled_data_paths())
    strata = [f"{e.intent}|{e.language}" for e in examples]
    _, test_idx = train_test_split(range(len(examples)), test_size=0.2, random_state=0, stratify=strata)
    path = REPO_ROOT / "benchmarks" / "results" / "nlu_heldout.tsv"
    with open(path, "w", encoding="utf-8") as fh:
        for i in sorted(test_idx):
            e = examples[i]
            fh.write(f"{e.intent}\t{e.text}\t{e.language}\n")
    return path


def table(results: dict) -> str:
    lines = []
    if "clinc150" in results:
        r = results["clinc150"]
        lines += ["CLINC150 (full)                 in-scope acc   oos recall"]
        for system, acc, rec in PUBLISHED["clinc150"]:
            lines.append(f"  {system:<28} {acc:>10.1f}   {rec:>10.1f}")
        lines.append(f"  {'Puente (ours)':<28} {r['ours']['in_scope_accuracy']:>10.1f}   {r['ours']['oos_recall']:>10.1f}"
                     f"   (train {r['train_wall_s']:.0f} s, p95 {r['report']['latency_ms']['p95']:.2f} ms)")
    if "banking77" in results:
        r = results["banking77"]
        lines += ["", "Banking77                       accuracy"]
        for system, acc in PUBLISHED["banking77"]:
            lines.append(f"  {system:<28} {acc:>10.2f}")
        lines.append(f"  {'Puente (ours)':<28} {r['ours']['accuracy']:>10.2f}"
                     f"   (train {r['train_wall_s']:.0f} s, p95 {r['report']['latency_ms']['p95']:.2f} ms)")
    if "own" in results:
        r = results["own"]
        lines += ["", "Our data (nlu/data, es+en, 20 % held out, seed 0)"]
        lines.append(f"  held-out accuracy {r['ours']['held_out_accuracy']:.1f}, macro-F1 {100 * r['held_out']['macro_f1']:.1f}, "
                     f"training {r['train']['training_seconds']:.1f} s (CLI wall {r['train_wall_s']:.1f} s)")
        if "asr" in r:
            a = r["asr"]
            lines.append(f"  held-out clean {a['clean_accuracy']:.1f} ({a['n_clean']})  vs  ASR transcripts {a['asr_accuracy']:.1f} ({a['n_asr']})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="own,banking77,clinc150", help="comma-separated subset (default %(default)s)")
    parser.add_argument("--tfidf-only", action="store_true", help="train without the sentence embedding")
    parser.add_argument("--write-heldout", action="store_true",
                        help="write benchmarks/results/nlu_heldout.tsv (input for puente nlu augment) and exit")
    args = parser.parse_args()
    if args.write_heldout:
        print(write_heldout_source())
        return 0
    extra = ["--tfidf-only"] if args.tfidf_only else []
    results: dict = {}
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="puente-nlu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.only.split(","):
            fn = {"clinc150": clinc150, "banking77": banking77, "own": own}[name]
            if name != "own" and not DATA.is_dir():
                print(f"skipping {name}: {DATA} not found", file=sys.stderr)
                continue
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = fn(tmp, extra)
            # Keep the per-intent detail out of the summary file; the CLI prints it on demand.
            results[name].get("report", {}).pop("per_intent", None)
    merged = {**previous.get("results", {}), **results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "features": "tfidf" if args.tfidf_only else "tfidf+use-multilingual-v3",
        "published": PUBLISHED,
        "results": merged,
    }, indent=2, ensure_ascii=False) + "\n")
    print(table(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
