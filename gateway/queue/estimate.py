"""Queue wait estimates for a contact-center voice queue: Erlang B/C, Erlang A, and a live estimator.

Units: times in seconds, rates per second, loads in Erlangs (arrival rate × mean handle time).

Models
  * Erlang C (M/M/n): Poisson arrivals at rate λ, exponential handle times with mean AHT, n identical
    agents, first come first served, callers never hang up. Stable only when the load λ·AHT < n; at or
    above that the queue grows without bound, which this module reports as P(wait) = 1, infinite mean
    wait and a service level of 0 — never a crash or a negative number.
  * Erlang A (M/M/n+M, Palm's queue): Erlang C plus exponential patience with mean θ⁻¹; a caller still
    waiting when their patience runs out abandons. Abandonment keeps it stable at any load. Formulas
    follow Mandelbaum & Zeltyn, "The Palm/Erlang-A queue, with applications to call centers" (2004/2005,
    §3–4) and Garnett, Mandelbaum & Reiman, "Designing a call center with impatient customers" (MSOM
    2002), written with x = nμ/θ, y = λ/θ and
        A(x, y) = x·e^y·y^(−x)·γ(x, y) = Σ_{j≥0} y^j / ((x+1)…(x+j)),
    γ the lower incomplete gamma function (evaluated here in log space, Numerical Recipes' series and
    continued fraction). With E = Erlang B(n, λ/μ) and ρ = λ/(nμ):
        P(W>0) = A·E / (1 + (A−1)·E),   P(Ab | W>0) = 1/(ρA) + 1 − 1/ρ,   E[W] = P(Ab)/θ.
    The offered wait V (time until answered for a caller who would hold forever) of an arrival that
    finds j callers queued ahead is a sum of exponentials with rates nμ + mθ, m = j…0, so
        P(V > t | W>0) = γ(x, y·e^(−θt)) / γ(x, y).

All functions are pure: no clocks, no globals; the live estimator takes everything it uses as input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

_EPS = 1e-16                # relative accuracy asked of every series and continued fraction
_TINY = 1e-300              # keeps the Lentz continued fraction off zero
_MAX_ITERATIONS = 1_000_000


# --- Erlang B and C ------------------------------------------------------------------------------

def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of the M/M/n/n loss system with ``servers`` lines offered ``load`` Erlangs.

    Computed with the recursion B(k) = A·B(k−1) / (k + A·B(k−1)), which never forms A^n or n!, so it
    stays accurate for hundreds of servers; tiny results underflow to 0.0 rather than overflow.
    """
    _check_count("servers", servers)
    _check_nonnegative("load", load)
    return math.exp(_log_erlang_b(servers, load))


def erlang_c(servers: int, load: float) -> float:
    """Probability that a caller has to wait in M/M/n (Erlang C) with ``load`` Erlangs on ``servers`` agents.

    Returns 1.0 when load ≥ servers: the system is unstable and, in the long run, everybody waits.
    """
    _check_count("servers", servers)
    _check_nonnegative("load", load)
    if load >= servers:
        return 1.0
    b = erlang_b(servers, load)
    return servers * b / (servers - load * (1.0 - b))


def erlang_c_mean_wait(arrival_rate: float, handle_time: float, agents: int) -> float:
    """Average speed of answer of M/M/n: mean wait in seconds over all callers, those answered at once included.

    ``arrival_rate`` in calls/s, ``handle_time`` the mean handle time in s. Infinite when unstable.
    """
    load = _load(arrival_rate, handle_time, agents)
    if load >= agents:
        return math.inf
    return erlang_c(agents, load) * handle_time / (agents - load)


def erlang_c_service_level(arrival_rate: float, handle_time: float, agents: int, target: float) -> float:
    """Fraction of callers answered within ``target`` seconds in M/M/n: P(W ≤ t) = 1 − C·e^(−(n−A)·t/AHT).

    0.0 when unstable (the backlog grows, so the long-run fraction answered within any finite t is 0).
    """
    load = _load(arrival_rate, handle_time, agents)
    _check_nonnegative("target", target)
    if load >= agents:
        return 0.0
    return 1.0 - erlang_c(agents, load) * math.exp(-(agents - load) * target / handle_time)


# --- Erlang A ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErlangAMetrics:
    """Steady-state measures of M/M/n+M for a caller arriving at a random moment (PASTA).

    probability_of_wait                P(W > 0): all agents busy on arrival.
    probability_of_abandon             P(Ab): fraction of all callers who hang up before an answer.
    probability_of_abandon_given_wait  P(Ab | W > 0).
    mean_wait                          E[W] over all callers, s: time in queue until answered or abandoned
                                       (0 for those answered at once); equals P(Ab)·patience.
    mean_wait_served                   E[W | answered], s: the ASA contact centers report.
    mean_offered_wait                  E[V], s: expected time until an agent answers for a caller who holds
                                       on whatever happens; the number to announce to a caller.
    """

    probability_of_wait: float
    probability_of_abandon: float
    probability_of_abandon_given_wait: float
    mean_wait: float
    mean_wait_served: float
    mean_offered_wait: float


def erlang_a(arrival_rate: float, handle_time: float, patience: float, agents: int) -> ErlangAMetrics:
    """Erlang A (M/M/n+M) measures for ``arrival_rate`` calls/s, mean ``handle_time`` s, mean ``patience`` s.

    ``patience = math.inf`` is Erlang C (nobody abandons), including its unstable case. Any finite patience
    gives finite results at any load. With no agents every caller eventually abandons and nobody is
    answered, so the answered-caller waits are infinite. P(Ab | W>0) is a difference of terms near 1/ρ, so
    when patience dwarfs the wait it keeps its absolute accuracy (~1e-16) but not its relative accuracy.
    """
    load = _load(arrival_rate, handle_time, agents)
    _check_patience(patience)
    if math.isinf(patience):
        return _erlang_c_metrics(arrival_rate, handle_time, agents, load)
    if agents == 0:
        return ErlangAMetrics(1.0, 1.0, 1.0, patience, math.inf, math.inf)
    if arrival_rate == 0:
        return ErlangAMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    x, y, rho = agents * patience / handle_time, arrival_rate * patience, load / agents
    log_a = _log_a(x, y)
    p_wait = _probability_of_wait(agents, load, log_a)
    # 1 − 1/A via expm1: A is close to 1 when callers rarely find a queue.
    p_served_given_wait = min(1.0, -math.expm1(-log_a) / rho)
    p_abandon = p_wait * (1.0 - p_served_given_wait)
    offered_given_wait, served_wait_given_wait = _queue_sums(arrival_rate, agents / handle_time, 1.0 / patience)
    p_served = 1.0 - p_abandon
    return ErlangAMetrics(
        probability_of_wait=p_wait,
        probability_of_abandon=p_abandon,
        probability_of_abandon_given_wait=1.0 - p_served_given_wait,
        mean_wait=p_abandon * patience,
        mean_wait_served=p_wait * served_wait_given_wait / p_served,
        mean_offered_wait=p_wait * offered_given_wait,
    )


def erlang_a_service_level(arrival_rate: float, handle_time: float, patience: float, agents: int,
                           target: float) -> float:
    """Fraction of all callers answered within ``target`` seconds in M/M/n+M: P(W ≤ t and answered).

    Abandoned calls count as failures however quickly they hung up (the usual "answered within t /
    offered" definition). It runs from 1 − P(W>0) at t = 0 up to 1 − P(Ab) as t → ∞. Using
    P(V > t | W>0) = γ(x, y·e^(−θt))/γ(x, y) and the caller's own exponential patience,
        P(answered within t | W>0) = P(answered | W>0) · (1 − P(x+1, y·e^(−θt)) / P(x+1, y)),
    P the regularised lower incomplete gamma function. Infinite patience gives Erlang C's service level.
    """
    load = _load(arrival_rate, handle_time, agents)
    _check_patience(patience)
    _check_nonnegative("target", target)
    if math.isinf(patience):
        return erlang_c_service_level(arrival_rate, handle_time, agents, target)
    if agents == 0:
        return 0.0
    if arrival_rate == 0:
        return 1.0

    theta = 1.0 / patience
    x, y, rho = agents * patience / handle_time, arrival_rate * patience, load / agents
    log_a = _log_a(x, y)
    p_wait = _probability_of_wait(agents, load, log_a)
    p_served_given_wait = min(1.0, -math.expm1(-log_a) / rho)
    log_ratio = log_gamma_p(x + 1.0, y * math.exp(-theta * target)) - log_gamma_p(x + 1.0, y)
    answered_in_time_given_wait = p_served_given_wait * -math.expm1(log_ratio)
    return (1.0 - p_wait) + p_wait * answered_in_time_given_wait


# --- queue position ------------------------------------------------------------------------------

def position_wait(callers_ahead: int, agents: int, handle_time: float, patience: float = math.inf) -> float:
    """Expected seconds until answered for a caller with ``callers_ahead`` queued ahead and all ``agents`` busy.

    With exponential handle times the agents finish calls at total rate n/AHT whatever they are doing, so
    the caller needs k+1 completions: (k+1)·AHT/n. With exponential patience (mean ``patience`` s) the m
    callers still ahead also leave at rate m/patience, which shortens it to Σ_{m=0..k} 1/(n/AHT + m/patience).
    This is the offered wait: the caller is assumed to hold on. Infinite with no agents.
    """
    _check_count("callers_ahead", callers_ahead)
    _check_count("agents", agents)
    _check_positive("handle_time", handle_time)
    _check_patience(patience)
    if agents == 0:
        return math.inf
    service_rate, theta = agents / handle_time, 1.0 / patience
    if theta == 0:
        return (callers_ahead + 1) / service_rate
    return math.fsum(1.0 / (service_rate + m * theta) for m in range(callers_ahead + 1))


def _position_abandon_probability(callers_ahead: int, agents: int, handle_time: float, patience: float) -> float:
    # Each step (m ahead) ends in progress at rate nμ + mθ or in the caller's own hang-up at rate θ; the
    # product of the progress odds over m = k…0 telescopes to nμ / (nμ + (k+1)θ).
    if math.isinf(patience):
        return 0.0
    hazard = (callers_ahead + 1) / patience
    return hazard / (agents / handle_time + hazard)


# --- live estimator ------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueState:
    """What the queue knows when a caller joins (or moves up): the live counts plus recent history.

    callers_ahead       callers queued in front of this caller (its 0-based position); None if unknown.
    agents_staffed      agents logged in to the queue, busy or not.
    agents_free         of those, agents idle right now.
    mean_handle_time    recent mean handle time (talk + wrap-up), s, over ``handle_time_samples`` calls.
    arrival_rate        recent arrival rate, calls/s, measured over ``arrival_samples`` arrivals.
    mean_patience       recent mean patience, s (e.g. total time waited by all callers / abandonments,
                        the exponential-patience estimate), over ``patience_samples`` abandonments.
    """

    callers_ahead: int | None
    agents_staffed: int
    agents_free: int
    mean_handle_time: float | None = None
    handle_time_samples: int = 0
    arrival_rate: float | None = None
    arrival_samples: int = 0
    mean_patience: float | None = None
    patience_samples: int = 0

    def __post_init__(self) -> None:
        if self.callers_ahead is not None:
            _check_count("callers_ahead", self.callers_ahead)
        _check_count("agents_staffed", self.agents_staffed)
        _check_count("agents_free", self.agents_free)
        if self.agents_free > self.agents_staffed:
            raise ValueError(f"agents_free ({self.agents_free}) exceeds agents_staffed ({self.agents_staffed})")
        for name in ("handle_time_samples", "arrival_samples", "patience_samples"):
            _check_count(name, getattr(self, name))
        if self.mean_handle_time is not None:
            _check_positive("mean_handle_time", self.mean_handle_time)
        if self.arrival_rate is not None:
            _check_nonnegative("arrival_rate", self.arrival_rate)
        if self.mean_patience is not None:
            _check_patience(self.mean_patience)


@dataclass(frozen=True)
class EstimatorConfig:
    """Defaults for a queue without enough history, and how much history counts as enough.

    A measured value is used only when at least ``min_observations`` samples stand behind it.
    """

    default_handle_time: float
    default_arrival_rate: float
    default_patience: float
    min_observations: int = 30

    def __post_init__(self) -> None:
        _check_positive("default_handle_time", self.default_handle_time)
        _check_nonnegative("default_arrival_rate", self.default_arrival_rate)
        _check_patience(self.default_patience)
        _check_count("min_observations", self.min_observations)


@dataclass(frozen=True)
class WaitEstimate:
    """Expected seconds until an agent answers, for a caller who holds on, and how it was obtained.

    probability_of_wait     chance the caller is not answered at once.
    probability_of_abandon  chance the caller hangs up first (0.0 when patience is not modelled).
    method                  "position": from the live position and agents; "erlang_a": steady state.
    """

    seconds: float
    probability_of_wait: float
    probability_of_abandon: float
    method: Literal["erlang_a", "position"]


def estimate_wait(state: QueueState, config: EstimatorConfig, *, position: int | None = None) -> WaitEstimate:
    """Estimated wait for the caller described by ``state``, or for one at ``position`` (callers ahead).

    * A free agent for this caller (fewer callers ahead than free agents): answered now, whatever the history.
    * Known position and at least ``min_observations`` handle times: "position". The callers ahead first
      take the free agents, then this caller waits for k+1 completions among all staffed agents, shortened
      by abandonments ahead only when patience has been measured (otherwise the estimate errs long).
    * Otherwise "erlang_a": the steady-state offered wait of Erlang A with the staffed agents, each of
      handle time, arrival rate and patience taken from history where it is rich enough, else the default.
    """
    ahead = state.callers_ahead if position is None else position
    if ahead is not None:
        _check_count("position", ahead)
        if ahead < state.agents_free:
            return WaitEstimate(0.0, 0.0, 0.0, "position")

    def measured(value: float | None, samples: int) -> float | None:
        return value if value is not None and samples >= config.min_observations else None

    handle_time = measured(state.mean_handle_time, state.handle_time_samples)
    patience = measured(state.mean_patience, state.patience_samples)
    if ahead is not None and handle_time is not None:
        waiting_ahead = ahead - state.agents_free
        known_patience = math.inf if patience is None else patience
        return WaitEstimate(
            seconds=position_wait(waiting_ahead, state.agents_staffed, handle_time, known_patience),
            probability_of_wait=1.0,
            probability_of_abandon=_position_abandon_probability(
                waiting_ahead, state.agents_staffed, handle_time, known_patience),
            method="position",
        )

    arrival_rate = measured(state.arrival_rate, state.arrival_samples)
    metrics = erlang_a(
        config.default_arrival_rate if arrival_rate is None else arrival_rate,
        config.default_handle_time if handle_time is None else handle_time,
        config.default_patience if patience is None else patience,
        state.agents_staffed,
    )
    return WaitEstimate(metrics.mean_offered_wait, metrics.probability_of_wait, metrics.probability_of_abandon,
                        "erlang_a")


# --- numerics ------------------------------------------------------------------------------------

def _erlang_c_metrics(arrival_rate: float, handle_time: float, agents: int, load: float) -> ErlangAMetrics:
    p_wait = erlang_c(agents, load)
    wait = erlang_c_mean_wait(arrival_rate, handle_time, agents)
    return ErlangAMetrics(p_wait, 0.0, 0.0, wait, wait, wait)


def _log_erlang_b(servers: int, load: float) -> float:
    # The Erlang B recursion in log space: the ratio underflows harmlessly where B itself would vanish.
    if load == 0:
        return 0.0 if servers == 0 else -math.inf
    log_load, log_b = math.log(load), 0.0
    for k in range(1, servers + 1):
        log_b = log_load + log_b - math.log(k + load * math.exp(log_b))
    return log_b


def _probability_of_wait(agents: int, load: float, log_a: float) -> float:
    # P(W>0) = 1 / (1 + (1−E)/(E·A)), as a logistic of the log odds so that neither A (which can exceed
    # the float range under overload) nor E (which underflows when lightly loaded) is ever formed.
    log_e = _log_erlang_b(agents, load)
    log_odds_against = math.log1p(-math.exp(log_e)) - log_e - log_a
    if log_odds_against > 0:
        odds = math.exp(-log_odds_against)
        return odds / (1.0 + odds)
    return 1.0 / (1.0 + math.exp(log_odds_against))


def _log_a(x: float, y: float) -> float:
    """ln A(x, y), A(x, y) = x·e^y·y^(−x)·γ(x, y) (Mandelbaum & Zeltyn), for x, y > 0."""
    if y < x + 1.0:
        # Series region: A = x·S exactly, which avoids cancelling the huge terms of the prefactor.
        return math.log(x) + math.log(_gamma_series(x, y))
    return math.lgamma(x + 1.0) + y - x * math.log(y) + log_gamma_p(x, y)


def log_gamma_p(a: float, x: float) -> float:
    """ln P(a, x), P the regularised lower incomplete gamma function γ(a, x)/Γ(a), for a > 0, x ≥ 0.

    Numerical Recipes' split (gammp): the series where it converges fast (x < a+1), else the continued
    fraction for Q = 1 − P, with the prefactor x^a·e^(−x)/Γ(a) kept in log space.
    """
    if x == 0:
        return -math.inf
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        return log_prefix + math.log(_gamma_series(a, x))
    return math.log1p(-math.exp(log_prefix + math.log(_gamma_continued_fraction(a, x))))


def _gamma_series(a: float, x: float) -> float:
    # Σ_{k≥0} x^k / (a(a+1)…(a+k)), so that P(a, x) = x^a·e^(−x)/Γ(a) · this.
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if term < total * _EPS:
            return total
    raise ArithmeticError(f"incomplete gamma series did not converge for a={a}, x={x}")


def _gamma_continued_fraction(a: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction with Q(a, x) = x^a·e^(−x)/Γ(a) · this.
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete gamma continued fraction did not converge for a={a}, x={x}")


def _queue_sums(arrival_rate: float, service_rate: float, theta: float) -> tuple[float, float]:
    """(E[V | W>0], E[W·1{answered} | W>0]) for M/M/n+M with total service rate nμ and abandonment rate θ.

    Neither has a closed form in γ, so both are summed over j, the callers an arrival finds queued ahead,
    whose distribution is ∝ c_j = Π_{k=1..j} λ/(nμ + kθ) (its total is A(x, y)). Given j:
      E[V] = Σ_{m=0..j} 1/(nμ + mθ);  P(answered) = nμ/(nμ + (j+1)θ);
      E[W | answered] = Σ_{m=1..j+1} 1/(nμ + mθ)  (the caller's own patience adds θ to every step).
    Terms are kept relative to the largest c_j seen, so an overloaded queue (c_j peaking near
    j ≈ (λ − nμ)/θ) neither overflows nor loses precision; the cost is about that many terms plus the tail.
    """
    log_c = log_scale = 0.0
    total = offered = served = 0.0
    offered_wait = served_wait = 0.0
    for j in range(_MAX_ITERATIONS):
        step_rate = service_rate + j * theta
        next_rate = step_rate + theta
        offered_wait += 1.0 / step_rate
        served_wait += 1.0 / next_rate
        if log_c > log_scale:
            rescale = math.exp(log_scale - log_c)
            total, offered, served, log_scale = total * rescale, offered * rescale, served * rescale, log_c
        c = math.exp(log_c - log_scale)
        total += c
        offered += c * offered_wait
        served += c * (service_rate / next_rate) * served_wait
        # Past the mode the terms shrink ever faster, so the first negligible one ends the sum.
        if arrival_rate < next_rate and c * offered_wait <= _EPS * offered:
            return offered / total, served / total
        log_c += math.log(arrival_rate / next_rate)
    raise ArithmeticError("Erlang A queue-length sum did not converge")


def _load(arrival_rate: float, handle_time: float, agents: int) -> float:
    _check_nonnegative("arrival_rate", arrival_rate)
    _check_positive("handle_time", handle_time)
    _check_count("agents", agents)
    return arrival_rate * handle_time


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and ≥ 0, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def _check_patience(patience: float) -> None:
    # math.inf is allowed and means "never abandons" (Erlang C).
    if math.isnan(patience) or patience <= 0:
        raise ValueError(f"patience must be > 0 (math.inf for never), got {patience!r}")
