"""WhatsApp self-service flows: a deflected call continues as a small, explicit state machine per intent.

Entry points: ``FlowEngine`` (its ``handle_inbound`` is the webhook router's ``on_inbound``),
``create_conversations_router`` (``GET /v1/conversations[/{id}]``), ``create_demo_backend_router``
(``/demo-backend``, a stand-in for the customer's systems), ``FlowSettings`` (the ``flows:`` config
section), ``FlowLibrary`` (the flows YAML; default ``gateway/flows/default_flows.yaml``).

Names are imported lazily, so ``gateway.config`` can import ``gateway.flows.settings`` without a cycle
(the engine imports the WhatsApp channel, which imports ``gateway.config``).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_conversations_router": "gateway.flows.api",
    "DEFAULT_FLOWS": "gateway.flows.definitions",
    "Flow": "gateway.flows.definitions",
    "FlowError": "gateway.flows.definitions",
    "FlowLibrary": "gateway.flows.definitions",
    "create_demo_backend_router": "gateway.flows.demo_backend",
    "FlowEngine": "gateway.flows.engine",
    "FlowSettings": "gateway.flows.settings",
    "ConversationStore": "gateway.flows.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.flows' has no attribute {name!r}")
    return getattr(import_module(module), name)
