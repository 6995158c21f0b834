"""The automatic call distributor: waiting callers, agents, and who is connected to whom.

Runs on the event loop, synchronously: a session joins its caller (``join``) and leaves
(``leave``); the SIP edge's events for the agent legs come in through ``on_leg_event``; timers
(ring timeout, wrap-up) come from the injected ``schedule``. When an agent is free, the waiting
caller with the highest priority, then the longest wait, among the agent's queues is connected:
the agent's phone is called with the context in X-headers and, once answered, the two calls are
bridged in the conference bridge. A missed agent (no answer, busy, refused) gets a short pause
and the caller keeps their place for the next agent. Every change is journalled to the store.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.config import QueueSettings
from gateway.queue.agents import MAX_MISSED_IN_A_ROW, Agent, AgentState
from gateway.queue.history import QueueHistory, Staffing
from gateway.queue.journal import QueueJournal
from gateway.queue.offers import OfferPolicy
from gateway.queue.tickets import Ticket, TicketState
from gateway.store import QueueJoin, Store, utcnow
from sip import CallEnded, CallMediaReady

log = logging.getLogger(__name__)

#: Headers the dispatcher adds to the agent's INVITE, beside the call's own context headers.
WAIT_HEADER = "X-Puente-Wait-S"
QUEUE_HEADER = "X-Puente-Queue"
PRIORITY_HEADER = "X-Puente-Priority"

#: SIP answers of an agent's phone, as the agent's ``last_outcome``.
_MISSED = {486: "busy", 600: "busy", 603: "refused", 480: "unavailable", 404: "not found", 408: "no answer",
           487: "no answer"}


class AgentTelephony(Protocol):
    """What the dispatcher asks of the SIP edge (``sip.SipEndpoint`` implements it)."""

    def dial(self, target_uri: str, headers: dict[str, str]) -> str: ...
    def bridge(self, a_call_id: str, b_call_id: str) -> None: ...
    def hangup(self, call_id: str, status_code: int | None = None) -> None: ...


class Member(Protocol):
    """A waiting caller's session: told when an agent rings, answers and hangs up."""

    def post(self, item: object) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


@dataclass(frozen=True)
class JoinRequest:
    call_id: str
    queue: str
    intent: str | None
    language: str
    priority: int
    caller_number: str | None
    reason: str
    transcript: str
    headers: dict[str, str]  # the call's context headers, carried to the agent's phone


@dataclass(frozen=True)
class AgentRinging:
    agent_id: str


@dataclass(frozen=True)
class AgentConnected:
    agent_id: str
    leg_id: str


@dataclass(frozen=True)
class TransferToAgent:
    """A queue with ``connect: refer``: transfer the caller to the agent's phone (REFER with ``headers``)."""

    agent_id: str
    uri: str
    headers: dict[str, str]


@dataclass(frozen=True)
class AgentLeft:
    """The agent hung up on a connected caller."""

    agent_id: str


class Dispatcher:
    def __init__(
        self,
        queues: Mapping[str, QueueSettings],
        *,
        telephony: AgentTelephony,
        store: Store,
        journal: QueueJournal,
        schedule: Schedule,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.queues = dict(queues)
        self._telephony = telephony
        self._store = store
        self._journal = journal
        self._schedule = schedule
        self._clock = clock
        self._wall = wall
        self._draw = draw
        self.policies = {name: OfferPolicy(q.offer, q.sla_s) for name, q in self.queues.items()}
        self._history = {
            name: QueueHistory(default_handle_time_s=q.default_handle_time_s, default_patience_s=q.default_patience_s)
            for name, q in self.queues.items()
        }
        self.agents: dict[str, Agent] = {}
        for name, queue in self.queues.items():
            for configured in queue.agents:
                agent = self.agents.get(configured.id)
                if agent is None:
                    agent = self.agents[configured.id] = Agent(
                        configured.id, configured.uri, (name,), since=clock(), idle_since=clock(),
                        registers=configured.uri is None,
                    )
                    if agent.registers:  # offline until the phone registers
                        agent.state, agent.reason = AgentState.OFFLINE, "not registered"
                else:
                    agent.queues = (*agent.queues, name)
        self._tickets: dict[str, Ticket] = {}
        self._members: dict[str, Member] = {}
        self._headers: dict[str, dict[str, str]] = {}
        self._legs: dict[str, str] = {}  # leg id → agent id, until the leg ends
        self._timers: dict[str, Cancellable] = {}  # agent id → ring timeout or wrap-up
        self._timed_out: set[str] = set()  # legs we cancelled because the agent did not answer
        self._answered: dict[str, tuple[float, str]] = {}  # leg id → when the agent answered, and in which queue
        self._closed = False

    def start(self) -> None:
        for agent in self.agents.values():
            self._journal_agent(agent)

    def close(self) -> None:
        """The gateway is stopping: nobody is rung any more (the calls are being hung up)."""
        self._closed = True
        for agent_id in list(self._timers):
            self._cancel_timer(agent_id)

    # --- the callers' side ------------------------------------------------------------------

    def join(self, request: JoinRequest, member: Member) -> Ticket:
        queue = self.queues[request.queue]
        now = self._clock()
        ticket = Ticket(
            call_id=request.call_id, queue=request.queue, intent=request.intent, language=request.language,
            priority=request.priority, joined=now, joined_at=self._wall().isoformat(),
            caller_number=request.caller_number, reason=request.reason, transcript=request.transcript,
            holdout=queue.offer.holdout_share > 0 and self._draw() < queue.offer.holdout_share,
        )
        self._tickets[ticket.call_id] = ticket
        self._members[ticket.call_id] = member
        self._headers[ticket.call_id] = dict(request.headers)
        self._history[ticket.queue].arrived(now)
        entry = QueueJoin(
            call_id=ticket.call_id, queue=ticket.queue, intent=ticket.intent, language=ticket.language,
            priority=ticket.priority, caller_number=ticket.caller_number, reason=ticket.reason,
            transcript=ticket.transcript, holdout=ticket.holdout, joined_at=self._wall(),
        )
        self._journal.write(lambda: self._store.queue.join(entry))
        self._dispatch()
        return ticket

    def leave(self, call_id: str, outcome: str) -> None:
        """The caller stopped waiting (or their conversation with the agent ended on their side)."""
        ticket = self._tickets.pop(call_id, None)
        self._members.pop(call_id, None)
        self._headers.pop(call_id, None)
        if ticket is None:
            return
        now = self._clock()
        if ticket.state is not TicketState.CONNECTED:
            self._history[ticket.queue].left(ticket.waited(now), abandoned=True)
        agent = self.agents.get(ticket.agent_id or "")
        if agent is not None and agent.call_id == call_id and agent.leg_id is not None:
            # Ringing: cancel; connected: hang up. The agent moves on when the leg has ended.
            agent.call_id = None
            self._telephony.hangup(agent.leg_id)
        elif agent is not None and agent.call_id == call_id and agent.state is AgentState.RINGING:
            # A REFER in progress when the caller went: the agent is free again.
            self._move(agent, AgentState.AVAILABLE)
            self._dispatch()
        final = "served" if ticket.state is TicketState.CONNECTED else outcome
        self._journal.write(lambda: self._store.queue.leave(call_id, outcome=final, at=self._wall()))

    def offered(self, call_id: str) -> None:
        """The caller heard the WhatsApp offer."""
        ticket = self._tickets.get(call_id)
        if ticket is not None:
            ticket.offers += 1
            ticket.last_offer = self._clock()
            offers = ticket.offers
            self._journal.write(lambda: self._store.queue.update(call_id, at=self._wall(), offers=offers))

    def declined(self, call_id: str) -> None:
        """The caller said no to the offer: they wait, and are not asked again."""
        ticket = self._tickets.get(call_id)
        if ticket is not None:
            ticket.declined = True

    def offer_reason(self, call_id: str) -> str | None:
        """Why this caller should be offered WhatsApp now (their queue's policy), or None."""
        ticket = self._tickets.get(call_id)
        if ticket is None:
            return None
        estimate = self.estimate(call_id)
        return self.policies[ticket.queue].reason(
            ticket, estimated_wait_s=estimate if estimate is not None else 0.0, now=self._clock(), wall=self._wall(),
        )

    def position(self, call_id: str) -> int | None:
        """Callers ahead of this one in its queue (0: next), or None when it is not waiting."""
        ticket = self._tickets.get(call_id)
        if ticket is None or ticket.state is TicketState.CONNECTED:
            return None
        if ticket.state is TicketState.RINGING:
            return 0
        # Callers whose agent is ringing are as good as served: only those still waiting are ahead.
        return sum(1 for other in self._waiting(ticket.queue)
                   if other.state is TicketState.WAITING and other.order_key() < ticket.order_key())

    def estimate(self, call_id: str) -> float | None:
        """Expected seconds until an agent answers this caller."""
        ahead = self.position(call_id)
        if ahead is None:
            return None
        queue = self._tickets[call_id].queue
        return self._history[queue].estimate(self._clock(), self._staffing(queue), ahead).seconds

    # --- the agents' side -------------------------------------------------------------------

    def transfer_ended(self, call_id: str, status_code: int) -> None:
        """The final answer to the REFER of a ``connect: refer`` queue: 2xx, the caller is with the agent and
        leaves the node (the agent counts as on the call for ``refer_busy_s``); else the agent missed them."""
        ticket = self._tickets.get(call_id)
        agent = self.agents.get(ticket.agent_id or "") if ticket is not None else None
        if ticket is None or agent is None or agent.state is not AgentState.RINGING or agent.call_id != call_id:
            return
        if not 200 <= status_code < 300:
            self._missed(agent, ticket, _MISSED.get(status_code, f"failed ({status_code})"), status_code)
            return
        now, queue = self._clock(), self.queues[ticket.queue]
        self._move(agent, AgentState.ON_CALL, call_id=call_id)
        agent.answered, agent.missed_in_a_row, agent.last_outcome = agent.answered + 1, 0, "answered"
        ticket.state = TicketState.CONNECTED
        self._history[ticket.queue].left(ticket.waited(now), abandoned=False)
        self._history[ticket.queue].handled(queue.refer_busy_s + queue.wrap_up_s)
        self._event(call_id, "agent_connected", agent=agent.id, waited_s=round(ticket.waited(now), 1), via="refer")
        wall = self._wall()
        self._journal.write(lambda: self._store.queue.update(call_id, at=wall, state="connected", answered_at=wall))
        self._timers[agent.id] = self._schedule(queue.refer_busy_s, lambda: self._wrap_up(agent, queue.wrap_up_s, "transferred"))

    def handles(self, call_id: str) -> bool:
        """Whether ``call_id`` is one of our legs to an agent."""
        return call_id in self._legs

    def on_leg_event(self, event: object) -> None:
        match event:
            case CallMediaReady(call_id=leg):
                self._answered_leg(leg)
            case CallEnded(call_id=leg, sip_status=status):
                self._leg_ended(leg, status)

    def registered(self, agent_id: str, contact: str | None) -> None:
        """The agent's phone registered at ``contact``, or its registration ended (None)."""
        agent = self.agents.get(agent_id)
        if agent is None or not agent.registers:
            return
        agent.uri = contact
        if contact is not None and agent.state is AgentState.OFFLINE and agent.reason == "not registered":
            self.set_online(agent_id, True)
        elif contact is None and agent.state in (AgentState.AVAILABLE, AgentState.WRAP_UP):
            self._cancel_timer(agent.id)
            agent.reason = "not registered"
            self._move(agent, AgentState.OFFLINE)
        # Ringing or on a call: the call goes on; the agent is not rung again while unregistered.

    def set_online(self, agent_id: str, online: bool) -> Agent:
        """Log an agent in or out (an agent on a call goes offline when it ends)."""
        agent = self.agents[agent_id]
        if online and agent.state is AgentState.OFFLINE and (agent.uri is not None or not agent.registers):
            agent.missed_in_a_row, agent.reason = 0, None
            self._move(agent, AgentState.AVAILABLE)
            self._dispatch()
        elif not online and agent.state in (AgentState.AVAILABLE, AgentState.WRAP_UP):
            self._cancel_timer(agent.id)
            agent.reason = "logged out"
            self._move(agent, AgentState.OFFLINE)
        elif not online and agent.state is not AgentState.OFFLINE:
            agent.reason = "logged out"  # ringing or on a call: offline once it is over (see _wrap_up)
        return agent

    # --- status -----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per queue: callers by position, agents by state, the wait a new caller can expect."""
        now, wall = self._clock(), self._wall()
        out = []
        for name, queue in self.queues.items():
            waiting = sorted(self._waiting(name) + self._connected(name), key=Ticket.order_key)
            queued = [t for t in waiting if t.state is not TicketState.CONNECTED]
            staffing = self._staffing(name)
            estimate = self._history[name].estimate(now, staffing, len(queued))
            agents = [a for a in self.agents.values() if a.serves(name)]
            out.append({
                "queue": name, "sla_s": queue.sla_s, "offers_on": self.policies[name].open(wall),
                "holdout_share": queue.offer.holdout_share,
                "estimated_wait_s": round(estimate.seconds, 1), "estimate_method": estimate.method,
                "waiting": [t.as_dict(now, queued.index(t) if t in queued else None) for t in waiting],
                "agents": [a.as_dict(now) for a in agents],
                "agents_by_state": {state.value: sum(1 for a in agents if a.state is state) for state in AgentState},
            })
        return out

    # --- internals --------------------------------------------------------------------------

    def _waiting(self, queue: str) -> list[Ticket]:
        return [t for t in self._tickets.values() if t.queue == queue and t.state is not TicketState.CONNECTED]

    def _connected(self, queue: str) -> list[Ticket]:
        return [t for t in self._tickets.values() if t.queue == queue and t.state is TicketState.CONNECTED]

    def _staffing(self, queue: str) -> Staffing:
        serving = [a for a in self.agents.values() if a.serves(queue) and a.state is not AgentState.OFFLINE]
        return Staffing(staffed=len(serving), free=sum(1 for a in serving if a.state is AgentState.AVAILABLE))

    def _dispatch(self) -> None:
        """Ring free agents, longest idle first, each for the best caller it may serve."""
        if self._closed:
            return
        free = sorted((a for a in self.agents.values() if a.state is AgentState.AVAILABLE and a.uri is not None),
                      key=lambda a: a.idle_since)
        for agent in free:
            candidates = [
                t for t in self._tickets.values()
                if t.state is TicketState.WAITING and agent.serves(t.queue) and agent.id not in t.skipped_by
            ]
            if candidates:
                self._ring(agent, min(candidates, key=Ticket.order_key))

    def _ring(self, agent: Agent, ticket: Ticket) -> None:
        waited = ticket.waited(self._clock())
        headers = {
            **self._headers[ticket.call_id], WAIT_HEADER: str(round(waited)), QUEUE_HEADER: ticket.queue,
            PRIORITY_HEADER: str(ticket.priority),
        }
        self._move(agent, AgentState.RINGING, call_id=ticket.call_id)
        ticket.state, ticket.agent_id = TicketState.RINGING, agent.id
        assert agent.uri is not None  # _dispatch rings only agents with a phone
        self._event(ticket.call_id, "agent_ringing", agent=agent.id, waited_s=round(waited, 1))
        self._journal.write(lambda: self._store.queue.update(ticket.call_id, at=self._wall(), state="ringing", agent_id=agent.id))
        if self.queues[ticket.queue].connect == "refer":
            # The caller's side calls the agent; the REFER's outcome comes back through ``transfer_ended``.
            self._members[ticket.call_id].post(TransferToAgent(agent.id, agent.uri, headers))
            return
        leg = self._telephony.dial(agent.uri, headers)
        agent.leg_id = leg
        self._legs[leg] = agent.id
        self._timers[agent.id] = self._schedule(
            self.queues[ticket.queue].ring_timeout_s, lambda: self._ring_timeout(agent.id, leg)
        )
        self._members[ticket.call_id].post(AgentRinging(agent.id))

    def _ring_timeout(self, agent_id: str, leg: str) -> None:
        agent = self.agents[agent_id]
        if agent.leg_id == leg and agent.state is AgentState.RINGING:
            self._timed_out.add(leg)
            self._telephony.hangup(leg)  # a CANCEL; the leg's end moves the agent on

    def _answered_leg(self, leg: str) -> None:
        agent = self.agents.get(self._legs.get(leg, ""))
        if agent is None or agent.state is not AgentState.RINGING or agent.leg_id != leg:
            return
        self._cancel_timer(agent.id)
        ticket = self._tickets.get(agent.call_id or "")
        now = self._clock()
        self._move(agent, AgentState.ON_CALL, call_id=agent.call_id)
        agent.answered, agent.missed_in_a_row, agent.last_outcome = agent.answered + 1, 0, "answered"
        if ticket is None:  # the caller left while the phone rang, and the agent answered anyway
            self._answered[leg] = (now, agent.queues[0])
            self._telephony.hangup(leg)
            return
        self._answered[leg] = (now, ticket.queue)
        self._telephony.bridge(ticket.call_id, leg)
        ticket.state = TicketState.CONNECTED
        self._history[ticket.queue].left(ticket.waited(now), abandoned=False)
        self._event(ticket.call_id, "agent_connected", agent=agent.id, waited_s=round(ticket.waited(now), 1))
        wall = self._wall()
        self._journal.write(lambda: self._store.queue.update(ticket.call_id, at=wall, state="connected", answered_at=wall))
        self._members[ticket.call_id].post(AgentConnected(agent.id, leg))

    def _leg_ended(self, leg: str, status: int) -> None:
        agent = self.agents.get(self._legs.pop(leg, ""))
        timed_out = leg in self._timed_out
        self._timed_out.discard(leg)
        answered = self._answered.pop(leg, None)
        if agent is None or agent.leg_id != leg:
            return
        self._cancel_timer(agent.id)
        call_id = agent.call_id
        ticket = self._tickets.get(call_id or "")
        if answered is not None:  # a conversation ended (its caller may have hung up first)
            since, queue = answered
            wrap_up = self.queues[queue].wrap_up_s
            self._history[queue].handled(self._clock() - since + wrap_up)
            self._wrap_up(agent, wrap_up, "ended")
            if ticket is not None:  # the agent hung up first: the session ends the caller's call
                self._event(ticket.call_id, "agent_hung_up", agent=agent.id)
                self._members[ticket.call_id].post(AgentLeft(agent.id))
            return
        if call_id is None:  # we cancelled because the caller left: not the agent's doing
            agent.last_outcome = "cancelled"
            self._move(agent, AgentState.AVAILABLE)
            self._dispatch()
            return
        self._missed(agent, ticket, "no answer" if timed_out else _MISSED.get(status, f"failed ({status})"), status)

    def _missed(self, agent: Agent, ticket: Ticket | None, outcome: str, status: int) -> None:
        """The agent did not take the caller: a pause for the agent (offline after too many), and the caller
        keeps their place for the next agent."""
        queue = ticket.queue if ticket is not None else agent.queues[0]
        agent.missed, agent.missed_in_a_row, agent.last_outcome = agent.missed + 1, agent.missed_in_a_row + 1, outcome
        if ticket is not None:
            ticket.state, ticket.agent_id = TicketState.WAITING, None
            ticket.skipped_by.add(agent.id)
            serving = {a.id for a in self.agents.values() if a.serves(ticket.queue) and a.state is not AgentState.OFFLINE}
            if serving <= ticket.skipped_by:  # every agent missed this caller: try them all again
                ticket.skipped_by.clear()
            self._event(ticket.call_id, "agent_missed", agent=agent.id, outcome=outcome, sip_status=status)
            self._journal.write(lambda: self._store.queue.update(ticket.call_id, at=self._wall(), state="waiting", agent_id=None))
        if agent.missed_in_a_row >= MAX_MISSED_IN_A_ROW:
            agent.reason = f"{agent.missed_in_a_row} calls in a row not answered ({outcome})"
            log.warning("queue: agent %s taken offline: %s", agent.id, agent.reason)
            self._move(agent, AgentState.OFFLINE)
        else:
            self._wrap_up(agent, self.queues[queue].wrap_up_s, outcome)
        self._dispatch()

    def _wrap_up(self, agent: Agent, seconds: float, outcome: str) -> None:
        agent.last_outcome = outcome
        self._move(agent, AgentState.WRAP_UP)

        def done() -> None:
            self._timers.pop(agent.id, None)
            if agent.state is AgentState.WRAP_UP and (agent.uri is None or agent.reason == "logged out"):
                # The phone unregistered, or the agent logged out, during the call.
                agent.reason = agent.reason if agent.uri is not None else "not registered"
                self._move(agent, AgentState.OFFLINE)
            elif agent.state is AgentState.WRAP_UP:
                self._move(agent, AgentState.AVAILABLE)
                self._dispatch()

        self._timers[agent.id] = self._schedule(seconds, done)

    def _move(self, agent: Agent, state: AgentState, call_id: str | None = None) -> None:
        agent.move(state, self._clock())
        agent.call_id = call_id if state in (AgentState.RINGING, AgentState.ON_CALL) else None
        self._journal_agent(agent)

    def _journal_agent(self, agent: Agent) -> None:
        uri, state, call_id, reason, at = agent.uri, agent.state.value, agent.call_id, agent.reason, self._wall()
        self._journal.write(lambda: self._store.queue.agent(agent.id, uri=uri, state=state, call_id=call_id, reason=reason, at=at))

    def _cancel_timer(self, agent_id: str) -> None:
        timer = self._timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()

    def _event(self, call_id: str, type_: str, **data: object) -> None:
        self._journal.write(lambda: self._store.calls.record_event(call_id, type_, data))
