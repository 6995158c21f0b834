"""The conflict policy: what training does with a text found under two or more intents.

drop (default) removes every copy; majority keeps the copies under the intent most of them
carry (a tie drops them all); strict refuses the data naming both lines. Duplicates under one
intent are never refused: they are counted, and training merges them.
"""

from pathlib import Path

import pytest

from nlu.conflicts import ConflictPolicy, find_conflicts, resolve_conflicts
from nlu.dataset import DatasetError, Example, load_examples
from nlu.features import FeatureConfig
from nlu.train import train


def ex(text: str, intent: str, line: int, source: str = "data.tsv") -> Example:
    return Example(text, intent, "es", source, line)


# "Quiero pagar" is under payment twice and complaint once (majority: payment);
# "mi pedido" under order_status once and complaint once (a tie);
# "cancelar" twice under cancel (a duplicate, not a conflict).
EXAMPLES = [
    ex("Quiero pagar", "payment", 1),
    ex("mi pedido", "order_status", 2),
    ex("quiero pagar!", "complaint", 3),
    ex("cancelar", "cancel", 4),
    ex("¡Quiero PAGAR!", "payment", 5),
    ex("Mi pedido.", "complaint", 6),
    ex("Cancelar", "cancel", 7),
    ex("pagar la factura", "payment", 8),
]


def kept_lines(kept):
    return [e.line for e in kept]


def test_drop_removes_every_copy_of_a_conflicting_text_and_says_which():
    kept, report = resolve_conflicts(EXAMPLES, "drop")
    assert kept_lines(kept) == [4, 7, 8]
    assert report.policy is ConflictPolicy.DROP
    assert len(report.conflicts) == 2 and report.dropped == 5 and report.relabelled == 0
    assert report.duplicates == 1  # the second "cancelar"
    first = report.conflicts[0]
    assert first.places() == {"payment": ["data.tsv:1", "data.tsv:5"], "complaint": ["data.tsv:3"]}
    assert first.kept_intent is None
    lines = report.lines()
    assert lines[0] == ("2 text(s) under two or more intents: 5 example(s) dropped (--conflicts drop); "
                        "1 duplicate example(s) under one intent merged")
    assert lines[1] == "  dropped: 'Quiero pagar' under 2 intents: payment at data.tsv:1, data.tsv:5; complaint at data.tsv:3"


def test_drop_is_the_default():
    assert kept_lines(resolve_conflicts(EXAMPLES)[0]) == [4, 7, 8]


def test_majority_keeps_the_majority_intent_and_a_tie_drops_all():
    kept, report = resolve_conflicts(EXAMPLES, ConflictPolicy.MAJORITY)
    assert kept_lines(kept) == [1, 4, 5, 7, 8]  # "quiero pagar" stays as payment; "mi pedido" (1-1) is gone
    assert [c.kept_intent for c in report.conflicts] == ["payment", None]
    assert report.dropped == 3 and report.relabelled == 1
    assert report.duplicates == 2  # the kept "quiero pagar" twice + "cancelar" twice
    assert "1 kept under their majority intent" in report.summary()


def test_strict_refuses_naming_both_lines():
    with pytest.raises(DatasetError) as excinfo:
        resolve_conflicts(EXAMPLES, "strict")
    err = excinfo.value
    assert (err.path, err.line) == ("data.tsv", 3)
    assert "under intent 'complaint' here and under 'payment' at data.tsv:1" in str(err)
    assert "1 more text(s) conflict" in str(err)


def test_unknown_policy_is_a_value_error():
    with pytest.raises(ValueError):
        resolve_conflicts(EXAMPLES, "vote")


def test_clean_data_passes_through_unchanged():
    clean = [EXAMPLES[3], EXAMPLES[6], EXAMPLES[7]]
    for policy in ConflictPolicy:
        kept, report = resolve_conflicts(clean, policy)
        assert kept == clean and report.conflicts == () and report.dropped == 0 and report.duplicates == 1


def test_find_conflicts_counts_duplicates_outside_conflicts():
    conflicts, duplicates = find_conflicts(EXAMPLES)
    assert [c.key for c in conflicts] == ["quiero pagar", "mi pedido"] and duplicates == 1


def test_the_loader_still_refuses_conflicts_unless_asked_to_keep_them(tmp_path: Path):
    path = tmp_path / "data.tsv"
    path.write_text("payment\tquiero pagar\norder_status\tmi pedido\ncomplaint\tQuiero pagar\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="under intent 'complaint' here and under 'payment'") as excinfo:
        load_examples([path])
    assert (excinfo.value.path, excinfo.value.line) == (str(path), 3)
    assert len(load_examples([path], allow_conflicts=True)) == 3


def test_train_applies_the_policy_and_records_it_in_the_metadata():
    examples = [ex(f"quiero pagar la factura {w}", "payment", i) for i, w in enumerate("abcdefgh", 1)]
    examples += [ex(f"donde esta mi pedido {w}", "order_status", i) for i, w in enumerate("abcdefgh", 20)]
    examples += [ex("quiero pagar la factura a", "order_status", 40), ex("donde esta mi pedido b", "order_status", 41)]
    said: list[str] = []
    model = train(examples, holdout=0, features=FeatureConfig(embedding=None), progress=said.append)
    md = model.metadata["data_conflicts"]
    assert md["policy"] == "drop" and md["conflicting_texts"] == 1 and md["dropped_examples"] == 2
    assert md["duplicates_merged"] == 1
    assert md["conflicts"] == [{
        "text": "quiero pagar la factura a", "kept_intent": None,
        "intents": {"payment": ["data.tsv:1"], "order_status": ["data.tsv:40"]},
    }]
    assert sum(n for per in model.metadata["n_examples"].values() for n in per.values()) == 15
    assert said[0].startswith("1 text(s) under two or more intents: 2 example(s) dropped")
    assert any("data.tsv:40" in line for line in said)

    majority = train(examples, holdout=0, features=FeatureConfig(embedding=None), conflicts="majority")
    assert majority.metadata["data_conflicts"]["dropped_examples"] == 2  # a 1-1 tie: dropped as well
    with pytest.raises(DatasetError, match="data.tsv:1"):
        train(examples, holdout=0, features=FeatureConfig(embedding=None), conflicts=ConflictPolicy.STRICT)
