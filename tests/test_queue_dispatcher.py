"""The call distributor (``gateway.queue.dispatcher``): who is rung, who is connected, who keeps their place.

Real store (SQLite) and journal; the agents' phones and the timers are stand-ins driven by each test
(``tests/support/queue.py``), and time is a fake clock.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.queue.agents import AgentState
from gateway.queue.dispatcher import (
    PRIORITY_HEADER,
    QUEUE_HEADER,
    WAIT_HEADER,
    AgentConnected,
    AgentLeft,
    AgentRinging,
    Dispatcher,
    JoinRequest,
)
from gateway.queue.journal import QueueJournal
from gateway.store import NewCall, Store
from tests.support.queue import FakeAgentPhones, FakeTimers
from tests.support.session import FakeClock

ANA, BETO = "sip:ana@agents.test", "sip:beto@agents.test"
NOON = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)  # 12:00 in Mexico City, a Tuesday


class Member:
    def __init__(self) -> None:
        self.got: list[object] = []

    def post(self, item: object) -> None:
        self.got.append(item)


class Bench:
    def __init__(self, store: Store, settings: dict[str, Any], draw: float = 0.5) -> None:
        self.store = store
        self.clock = FakeClock()
        self.timers = FakeTimers(self.clock)
        self.phones = FakeAgentPhones()
        self.journal = QueueJournal()
        self.journal.start()
        config = load_settings(environ={}, overrides=settings)
        self.dispatcher = Dispatcher(
            config.queues, telephony=self.phones, store=store, journal=self.journal, schedule=self.timers,
            clock=self.clock, wall=lambda: NOON, draw=lambda: draw,
        )
        self.phones.deliver = self.dispatcher.on_leg_event
        self.members: dict[str, Member] = {}

    async def caller(self, call_id: str, *, queue: str = "general", priority: int = 0, intent: str = "billing_dispute") -> Member:
        await self.store.calls.create(NewCall(
            call_id=call_id, sip_call_id=f"{call_id}@test", from_uri="sip:+525555550123@carrier.test",
            to_uri="sip:es@puente.test", line="es", caller_number="+525555550123", remote_address="192.0.2.1",
            asr_model="m", nlu_version="v",
        ), "queued")
        member = self.members[call_id] = Member()
        self.dispatcher.join(JoinRequest(
            call_id=call_id, queue=queue, intent=intent, language="es", priority=priority,
            caller_number="+525555550123", reason=f"{intent} routes to voice", transcript="me cobraron dos veces",
            headers={"X-Puente-Call-Id": call_id},
        ), member)
        return member

    def agent(self, agent_id: str) -> AgentState:
        return self.dispatcher.agents[agent_id].state

    async def waits(self) -> dict[str, dict[str, Any]]:
        await self.journal.flush()
        return {w["call_id"]: w for w in await self.store.queue.waits()}

    async def events(self, call_id: str, type_: str) -> list[dict[str, Any]]:
        await self.journal.flush()
        record = await self.store.calls.get(call_id)
        return [e["data"] for e in record["events"] if e["type"] == type_]


def queues(*agents: tuple[str, str], **options: Any) -> dict[str, Any]:
    return {"queues": {"general": {"agents": [{"id": i, "uri": u} for i, u in agents], "wrap_up_s": 5,
                                   "ring_timeout_s": 10, **options}}}


@pytest.fixture
def bench_for(tmp_path):
    stores: list[Store] = []

    def make(settings: dict[str, Any], **options: Any) -> Bench:
        store = Store(f"sqlite:///{tmp_path / f'puente-{len(stores)}.db'}")
        stores.append(store)
        return Bench(store, settings, **options)

    yield make
    for store in stores:
        store.close()


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_free_agent_is_rung_at_once_with_the_calls_context_and_wait_in_the_invite(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        bench.clock.advance(0)
        member = await bench.caller("c1", priority=3)
        leg = bench.phones.ringing(ANA)
        assert leg.headers == {"X-Puente-Call-Id": "c1", WAIT_HEADER: "0", QUEUE_HEADER: "general", PRIORITY_HEADER: "3"}
        assert bench.agent("ana") is AgentState.RINGING and member.got == [AgentRinging("ana")]
        bench.phones.answer(ANA)
        assert bench.phones.leg(leg.leg_id).bridged_to == "c1"
        assert bench.agent("ana") is AgentState.ON_CALL
        assert member.got[-1] == AgentConnected("ana", leg.leg_id)
        wait = (await bench.waits())["c1"]
        assert (wait["state"], wait["agent_id"], wait["answered_at"] is not None) == ("connected", "ana", True)
        assert await bench.events("c1", "agent_connected") == [{"agent": "ana", "waited_s": 0.0}]

    run(go)


def test_callers_are_served_by_priority_then_by_arrival(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        await bench.caller("first")  # rings ana at once
        bench.clock.advance(1)
        await bench.caller("second")
        bench.clock.advance(1)
        await bench.caller("third")
        bench.clock.advance(1)
        await bench.caller("urgent", priority=10, intent="fraud_or_loss")
        assert [bench.dispatcher.position(c) for c in ("urgent", "second", "third")] == [0, 1, 2]
        served = []
        for _ in range(4):
            leg = bench.phones.answer(ANA)
            served.append(bench.phones.leg(leg.leg_id).bridged_to)
            bench.phones.agent_hangs_up(leg.leg_id)
            bench.timers.run_due(advance=5)  # wrap-up
        assert served == ["first", "urgent", "second", "third"]

    run(go)


def test_an_agent_who_does_not_answer_is_skipped_and_the_caller_keeps_their_place(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA), ("beto", BETO)))
        await bench.caller("c1")  # ana (longest idle) rings for c1, beto for c2
        bench.clock.advance(1)
        await bench.caller("c2")
        bench.clock.advance(1)
        await bench.caller("c3")
        bench.timers.run_due(advance=10)  # neither answers: both timed out and cancelled
        assert bench.phones.hangups == ["leg-1", "leg-2"]
        assert bench.agent("ana") is AgentState.WRAP_UP and bench.agent("beto") is AgentState.WRAP_UP
        assert [bench.dispatcher.position(c) for c in ("c1", "c2", "c3")] == [0, 1, 2]
        assert await bench.events("c1", "agent_missed") == [{"agent": "ana", "outcome": "no answer", "sip_status": 487}]
        bench.timers.run_due(advance=5)  # the pause is over: each is rung for a caller the other missed
        assert {leg.uri: leg.headers["X-Puente-Call-Id"] for leg in bench.phones.legs if leg.state == "ringing"} == {
            BETO: "c1", ANA: "c2",
        }
        assert bench.dispatcher.agents["ana"].missed == 1

    run(go)


def test_a_busy_or_refusing_agent_passes_the_caller_on_and_three_misses_take_the_agent_offline(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        member = await bench.caller("c1")
        for status in (486, 603, 486):
            bench.phones.refuse(status)
            bench.timers.run_due(advance=5)
        assert bench.agent("ana") is AgentState.OFFLINE
        assert bench.dispatcher.agents["ana"].reason == "3 calls in a row not answered (busy)"
        assert [e["outcome"] for e in await bench.events("c1", "agent_missed")] == ["busy", "refused", "busy"]
        assert bench.dispatcher.position("c1") == 0 and member.got.count(AgentRinging("ana")) == 3
        bench.dispatcher.set_online("ana", True)  # the supervisor puts her back
        assert bench.phones.ringing(ANA).headers["X-Puente-Call-Id"] == "c1"
        await bench.journal.flush()
        assert (await bench.store.queue.agents())[0]["state"] == "ringing"

    run(go)


def test_a_caller_who_hangs_up_while_the_agent_rings_cancels_the_ring_and_frees_the_agent(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        await bench.caller("c1")
        bench.clock.advance(1)
        await bench.caller("c2")
        bench.clock.advance(30)
        bench.dispatcher.leave("c1", "abandoned")
        assert bench.phones.hangups == ["leg-1"]
        assert bench.phones.ringing(ANA).headers["X-Puente-Call-Id"] == "c2"  # not the agent's fault: no pause
        waits = await bench.waits()
        assert (waits["c1"]["outcome"], waits["c2"]["state"]) == ("abandoned", "ringing")
        assert bench.dispatcher.agents["ana"].missed == 0

    run(go)


def test_the_agent_hanging_up_ends_the_conversation_then_wrap_up_then_the_next_caller(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        member = await bench.caller("c1")
        await bench.caller("c2")
        leg = bench.phones.answer(ANA)
        bench.clock.advance(120)
        bench.phones.agent_hangs_up(leg.leg_id)
        assert member.got[-1] == AgentLeft("ana") and bench.agent("ana") is AgentState.WRAP_UP
        bench.dispatcher.leave("c1", "abandoned")  # the session then hangs up the caller: still served
        assert (await bench.waits())["c1"]["outcome"] == "served"
        assert bench.phones.legs[-1].leg_id == leg.leg_id  # nobody rung during wrap-up
        bench.timers.run_due(advance=5)
        assert bench.phones.ringing(ANA).headers["X-Puente-Call-Id"] == "c2"

    run(go)


def test_the_caller_hanging_up_on_the_agent_hangs_up_the_agents_leg(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        await bench.caller("c1")
        leg = bench.phones.answer(ANA)
        bench.dispatcher.leave("c1", "abandoned")
        assert bench.phones.hangups == [leg.leg_id] and bench.agent("ana") is AgentState.WRAP_UP
        assert (await bench.waits())["c1"]["outcome"] == "served"

    run(go)


def test_an_agent_in_two_queues_takes_the_highest_priority_caller_of_either(bench_for):
    async def go():
        settings = {"queues": {
            "general": {"agents": [{"id": "ana", "uri": ANA}]},
            "fraud": {"agents": [{"id": "ana", "uri": ANA}]},
        }}
        bench = bench_for(settings)
        bench.dispatcher.set_online("ana", False)
        await bench.caller("billing")
        bench.clock.advance(5)
        await bench.caller("stolen_card", queue="fraud", priority=10, intent="fraud_or_loss")
        bench.dispatcher.set_online("ana", True)
        assert bench.phones.ringing(ANA).headers["X-Puente-Call-Id"] == "stolen_card"

    run(go)


def test_the_holdout_is_drawn_at_join_and_never_offered(bench_for):
    async def go():
        bench = bench_for(queues(sla_s=30, offer={"holdout_share": 0.6}), draw=0.5)
        await bench.caller("held_out")
        bench.clock.advance(300)
        assert bench.dispatcher.offer_reason("held_out") is None
        assert (await bench.waits())["held_out"]["holdout"] is True

    run(go)


def test_an_offer_is_due_once_the_wait_passes_the_sla_and_not_again_before_the_interval(bench_for):
    async def go():
        bench = bench_for(queues(sla_s=30, offer={"interval_s": 60, "max_offers": 2}))
        await bench.caller("c1")  # no agents staffed: the estimate is unbounded
        assert bench.dispatcher.offer_reason("c1") == "estimated wait inf s > SLA 30 s"
        bench.dispatcher.offered("c1")
        bench.clock.advance(59)
        assert bench.dispatcher.offer_reason("c1") is None
        bench.clock.advance(1)
        assert bench.dispatcher.offer_reason("c1") == "waited 60 s > SLA 30 s"
        bench.dispatcher.offered("c1")
        bench.clock.advance(600)
        assert bench.dispatcher.offer_reason("c1") is None  # max_offers reached
        assert (await bench.waits())["c1"]["offers"] == 2

    run(go)


def test_offers_follow_business_hours_and_intents(bench_for):
    async def go():
        closed = bench_for(queues(sla_s=30, offer={"hours": ["mon-fri 08:00-11:00"]}))
        await closed.caller("c1")
        assert closed.dispatcher.offer_reason("c1") is None  # 12:00 in Mexico City
        assert closed.dispatcher.snapshot()[0]["offers_on"] is False

    async def go_intents():
        bench = bench_for(queues(sla_s=30, offer={"intents": ["complaint"]}))
        await bench.caller("c1", intent="billing_dispute")
        assert bench.dispatcher.offer_reason("c1") is None

    run(go)
    run(go_intents)


def test_the_snapshot_lists_callers_by_position_agents_by_state_and_the_estimate(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA), sla_s=45))
        await bench.caller("c1")
        bench.clock.advance(10)
        await bench.caller("c2")
        bench.phones.answer(ANA)
        (general,) = bench.dispatcher.snapshot()
        assert (general["queue"], general["sla_s"], general["offers_on"]) == ("general", 45.0, True)
        assert [(w["call_id"], w["state"], w["position"]) for w in general["waiting"]] == [
            ("c1", "connected", None), ("c2", "waiting", 0),
        ]
        assert general["agents_by_state"] == {"available": 0, "ringing": 0, "on_call": 1, "wrap_up": 0, "offline": 0}
        assert general["estimate_method"] == "erlang_a" and general["estimated_wait_s"] > 0

    run(go)


def test_an_agent_who_registers_is_rung_at_the_registered_contact_and_goes_offline_when_it_ends(bench_for):
    async def go():
        bench = bench_for({"queues": {"general": {"agents": [{"id": "ana", "password": "s3cret"}], "wrap_up_s": 5}}})
        assert (bench.agent("ana"), bench.dispatcher.agents["ana"].reason) == (AgentState.OFFLINE, "not registered")
        await bench.caller("c1")
        assert bench.phones.legs == []  # nobody to ring yet
        bench.dispatcher.registered("ana", "sip:ana@192.0.2.7:5062")
        leg = bench.phones.answer("sip:ana@192.0.2.7:5062")
        bench.dispatcher.registered("ana", None)  # the phone unregisters mid-call: the call goes on
        assert bench.agent("ana") is AgentState.ON_CALL
        bench.phones.agent_hangs_up(leg.leg_id)
        bench.timers.run_due(advance=5)
        assert (bench.agent("ana"), bench.dispatcher.agents["ana"].reason) == (AgentState.OFFLINE, "not registered")

    run(go)


def test_an_agent_logged_out_during_a_call_goes_offline_when_it_ends(bench_for):
    async def go():
        bench = bench_for(queues(("ana", ANA)))
        await bench.caller("c1")
        await bench.caller("c2")
        leg = bench.phones.answer(ANA)
        bench.dispatcher.set_online("ana", False)
        assert bench.agent("ana") is AgentState.ON_CALL
        bench.phones.agent_hangs_up(leg.leg_id)
        bench.timers.run_due(advance=5)
        assert (bench.agent("ana"), bench.dispatcher.agents["ana"].reason) == (AgentState.OFFLINE, "logged out")
        assert len(bench.phones.legs) == 1  # c2 still waits for someone else

    run(go)
