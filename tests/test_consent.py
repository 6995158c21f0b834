"""WhatsApp consent on the call: nothing is sent to a number without its opt-in on record.

Real SIP calls: the caller answers the gateway's question by DTMF or by voice; the yes/no
answer is recognised by the constrained recogniser (models/answers.py)."""
from __future__ import annotations

import sqlite3

import pytest
from conftest import espeak

pytestmark = [pytest.mark.sip, pytest.mark.asr]

ORDER_ES = "Quiero saber cuándo llega mi paquete"
ORDER_EN = "Hi, I would like to know where my order is"


def consents(gateway, number: str) -> list[tuple]:
    with sqlite3.connect(gateway.db_path) as db:
        return db.execute("SELECT granted, method FROM consents WHERE number = ? ORDER BY id", (number,)).fetchall()


def events(record: dict, type_: str) -> list[dict]:
    return [e for e in record["record"]["events"] if e["type"] == type_]


@pytest.mark.parametrize(
    "lang, text, reply, number, method",
    [
        ("es", ORDER_ES, ["--dtmf", "1"], "+525555551001", "dtmf"),
        ("es", ORDER_ES, ["--answer", "sí", "--lang", "es"], "+525555551002", "speech"),
        ("en", ORDER_EN, ["--answer", "yes", "--lang", "en"], "+14155551003", "speech"),
    ],
)
def test_a_yes_by_key_or_by_voice_records_consent_and_deflects(gateway, tmp_path, lang, text, reply, number, method):
    wav = espeak(text, lang, tmp_path / "ask.wav")
    record = gateway.call(lang, "--wav", str(wav), "--from", number, *reply)
    assert len(events(record, "consent_asked")) == 1
    assert (record["route"], record["outcome"]) == ("whatsapp", "deflected"), record["reason"]
    assert f"consent: {method}" in record["reason"]
    assert consents(gateway, number) == [(1, method)]
    [message] = record["record"]["messages"]
    assert message["to_number"] == number


def test_a_number_with_consent_on_record_is_not_asked_again(gateway, tmp_path):
    number = "+525555551004"
    wav = espeak(ORDER_ES, "es", tmp_path / "ask.wav")
    first = gateway.call("es", "--wav", str(wav), "--from", number, "--dtmf", "1")
    second = gateway.call("es", "--wav", str(wav), "--from", number)
    assert first["route"] == second["route"] == "whatsapp"
    assert events(second, "consent_asked") == []
    assert consents(gateway, number) == [(1, "dtmf")]


def test_a_no_keeps_the_call_in_voice_and_nothing_is_sent(gateway, tmp_path):
    number = "+525555551005"
    wav = espeak(ORDER_ES, "es", tmp_path / "ask.wav")
    record = gateway.call("es", "--wav", str(wav), "--from", number, "--dtmf", "2")
    assert record["route"] == "voice" and "declined WhatsApp" in record["reason"]
    assert record["record"]["messages"] == []
    assert consents(gateway, number) == [(0, "dtmf")]


def test_no_answer_follows_the_operator_policy_voice_by_default(gateway, tmp_path):
    number = "+525555551006"
    wav = espeak(ORDER_ES, "es", tmp_path / "ask.wav")
    record = gateway.call("es", "--wav", str(wav), "--from", number)
    assert record["route"] == "voice" and "no consent: no answer" in record["reason"]
    assert record["record"]["messages"] == [] and consents(gateway, number) == []
