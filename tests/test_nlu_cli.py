"""``puente nlu`` commands, run in-process through argparse (gateway/cli/nlu.py)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from gateway.cli.nlu import add_nlu_commands, main
from nlu import IntentModel
from nlu.model import FORMAT_VERSION

ES = {
    "payment": ["quiero pagar mi factura", "como pago el recibo", "me pasan el link de pago", "donde puedo pagar",
                "necesito pagar la cuenta", "puedo pagar con tarjeta", "pagar en linea", "quiero hacer un pago"],
    "order_status": ["donde esta mi pedido", "mi paquete no llega", "cuando llega mi orden", "rastrear mi envio",
                     "no me ha llegado el pedido", "estado de mi compra", "mi pedido esta atrasado", "seguimiento del paquete"],
    "out_of_scope": ["cuentame un chiste", "que clima hace hoy", "quien gano el partido", "numero equivocado",
                     "pon musica", "que hora es", "la capital de francia", "receta de tacos"],
}
EN = {
    "payment": ["i want to pay my bill", "how do i pay", "send me the payment link", "where can i pay",
                "i need to make a payment", "can i pay by card", "pay online", "pay the invoice"],
    "order_status": ["where is my order", "my package has not arrived", "when does my order arrive", "track my delivery",
                     "order still not here", "status of my purchase", "my order is late", "tracking my parcel"],
    "out_of_scope": ["tell me a joke", "what is the weather", "who won the game", "wrong number",
                     "play some music", "what time is it", "capital of france", "taco recipe"],
}


def write_yml(path: Path, intents: dict[str, list[str]]) -> Path:
    lines = ['version: "3.1"', "nlu:"]
    for intent, examples in intents.items():
        lines += [f"- intent: {intent}", "  examples: |"] + [f"    - {e}" for e in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("data")
    return [write_yml(root / "es.yml", ES), write_yml(root / "en.yml", EN)]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "m1"
    assert main(["train", "--data", *map(str, data), "--out", str(out), "--holdout", "0.25"]) == 0
    return out


def test_the_group_registers_on_puentes_parser():
    parser = argparse.ArgumentParser(prog="puente")
    add_nlu_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["nlu", "parse", "hola"])
    assert args.text == "hola" and callable(args.run)


def test_train_writes_a_versioned_model_and_prints_a_summary(data, trained, tmp_path, capsys):
    assert sorted(p.name for p in trained.iterdir()) == ["labels.json", "metadata.json", "weights.npz"]
    md = json.loads((trained / "metadata.json").read_text())
    assert md["format_version"] == FORMAT_VERSION and md["features"]["embedding"] == "use-multilingual-v3"
    assert {"data_hash", "created_at", "code_version", "metrics", "threshold"} <= set(md)
    assert md["metrics"]["n_holdout"] == 12

    again = tmp_path / "m2"
    capsys.readouterr()
    assert main(["train", "--data", *map(str, reversed(data)), "--out", str(again), "--holdout", "0.25"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["labels"] == 3 and summary["examples"] == 48 and summary["version"].startswith(md["data_hash"][:12])
    assert "examples, 3 intents" in err  # progress on stderr
    with np.load(trained / "weights.npz") as a, np.load(again / "weights.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # deterministic, order-independent


def test_eval_json_prints_only_json_with_the_documented_keys(data, trained, capsys):
    capsys.readouterr()
    assert main(["eval", "--model", str(trained), "--data", *map(str, data), "--json"]) == 0
    out, _ = capsys.readouterr()
    report = json.loads(out)
    assert {"accuracy", "macro_f1", "oos_recall", "per_intent", "ece", "latency_ms", "top_confusions"} <= set(report)
    assert set(report["per_intent"]) == {"payment", "order_status", "out_of_scope"}
    assert report["n"] == 48 and report["accuracy"] > 0.9


def test_eval_markdown_with_asr_column(data, trained, tmp_path, capsys):
    asr = tmp_path / "asr.tsv"
    asr.write_text("payment\tquiero pagar mi fact ura\tes\norder_status\twear is my order\ten\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", "--model", str(trained), "--data", str(data[0]), "--asr-data", str(asr)]) == 0
    out, _ = capsys.readouterr()
    assert "| metric | clean | asr |" in out and "## Per intent" in out


def test_parse_prints_rasas_shape(trained, capsys):
    capsys.readouterr()
    assert main(["parse", "where is my order", "--model", str(trained)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) == {"text", "intent", "entities", "intent_ranking"}
    assert body["intent"]["name"] == "order_status" and body["intent_ranking"][0] == body["intent"]


def test_lint_exit_code(data, tmp_path, capsys):
    assert main(["lint", *map(str, data), "--min-per-language", "8"]) == 0
    assert main(["lint", *map(str, data)]) == 1  # 8 < 40 examples: thin
    out = capsys.readouterr().out
    assert "[thin]" in out and "es.yml" in out


@pytest.mark.parametrize("name,content,message,line,extra", [
    ("data.csv", b"payment,pay\n", "unknown training data format '.csv'", 1, []),
    ("data.tsv", b"payment\tpay my bill\n\tno intent here\n", "empty intent name", 2, []),
    ("data.tsv", b"payment\tpay my bill\norder_status\tPay my bill!\n", "under intent 'order_status' here", 2, ["--strict"]),
    ("data.tsv", b"payment\tpay my bill\norder_status\tc\xf3mo pago\n", "not UTF-8", 2, []),
    ("data.tsv", b"payment\tpay my bill\npayment\thow do i pay\n", "only one intent", 1, []),
])
def test_bad_training_data_names_the_file_and_line(tmp_path, capsys, name, content, message, line, extra):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "m"), *extra]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}: " in err and message in err
    assert not (tmp_path / "m").exists()


def test_a_conflict_is_dropped_by_default_and_the_rest_trains(data, tmp_path, capsys):
    extra = tmp_path / "extra.tsv"
    extra.write_text("order_status\tQuiero pagar mi factura!\tes\npayment\tquiero pagar mi factura\tes\n", encoding="utf-8")
    out = tmp_path / "m"
    capsys.readouterr()
    assert main(["train", "--data", *map(str, data), str(extra), "--out", str(out), "--holdout", "0.25",
                 "--tfidf-only"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["conflicting_texts"] == 1 and summary["dropped_examples"] == 3 and summary["examples"] == 47
    assert f"dropped: 'quiero pagar mi factura' under 2 intents: payment at {data[0]}:5, {extra}:2; " \
           f"order_status at {extra}:1" in captured.err
    assert main(["train", "--data", *map(str, data), str(extra), "--out", str(tmp_path / "s"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert f"{extra}:1: " in err and f"under 'payment' at {data[0]}:5" in err


def test_eval_prints_the_threshold_trade_off(data, trained, capsys):
    capsys.readouterr()
    assert main(["eval", "--model", str(trained), "--data", *map(str, data)]) == 0
    out = capsys.readouterr().out
    assert "## Out-of-scope threshold trade-off" in out and "**(model)**" in out
    assert "| threshold | in-scope acc. (at training) | oos recall (at training) |" in out
    assert "false rejects (this data) |" in out


def test_oos_recall_target_chooses_the_threshold(data, tmp_path, capsys):
    out = tmp_path / "m"
    capsys.readouterr()
    assert main(["train", "--data", *map(str, data), "--out", str(out), "--holdout", "0.25", "--tfidf-only",
                 "--oos-recall-target", "0.99"]) == 0
    md = json.loads((out / "metadata.json").read_text())
    assert md["threshold_rule"]["rule"] == "oos_recall_target" and md["threshold_rule"]["oos_recall_target"] == 0.99
    point = next(p for p in md["metrics"]["threshold_curve"] if p["threshold"] == md["threshold"])
    assert point["oos_recall"] >= 0.99 or md["threshold_rule"]["reached"] is False
    assert set(point) == {"threshold", "macro_f1", "in_scope_accuracy", "oos_recall", "false_reject_rate"}
    with pytest.raises(SystemExit):  # argparse refuses a target outside [0, 1]
        main(["train", "--data", *map(str, data), "--out", str(out), "--oos-recall-target", "1.5"])


def test_a_corrupt_model_is_refused_with_a_clear_error(trained, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in trained.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "weights.npz").write_bytes(b"not a zip")
    assert main(["parse", "hola", "--model", str(broken)]) == 1
    assert "cannot load intent model" in capsys.readouterr().err
    assert IntentModel.load(trained).parse("where is my order").intent == "order_status"  # the good one still loads


def test_a_model_without_its_embedding_block_is_refused(trained, tmp_path):
    from nlu import ModelLoadError

    broken = tmp_path / "noemb"
    broken.mkdir()
    for p in trained.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    with np.load(trained / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "embedding_coef"}
    np.savez(broken / "weights.npz", **arrays)
    with pytest.raises(ModelLoadError, match="lacks embedding_coef"):
        IntentModel.load(broken)


# --- augment ---------------------------------------------------------------------------


def test_augment_refuses_an_unknown_voice_before_loading_whisper(tmp_path, capsys):
    tsv = tmp_path / "in.tsv"
    tsv.write_text("payment\tquiero pagar mi factura\tes\norder_status\tdonde esta mi pedido\tes\n", encoding="utf-8")
    assert main(["augment", "--data", str(tsv), "--out", str(tmp_path / "out.tsv"), "--voice", "piper:es_MX"]) == 2
    assert "unknown engine 'piper'" in capsys.readouterr().err


@pytest.mark.asr
def test_augment_speaks_with_kokoro_through_a_law_and_records_the_voice(tmp_path, capsys):
    from models.voices.kokoro import default_voices_tarball

    pytest.importorskip("kokoro_onnx", reason="Kokoro's runtime is not installed (pip install -e '.[voices]')")
    if not default_voices_tarball().is_file():
        pytest.skip(f"{default_voices_tarball()} absent (scripts/setup.sh fetches it)")
    tsv = tmp_path / "in.tsv"
    tsv.write_text("payment\tquiero pagar mi factura\tes\norder_status\twhere is my order\ten\n", encoding="utf-8")
    out = tmp_path / "out.tsv"
    argv = ["augment", "--data", str(tsv), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--codec", "pcma",
            "--voice", "kokoro:em_santa", "--voice", "kokoro:af_heart@1.1"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["speakers"] == ["kokoro:em_santa pcma", "kokoro:af_heart@1.1 pcma"] and summary["examples"] == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# speaker: kokoro:em_santa pcma" and lines[2] == "# speaker: kokoro:af_heart@1.1 pcma"
    assert lines[1].split("\t")[0::2] == ["payment", "es"] and "pagar" in lines[1].lower()
    assert lines[3].split("\t")[0::2] == ["order_status", "en"] and "order" in lines[3].lower()
    assert len(list((tmp_path / "cache" / "speech").rglob("*.wav"))) == 2  # the renderings are kept for the next ASR model
