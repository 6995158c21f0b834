"""Routing policy: which channel each understood utterance goes to, and why."""
import pytest

from gateway.call.routing import RoutingPolicy, Understanding
from gateway.config import RoutingSettings

SELF_SERVICE = ["order_status", "appointment", "duplicate_document", "opening_hours",
                "policy_info", "payment", "send_documents", "update_details"]
AGENT_WORK = ["billing_dispute", "technical_support", "cancel_service", "fraud_or_loss", "complaint", "agent_request"]


@pytest.fixture
def policy() -> RoutingPolicy:
    return RoutingPolicy(RoutingSettings())


@pytest.mark.parametrize("intent", SELF_SERVICE)
def test_simple_requests_go_to_whatsapp_by_default(policy, intent):
    decision = policy.decide(Understanding(intent, 0.9), reprompts_used=0, whatsapp_unavailable=None)
    assert decision.route == "whatsapp"
    assert intent in decision.reason


@pytest.mark.parametrize("intent", AGENT_WORK)
def test_complex_requests_stay_in_voice_by_default(policy, intent):
    assert policy.decide(Understanding(intent, 0.9), reprompts_used=0, whatsapp_unavailable=None).route == "voice"


def test_low_confidence_reprompts_once_then_goes_to_voice(policy):
    unsure = Understanding("order_status", 0.2)
    first = policy.decide(unsure, reprompts_used=0, whatsapp_unavailable=None)
    second = policy.decide(unsure, reprompts_used=1, whatsapp_unavailable=None)
    assert first.route == "reprompt" and "0.20" in first.reason
    assert second.route == "voice" and "after 1 reprompt" in second.reason


def test_out_of_scope_and_silence_count_as_not_understood(policy):
    assert policy.decide(Understanding("out_of_scope", 0.99), reprompts_used=0, whatsapp_unavailable=None).route == "reprompt"
    assert policy.decide(Understanding(None, 0.0), reprompts_used=1, whatsapp_unavailable=None).route == "voice"


def test_a_caller_who_cannot_receive_whatsapp_stays_in_voice_with_the_reason(policy):
    decision = policy.decide(Understanding("order_status", 0.95), reprompts_used=0, whatsapp_unavailable="the caller is anonymous")
    assert decision.route == "voice"
    assert "anonymous" in decision.reason


def test_operator_routes_and_threshold_come_from_settings():
    policy = RoutingPolicy(RoutingSettings(routes={"order_status": "voice"}, min_confidence=0.95))
    assert policy.decide(Understanding("order_status", 0.99), reprompts_used=0, whatsapp_unavailable=None).route == "voice"
    assert policy.decide(Understanding("payment", 0.9), reprompts_used=0, whatsapp_unavailable=None).route == "reprompt"
    # an intent the operator left out of the table goes to voice
    assert policy.decide(Understanding("payment", 0.99), reprompts_used=0, whatsapp_unavailable=None).route == "voice"


def test_silence_prompts_until_the_limit_then_goes_to_voice(policy):
    assert policy.after_silence(1) is None
    assert policy.after_silence(2) is None
    final = policy.after_silence(3)
    assert final is not None and final.route == "voice" and "no input" in final.reason
