"""The runtime model: parsing rules, Rasa shape, and refusing bad model directories."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlu import IntentClassifier, IntentModel, IntentResult, IntentScore, ModelLoadError
from nlu.dataset import Example
from nlu.train import save, train

TINY = [
    Example(text, intent, "en", "tiny", i)
    for i, (intent, text) in enumerate(
        [
            ("payment", "i want to pay my bill"), ("payment", "how do i pay"), ("payment", "payment link please"),
            ("payment", "can i pay by card"), ("payment", "where do i pay"), ("payment", "pay the invoice"),
            ("order_status", "where is my order"), ("order_status", "my package has not arrived"),
            ("order_status", "track my delivery"), ("order_status", "when does my order arrive"),
            ("order_status", "order still not here"), ("order_status", "delivery status please"),
            ("out_of_scope", "tell me a joke"), ("out_of_scope", "what is the weather"),
            ("out_of_scope", "wrong number sorry"), ("out_of_scope", "who won the game"),
            ("out_of_scope", "play some music"), ("out_of_scope", "what time is it"),
        ]
    )
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save(train(TINY, holdout=0.0, threshold=0.5), tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def model(saved) -> IntentModel:
    return IntentModel.load(saved)


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_model_satisfies_the_gateway_interface(model):
    assert isinstance(model, IntentClassifier)
    assert isinstance(model.version, str) and model.version.startswith(model.metadata["data_hash"][:12])


def test_parse_returns_a_ranked_result(model):
    result = model.parse("I want to pay my bill, please")
    assert isinstance(result, IntentResult)
    assert result.intent == "payment" and not result.fallback
    assert result.ranking[0] == IntentScore(result.intent, result.confidence)
    confidences = [s.confidence for s in result.ranking]
    assert confidences == sorted(confidences, reverse=True) and len(result.ranking) <= 10
    assert abs(sum(confidences) - 1.0) < 1e-9  # 3 labels: the whole distribution


def test_to_rasa_has_rasas_parse_shape(model):
    body = model.parse("where is my order").to_rasa()
    assert set(body) == {"text", "intent", "entities", "intent_ranking"}
    assert body["text"] == "where is my order" and body["entities"] == []
    assert set(body["intent"]) == {"name", "confidence"} and body["intent"]["name"] == "order_status"
    assert all(set(r) == {"name", "confidence"} for r in body["intent_ranking"])
    assert body["intent_ranking"][0] == body["intent"]
    json.dumps(body)  # plain JSON types only


@pytest.mark.parametrize("text", ["", "   ", "hola", "Hello, good morning!", "eh... sí", "um yeah okay"])
def test_text_without_content_is_out_of_scope_with_full_confidence(model, text):
    result = model.parse(text)
    assert (result.intent, result.confidence, result.fallback) == ("out_of_scope", 1.0, True)
    assert result.ranking == (IntentScore("out_of_scope", 1.0),)


def test_low_confidence_falls_back_to_out_of_scope_with_the_threshold(model):
    strict = model.with_threshold(0.99)
    text = "pay for my order"  # mixes two intents: the best one wins with moderate confidence
    probs = dict(zip(model.labels, strict.probabilities(text)))
    assert max(probs, key=probs.get) != "out_of_scope" and max(probs.values()) < 0.99
    result = strict.parse(text)
    assert result.intent == "out_of_scope" and result.fallback
    assert result.confidence == 0.99
    assert result.ranking[0] == IntentScore("out_of_scope", 0.99)
    # The other intents keep their scores so the gateway can see the near miss.
    assert [s.name for s in result.ranking[1:]] == sorted(
        (n for n in probs if n != "out_of_scope"), key=lambda n: -probs[n]
    )
    assert model.parse(text).intent == max(probs, key=probs.get)  # the saved threshold is 0.5


def test_runtime_does_not_import_scikit_learn(saved):
    code = (
        "import sys, nlu; from nlu.model import IntentModel; "
        f"m = IntentModel.load({str(saved)!r}); m.parse('where is my order'); "
        "assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        IntentModel.load(tmp_path / "nope")


@pytest.mark.parametrize("name", ["weights.npz", "labels.json", "metadata.json"])
def test_missing_file(saved, tmp_path, name):
    broken = copy_model(saved, tmp_path / "m")
    (broken / name).unlink()
    with pytest.raises(ModelLoadError, match=f"missing {name}"):
        IntentModel.load(broken)


def test_corrupt_weights(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    data = (broken / "weights.npz").read_bytes()
    (broken / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="weights.npz"):
        IntentModel.load(broken)


def test_corrupt_json(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="metadata.json"):
        IntentModel.load(broken)


def test_incompatible_format_version(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    md = json.loads((broken / "metadata.json").read_text())
    md["format_version"] = 99
    (broken / "metadata.json").write_text(json.dumps(md))
    with pytest.raises(ModelLoadError, match="incompatible model format version 99"):
        IntentModel.load(broken)


def test_labels_that_do_not_match_the_weights(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    labels = json.loads((broken / "labels.json").read_text())
    (broken / "labels.json").write_text(json.dumps(labels + ["extra"]))
    with pytest.raises(ModelLoadError, match="coef has shape"):
        IntentModel.load(broken)


def test_weights_with_a_wrong_shape(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    with np.load(broken / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["idf"] = arrays["idf"][:-1]
    np.savez(broken / "weights.npz", **arrays)
    with pytest.raises(ModelLoadError, match="idf has shape"):
        IntentModel.load(broken)


def test_pickled_arrays_are_refused(saved, tmp_path):
    broken = copy_model(saved, tmp_path / "m")
    with np.load(broken / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["vocabulary"] = np.array(list(arrays["vocabulary"]), dtype=object)
    np.savez(broken / "weights.npz", **arrays)
    with pytest.raises(ModelLoadError, match="weights.npz"):
        IntentModel.load(broken)
