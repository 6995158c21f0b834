"""What a queue remembers of recent calls, for the wait estimate: handle times, arrivals, patience."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.queue.estimate import EstimatorConfig, QueueState, WaitEstimate, estimate_wait

#: Calls kept per measure; older ones stop counting.
SAMPLES = 200
#: Arrivals older than this do not count towards the arrival rate.
ARRIVAL_WINDOW_S = 900.0


@dataclass(frozen=True)
class Staffing:
    staffed: int  # agents not offline
    free: int  # agents available now


class QueueHistory:
    """Recent handle times, arrivals and waits of one queue (monotonic seconds)."""

    def __init__(self, *, default_handle_time_s: float, default_patience_s: float, min_observations: int = 30) -> None:
        self._defaults = (default_handle_time_s, default_patience_s)
        self._min_observations = min_observations
        self._handle_times: deque[float] = deque(maxlen=SAMPLES)
        self._arrivals: deque[float] = deque(maxlen=SAMPLES)
        self._waits: deque[tuple[float, bool]] = deque(maxlen=SAMPLES)  # (waited, abandoned)

    def arrived(self, now: float) -> None:
        self._arrivals.append(now)

    def handled(self, seconds: float) -> None:
        """An agent's call ended after ``seconds`` of talk plus wrap-up."""
        self._handle_times.append(seconds)

    def left(self, waited: float, *, abandoned: bool) -> None:
        """A caller stopped waiting: answered by an agent, or gave up (hung up, took WhatsApp)."""
        self._waits.append((waited, abandoned))

    def state(self, now: float, staffing: Staffing, callers_ahead: int) -> QueueState:
        recent = [t for t in self._arrivals if now - t <= ARRIVAL_WINDOW_S]
        span = now - recent[0] if len(recent) > 1 else 0.0
        abandons = sum(1 for _, abandoned in self._waits if abandoned)
        return QueueState(
            callers_ahead=callers_ahead, agents_staffed=staffing.staffed, agents_free=staffing.free,
            mean_handle_time=sum(self._handle_times) / len(self._handle_times) if self._handle_times else None,
            handle_time_samples=len(self._handle_times),
            arrival_rate=(len(recent) - 1) / span if span > 0 else None, arrival_samples=len(recent),
            # Exponential patience: total time waited by everyone over the number who gave up.
            mean_patience=sum(w for w, _ in self._waits) / abandons if abandons else None, patience_samples=abandons,
        )

    def estimate(self, now: float, staffing: Staffing, callers_ahead: int) -> WaitEstimate:
        state = self.state(now, staffing, callers_ahead)
        handle_time, patience = self._defaults
        config = EstimatorConfig(
            default_handle_time=handle_time, default_patience=patience, min_observations=self._min_observations,
            # The live rate, however few arrivals stand behind it, beats any constant for a new queue.
            default_arrival_rate=state.arrival_rate or 0.0,
        )
        return estimate_wait(state, config)
