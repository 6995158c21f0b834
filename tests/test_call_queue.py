"""A call in a voice queue (``gateway.call.session`` with ``gateway.queue``): waiting, the WhatsApp offer
at the SLA, an agent answering, hanging up in the queue. The session runs on the bench of
``tests/support/session.py``; the distributor is the real one, with stand-in agent phones and timers.
The last test checks that these tests take every queue transition of ``TRANSITIONS``.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.call.context import CALL_ID_HEADER, CONTEXT_URL_HEADER, INTENT_HEADER, LANGUAGE_HEADER
from gateway.call.session import TRANSITIONS, CallState, DocumentsRequested
from gateway.numbers import CallerNumber
from gateway.queue.dispatcher import PRIORITY_HEADER, QUEUE_HEADER, WAIT_HEADER
from tests.support.session import NUMBER, TransitionLog, placed_call
from tests.support.whatsapp import account_event, fresh_account, template_status

S = CallState
QUEUE_STATES = {S.QUEUED, S.OFFERING, S.CONNECTED}
BILL = "Me cobraron dos veces la factura"  # billing_dispute: stays in voice
ANA = "sip:ana@agents.test"


def queue(**options: Any) -> dict[str, Any]:
    """One queue with one agent, offers checked every 10 ms of real time (the SLA is on the fake clock)."""
    offer = {"check_interval_s": 0.01, **options.pop("offer", {})}
    return {"queues": {"general": {"agents": [{"id": "ana", "uri": ANA}], "sla_s": 60, "offer": offer, **options}}}


LOG = TransitionLog()


@pytest.fixture(autouse=True)
def _ran(request):
    LOG.ran.add(request.node.nodeid)


@pytest.fixture
def db(tmp_path, empty_store) -> Path:
    path = tmp_path / "puente.db"
    shutil.copyfile(empty_store, path)
    return path


def calling(db: Path, **options: Any):
    options.setdefault("settings", queue())
    return placed_call(db, on_record=LOG.note, **options)


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def queued(call, text: str = BILL, intent: str = "billing_dispute") -> None:
    await call.connect()
    await call.prompt_ends()
    await call.say(text, intent)
    assert call.state is S.QUEUED, call.state


async def wait_offer(call) -> None:
    """Let the caller wait past the SLA (fake clock) until the next check makes the offer."""
    call.clock.advance(61)
    await call.until(lambda: call.state is S.OFFERING)


def test_a_voice_call_waits_in_its_queue_hearing_hold_audio_and_not_being_listened_to(db):
    async def go():
        async with calling(db, settings=queue(agents=[])) as call:
            await queued(call)
            assert call.prompts == ["greeting", "hold"] and call.telephony.listening is False
            await call.prompt_ends()
            await call.prompt_ends()
            assert call.prompts == ["greeting", "hold", "hold_music", "hold_music"]
            (queued_event,) = await call.events("queued")
            assert queued_event == {"queue": "general", "priority": 0, "holdout": False, "position": 0,
                                    "estimated_wait_s": None}  # no agent staffed: no finite estimate

    run(go)


def test_the_agent_is_called_with_the_context_and_the_caller_is_connected_when_they_answer(db):
    async def go():
        async with calling(db) as call:
            await queued(call, "Me robaron la tarjeta", "fraud_or_loss")
            leg = call.phones.ringing(ANA)
            assert leg.headers == {
                CALL_ID_HEADER: call.call_id, INTENT_HEADER: "fraud_or_loss", LANGUAGE_HEADER: "es",
                CONTEXT_URL_HEADER: f"http://puente.test/v1/calls/{call.call_id}/context",
                WAIT_HEADER: "0", QUEUE_HEADER: "general", PRIORITY_HEADER: "10",
            }
            call.phones.answer(ANA)
            await call.settle()
            assert call.state is S.CONNECTED and call.phones.leg(leg.leg_id).bridged_to == call.call_id
            call.phones.agent_hangs_up(leg.leg_id)
            await call.settle()
            record = await call.ended()
            assert record["outcome"] == "served"
            assert [e["type"] for e in record["events"] if e["type"].startswith("agent_")] == [
                "agent_ringing", "agent_connected", "agent_hung_up",
            ]

    run(go)


def test_past_the_sla_the_caller_is_offered_whatsapp_and_dtmf_1_sends_the_context_and_ends_the_call(db):
    async def go():
        async with calling(db, settings=queue(agents=[])) as call:
            await queued(call)
            await wait_offer(call)
            assert call.prompts[-1] == "offer" and call.telephony.listening is True
            await call.press("1")
            assert call.prompts[-1] == "whatsapp_sent"
            await call.prompt_ends()
            record = await call.ended()
            assert record["outcome"] == "deflected"
            (message,) = record["messages"]
            assert (message["purpose"], message["to_number"]) == ("deflection", NUMBER)
            context = message["payload"]["context"]
            assert (context["intent"], context["queue"], context["priority"], context["waited_s"]) == (
                "billing_dispute", "general", 0, 61.0)
            assert context["transcript"] == BILL
            queued_for, decision = record["decisions"]
            assert queued_for["route"] == "voice" and decision["route"] == "whatsapp" and "accepted WhatsApp after 61 s in the general queue (dtmf)" in decision["reason"]
            assert await call.events("consent") == [{"granted": True, "method": "dtmf"}]
            (made,) = await call.events("offer_made")
            assert made["reason"] == "waited 61 s > SLA 60 s"
            (wait,) = await call.store.queue.waits()
            assert (wait["outcome"], wait["offers"]) == ("deflected", 1)

    run(go)


def test_a_spoken_yes_accepts_the_offer(db):
    async def go():
        async with calling(db, settings=queue(agents=[])) as call:
            await queued(call)
            await wait_offer(call)
            await call.prompt_ends()
            await call.answer("yes")
            assert call.prompts[-1] == "whatsapp_sent"
            assert call.speech.methods_asked()[-1] == "recognize_yes_no"
            assert await call.events("consent") == [{"granted": True, "method": "speech"}]

    run(go)


@pytest.mark.parametrize("how", ["speech", "dtmf"])
def test_no_or_dtmf_2_keeps_the_caller_in_the_queue_in_their_place(db, how):
    async def go():
        async with calling(db, settings=queue(agents=[])) as call:
            await queued(call)
            await wait_offer(call)
            if how == "dtmf":
                await call.press("2")
            else:
                await call.prompt_ends()
                await call.answer("no")
            assert call.state is S.QUEUED and call.prompts[-1] == "offer_declined"
            assert call.telephony.listening is False and call.queue.position(call.call_id) == 0
            call.clock.advance(600)  # long past the interval: a caller who said no is not asked again
            await asyncio.sleep(0.05)
            assert call.prompts.count("offer") == 1 and call.state is S.QUEUED
            assert await call.events("consent") == []  # declining the offer is not refusing WhatsApp
            assert [e["how"] for e in await call.events("offer_declined")] == [how]

    run(go)


def test_an_ignored_offer_is_made_again_after_the_interval_at_most_max_offers_times(db):
    async def go():
        async with calling(db, settings=queue(agents=[], offer={"max_offers": 2, "interval_s": 30})) as call:
            await queued(call)
            await wait_offer(call)
            await call.prompt_ends()
            await call.stay_silent()  # the answer's wait runs out
            assert call.state is S.QUEUED and call.prompts[-1] == "hold_music"
            call.clock.advance(30)
            await call.until(lambda: call.state is S.OFFERING)
            await call.press("2")
            call.clock.advance(300)
            await asyncio.sleep(0.05)  # several checks
            assert call.state is S.QUEUED and call.prompts.count("offer") == 2

    run(go)


def test_a_caller_without_a_usable_whatsapp_number_is_not_offered(db):
    async def go():
        async with calling(db, settings=queue(agents=[]), caller=CallerNumber(None, "the caller's number is withheld")) as call:
            await queued(call)
            call.clock.advance(61)
            await call.until(lambda: call.state is S.QUEUED and bool(call.prompts))
            await asyncio.sleep(0.05)
            assert call.state is S.QUEUED and "offer" not in call.prompts
            assert await call.events("offer_skipped") == [{"reason": "the caller's number is withheld"}]

    run(go)


def test_an_agent_answering_during_the_offer_takes_the_caller(db):
    async def go():
        async with calling(db) as call:
            await queued(call)
            call.timers.run_due(advance=15)  # ana does not answer: no offer while her phone rings
            await wait_offer(call)
            call.timers.run_due(advance=10)  # her pause is over: rung again, and this time she answers
            call.phones.answer(ANA)
            await call.settle()
            assert call.state is S.CONNECTED and call.telephony.listening is False

    run(go)


def test_a_voice_call_about_documents_gets_the_whatsapp_link_and_keeps_waiting(db):
    async def go():
        settings = {**queue(agents=[], offer={"enabled": False}), "routing.routes": {"update_details": "voice"},
                    "whatsapp.consent.required": False}
        async with calling(db, settings=settings) as call:
            await queued(call, "Quiero actualizar mis datos", "update_details")
            record = await call.record()
            (message,) = record["messages"]
            assert (message["purpose"], message["to_number"], message["payload"]["template"]) == ("documents", NUMBER, "call_documents")
            assert message["payload"]["context"]["flow"] == "send_documents"
            assert await call.events("documents_link_sent") == [{"by": "intent"}]
            assert call.state is S.QUEUED

    run(go)


@pytest.mark.parametrize("consent_required, sent", [(False, True), (True, False)])
def test_the_agent_can_send_the_documents_link_during_the_call(db, consent_required, sent):
    async def go():
        async with calling(db, settings={**queue(), "whatsapp.consent.required": consent_required}) as call:
            await queued(call)
            call.phones.answer(ANA)
            await call.settle()
            await call.post(DocumentsRequested("ana"))
            await call.post(DocumentsRequested("ana"))
            purposes = [m["purpose"] for m in (await call.record())["messages"]]
            skipped = [e["reason"] for e in await call.events("documents_link_skipped")]
            if sent:
                assert purposes == ["documents"] and skipped == ["already sent on this call"]
            else:
                assert purposes == [] and skipped == ["no WhatsApp consent on record"] * 2
            assert call.state is S.CONNECTED

    run(go)


def test_a_waiting_caller_hears_their_place_and_expected_wait_between_the_hold_music(db):
    async def go():
        # Real time between announcements; the estimate comes from the fake clock's history.
        settings = queue(agents=[], offer={"enabled": False}, announce_interval_s=0.05)
        async with calling(db, settings=settings) as call:
            await queued(call)
            await call.until(lambda: bool(call.telephony.prompts) and call.telephony.prompts[-1].startswith("es/")
                             and (db.parent / "announcements" / call.telephony.prompts[-1]).with_suffix(".wav").is_file())
            (said, *_) = await call.events("announced")
            assert said == {"position": 0, "estimated_wait_s": None, "text": "Eres la siguiente persona en ser atendida."}
            await call.prompt_ends()
            assert call.prompts[-1] == "hold_music"

    run(go)


@pytest.mark.parametrize("status, outcome", [(200, "transferred"), (486, None)])
def test_a_refer_queue_transfers_the_caller_to_the_free_agent(db, status, outcome):
    async def go():
        async with calling(db, settings=queue(connect="refer", refer_busy_s=100, wrap_up_s=5)) as call:
            await queued(call)
            (transfer,) = [c for c in call.telephony.commands if c[0] == "transfer"]
            assert transfer[1] == ANA and transfer[2][QUEUE_HEADER] == "general" and call.phones.legs == []
            await call.transfer_reports(100, final=False)
            await call.transfer_reports(status)
            agent = call.queue.agents["ana"]
            if outcome:  # the caller is with Ana, the node's leg ends; Ana counts as busy for refer_busy_s
                assert (await call.ended())["outcome"] == outcome
                assert agent.state.value == "on_call"
                call.timers.run_due(advance=100)
                assert agent.state.value == "wrap_up"
                (wait,) = await call.store.queue.waits()
                assert wait["outcome"] == "served"
            else:  # Ana's phone was busy: the caller keeps their place and the music
                assert call.state is S.QUEUED and call.prompts[-1] == "hold_music"
                assert (agent.state.value, agent.last_outcome) == ("wrap_up", "busy")

    run(go)


@pytest.mark.parametrize("template, what", [("call_recovery", "recovery"), ("call_documents", "documents link")])
def test_a_template_meta_paused_is_not_used_for_recoveries_or_documents(db, template, what):
    async def go():
        account = fresh_account()
        account.record(account_event("message_template_status_update", template_status("PAUSED", name=template, language="es")))
        settings = {**queue(agents=[], offer={"enabled": False}), "routing.routes": {"update_details": "voice"},
                    "whatsapp.consent.required": False}
        async with calling(db, settings=settings, whatsapp=account) as call:
            await queued(call, "Quiero actualizar mis datos", "update_details")
            call.clock.advance(60)
            await call.hang_up()
            record = await call.ended()
            paused = f"WhatsApp template {template} (es) is paused"
            skipped = [e["data"]["reason"] for e in record["events"] if e["type"] in ("documents_link_skipped", "recovery_not_offered")]
            assert skipped == [paused] and [m["purpose"] for m in record["messages"]] == [
                "recovery" if what == "documents link" else "documents"]

    run(go)


def test_hanging_up_in_the_queue_is_an_abandon(db):
    async def go():
        async with calling(db) as call:
            await queued(call)
            call.clock.advance(151)
            await call.hang_up()
            record = await call.ended()
            assert record["outcome"] == "abandoned"
            (wait,) = await call.store.queue.waits()
            assert wait["outcome"] == "abandoned" and call.phones.hangups == ["leg-1"]  # the ringing agent is cancelled

    run(go)


def test_an_abandon_in_the_queue_schedules_the_recovery_with_the_calls_context(db):
    async def go():
        settings = queue(recovery={"delay_s": 120})
        async with calling(db, settings={**settings, "whatsapp.consent.required": False}) as call:
            await queued(call)
            call.clock.advance(151)
            await call.hang_up()
            record = await call.ended()
            (message,) = record["messages"]
            assert (message["purpose"], message["to_number"], message["status"]) == ("recovery", NUMBER, "pending")
            assert message["payload"]["template"] == "call_recovery"
            context = message["payload"]["context"]
            assert (context["intent"], context["transcript"], context["waited_s"]) == ("billing_dispute", BILL, 151.0)
            (scheduled,) = await call.events("recovery_scheduled")
            assert scheduled["to"] == NUMBER

    run(go)


def test_a_caller_cut_off_by_the_gateway_stopping_is_interrupted_and_recovered_too(db):
    async def go():
        async with calling(db, settings={**queue(), "whatsapp.consent.required": False}) as call:
            await queued(call)
            call.clock.advance(40)
            await call.gateway_stops()
            record = await call.ended()
            assert record["outcome"] == "interrupted"
            assert [m["purpose"] for m in record["messages"]] == ["recovery"]
            (wait,) = await call.store.queue.waits()
            assert wait["outcome"] == "interrupted"

    run(go)


@pytest.mark.parametrize("waited_s, consent_required, why", [
    (5, False, "hung up after 5 s < 10 s"),
    (60, True, "no WhatsApp consent on record"),
])
def test_a_short_abandon_or_one_without_consent_gets_no_recovery(db, waited_s, consent_required, why):
    async def go():
        settings = {**queue(), "whatsapp.consent.required": consent_required}
        async with calling(db, settings=settings) as call:
            await queued(call)
            call.clock.advance(waited_s)
            await call.hang_up()
            record = await call.ended()
            assert record["messages"] == []
            assert await call.events("recovery_not_offered") == [{"reason": why}]

    run(go)


def test_hanging_up_during_the_offer_is_an_abandon_too(db):
    async def go():
        async with calling(db, settings=queue(agents=[])) as call:
            await queued(call)
            await wait_offer(call)
            await call.hang_up()
            assert (await call.ended())["outcome"] == "abandoned"

    run(go)


@pytest.mark.parametrize("during_offer", [False, True])
def test_past_the_queues_max_wait_the_caller_hears_goodbye(db, during_offer):
    async def go():
        # Real seconds: long enough for the offer to come first (a loaded CI machine included).
        settings = queue(agents=[], max_wait_s=1.0) if during_offer else queue(agents=[], max_wait_s=0.05, offer={"enabled": False})
        async with calling(db, settings=settings) as call:
            await queued(call)
            if during_offer:
                await wait_offer(call)
            await call.until(lambda: call.state is S.ACTING, timeout_s=5)
            assert call.prompts[-1] == "goodbye"
            await call.prompt_ends()
            record = await call.ended()
            assert record["outcome"] == "unserved"
            (wait,) = await call.store.queue.waits()
            assert wait["outcome"] == "timeout"

    run(go)


def test_caller_hanging_up_on_the_agent_ends_the_agents_leg(db):
    async def go():
        async with calling(db) as call:
            await queued(call)
            leg = call.phones.answer(ANA)
            await call.settle()
            await call.hang_up()
            assert (await call.ended())["outcome"] == "served"
            assert call.phones.leg(leg.leg_id).state == "ended"

    run(go)


def test_these_tests_take_every_queue_transition_in_the_table(request):
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets if {a, b} & QUEUE_STATES}
    missing = LOG.untaken(request, table)
    assert not missing, f"no test takes {missing}"
