"""Abandon recovery: the WhatsApp message after a caller hung up before being served, as outbox rows with a
not-before time on a real SQLite file — due only after the delay, across restarts, one per number per window,
cancelled when the caller called back or was reached meanwhile, otherwise sent through the sandbox, and a
reply to it opens the intent's flow as a reply to a deflection does."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import (
    RECOVERY_PURPOSE,
    DecisionRecord,
    InboundRecord,
    NewCall,
    OutboundMessage,
    Recovery,
    Store,
    merge_message_status,
    utcnow,
)
from gateway.whatsapp.templates import recovery_payload, spoken_duration
from tests.support.store import outbox_messages
from tests.support.whatsapp import received, whatsapp_bench

pytestmark = pytest.mark.timeout(60)

NUMBER = "+525555550123"
DELAY_S = 300.0
WINDOW_S = 3600.0
CONTEXT = {"intent": "order_status", "transcript": "Quiero saber dónde está mi pedido.", "language": "es", "line": "es", "dtmf": ""}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'puente.db'}"


@contextlib.contextmanager
def opened(db_url: str):
    store = Store(db_url)
    try:
        yield store
    finally:
        store.close()


async def abandoned_call(
    store: Store, *, number: str = NUMBER, not_before: datetime | None = None, window_s: float = WINDOW_S, waited_s: float = 151.0,
) -> str:
    """A call that waited in the voice queue and was hung up on; its end schedules a recovery."""
    call_id = str(uuid.uuid4())
    await store.calls.create(
        NewCall(call_id=call_id, sip_call_id=f"sip-{call_id}", from_uri=f"sip:{number}@127.0.0.1", to_uri="sip:es@127.0.0.1",
                line="es", caller_number=number, remote_address="127.0.0.1:5062", asr_model="test", nlu_version="test"),
        state="queued",
    )
    payload = recovery_payload("call_recovery", "es", {**CONTEXT, "call_id": call_id}, waited_s)
    message = OutboundMessage(purpose=RECOVERY_PURPOSE, to_number=number, payload=payload,
                              not_before=not_before or utcnow() + timedelta(seconds=DELAY_S))
    await store.calls.end(call_id, outcome="abandoned", ended_by="remote", reason="caller hung up in the queue",
                          recovery=Recovery(message=message, window_s=window_s))
    return call_id


async def claim(store: Store, now: datetime):
    return await store.outbox.claim(now=now, lease_s=60, in_doubt_grace_s=30)


async def events(store: Store, call_id: str, type_: str) -> list[dict]:
    return [e["data"] for e in (await store.calls.get(call_id))["events"] if e["type"] == type_]


def recoveries(store: Store) -> list[dict]:
    return [m for m in outbox_messages(store) if m["purpose"] == RECOVERY_PURPOSE]


# --- the not-before time ----------------------------------------------------------------


def test_a_recovery_is_not_claimed_before_its_time_and_is_claimed_after(db_url):
    async def go():
        with opened(db_url) as store:
            due = utcnow() + timedelta(seconds=DELAY_S)
            call_id = await abandoned_call(store, not_before=due)
            assert await events(store, call_id, "recovery_scheduled") == [{"not_before": due.isoformat(), "to": NUMBER}]
            assert await claim(store, due - timedelta(seconds=1)) is None
            got = await claim(store, due + timedelta(seconds=1))
            assert (got.purpose, got.call_id, got.to_number, got.idempotency_key) == (RECOVERY_PURPOSE, call_id, NUMBER, f"{call_id}:recovery")
    asyncio.run(go())


def test_a_recovery_survives_a_restart(db_url):
    due = utcnow() + timedelta(seconds=DELAY_S)
    with opened(db_url) as store:
        call_id = asyncio.run(abandoned_call(store, not_before=due))
    with opened(db_url) as store:  # a new process on the same database
        assert asyncio.run(claim(store, due - timedelta(seconds=1))) is None
        assert asyncio.run(claim(store, due + timedelta(seconds=1))).call_id == call_id


# --- one per number per window ------------------------------------------------------------


async def send(store: Store, call_id: str) -> None:
    """The sender takes the call's recovery when it falls due and the API accepts it."""
    got = await claim(store, utcnow() + timedelta(seconds=DELAY_S + 1))
    assert got.call_id == call_id
    await store.outbox.accepted(got.id, f"wamid.{call_id}", now=utcnow())


def test_a_second_recovery_to_the_number_within_the_window_is_skipped(db_url):
    async def go():
        with opened(db_url) as store:
            first = await abandoned_call(store)
            await send(store, first)
            second = await abandoned_call(store, number="+5215555550123")  # the same customer, the 521 form
            [skipped] = await events(store, second, "recovery_skipped")
            assert "window 3600 s" in skipped["reason"] and skipped["call_id"] == first
            assert await events(store, second, "recovery_scheduled") == []
            assert [(m["call_id"], m["status"]) for m in recoveries(store)] == [(first, "accepted")]
    asyncio.run(go())


def test_outside_the_window_a_new_recovery_is_scheduled(db_url):
    async def go():
        with opened(db_url) as store:
            first = await abandoned_call(store, window_s=0.05)
            await send(store, first)
            await asyncio.sleep(0.1)
            second = await abandoned_call(store, window_s=0.05)
            assert await events(store, second, "recovery_skipped") == []
            assert len(await events(store, second, "recovery_scheduled")) == 1
            assert [(m["call_id"], m["status"]) for m in recoveries(store)] == [(first, "accepted"), (second, "pending")]
    asyncio.run(go())


def test_abandoning_again_before_the_first_recovery_went_replaces_it(db_url):
    async def go():
        with opened(db_url) as store:
            first = await abandoned_call(store)
            second = await abandoned_call(store)  # called back, and hung up again
            assert await events(store, first, "recovery_cancelled") == [{"reason": "called back"}]
            assert len(await events(store, second, "recovery_scheduled")) == 1
            assert [(m["call_id"], m["status"]) for m in recoveries(store)] == [(first, "cancelled"), (second, "pending")]
            assert (await claim(store, utcnow() + timedelta(seconds=DELAY_S + 1))).call_id == second
    asyncio.run(go())


# --- called back or reached meanwhile: cancelled ------------------------------------------


async def assert_cancelled(store: Store, call_id: str, reason: str) -> None:
    """When the recovery falls due the claim cancels it instead of handing it out."""
    assert await claim(store, utcnow() + timedelta(seconds=DELAY_S + 1)) is None
    [row] = [m for m in recoveries(store) if m["call_id"] == call_id]
    assert (row["status"], row["wamid"], row["attempts"]) == ("cancelled", None, 0)
    assert await events(store, call_id, "recovery_cancelled") == [{"reason": reason}]
    assert merge_message_status("cancelled", "delivered") == "cancelled"  # no status webhook revives it


def test_a_caller_who_called_back_is_not_messaged(db_url):
    async def go():
        with opened(db_url) as store:
            call_id = await abandoned_call(store)
            await store.calls.create(
                NewCall(call_id="again", sip_call_id="sip-again", from_uri=f"sip:{NUMBER}@127.0.0.1", to_uri="sip:es@127.0.0.1",
                        line="es", caller_number=NUMBER, remote_address="127.0.0.1:5062", asr_model="test", nlu_version="test"),
                state="answered",
            )
            await assert_cancelled(store, call_id, "called back")
    asyncio.run(go())


def test_a_caller_who_wrote_on_whatsapp_is_not_messaged(db_url):
    async def go():
        with opened(db_url) as store:
            call_id = await abandoned_call(store)
            now = utcnow()
            await store.whatsapp.ingest([], [InboundRecord(
                wamid="wamid.hola", from_number="+5215555550123", type="text", timestamp=now, text="hola", payload=None,
                context_wamid=None, message={"type": "text", "text": {"body": "hola"}})], now=now)
            await assert_cancelled(store, call_id, "wrote on WhatsApp")
    asyncio.run(go())


def test_a_caller_reached_by_another_message_is_not_messaged(db_url):
    async def go():
        with opened(db_url) as store:
            call_id = await abandoned_call(store)
            other = OutboundMessage(purpose="deflection", to_number=NUMBER, payload={"type": "text", "text": "hola"})
            decision = DecisionRecord(seq=1, utterance_seq=None, intent="order_status", confidence=0.9, route="whatsapp",
                                      reason="test", ranking=[], nlu_version="test", timings={})
            await store.calls.record_decision(call_id, decision, other)
            sent = await claim(store, utcnow())
            assert sent.purpose == "deflection"
            await store.outbox.accepted(sent.id, "wamid.other", now=utcnow())
            await assert_cancelled(store, call_id, "reached by another message")
    asyncio.run(go())


# --- nothing of the kind: sent, and the reply opens the flow -----------------------------


def test_an_unreached_caller_gets_the_recovery_and_a_reply_opens_the_intents_flow(db_url):
    async def go():
        async with whatsapp_bench(db_url) as bench:
            store, channel, http = bench.store, bench.channel, bench.http
            call_id = await abandoned_call(store, not_before=utcnow() + timedelta(seconds=0.5), waited_s=151)
            await asyncio.sleep(0.3)
            assert channel.sandbox.outbound(NUMBER) == []  # not before its time
            [template] = await received(channel, NUMBER, 1)
            assert template.type == "template"
            assert template.text == ("Hola, vimos que nos llamaste por el estado de tu pedido y la llamada se cortó tras "
                                     "2 minutos y 31 segundos de espera. ¿Seguimos por aquí?")
            button = template.buttons[0]
            assert button["title"] == "Sí, sigamos" and button["payload"] == f"continue|{call_id}:recovery"

            reply = {"button": {"payload": button["payload"], "text": button["title"]}, "reply_to": template.wamid}
            r = await http.post(f"/sandbox/customers/{NUMBER}/reply", json=reply)
            assert r.status_code == 200 and r.json()["webhook"]["delivered"] is True
            [_, question] = await received(channel, NUMBER, 2)
            assert question.type == "text" and "número de pedido" in question.text

            [listed] = await store.conversations.list(call_id=call_id)
            record = await store.conversations.get(listed["conversation_id"])
            assert (record["intent"], record["flow"], record["status"], record["language"]) == ("order_status", "order_status", "active", "es")
            assert record["context"]["transcript"] == CONTEXT["transcript"] and record["context"]["waited_s"] == 151
            assert recoveries(store)[0]["status"] in ("accepted", "sent", "delivered", "read")
    asyncio.run(go())


def test_the_wait_is_said_in_the_templates_language():
    assert spoken_duration(151, "es") == "2 minutos y 31 segundos"
    assert spoken_duration(151, "en_US") == "2 minutes and 31 seconds"
    assert spoken_duration(60, "en") == "1 minute"
    assert spoken_duration(3905, "es") == "1 hora y 5 minutos"
    assert spoken_duration(0.2, "en") == "1 second"
