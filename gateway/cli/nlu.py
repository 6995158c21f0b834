"""``puente nlu ...``: the ML engineer's loop (train, eval, parse, lint, augment).

    puente nlu train   --data PATH... --out DIR [--val PATH...] [--seed N] [--holdout F] [--tfidf-only]
                       [--conflicts drop|majority | --strict] [--oos-recall-target R] [--partition P]
    puente nlu eval    --model DIR --data PATH... [--asr-data PATH...] [--json] [--partition P]
    puente nlu parse   TEXT [--model DIR]
    puente nlu lint    PATH... [--min-per-language N] [--partition P]
    puente nlu augment --data PATH... --out FILE.tsv [--limit N] [--asr-model base] [--cache-dir DIR]
                       [--voice SPEC]... [--codec pcmu|pcma|g722]
    puente nlu deploy  DIR [--api URL]

Registered by ``gateway/cli/main.py`` through :func:`add_nlu_commands`. Training data: Rasa
``nlu.yml``, ``intent<TAB>text[<TAB>lang]`` TSV and MASSIVE ``.jsonl`` (``--partition``: train
reads ``train``, ``--val`` reads ``dev``, eval reads ``test``). A text under two intents is
dropped by default (``--conflicts``, ``--strict``; nlu/conflicts.py). Progress goes to stderr;
``eval --json`` and ``parse`` print only JSON on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from nlu import (
    DatasetError,
    IntentModel,
    ModelLoadError,
    default_cache_dir,
    load_examples,
    read_examples,
)
from nlu.dataset import MASSIVE_PARTITIONS
from nlu.train import AUGMENTED_WEIGHT

__all__ = ["add_nlu_commands", "main"]


def add_nlu_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``nlu`` command group to ``puente``'s subparsers; returns the group's parser."""
    nlu = subparsers.add_parser("nlu", help="train, evaluate and try intent models",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = nlu.add_subparsers(required=True, metavar="NLU_COMMAND")

    train = commands.add_parser("train", help="train a model directory from nlu.yml / TSV data")
    train.add_argument("--data", nargs="+", type=Path, required=True, metavar="PATH", help="training files")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="model directory to write")
    train.add_argument("--val", nargs="+", type=Path, metavar="PATH",
                       help="validation files: tune the out-of-scope threshold and measure on these instead of a held-out split")
    train.add_argument("--asr-data", nargs="+", type=Path, default=[], metavar="PATH",
                       help="ASR transcripts of the training texts (puente nlu augment): the final model learns from them too")
    train.add_argument("--asr-weight", type=float, default=AUGMENTED_WEIGHT, metavar="W",
                       help="what one transcript counts against a written example (default %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="chooses the held-out split (default %(default)s)")
    train.add_argument("--holdout", type=float, default=0.2, help="held-out fraction (default %(default)s; 0 = none)")
    train.add_argument("--threshold", type=float, help="fix the out-of-scope threshold instead of tuning it")
    train.add_argument("--tfidf-only", action="store_true", help="no sentence embedding (faster to train, less accurate)")
    train.add_argument("--as-written", action="store_true",
                       help="read texts as written: no folding of spelling variants such as polisa/póliza (for comparison)")
    train.add_argument("--embedding-weight", type=float, metavar="W",
                       help="scale of the sentence embedding next to the TF-IDF block (default: FeatureConfig's, 0.5)")
    train.add_argument("--taxonomy", action="store_true", help="refuse intents outside Puente's taxonomy")
    policy = train.add_mutually_exclusive_group()
    policy.add_argument("--conflicts", choices=["drop", "majority"], default="drop",
                        help="a text under two or more intents: drop every copy (default), or keep the majority "
                             "intent's copies (a tie drops them all)")
    policy.add_argument("--strict", action="store_true",
                        help="refuse data with a text under two intents, naming both lines")
    train.add_argument("--oos-recall-target", type=_fraction, metavar="R",
                       help="choose the lowest out-of-scope threshold whose held-out/validation out-of-scope recall "
                            "is >= R (0-1) instead of the macro-F1 rule; needs out_of_scope examples there")
    train.add_argument("--partition", choices=[*MASSIVE_PARTITIONS, "all"], default="train",
                       help="MASSIVE .jsonl --data files: the partition to train on (default %(default)s)")
    train.add_argument("--val-partition", choices=[*MASSIVE_PARTITIONS, "all"], default="dev",
                       help="MASSIVE .jsonl --val files: the partition to validate on (default %(default)s)")
    train.set_defaults(run=_cmd_train)

    ev = commands.add_parser("eval", help="evaluate a model directory on labelled data")
    ev.add_argument("--model", type=Path, required=True, metavar="DIR")
    ev.add_argument("--data", nargs="+", type=Path, required=True, metavar="PATH")
    ev.add_argument("--asr-data", nargs="+", type=Path, metavar="PATH",
                    help="ASR transcripts of the same data (puente nlu augment): reported side by side")
    ev.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ev.add_argument("--partition", choices=[*MASSIVE_PARTITIONS, "all"], default="test",
                    help="MASSIVE .jsonl files: the partition to evaluate (default %(default)s)")
    ev.set_defaults(run=_cmd_eval)

    parse = commands.add_parser("parse", help="classify one text; prints Rasa's /model/parse JSON")
    parse.add_argument("text", metavar="TEXT")
    parse.add_argument("--model", type=Path, metavar="DIR", help="model directory (default: the bundled model)")
    parse.set_defaults(run=_cmd_parse)

    lint = commands.add_parser("lint", help="check training data: duplicates, conflicts, thin intents, language mix-ups")
    lint.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    lint.add_argument("--min-per-language", type=int, default=40, help="examples wanted per intent and language (default %(default)s)")
    lint.add_argument("--partition", choices=[*MASSIVE_PARTITIONS, "all"], default="train",
                      help="MASSIVE .jsonl files: the partition to check (default %(default)s)")
    lint.set_defaults(run=_cmd_lint)

    aug = commands.add_parser("augment", help="speak the training texts through a phone channel and Whisper; write the transcripts as TSV")
    aug.add_argument("--data", nargs="+", type=Path, required=True, metavar="PATH")
    aug.add_argument("--out", type=Path, required=True, metavar="FILE.tsv")
    aug.add_argument("--limit", type=int, metavar="N", help="at most N examples per intent and language")
    aug.add_argument("--asr-model", default="base", help="Whisper model: base, tiny.en or a CTranslate2 directory (default %(default)s)")
    aug.add_argument("--cache-dir", type=Path, help="transcript cache (default: $XDG_CACHE_HOME/puente/augment)")
    aug.add_argument("--seed", type=int, default=0, help="chooses the --limit subsample (default %(default)s)")
    aug.add_argument("--voice", action="append", metavar="SPEC",
                     help="who speaks: kokoro:ef_dora, kokoro:em_santa@1.1, espeak:en-us … (repeatable: every voice speaks the "
                          "examples of its language; default: espeak:es-419 and espeak:en-us)")
    aug.add_argument("--bias", action="store_true",
                     help="bias Whisper with the vocabulary of asr.biasing (default settings), as the gateway's second "
                          "opinion does (and its first pass with asr.biasing.first_pass)")
    aug.add_argument("--codec", choices=["pcmu", "pcma", "g722"], default="pcmu",
                     help="the phone line: G.711 µ-law or A-law (8 kHz) or G.722 (wideband) (default %(default)s)")
    aug.set_defaults(run=_cmd_augment)

    deploy = commands.add_parser("deploy", help="switch a running gateway to a model directory, without a restart")
    deploy.add_argument("model", type=Path, metavar="DIR", help="model directory (readable by the gateway at this path)")
    deploy.add_argument("--api", default="http://127.0.0.1:8080", help="the gateway's HTTP address (default %(default)s)")
    deploy.set_defaults(run=_cmd_deploy)
    return nlu


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.cli.nlu train ...``: the same commands without ``puente``."""
    parser = argparse.ArgumentParser(prog="puente")
    add_nlu_commands(parser.add_subparsers(required=True, metavar="COMMAND"))
    args = parser.parse_args(["nlu", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


def _err(message: str) -> None:
    print(f"puente nlu: {message}", file=sys.stderr)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def _partition(value: str) -> str | None:
    return None if value == "all" else value


# --- train -----------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from nlu import INTENTS
    from nlu.features import FeatureConfig
    from nlu.train import save, train

    try:
        # Conflicts are left in here and resolved by train()'s policy (--strict refuses them there).
        examples = load_examples(args.data, taxonomy=INTENTS if args.taxonomy else None, allow_conflicts=True,
                                 partition=_partition(args.partition))
        # Validation data is measured as it is (as eval data): no conflict policy applies to it.
        validation = _load_eval_data(args.val, _partition(args.val_partition)) if args.val else None
        augmented = read_examples(args.asr_data) if args.asr_data else []
        _progress(f"read {len(examples)} examples from {len(args.data)} file(s)"
                  + (f", {len(augmented)} ASR transcripts" if augmented else ""))
        features = FeatureConfig(spelling=not args.as_written)
        if args.tfidf_only:
            features = dataclasses.replace(features, embedding=None)
        if args.embedding_weight is not None:
            if args.tfidf_only:
                raise ValueError("--embedding-weight needs the embedding (drop --tfidf-only)")
            features = dataclasses.replace(features, embedding_weight=args.embedding_weight)
        model = train(examples, seed=args.seed, holdout=args.holdout, features=features,
                      threshold=args.threshold, validation=validation,
                      conflicts="strict" if args.strict else args.conflicts,
                      oos_recall_target=args.oos_recall_target, augmented=augmented,
                      augmented_weight=args.asr_weight, progress=_progress)
    except DatasetError as exc:
        _err(str(exc))
        return 1
    except ValueError as exc:
        _err(str(exc))
        return 2
    directory = save(model, args.out)
    loaded = IntentModel.load(directory)  # what the gateway will do: refuse now rather than at deploy
    m = model.metrics
    summary = {
        "model": str(directory),
        "version": loaded.version,
        "labels": len(model.labels),
        "examples": sum(sum(v.values()) for v in model.metadata["n_examples"].values()),
        "threshold": model.threshold,
        "accuracy": m.get("accuracy"),
        "macro_f1": m.get("macro_f1"),
        "training_seconds": model.metadata["training_seconds"],
        "threshold_rule": model.metadata["threshold_rule"]["rule"],
        "conflicting_texts": model.metadata["data_conflicts"]["conflicting_texts"],
        "dropped_examples": model.metadata["data_conflicts"]["dropped_examples"],
        "duplicates_merged": model.metadata["data_conflicts"]["duplicates_merged"],
    }
    _progress(f"wrote {directory} ({summary['examples']} examples, {summary['labels']} intents) "
              f"in {summary['training_seconds']:.1f} s of training")
    print(json.dumps(summary, ensure_ascii=False))
    return 0


# --- eval ------------------------------------------------------------------------------


def _cmd_eval(args: argparse.Namespace) -> int:
    from nlu.evaluate import evaluate

    try:
        model = IntentModel.load(args.model)
        examples = _load_eval_data(args.data, _partition(args.partition))
        asr = _load_eval_data(args.asr_data, _partition(args.partition)) if args.asr_data else None
    except (DatasetError, ModelLoadError) as exc:
        _err(str(exc))
        return 1
    if not args.json:
        _progress(f"evaluating {model.version} on {len(examples)} examples" + (f" + {len(asr)} ASR transcripts" if asr else ""))
    report = evaluate(model, examples, asr_examples=asr)
    print(report.to_json() if args.json else report.to_markdown(), end="\n" if args.json else "")
    return 0


def _load_eval_data(paths: list[Path], partition: str | None = "test"):
    # Evaluation data is taken as it is: the training-set checks (no text under two
    # intents, at least two intents) do not apply; the per-line format checks do.
    examples = read_examples(paths, partition=partition)
    if not examples:
        raise DatasetError("no examples found", paths[0], 1)
    return examples


# --- parse -----------------------------------------------------------------------------


def _cmd_parse(args: argparse.Namespace) -> int:
    try:
        if args.model is not None:
            model = IntentModel.load(args.model)
        else:
            from nlu import load_or_train_default

            model = load_or_train_default(default_cache_dir())
    except (DatasetError, ModelLoadError) as exc:
        _err(str(exc))
        return 1
    body = model.parse(args.text).to_rasa()
    print(json.dumps(body, ensure_ascii=False))
    return 0


# --- deploy ----------------------------------------------------------------------------


def _cmd_deploy(args: argparse.Namespace) -> int:
    """The gateway loads the directory itself and refuses it (422) if it does not load;
    checking here first gives the same clear error without a round trip."""
    import httpx

    model_dir = args.model.resolve()
    try:
        IntentModel.load(model_dir)
    except ModelLoadError as exc:
        _err(str(exc))
        return 1
    try:
        answer = httpx.post(f"{args.api}/v1/nlu/reload", json={"model": str(model_dir)}, timeout=60)
    except httpx.HTTPError as exc:
        _err(f"the gateway at {args.api} did not answer: {exc}")
        return 1
    if answer.status_code != 200:
        _err(f"the gateway refused the model ({answer.status_code}): {answer.json().get('detail', answer.text)}")
        return 1
    print(json.dumps(answer.json(), ensure_ascii=False))
    return 0


# --- lint ------------------------------------------------------------------------------


def _cmd_lint(args: argparse.Namespace) -> int:
    from nlu.lint import has_errors, lint, summary_lines

    findings = lint(args.paths, min_per_language=args.min_per_language, partition=_partition(args.partition))
    for finding in findings:
        print(finding)
    for line in summary_lines(findings, len(args.paths)):
        print(line)
    return 1 if has_errors(findings) else 0


# --- augment ---------------------------------------------------------------------------


def _cmd_augment(args: argparse.Namespace) -> int:
    from models import ModelError, Transcriber, TranscriberConfig
    from nlu.augment import AugmentError, augment, write_tsv

    try:
        examples = load_examples(args.data, allow_conflicts=True)
    except DatasetError as exc:
        _err(str(exc))
        return 1
    cache_dir = args.cache_dir or default_cache_dir() / "augment"
    try:
        speakers = _speakers(args.voice, args.codec, cache_dir / "speech")
    except ModelError as exc:  # a bad spec, an unknown voice, Kokoro not installed
        _err(str(exc))
        return 2
    _progress(f"loading Whisper {args.asr_model}")
    transcriber = Transcriber(TranscriberConfig(model=args.asr_model))
    if not transcriber.multilingual:
        skipped = sum(1 for e in examples if e.language not in (None, "en"))
        examples = [e for e in examples if e.language in (None, "en")]
        if skipped:
            _progress(f"{args.asr_model} is English-only: skipping {skipped} non-English examples")

    prompts = _biasing_prompts() if args.bias else None
    asr_model = transcriber.model_name
    if prompts:  # biased transcripts are other transcripts: their own cache entries
        asr_model += "+bias-" + hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:12]

    def transcribe(audio, language: str) -> str:
        return transcriber.transcribe(audio, language=language if transcriber.multilingual else None, prompt=prompts).text

    try:
        out = augment(examples, transcribe, cache_dir, speakers=speakers, asr_model=asr_model,
                      limit=args.limit, seed=args.seed, progress=_progress)
    except AugmentError as exc:
        _err(str(exc))
        return 1
    write_tsv(out, args.out)
    print(json.dumps({"out": str(args.out), "examples": len(out), "asr_model": transcriber.model_name,
                      "speakers": [s.name for s in speakers]}, ensure_ascii=False))
    return 0


def _biasing_prompts() -> dict[str, str]:
    """The prompts a gateway with default settings (and this environment's PUENTE_ variables) biases with."""
    from gateway.config import load_settings

    return load_settings(None).asr.biasing.prompts()


def _speakers(specs: list[str] | None, codec: str, speech_cache: Path):
    """The voices of ``--voice`` (espeak-ng es-419 and en-us by default), each on the ``--codec`` line."""
    from models.voices import ESPEAK_VOICES, PhoneChannel, Voice, VoiceError, VoiceLibrary, VoicesConfig
    from nlu.augment import AugmentError, Speaker

    library = VoiceLibrary(VoicesConfig(speech_cache=speech_cache))
    channel = PhoneChannel(codec)  # type: ignore[arg-type]  # argparse checked the choice

    def speaker(voice: Voice) -> Speaker:
        def speak(text: str):
            try:
                return channel(voice.synthesize(text))
            except VoiceError as exc:
                raise AugmentError(str(exc)) from exc

        # espeak-ng on µ-law was the only speaker before --voice: its transcripts keep their old cache keys.
        legacy = voice.spec.engine == "espeak" and voice.spec.speed == 1.0 and codec == "pcmu"
        return Speaker(name=f"{voice.name} {codec}", language=voice.language, speak=speak,
                       cache_key=voice.spec.voice if legacy else "\0".join((voice.identity, codec)))

    specs = specs or [f"espeak:{v}" for v in ESPEAK_VOICES.values()]
    return [speaker(library.voice(spec)) for spec in specs]


if __name__ == "__main__":
    sys.exit(main())
