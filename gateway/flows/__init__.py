"""WhatsApp self-service flows: a deflected call continues as a small, explicit state machine per intent.

``FlowLibrary`` loads the flows YAML (default ``gateway/flows/default_flows.yaml``), ``FlowEngine``
runs one customer turn at a time (its ``handle_inbound`` is the webhook router's ``on_inbound``).
Their settings are the ``flows:`` section of ``gateway.config``.
"""
from gateway.flows.definitions import DEFAULT_FLOWS, Flow, FlowError, FlowLibrary
from gateway.flows.engine import FlowEngine

__all__ = ["DEFAULT_FLOWS", "Flow", "FlowEngine", "FlowError", "FlowLibrary"]
