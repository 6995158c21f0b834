"""Stand-ins around ``gateway.queue.dispatcher.Dispatcher`` for tests: the agents' phones and the timers.

- ``FakeAgentPhones`` has the ``AgentTelephony`` commands; ``dial`` returns a leg id and notes the
  INVITE; the test then plays the agent's phone (``answer``, ``refuse``) and the leg's events go to
  the dispatcher as the SIP edge would send them. A CANCEL or BYE from the gateway ends the leg at
  once (487 before an answer), as pjsua reports it.
- ``FakeTimers`` is the dispatcher's ``schedule``: nothing fires until the test says so.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sip.events import CallEnded, CallMediaReady


@dataclass
class Timer:
    due: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self.timers: list[Timer] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(self._clock() + delay, fn)
        self.timers.append(timer)
        return timer

    def run_due(self, advance: float = 0.0) -> None:
        """Move the clock on by ``advance`` seconds and fire what is due by then, in order."""
        self._clock.advance(advance)
        while due := sorted((t for t in self.timers if not t.cancelled and t.due <= self._clock()), key=lambda t: t.due):
            timer = due[0]
            self.timers.remove(timer)
            timer.fn()


@dataclass
class Leg:
    leg_id: str
    uri: str
    headers: dict[str, str]
    state: str = "ringing"  # ringing | answered | ended
    bridged_to: str | None = None
    events: list[object] = field(default_factory=list)


class FakeAgentPhones:
    """The agent side of the SIP edge: legs by id, in the order they were dialled."""

    def __init__(self) -> None:
        self.legs: list[Leg] = []
        self.deliver: Callable[[object], None] = lambda event: None  # to the dispatcher
        self.on_bridge: Callable[[str], None] = lambda call_id: None  # the caller's side of a bridge
        self.hangups: list[str] = []

    def dial(self, target_uri: str, headers: dict[str, str]) -> str:
        leg = Leg(f"leg-{len(self.legs) + 1}", target_uri, dict(headers))
        self.legs.append(leg)
        return leg.leg_id

    def bridge(self, a_call_id: str, b_call_id: str) -> None:
        self.leg(b_call_id).bridged_to = a_call_id
        self.on_bridge(a_call_id)

    def hangup(self, call_id: str, status_code: int | None = None) -> None:
        self.hangups.append(call_id)
        leg = self.leg(call_id)
        if leg.state != "ended":
            self._end(leg, "local", 487 if leg.state == "ringing" else 200)

    # --- what the agents do ---------------------------------------------------------------

    def ringing(self, uri: str | None = None) -> Leg:
        """The leg now ringing (at ``uri``, if given)."""
        (leg,) = [leg for leg in self.legs if leg.state == "ringing" and uri in (None, leg.uri)]
        return leg

    def answer(self, uri: str | None = None) -> Leg:
        leg = self.ringing(uri)
        leg.state = "answered"
        self.deliver(CallMediaReady(leg.leg_id))
        return leg

    def refuse(self, status: int = 486, uri: str | None = None) -> Leg:
        leg = self.ringing(uri)
        self._end(leg, "remote", status)
        return leg

    def agent_hangs_up(self, leg_id: str) -> None:
        self._end(self.leg(leg_id), "remote", 200)

    def leg(self, leg_id: str) -> Leg:
        (leg,) = [leg for leg in self.legs if leg.leg_id == leg_id]
        return leg

    def _end(self, leg: Leg, by: str, status: int) -> None:
        leg.state = "ended"
        self.deliver(CallEnded(leg.leg_id, by=by, reason="test", sip_status=status))  # type: ignore[arg-type]
