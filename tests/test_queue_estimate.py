"""Queue wait estimates: Erlang B/C/A and the live estimator (gateway/queue/estimate.py).

Published checks are cited where they are used. Everything else is checked against an independent
computation written here: explicit factorials, a numerically solved birth–death chain, a tagged-caller
chain, or a seeded simulation.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from gateway.queue import (
    EstimatorConfig,
    QueueState,
    WaitEstimate,
    erlang_a,
    erlang_a_service_level,
    erlang_b,
    erlang_c,
    erlang_c_mean_wait,
    erlang_c_service_level,
    estimate_wait,
    position_wait,
)
from gateway.queue.estimate import log_gamma_p

# --- independent references ----------------------------------------------------------------------


def erlang_b_by_factorials(n: int, load: float) -> float:
    return (load**n / math.factorial(n)) / sum(load**k / math.factorial(k) for k in range(n + 1))


def erlang_c_by_factorials(n: int, load: float) -> float:
    top = load**n / math.factorial(n) * n / (n - load)
    return top / (sum(load**k / math.factorial(k) for k in range(n)) + top)


def log_sum_exp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def log_poisson_terms(load: float, upto: int) -> list[float]:
    return [k * math.log(load) - load - math.lgamma(k + 1) for k in range(upto + 1)]


class BirthDeath:
    """M/M/n+M solved numerically: the truncated generator's stationary vector from a linear solve, then
    the tagged-caller measures by first-step recursions and the service level by uniformisation."""

    def __init__(self, arrival_rate: float, handle_time: float, patience: float, agents: int, extra: int):
        self.lam, self.mu, self.theta, self.n, self.extra = arrival_rate, 1 / handle_time, 1 / patience, agents, extra
        size = agents + extra + 1
        q = np.zeros((size, size))
        for i in range(size):
            if i + 1 < size:
                q[i, i + 1] = arrival_rate
            if i > 0:
                q[i, i - 1] = min(i, agents) * self.mu + max(i - agents, 0) * self.theta
            q[i, i] = -q[i].sum()
        system = q.T.copy()
        system[-1, :] = 1.0
        rhs = np.zeros(size)
        rhs[-1] = 1.0
        self.pi = np.linalg.solve(system, rhs)
        assert self.pi[-10:].sum() < 1e-14, "truncation too tight"
        self.seen_ahead = self.pi[agents:]  # P(an arrival finds j = 0, 1, … callers queued ahead)

    @property
    def probability_of_wait(self) -> float:
        return float(self.seen_ahead.sum())

    @property
    def mean_queue(self) -> float:
        return float(sum(j * p for j, p in enumerate(self.seen_ahead)))

    @property
    def probability_of_abandon(self) -> float:
        return self.theta * self.mean_queue / self.lam  # abandonment rate θ·E[Q] over arrival rate

    @property
    def mean_wait(self) -> float:
        return self.mean_queue / self.lam  # Little's law on the queue

    def _tagged(self):
        # From m ahead: progress (a completion or an abandonment ahead) at rate nμ + mθ, own hang-up at θ.
        answered, answered_time, offered = 1.0, 0.0, 0.0
        for m in range(len(self.seen_ahead)):
            progress = self.n * self.mu + m * self.theta
            total = progress + self.theta
            answered_next = progress / total * answered
            answered_time = answered_next / total + progress / total * answered_time
            answered = answered_next
            offered += 1 / progress
            yield answered, answered_time, offered

    @property
    def mean_wait_served(self) -> float:
        time_if_answered = sum(p * t for p, (_, t, _) in zip(self.seen_ahead, self._tagged()))
        return time_if_answered / (1 - self.probability_of_abandon)

    @property
    def mean_offered_wait(self) -> float:
        return sum(p * v for p, (_, _, v) in zip(self.seen_ahead, self._tagged()))

    def service_level(self, target: float) -> float:
        # Tagged caller's chain on states m = 0..M (callers ahead), then "answered" and "abandoned".
        size = len(self.seen_ahead)
        answered, abandoned = size, size + 1
        q = np.zeros((size + 2, size + 2))
        for m in range(size):
            progress = self.n * self.mu + m * self.theta
            q[m, m - 1 if m > 0 else answered] = progress
            q[m, abandoned] = self.theta
            q[m, m] = -(progress + self.theta)
        rate = max(-q.diagonal())
        step = np.eye(size + 2) + q / rate
        state = np.zeros(size + 2)
        state[:size] = self.seen_ahead
        total, k, weight = 0.0, 0, math.exp(-rate * target)
        while k < rate * target + 20 * math.sqrt(rate * target + 1) + 20:
            total += weight * state[answered]
            k += 1
            state = state @ step
            weight *= rate * target / k
        return (1 - self.probability_of_wait) + total


# --- Erlang B ------------------------------------------------------------------------------------


def test_erlang_b_matches_the_westbay_calculator_manual_example():
    # Westbay Traffic Calculators manual, "How much traffic can a trunk group handle?"
    # (https://erlang.com/calculatormanual/howmuchtrafficcanatrunkgrouphandle.htm): 15 lines at 1% blocking
    # carry at most 8.108 Erlangs.
    assert erlang_b(15, 8.108) == pytest.approx(0.01, abs=2e-6)
    assert erlang_b(15, 8.12) > 0.01 > erlang_b(15, 8.10)


@pytest.mark.parametrize("n, load", [(1, 1.0), (5, 2.0), (10, 5.0), (14, 10.0), (30, 30.0), (20, 35.0), (3, 0.01)])
def test_erlang_b_equals_the_factorial_formula(n, load):
    assert erlang_b(n, load) == pytest.approx(erlang_b_by_factorials(n, load), rel=1e-12)


def test_erlang_b_ten_lines_five_erlangs_table_value():
    assert erlang_b(10, 5.0) == pytest.approx(0.018385, abs=5e-7)


def test_erlang_b_is_stable_for_hundreds_of_lines():
    # A^n/n! overflows a float here; compare with the same ratio summed in log space.
    for n, load in [(500, 450.0), (500, 520.0), (400, 100.0)]:
        terms = log_poisson_terms(load, n)
        expected = math.exp(terms[-1] - log_sum_exp(terms))
        assert erlang_b(n, load) == pytest.approx(expected, rel=1e-10)


def test_erlang_b_edges():
    assert erlang_b(0, 3.0) == 1.0       # no lines: everything blocked
    assert erlang_b(4, 0.0) == 0.0       # no traffic: nothing blocked
    with pytest.raises(ValueError):
        erlang_b(-1, 1.0)
    with pytest.raises(ValueError):
        erlang_b(3, -1.0)


# --- Erlang C ------------------------------------------------------------------------------------


def test_erlang_c_matches_the_published_360_calls_per_half_hour_example():
    # "The Erlang-C Formula" step-by-step example: 360 calls per half hour, average call duration 4 minutes,
    # 55 agents, 15 s target. Stated results E_C = 0.2387, T_w = 8.184 s, W(15 s) = 0.8459, as reproduced in
    # "Expected Waiting Time Formulas in Maxima" (Nemotron-CC-Math, https://huggingface.co/datasets/nvidia/
    # Nemotron-CC-Math-v1), which notes they agree with the values on the original web page.
    arrival_rate, handle_time = 360 / 1800, 240.0
    assert erlang_c(55, arrival_rate * handle_time) == pytest.approx(0.2387, abs=5e-5)
    assert erlang_c_mean_wait(arrival_rate, handle_time, 55) == pytest.approx(8.184, abs=5e-4)
    assert erlang_c_service_level(arrival_rate, handle_time, 55, 15) == pytest.approx(0.8459, abs=5e-5)


def test_erlang_c_matches_the_published_600_calls_per_hour_example():
    # Erlang C calculator example (http://personal.telefonica.terra.es/web/vr/erlang/eng/mcerlc.htm):
    # 600 calls/h of 120 s = 20 Erlangs; a 15% delay target needs 26 circuits, with an average delay of
    # "3 seconds per call"; 30 circuits cut the delay probability to 2.5%; 30 circuits at 15% carry 23.6 E.
    arrival_rate, handle_time = 600 / 3600, 120.0
    assert erlang_c(25, 20.0) > 0.15 >= erlang_c(26, 20.0)
    assert erlang_c_mean_wait(arrival_rate, handle_time, 26) == pytest.approx(3.0, abs=0.15)
    assert erlang_c(30, 20.0) == pytest.approx(0.025, abs=5e-4)
    assert erlang_c(30, 23.6) == pytest.approx(0.15, abs=3e-3)


@pytest.mark.parametrize("n, load", [(14, 10.0), (2, 1.5), (55, 48.0), (30, 29.9), (8, 0.5)])
def test_erlang_c_equals_the_factorial_formula(n, load):
    handle_time = 180.0
    arrival_rate = load / handle_time
    c = erlang_c_by_factorials(n, load)
    assert erlang_c(n, load) == pytest.approx(c, rel=1e-11)
    assert erlang_c_mean_wait(arrival_rate, handle_time, n) == pytest.approx(c * handle_time / (n - load), rel=1e-11)
    for target in (0.0, 20.0, 60.0):
        expected = 1 - c * math.exp(-(n - load) * target / handle_time)
        assert erlang_c_service_level(arrival_rate, handle_time, n, target) == pytest.approx(expected, rel=1e-11)


def test_erlang_c_hundred_calls_per_half_hour_fourteen_agents():
    # 100 calls per 30 min at 180 s AHT (10 E) on 14 agents, by explicit factorials:
    # P(wait) = 17.41%, ASA = 7.84 s, 88.8% answered within 20 s.
    arrival_rate = 100 / 1800
    assert erlang_c(14, 10.0) == pytest.approx(0.17413, abs=1e-5)
    assert erlang_c_mean_wait(arrival_rate, 180, 14) == pytest.approx(7.836, abs=1e-3)
    assert erlang_c_service_level(arrival_rate, 180, 14, 20) == pytest.approx(0.88835, abs=1e-5)


@pytest.mark.parametrize("n, load", [(10, 10.0), (10, 12.5), (0, 0.0), (1, 3.0)])
def test_unstable_erlang_c_says_everyone_waits_forever(n, load):
    handle_time = 60.0
    assert erlang_c(n, load) == 1.0
    assert erlang_c_mean_wait(load / handle_time, handle_time, n) == math.inf
    assert erlang_c_service_level(load / handle_time, handle_time, n, 20) == 0.0


def test_erlang_c_is_stable_for_five_hundred_agents():
    n, load = 500, 480.0
    terms = log_poisson_terms(load, n - 1)
    log_top = n * math.log(load) - load - math.lgamma(n + 1) + math.log(n / (n - load))
    expected = math.exp(log_top - log_sum_exp(terms + [log_top]))
    assert 0 < erlang_c(n, load) < 1
    assert erlang_c(n, load) == pytest.approx(expected, rel=1e-9)


def test_more_agents_answer_faster_in_erlang_c():
    waits = [erlang_c_mean_wait(10 / 180, 180, n) for n in range(11, 20)]
    levels = [erlang_c_service_level(10 / 180, 180, n, 20) for n in range(11, 20)]
    assert all(a > b for a, b in zip(waits, waits[1:]))
    assert all(a < b for a, b in zip(levels, levels[1:]))


# --- incomplete gamma ----------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 2.0, 7.5, 40.0])
def test_incomplete_gamma_closed_forms(x):
    # DLMF §8.4: P(1, x) = 1 − e^(−x); P(1/2, x) = erf(√x).
    assert math.exp(log_gamma_p(1.0, x)) == pytest.approx(-math.expm1(-x), rel=1e-13)
    assert math.exp(log_gamma_p(0.5, x)) == pytest.approx(math.erf(math.sqrt(x)), rel=1e-13)


@pytest.mark.parametrize("a, x", [(5, 2.0), (5, 9.0), (100, 80.0), (100, 130.0), (300, 288.0), (2000, 2100.0)])
def test_incomplete_gamma_is_a_poisson_tail_for_integer_order(a, x):
    # DLMF 8.4.10: for integer a, P(a, x) = P(Poisson(x) ≥ a), here summed in log space.
    terms = [k * math.log(x) - x - math.lgamma(k + 1) for k in range(a, a + 40 * int(math.sqrt(x)) + 200)]
    assert log_gamma_p(float(a), x) == pytest.approx(log_sum_exp(terms), abs=1e-11)


# --- Erlang A ------------------------------------------------------------------------------------

ERLANG_A_CASES = [
    # (arrival rate /s, handle time s, patience s, agents, chain states above n)
    pytest.param(10 / 180, 180.0, 300.0, 14, 300, id="10E-14agents"),
    pytest.param(10 / 180, 180.0, 120.0, 8, 300, id="10E-8agents-overloaded"),
    pytest.param(48 / 240, 240.0, 60.0, 55, 250, id="48E-55agents"),
    pytest.param(20 / 120, 120.0, 600.0, 10, 400, id="20E-10agents-2x-overloaded"),
    pytest.param(1 / 100, 100.0, 50.0, 1, 150, id="single-agent-overloaded"),
    pytest.param(3 / 300, 300.0, 30.0, 5, 100, id="light-load-short-patience"),
]


@pytest.mark.parametrize("arrival_rate, handle_time, patience, agents, extra", ERLANG_A_CASES)
def test_erlang_a_matches_the_solved_birth_death_chain(arrival_rate, handle_time, patience, agents, extra):
    chain = BirthDeath(arrival_rate, handle_time, patience, agents, extra)
    m = erlang_a(arrival_rate, handle_time, patience, agents)
    assert m.probability_of_wait == pytest.approx(chain.probability_of_wait, rel=1e-9)
    assert m.probability_of_abandon == pytest.approx(chain.probability_of_abandon, rel=1e-9)
    assert m.probability_of_abandon_given_wait == pytest.approx(
        chain.probability_of_abandon / chain.probability_of_wait, rel=1e-9)
    assert m.mean_wait == pytest.approx(chain.mean_wait, rel=1e-9)
    assert m.mean_wait_served == pytest.approx(chain.mean_wait_served, rel=1e-9)
    assert m.mean_offered_wait == pytest.approx(chain.mean_offered_wait, rel=1e-9)


@pytest.mark.parametrize("arrival_rate, handle_time, patience, agents, extra", ERLANG_A_CASES[:4])
@pytest.mark.parametrize("target", [5.0, 20.0, 120.0])
def test_erlang_a_service_level_matches_the_chain(arrival_rate, handle_time, patience, agents, extra, target):
    chain = BirthDeath(arrival_rate, handle_time, patience, agents, extra)
    level = erlang_a_service_level(arrival_rate, handle_time, patience, agents, target)
    assert level == pytest.approx(chain.service_level(target), abs=1e-9)


def test_erlang_a_service_level_runs_from_no_wait_to_not_abandoned():
    m = erlang_a(10 / 180, 180, 120, 12)
    assert erlang_a_service_level(10 / 180, 180, 120, 12, 0) == pytest.approx(1 - m.probability_of_wait, rel=1e-12)
    assert erlang_a_service_level(10 / 180, 180, 120, 12, 1e5) == pytest.approx(1 - m.probability_of_abandon, rel=1e-12)


def test_erlang_a_becomes_erlang_c_as_patience_grows():
    # Erlang C is Erlang A with θ = 0 (Mandelbaum & Zeltyn, "The Palm/Erlang-A queue, with applications to
    # call centers", 2005). The gap shrinks like θ: patience 1e7 s leaves ~4e-5 relative on a 7.8 s ASA.
    arrival_rate, handle_time, agents = 10 / 180, 180.0, 14
    asa = erlang_c_mean_wait(arrival_rate, handle_time, agents)
    for patience in (1e7, 1e9):
        m = erlang_a(arrival_rate, handle_time, patience, agents)
        assert m.probability_of_wait == pytest.approx(erlang_c(agents, 10.0), rel=1e-4)
        assert m.probability_of_abandon < 1e-5
        for wait in (m.mean_wait, m.mean_wait_served, m.mean_offered_wait):
            assert wait == pytest.approx(asa, rel=1e-4)
        assert erlang_a_service_level(arrival_rate, handle_time, patience, agents, 20) == pytest.approx(
            erlang_c_service_level(arrival_rate, handle_time, agents, 20), rel=1e-5)
    exact = erlang_a(arrival_rate, handle_time, math.inf, agents)
    assert (exact.probability_of_wait, exact.probability_of_abandon, exact.mean_offered_wait) == (
        erlang_c(agents, 10.0), 0.0, asa)


def test_erlang_a_with_patience_equal_to_handle_time_is_an_infinite_server_queue():
    # With θ = μ every caller in the system leaves at rate μ, answered or not, so the number in system is
    # Poisson(λ/μ) as in M/M/∞: P(W>0) = P(N ≥ n) and P(Ab) = E[(N − n)+] / (λ/μ).
    load, handle_time, agents = 30.0, 200.0, 28
    terms = [math.exp(t) for t in log_poisson_terms(load, 200)]
    m = erlang_a(load / handle_time, handle_time, handle_time, agents)
    assert m.probability_of_wait == pytest.approx(sum(terms[agents:]), rel=1e-10)
    assert m.probability_of_abandon == pytest.approx(
        sum((k - agents) * p for k, p in enumerate(terms) if k > agents) / load, rel=1e-10)


@pytest.mark.parametrize("load, agents, patience_over_aht, tolerance", [
    (100.0, 100, 2.0, 0.05), (100.0, 110, 2.0, 0.09), (400.0, 400, 4.0, 0.03), (400.0, 380, 1.0, 0.04)])
def test_erlang_a_agrees_with_the_garnett_mandelbaum_reiman_approximation(load, agents, patience_over_aht, tolerance):
    # Garnett, Mandelbaum & Reiman, "Designing a call center with impatient customers", MSOM 4(3), 2002:
    # with n = R + β√R, β̂ = β·√(μ/θ) and h the standard normal hazard φ/(1 − Φ),
    #   P(W>0) ≈ [1 + √(θ/μ)·h(β̂)/h(−β)]⁻¹,   P(Ab | W>0) ≈ √(θ/(nμ))·(h(β̂) − β̂).
    # An O(1/√n) heavy-traffic approximation, so the tolerance is loose for n = 100, tighter for n ≈ 400.
    def hazard(z: float) -> float:
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / (0.5 * math.erfc(z / math.sqrt(2)))

    handle_time = 300.0
    beta = (agents - load) / math.sqrt(load)
    theta_over_mu = 1 / patience_over_aht
    beta_hat = beta / math.sqrt(theta_over_mu)
    p_wait = 1 / (1 + math.sqrt(theta_over_mu) * hazard(beta_hat) / hazard(-beta))
    p_abandon_given_wait = math.sqrt(theta_over_mu / agents) * (hazard(beta_hat) - beta_hat)
    m = erlang_a(load / handle_time, handle_time, patience_over_aht * handle_time, agents)
    assert m.probability_of_wait == pytest.approx(p_wait, rel=tolerance)
    assert m.probability_of_abandon_given_wait == pytest.approx(p_abandon_given_wait, rel=tolerance)


def test_erlang_a_is_stable_at_scale_and_under_overload():
    for arrival_rate, handle_time, patience, agents in [
            (480 / 300, 300.0, 180.0, 500), (300 / 240, 240.0, 180.0, 250), (5.0, 100.0, 3600.0, 300)]:
        m = erlang_a(arrival_rate, handle_time, patience, agents)
        assert 0 <= m.probability_of_abandon <= m.probability_of_wait <= 1
        assert 0 <= m.probability_of_abandon_given_wait <= 1
        assert all(math.isfinite(w) and w >= 0 for w in (m.mean_wait, m.mean_wait_served, m.mean_offered_wait))
        # Little's law for abandonment: P(Ab) = θ·E[W].
        assert m.mean_wait == pytest.approx(m.probability_of_abandon * patience, rel=1e-12)
    # Overload by 1.67×: in the fluid limit the served rate is nμ, so about 1 − n/R abandon.
    assert erlang_a(5.0, 100.0, 3600.0, 300).probability_of_abandon == pytest.approx(1 - 300 / 500, rel=1e-3)


def test_erlang_a_edges():
    assert erlang_a(0.1, 60, 60, 0) == erlang_a(0.0, 60, 60, 0)
    nobody = erlang_a(0.1, 60, 60, 0)
    assert (nobody.probability_of_wait, nobody.probability_of_abandon, nobody.mean_wait) == (1.0, 1.0, 60)
    assert nobody.mean_offered_wait == math.inf
    quiet = erlang_a(0.0, 60, 60, 3)
    assert (quiet.probability_of_wait, quiet.mean_offered_wait) == (0.0, 0.0)
    assert erlang_a_service_level(0.1, 60, 60, 0, 20) == 0.0
    with pytest.raises(ValueError):
        erlang_a(0.1, 60, 0.0, 3)
    with pytest.raises(ValueError):
        erlang_a(0.1, 0.0, 60, 3)


def test_more_agents_shorten_the_erlang_a_wait():
    metrics = [erlang_a(10 / 180, 180, 120, n) for n in range(6, 16)]
    for fewer, more in zip(metrics, metrics[1:]):
        assert more.mean_offered_wait < fewer.mean_offered_wait
        assert more.mean_wait < fewer.mean_wait
        assert more.probability_of_abandon < fewer.probability_of_abandon


def test_more_impatience_means_fewer_waiting_and_more_abandoning():
    metrics = [erlang_a(12 / 180, 180, patience, 12) for patience in (1200, 600, 300, 120, 60, 20)]
    for patient, impatient in zip(metrics, metrics[1:]):
        assert impatient.probability_of_wait < patient.probability_of_wait
        assert impatient.probability_of_abandon > patient.probability_of_abandon
        assert impatient.mean_offered_wait < patient.mean_offered_wait


# --- position ------------------------------------------------------------------------------------


def simulate_position(ahead: int, agents: int, handle_time: float, patience: float, runs: int, seed: int):
    """Mean offered wait and own-abandonment share for a caller behind ``ahead`` queued callers, simulated
    caller by caller: every agent busy with an exponential residual call, every caller an exponential patience."""
    rng = random.Random(seed)
    total_wait = abandoned = 0.0
    for _ in range(runs):
        free_at = [rng.expovariate(1 / handle_time) for _ in range(agents)]
        deadlines = [rng.expovariate(1 / patience) for _ in range(ahead)]
        while True:
            agent = min(range(agents), key=free_at.__getitem__)
            now = free_at[agent]
            deadlines = [d for d in deadlines if d > now]  # those ahead who hung up before this agent freed
            if not deadlines:
                break
            deadlines.pop(0)
            free_at[agent] = now + rng.expovariate(1 / handle_time)
        total_wait += now
        abandoned += rng.expovariate(1 / patience) < now
    return total_wait / runs, abandoned / runs


def test_position_wait_without_abandonment_is_k_plus_one_completions():
    # k + 1 completions at total rate n/AHT.
    assert position_wait(0, 4, 240.0) == pytest.approx(60.0)
    assert position_wait(7, 4, 240.0) == pytest.approx(480.0)


def test_position_wait_with_patience_matches_a_caller_by_caller_simulation():
    expected = position_wait(6, 3, 180.0, 240.0)
    assert expected < position_wait(6, 3, 180.0)  # abandonments ahead shorten the wait
    simulated_wait, simulated_abandon = simulate_position(6, 3, 180.0, 240.0, runs=20000, seed=7)
    assert simulated_wait == pytest.approx(expected, rel=0.03)
    state = QueueState(callers_ahead=6, agents_staffed=3, agents_free=0, mean_handle_time=180.0,
                       handle_time_samples=100, mean_patience=240.0, patience_samples=100)
    estimate = estimate_wait(state, CONFIG)
    assert estimate.seconds == pytest.approx(expected, rel=1e-12)
    assert estimate.probability_of_abandon == pytest.approx(simulated_abandon, abs=0.015)


def test_position_wait_grows_with_position():
    waits = [position_wait(k, 5, 300.0, 200.0) for k in range(30)]
    assert all(a < b for a, b in zip(waits, waits[1:]))


def test_erlang_a_offered_wait_is_the_position_wait_averaged_over_what_arrivals_see():
    chain = BirthDeath(10 / 180, 180.0, 120.0, 8, 300)
    averaged = sum(p * position_wait(j, 8, 180.0, 120.0) for j, p in enumerate(chain.seen_ahead))
    assert erlang_a(10 / 180, 180.0, 120.0, 8).mean_offered_wait == pytest.approx(averaged, rel=1e-9)


# --- live estimator ------------------------------------------------------------------------------

CONFIG = EstimatorConfig(default_handle_time=300.0, default_arrival_rate=0.05, default_patience=120.0,
                         min_observations=30)
RICH = QueueState(callers_ahead=4, agents_staffed=6, agents_free=0, mean_handle_time=240.0, handle_time_samples=500,
                  arrival_rate=0.03, arrival_samples=400, mean_patience=150.0, patience_samples=80)


def test_a_free_agent_answers_now_even_without_history():
    thin = QueueState(callers_ahead=1, agents_staffed=5, agents_free=2)
    assert estimate_wait(thin, CONFIG) == WaitEstimate(0.0, 0.0, 0.0, "position")


def test_thin_history_falls_back_to_erlang_a_with_the_defaults():
    # 12 handle times, 5 arrivals and 2 abandonments are below min_observations: the defaults stand.
    thin = QueueState(callers_ahead=3, agents_staffed=10, agents_free=0, mean_handle_time=30.0,
                      handle_time_samples=12, arrival_rate=2.0, arrival_samples=5, mean_patience=5.0,
                      patience_samples=2)
    expected = erlang_a(0.05, 300.0, 120.0, 10)
    assert estimate_wait(thin, CONFIG) == WaitEstimate(
        expected.mean_offered_wait, expected.probability_of_wait, expected.probability_of_abandon, "erlang_a")


def test_history_replaces_each_default_it_is_rich_enough_for():
    unknown_position = replace(RICH, callers_ahead=None, patience_samples=3)
    expected = erlang_a(0.03, 240.0, 120.0, 6)  # measured arrivals and handle times, default patience
    estimate = estimate_wait(unknown_position, CONFIG)
    assert (estimate.method, estimate.seconds) == ("erlang_a", expected.mean_offered_wait)


def test_known_position_with_rich_history_counts_completions_and_abandonments_ahead():
    estimate = estimate_wait(RICH, CONFIG)
    assert estimate.method == "position"
    assert estimate.seconds == pytest.approx(sum(1 / (6 / 240 + m / 150) for m in range(5)), rel=1e-12)
    assert estimate.probability_of_wait == 1.0
    # Answered unless the caller's own patience runs out first: 1 − nμ / (nμ + (k+1)θ).
    assert estimate.probability_of_abandon == pytest.approx(1 - (6 / 240) / (6 / 240 + 5 / 150), rel=1e-12)


def test_unmeasured_patience_ignores_abandonment_and_errs_long():
    estimate = estimate_wait(replace(RICH, mean_patience=None, patience_samples=0), CONFIG)
    assert estimate.seconds == pytest.approx(5 * 240 / 6)
    assert estimate.probability_of_abandon == 0.0
    assert estimate.seconds > estimate_wait(RICH, CONFIG).seconds


def test_callers_ahead_take_the_free_agents_first():
    one_free = replace(RICH, callers_ahead=4, agents_free=1)
    three_ahead_none_free = replace(RICH, callers_ahead=3, agents_free=0)
    assert estimate_wait(one_free, CONFIG).seconds == pytest.approx(estimate_wait(three_ahead_none_free, CONFIG).seconds)
    # As many ahead as free agents: they take them all, and this caller waits for the first completion.
    level = estimate_wait(replace(RICH, callers_ahead=2, agents_free=2), CONFIG)
    assert (level.method, level.probability_of_wait) == ("position", 1.0)
    assert level.seconds == pytest.approx(position_wait(0, 6, 240.0, 150.0))


def test_estimate_for_a_later_position_grows_with_it():
    waits = [estimate_wait(RICH, CONFIG, position=k).seconds for k in range(20)]
    assert all(a < b for a, b in zip(waits, waits[1:]))
    assert estimate_wait(RICH, CONFIG, position=4) == estimate_wait(RICH, CONFIG)


def test_overloaded_fallback_stays_finite():
    swamped = QueueState(callers_ahead=None, agents_staffed=3, agents_free=0)
    estimate = estimate_wait(swamped, replace(CONFIG, default_arrival_rate=0.1))  # 30 E on 3 agents
    assert estimate.method == "erlang_a"
    assert math.isfinite(estimate.seconds) and estimate.seconds > 0
    assert 0.85 < estimate.probability_of_abandon < 1


def test_no_agents_means_no_answer():
    closed = replace(RICH, agents_staffed=0, agents_free=0)
    estimate = estimate_wait(closed, CONFIG)
    assert (estimate.seconds, estimate.probability_of_abandon) == (math.inf, 1.0)


def test_queue_state_rejects_impossible_counts():
    with pytest.raises(ValueError):
        QueueState(callers_ahead=0, agents_staffed=2, agents_free=3)
    with pytest.raises(ValueError):
        QueueState(callers_ahead=-1, agents_staffed=2, agents_free=0)
    with pytest.raises(ValueError):
        estimate_wait(RICH, CONFIG, position=-2)
