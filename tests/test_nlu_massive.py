"""MASSIVE-style ``.jsonl`` data: reading it, and training on it as-is through the CLI.

The fixture is generated here (no MASSIVE download is available on this machine): one
``es-ES.jsonl`` in MASSIVE 1.1's format, 60 intents named like MASSIVE's (``scenario_intent``),
train/dev/test partitions, and — as in the real es-ES train partition — some texts under two
intents and some repeated under the same one.
"""

import json
import random
from pathlib import Path

import pytest

from gateway.cli.nlu import main
from nlu.dataset import DatasetError, load_examples, read_examples
from nlu.lint import lint

N_INTENTS = 60
CONFLICTS = 12  # train texts copied under a second intent
DUPLICATES = 30  # train texts repeated under their own intent
FILLER = ("por favor quiero necesito puedes me dime pon cual es el la de del en un una para mi hoy mañana "
          "ahora sobre que como cuando donde esta ya").split()


def massive_rows(seed: int = 0, per_intent: int = 50) -> list[dict]:
    """``per_intent`` utterances per intent: 70 % train, 15 % dev, 15 % test (MASSIVE's shares)."""
    rng = random.Random(seed)
    syllables = "ra me to ca si lo pe da mu ni ve la go ta fe bo ri sa cu no".split()

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(3))

    intents = [f"scenario{i // 3}_intent{i % 3}" for i in range(N_INTENTS)]
    keywords = {intent: [word() for _ in range(8)] for intent in intents}
    rows = []
    for intent in intents:
        for k in range(per_intent):
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), rng.choice(keywords[intent]))
            partition = "train" if k < 0.7 * per_intent else "dev" if k < 0.85 * per_intent else "test"
            utt = " ".join(words)
            rows.append({"id": str(len(rows)), "locale": "es-ES", "partition": partition,
                         "scenario": intent.split("_")[0], "intent": intent, "utt": utt,
                         "annot_utt": utt, "worker_id": "1"})
    train = [r for r in rows if r["partition"] == "train"]
    for r in rng.sample(train, CONFLICTS):
        other = intents[(intents.index(r["intent"]) + 1) % N_INTENTS]
        rows.append({**r, "id": str(len(rows)), "intent": other, "scenario": other.split("_")[0]})
    for r in rng.sample(train, DUPLICATES):
        rows.append({**r, "id": str(len(rows)), "utt": r["utt"].capitalize() + "?"})  # same after normalisation
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def massive(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("massive") / "es-ES.jsonl", massive_rows())


# --- reading -----------------------------------------------------------------------------


def test_training_reads_the_train_partition_and_evaluation_the_test_partition(tmp_path):
    path = write_jsonl(tmp_path / "es-ES.jsonl", [
        {"locale": "es-ES", "partition": "train", "intent": "alarm_set", "utt": "despiértame a las siete",
         "annot_utt": "despiértame a las [time : siete]"},
        {"locale": "es-ES", "partition": "dev", "intent": "alarm_set", "utt": "pon una alarma"},
        {"locale": "es-ES", "partition": "test", "intent": "weather_query", "utt": "va a llover mañana"},
        {"locale": "es-ES", "partition": "train", "intent": "weather_query", "utt": "qué tiempo  hace"},
    ])
    train = load_examples([path])
    assert [(e.intent, e.text, e.language, e.line) for e in train] == [
        ("alarm_set", "despiértame a las siete", "es", 1), ("weather_query", "qué tiempo hace", "es", 4),
    ]
    assert [e.line for e in read_examples([path])] == [3]  # evaluation: test
    assert [e.line for e in read_examples([path], partition="dev")] == [2]
    assert [e.line for e in read_examples([path], partition=None)] == [1, 2, 3, 4]


def test_annot_utt_is_used_without_its_slot_marks_when_utt_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [
        {"locale": "en-US", "partition": "test", "intent": "alarm_set", "annot_utt": "wake me up at [time : seven am] [date : tomorrow]"},
    ])
    [e] = read_examples([path])
    assert (e.text, e.language) == ("wake me up at seven am tomorrow", "en")


@pytest.mark.parametrize("line,message", [
    ('{"partition": "train", "intent": "alarm_set", "utt": "pon una alarma"', "invalid JSON"),
    ('["train", "alarm_set", "pon una alarma"]', "expected a JSON object per line"),
    ('{"partition": "train", "utt": "pon una alarma"}', "missing or empty 'intent'"),
    ('{"partition": "validation", "intent": "alarm_set", "utt": "pon una alarma"}', "unknown partition 'validation'"),
    ('{"partition": "train", "intent": "alarm_set", "utt": "  "}', "missing or empty 'utt'"),
    ('{"partition": "train", "intent": "alarm_set"}', "missing or empty 'utt'"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    good = '{"locale": "es-ES", "partition": "train", "intent": "weather_query", "utt": "va a llover"}'
    path = tmp_path / "es-ES.jsonl"
    path.write_text(f"{good}\n\n{good.replace('llover', 'nevar')}\n{line}\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as excinfo:
        load_examples([path])
    assert (excinfo.value.path, excinfo.value.line) == (str(path), 4)
    assert f"{path}:4: " in str(excinfo.value)


def test_a_file_without_the_partition_says_which_it_has(tmp_path):
    path = write_jsonl(tmp_path / "es-ES.jsonl", [{"partition": "test", "intent": "a_b", "utt": "hola que tal"}])
    with pytest.raises(DatasetError, match=r"no examples in partition 'train'; this file has test \(1\)"):
        load_examples([path])


def test_the_fixture_has_massive_like_conflicts_and_duplicates(massive):
    with pytest.raises(DatasetError, match="is under intent"):
        load_examples([massive])  # the loader alone is strict
    examples = load_examples([massive], allow_conflicts=True)
    assert len({e.intent for e in examples}) == N_INTENTS and len(examples) > 2000
    findings = lint([massive], min_per_language=30)
    kinds = [f.kind for f in findings]
    assert kinds.count("conflict") == CONFLICTS and kinds.count("duplicate") == DUPLICATES
    assert all(f.path == str(massive) and f.line for f in findings)


# --- through the CLI ---------------------------------------------------------------------


def test_it_trains_through_the_cli_with_the_default_policy(massive, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--data", str(massive), "--out", str(out), "--tfidf-only"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["labels"] == N_INTENTS
    assert summary["conflicting_texts"] == CONFLICTS and summary["dropped_examples"] == 2 * CONFLICTS
    assert summary["duplicates_merged"] == DUPLICATES
    assert f"{CONFLICTS} text(s) under two or more intents: {2 * CONFLICTS} example(s) dropped" in captured.err
    assert "s of training" in captured.err and summary["training_seconds"] > 0
    md = json.loads((out / "metadata.json").read_text())
    assert md["data_conflicts"]["conflicting_texts"] == CONFLICTS
    assert all(c["kept_intent"] is None and len(c["intents"]) == 2 for c in md["data_conflicts"]["conflicts"])
    assert md["metrics"]["accuracy"] > 0.8  # the held-out 20 % of train

    assert main(["eval", "--model", str(out), "--data", str(massive), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == N_INTENTS * 7  # the test partition: 15 % of 50 per intent, rounded down
    assert report["accuracy"] > 0.8


def test_majority_and_strict_through_the_cli(massive, tmp_path, capsys):
    assert main(["train", "--data", str(massive), "--out", str(tmp_path / "m"), "--tfidf-only", "--holdout", "0",
                 "--conflicts", "majority"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["conflicting_texts"] == CONFLICTS and summary["dropped_examples"] == 2 * CONFLICTS  # 1-1 ties

    assert main(["train", "--data", str(massive), "--out", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert f"{massive}:" in err and "here and under" in err and f"at {massive}:" in err  # both lines
    assert f"{CONFLICTS - 1} more text(s) conflict" in err
    assert not (tmp_path / "strict").exists()


def test_lint_reports_counts_per_kind_and_a_summary_line(massive, capsys):
    assert main(["lint", str(massive), "--min-per-language", "30"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sum("[conflict]" in line for line in lines) == CONFLICTS
    assert sum("[duplicate]" in line for line in lines) == DUPLICATES
    assert all(line.startswith(f"{massive}:") for line in lines if "[conflict]" in line or "[duplicate]" in line)
    assert f"conflict: {CONFLICTS}" in lines[-3] and f"duplicate: {DUPLICATES} (warnings)" in lines[-3]
    assert "drops every copy" in lines[-2]
    assert lines[-1] == f"{CONFLICTS} error(s), {DUPLICATES} warning(s) in 1 file(s)"
