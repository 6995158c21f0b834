"""End to end: real SIP calls over loopback into a real gateway process, real speech,
the real Whisper model and the real intent model; everything checked in the stored record."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, espeak

from gateway.dev.harness import start_gateway
from models.corpora import asterisk_clips
from tests.support.sip import baresip

pytestmark = [pytest.mark.sip, pytest.mark.asr]


def asterisk_prompt(lang: str, name: str) -> tuple[Path, str]:
    """A real recording from Debian's asterisk-core-sounds and its official transcript."""
    for clip in asterisk_clips(lang):
        if clip.name == name:
            return clip.path, clip.text
    pytest.skip(f"asterisk-core-sounds-{lang}(-wav) with {name} is not installed")


def assert_persisted(record: dict) -> None:
    """Every call leaves its utterances (with timings), its decision and its events."""
    full = record["record"]
    assert full["state"] == "ended" and full["ended_at"]
    assert full["utterances"], "no utterance stored"
    assert all("transcription_ms" in u["timings"] for u in full["utterances"])
    assert full["decisions"] and full["decisions"][-1]["route"] == record["route"]
    states = [e["data"]["to"] for e in full["events"] if e["type"] == "state"]
    assert states[:2] == ["greeting", "listening"] and "deciding" in states and "acting" in states


@pytest.mark.parametrize(
    "lang, text, key_words, intent, route",
    [
        ("es", "Quiero saber cuándo llega mi paquete", ["paquete"], "order_status", "whatsapp"),
        ("es", "Necesito una copia de mi factura del mes pasado", ["factura"], "duplicate_document", "whatsapp"),
        ("es", "Me robaron la tarjeta de crédito", ["robaron"], "fraud_or_loss", "voice"),
        ("en", "Hi, I would like to know where my order is", ["order"], "order_status", "whatsapp"),
        ("en", "My internet is not working since yesterday", ["internet"], "technical_support", "voice"),
    ],
)
def test_synthetic_speech_is_transcribed_classified_and_routed(gateway, tmp_path, lang, text, key_words, intent, route):
    wav = espeak(text, lang, tmp_path / "say.wav")
    number = "+525555550123" if lang == "es" else "+14155550123"
    consent = ["--dtmf", "1"] if route == "whatsapp" else []
    record = gateway.call(lang, "--wav", str(wav), "--from", number, *consent)
    assert record["_exit"] == 0, record
    heard = record["record"]["utterances"]
    assert record["language"] == lang, heard
    for word in key_words:
        assert word in record["transcript"].lower(), heard
    assert (record["intent"], record["route"]) == (intent, route), heard
    assert_persisted(record)
    if route == "whatsapp":
        assert record["outcome"] == "deflected"
        [message] = record["record"]["messages"]
        assert message["purpose"] == "deflection" and message["to_number"] == number
        assert message["payload"]["context"]["transcript"] == record["transcript"]
        # The outbox delivers it to the WhatsApp sandbox within seconds.
        deadline = time.monotonic() + 15
        while message["status"] not in ("delivered", "read") and time.monotonic() < deadline:
            time.sleep(0.2)
            [message] = gateway.get(f"/v1/calls/{record['call_id']}")["messages"]
        assert message["status"] in ("delivered", "read") and message["wamid"], message
    else:
        assert record["record"]["messages"] == []


@pytest.mark.parametrize(
    "lang, name, key_word",
    [("en", "vm-reachoper", "operator"), ("es", "vm-reachoper", "operadora")],
)
def test_real_recorded_speech_asking_for_an_operator_stays_in_voice(gateway, lang, name, key_word):
    wav, reference = asterisk_prompt(lang, name)
    assert key_word in reference.lower()
    record = gateway.call(lang, "--wav", str(wav))
    assert key_word in record["transcript"].lower(), record
    assert (record["intent"], record["route"]) == ("agent_request", "voice"), record
    assert_persisted(record)


def test_the_bilingual_line_picks_the_language_the_caller_speaks(gateway, tmp_path):
    wav = espeak("Hello, I need a copy of my last invoice please", "en", tmp_path / "en.wav")
    record = gateway.call("main", "--wav", str(wav), "--from", "+14155550123", "--dtmf", "1")
    assert record["language"] == "en"
    assert (record["intent"], record["route"]) == ("duplicate_document", "whatsapp"), record


def test_an_anonymous_caller_is_not_deflected_and_the_reason_is_recorded(gateway, tmp_path):
    wav = espeak("Quiero saber cuándo llega mi paquete", "es", tmp_path / "es.wav")
    record = gateway.call("es", "--wav", str(wav), "--from", "anonymous")
    assert (record["intent"], record["route"]) == ("order_status", "voice"), record
    assert "anonymous" in record["reason"]


def test_speech_outside_the_taxonomy_is_reprompted_not_guessed(gateway, tmp_path):
    jfk = ROOT.parent / "shared" / "data" / "speech" / "misc" / "jfk.flac"
    if not jfk.is_file():
        pytest.skip(f"shared data is absent: {jfk}")
    wav = tmp_path / "jfk.wav"
    subprocess.run(["sox", str(jfk), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    # JFK pauses after "ask not": two utterances, neither a contact-center request.
    record = gateway.call("en", "--wav", str(wav), "--hangup-after", "15")
    first, second = record["record"]["decisions"]
    assert "americans" in record["transcript"].lower()
    assert first["route"] == "reprompt" and "out of scope" in first["reason"], first
    assert second["route"] == "voice" and "after 1 reprompt" in second["reason"], second


def test_a_silent_caller_gets_the_no_input_prompt_then_a_reprompt_then_voice(gateway, tmp_path):
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "0.5"], check=True)
    record = gateway.call("es", "--wav", str(silence))
    full = record["record"]
    no_inputs = [e for e in full["events"] if e["type"] == "no_input"]
    assert len(no_inputs) == 3
    states = [e["data"]["to"] for e in full["events"] if e["type"] == "state"]
    assert states.count("reprompting") == 2
    assert record["route"] == "voice" and "no input" in record["reason"]
    assert record["transcript"] == "" and full["utterances"] == []


def test_a_caller_who_hangs_up_mid_sentence_is_recorded_as_abandoned_with_what_was_heard(gateway):
    wav, reference = asterisk_prompt("en", "tt-allbusy")  # "All representatives of the household are …" (9 s)
    record = gateway.call("en", "--wav", str(wav), "--hangup-after", "4.5")
    assert record["outcome"] == "abandoned" and record["record"]["ended_by"] == "remote"
    [utterance] = record["record"]["utterances"]
    assert utterance["end_reason"] == "flush"
    heard = utterance["text"].lower()
    assert "representatives" in heard and "telemarketers" not in heard, heard
    assert record["route"] is None


def test_noise_produces_no_transcript_text(gateway, tmp_path):
    noise = tmp_path / "noise.wav"
    # -R: the same noise every run. Some draws of white noise come back from Whisper base as a single
    # confident word ("y", no-speech probability 0.39, average log-probability -0.78): see README, Known limits.
    subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", "3", "whitenoise", "vol", "0.3"],
                   check=True)
    record = gateway.call("es", "--wav", str(noise), "--hangup-after", "6")
    assert all(u["text"] == "" for u in record["record"]["utterances"]), record["record"]["utterances"]
    assert record["transcript"] == ""


def test_nlu_parse_answers_in_rasa_shape(gateway):
    body = httpx.post(gateway.api + "/v1/nlu/parse", json={"text": "quiero saber dónde está mi pedido"}, timeout=10).json()
    assert body["text"] == "quiero saber dónde está mi pedido"
    assert body["intent"]["name"] == "order_status" and 0 < body["intent"]["confidence"] <= 1
    assert body["entities"] == []
    assert body["intent_ranking"][0] == body["intent"]


def test_health_reports_the_models_in_use(gateway):
    health = gateway.get("/healthz")
    assert health["status"] == "ok"
    assert health["asr"]["model"] and health["nlu"]["version"]
    assert health["asr"]["backlog"] == 0 and health["asr"]["max_wait_s"] == 3.0
    assert health["asr"]["expected_wait_s"] == 0.0  # nothing queued
    assert health["sip"]["frames_dropped"] == 0


def test_a_call_from_a_network_that_is_not_allowed_gets_403(tmp_path):
    closed = start_gateway(tmp_path, sip={"allowed_networks": ["10.0.0.0/8"]})
    try:
        wav = espeak("hola", "es", tmp_path / "hola.wav")
        record = closed.call("es", "--wav", str(wav))
        assert record["_exit"] == 1 and record["status_code"] == 403
        assert closed.get("/v1/calls") == []
        invites = closed.get("/healthz")["sip"]["invites"]
        assert invites == {"admitted": 0, "not_allowed": 1, "node_full": 0, "source_busy": 0, "source_rate": 0}
    finally:
        assert closed.stop() == 0


def test_voice_calls_are_transferred_with_refer_carrying_the_call_context(tmp_path):
    agent = "sip:agents@127.0.0.1:5999"
    pbx = start_gateway(tmp_path, routing={"agent_uri": agent})
    try:
        wav = espeak("quiero poner una queja formal por el mal servicio", "es", tmp_path / "queja.wav")
        record = pbx.call("es", "--wav", str(wav))
        assert (record["intent"], record["route"]) == ("complaint", "voice"), record
        target = record["caller"]["transfer_target"]
        assert target and "sip:agents@127.0.0.1:5999" in target
        assert f"X-Puente-Call-Id={record['call_id']}" in target and "X-Puente-Intent=complaint" in target
        events = [e["type"] for e in record["record"]["events"]]
        assert "transfer_requested" in events
    finally:
        pbx.stop()


def call_in_background(gateway, wav: Path) -> subprocess.Popen:
    """Start ``puente call`` and return once the gateway has the call up."""
    caller = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "call", gateway.uri("es"), "--wav", str(wav), "--api", gateway.api, "--timeout", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not gateway.get("/v1/calls") and time.monotonic() < deadline:
        time.sleep(0.2)
    return caller


def test_killing_the_gateway_with_calls_up_leaves_the_database_consistent(tmp_path):
    doomed = start_gateway(tmp_path)
    wav = espeak("hola, llamaba por una cosa que le quería comentar sobre mi cuenta y mi contrato", "es", tmp_path / "long.wav")
    caller = call_in_background(doomed, wav)
    try:
        time.sleep(2.0)  # mid-utterance
        doomed.stop(signal.SIGKILL)
    finally:
        caller.wait(60)
    with sqlite3.connect(doomed.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reborn = start_gateway(tmp_path, database={"url": f"sqlite:///{doomed.db_path}"})
    try:
        [call] = reborn.get("/v1/calls")
        assert (call["state"], call["outcome"]) == ("ended", "interrupted")
        assert "restarted" in call["end_reason"]
    finally:
        assert reborn.stop() == 0


def test_stopping_the_gateway_with_a_call_up_is_clean(tmp_path):
    running = start_gateway(tmp_path)
    caller = call_in_background(running, espeak("hola, buenas tardes", "es", tmp_path / "hola.wav"))
    try:
        assert running.stop(signal.SIGTERM) == 0
    finally:
        caller.wait(60)
    log = running.log_path.read_text()
    for bad in ("Assertion", "Traceback", "Segmentation", "Aborted"):
        assert bad not in log, log[-3000:]
    with sqlite3.connect(running.db_path) as db:
        state, outcome = db.execute("SELECT state, outcome FROM calls").fetchone()
    assert (state, outcome) == ("ended", "interrupted")


def test_an_independent_client_baresip_is_understood_and_routed(gateway):
    if not baresip.available():
        pytest.skip("Debian baresip is not installed")
    wav, _reference = asterisk_prompt("es", "vm-reachoper")  # "Marque 0 para hablar con la operadora"
    # baresip hangs up when its audio file ends: leave time for the decision.
    result = baresip.call(gateway.uri("es"), wav, pad_s=5.0, timeout=40, user="+525555550126")
    assert result.connected, result.output[-2000:]
    [summary] = [c for c in gateway.get("/v1/calls", limit=50) if c["caller_number"] == "+525555550126"]
    deadline = time.monotonic() + 10
    while (call := gateway.get(f"/v1/calls/{summary['call_id']}"))["state"] != "ended" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "operadora" in call["transcript"].lower(), call
    assert (call["intent"], call["route"]) == ("agent_request", "voice"), call
    assert call["state"] == "ended" and call["utterances"] and call["decisions"]
