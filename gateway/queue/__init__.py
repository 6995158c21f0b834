"""Caller queues: wait estimates from queueing models (see ``estimate``)."""
from gateway.queue.estimate import (
    ErlangAMetrics,
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

__all__ = [
    "ErlangAMetrics",
    "EstimatorConfig",
    "QueueState",
    "WaitEstimate",
    "erlang_a",
    "erlang_a_service_level",
    "erlang_b",
    "erlang_c",
    "erlang_c_mean_wait",
    "erlang_c_service_level",
    "estimate_wait",
    "position_wait",
]
