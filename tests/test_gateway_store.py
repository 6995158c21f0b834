"""The context store: calls, utterances, decisions, events and the outbox, on a real SQLite file."""
import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.store import DecisionRecord, NewCall, OutboundMessage, Store, StoreError, UtteranceRecord


def new_call(call_id: str = "c-1") -> NewCall:
    return NewCall(
        call_id=call_id, sip_call_id=f"sip-{call_id}", from_uri="sip:+525555550123@127.0.0.1",
        to_uri="sip:es@127.0.0.1", line="es", caller_number="+525555550123", remote_address="127.0.0.1:5062",
        asr_model="base", nlu_version="test",
    )


def utterance(seq: int = 1, text: str = "dónde está mi pedido") -> UtteranceRecord:
    return UtteranceRecord(
        seq=seq, start_ms=1000, speech_end_ms=2500, end_reason="silence", text=text, language="es",
        language_probability=0.9, no_speech_prob=0.01, avg_logprob=-0.2, dropped=None,
        timings={"endpointing_ms": 600.0, "transcription_ms": 210.0},
    )


def decision(route: str = "whatsapp") -> DecisionRecord:
    return DecisionRecord(
        seq=1, utterance_seq=1, intent="order_status", confidence=0.93, route=route, reason="order_status routes to whatsapp",
        ranking=[{"name": "order_status", "confidence": 0.93}], nlu_version="test", timings={"routing_ms": 0.1},
    )


MESSAGE = OutboundMessage(purpose="deflection", to_number="+525555550123", payload={"template": "call_followup"})


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'puente.db'}")
    yield s
    s.close()


def test_a_call_record_holds_its_utterances_decisions_events_and_messages(store):
    async def go():
        await store.calls.create(new_call(), "answered")
        await store.calls.record_utterance("c-1", utterance(), language="es")
        await store.calls.record_decision("c-1", decision(), MESSAGE)
        await store.calls.end("c-1", outcome="deflected", ended_by="local", reason="done")

        record = await store.calls.get("c-1")
        assert record["state"] == "ended" and record["outcome"] == "deflected"
        assert (record["language"], record["transcript"]) == ("es", "dónde está mi pedido")
        assert (record["intent"], record["confidence"], record["route"]) == ("order_status", 0.93, "whatsapp")
        assert record["utterances"][0]["timings"]["transcription_ms"] == 210.0
        assert [m["purpose"] for m in record["messages"]] == ["deflection"]
        assert record["messages"][0]["status"] == "pending"
        assert [e["type"] for e in record["events"]] == ["call_started", "utterance", "decision", "call_ended"]
        assert (await store.calls.list(sip_call_id="sip-c-1"))[0]["call_id"] == "c-1"
    asyncio.run(go())


def test_a_decision_and_its_message_commit_together_or_not_at_all(store):
    async def go():
        await store.calls.create(new_call(), "answered")
        broken = OutboundMessage(purpose="deflection", to_number=None, payload={})  # violates NOT NULL
        with pytest.raises(Exception):
            await store.calls.record_decision("c-1", decision(), broken)
        record = await store.calls.get("c-1")
        assert record["decisions"] == [] and record["messages"] == []
    asyncio.run(go())


def test_writing_the_same_message_twice_keeps_one(store):
    async def go():
        await store.calls.create(new_call(), "answered")
        await store.calls.record_decision("c-1", decision(), MESSAGE)
        await store.calls.record_decision("c-1", decision(), MESSAGE)
        assert len((await store.calls.get("c-1"))["messages"]) == 1
    asyncio.run(go())


def test_calls_left_open_by_a_crash_are_closed_on_restart_keeping_their_data(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'puente.db'}"

    async def go():
        first = Store(url)
        await first.calls.create(new_call("heard"), "listening")
        await first.calls.record_utterance("heard", utterance())
        await first.calls.create(new_call("decided"), "acting")
        await first.calls.record_decision("decided", decision(), MESSAGE)
        first.close()  # no end_call: the process "died"

        second = Store(url)
        assert await second.calls.close_interrupted("gateway restarted") == 2
        heard, decided = await second.calls.get("heard"), await second.calls.get("decided")
        assert (heard["state"], heard["outcome"], heard["transcript"]) == ("ended", "interrupted", "dónde está mi pedido")
        assert decided["outcome"] == "deflected" and decided["messages"][0]["status"] == "pending"
        with second.database.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert await second.calls.close_interrupted("again") == 0
        second.close()
    asyncio.run(go())


def test_an_unusable_database_url_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open database"):
        Store(f"sqlite:///{blocker}/sub/puente.db")
