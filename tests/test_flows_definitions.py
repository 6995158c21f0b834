"""Flow definitions (YAML → validated state machines), text/URL templating, settings, and the outbox payload kinds
the flows use (``buttons``/``list``) — no servers."""
from __future__ import annotations

import pytest

from gateway.config import FlowSettings
from gateway.flows import DEFAULT_FLOWS, FlowError, FlowLibrary
from gateway.flows.definitions import AskStep, dig, render, render_json
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry

WHATSAPP_INTENTS = {"order_status", "appointment", "duplicate_document", "opening_hours", "policy_info", "payment",
                    "send_documents", "update_details"}


def test_the_bundled_flows_cover_every_whatsapp_intent_in_both_languages():
    library = FlowLibrary.load()
    assert set(library.flows) == WHATSAPP_INTENTS
    for flow in library.flows.values():
        for step in flow.steps.values():
            for name in ("text", "invalid"):
                text = getattr(step, name, None)
                if text and "*" not in text:
                    assert set(text) >= {"es", "en"}, (flow.intent, step.id, name)
    assert DEFAULT_FLOWS.name == "default_flows.yaml"


def parse(steps: dict, start: str = "a") -> FlowLibrary:
    return FlowLibrary.parse({"flows": {"order_status": {"start": start, "steps": steps}}})


@pytest.mark.parametrize("steps, start, problem", [
    ({"a": {"type": "say", "text": "hi", "next": "nowhere"}}, "a", "unknown step 'nowhere'"),
    ({"a": {"type": "say", "text": "hi"}}, "a", "needs a next step"),
    ({"a": {"type": "say", "text": "hi", "next": "resolve"}}, "b", "start step 'b' is not defined"),
    ({"a": {"type": "ask", "var": "x", "text": "?", "pattern": "([", "next": "resolve"}}, "a", "not a valid regex"),
    ({"a": {"type": "buttons", "text": "?", "options": [{"id": "x", "title": "X"}]}}, "a", "every option needs a next step"),
    ({"a": {"type": "teleport", "next": "resolve"}}, "a", "teleport"),
    ({"a": {"type": "say", "text": "hi", "next": "resolve", "colour": "red"}}, "a", "colour"),
])
def test_invalid_flows_are_refused_with_the_place_and_reason(steps, start, problem):
    with pytest.raises(FlowError) as err:
        parse(steps, start)
    assert problem in str(err.value)


def test_not_a_flows_file(tmp_path):
    with pytest.raises(FlowError, match="expected a mapping"):
        FlowLibrary.parse(["nope"])
    bad = tmp_path / "flows.yaml"
    bad.write_text("flows: [unclosed", encoding="utf-8")
    with pytest.raises(FlowError, match="not valid YAML"):
        FlowLibrary.load(bad)
    with pytest.raises(FlowError, match="cannot read"):
        FlowLibrary.load(tmp_path / "missing.yaml")


def test_handoff_and_resolve_are_built_in_and_texts_may_be_one_string():
    library = parse({"a": {"type": "buttons", "text": "¿Seguimos?", "options": [
        {"id": "yes", "title": "Sí", "next": "resolve"}, {"id": "no", "title": "No", "next": "handoff"}]}})
    flow = library.flows["order_status"]
    assert flow.steps["resolve"].type == "resolve" and flow.steps["handoff"].type == "handoff"
    assert flow.steps["a"].text == {"*": "¿Seguimos?"} and library.text("csat", "en").startswith("How would you rate")


def test_ask_extracts_with_its_pattern_and_tolerates_spoken_number_spacing():
    step = AskStep(type="ask", var="order", text={"es": "?"}, pattern=r"\b(\d{5,10})\b", next="x")
    assert step.extract("mi pedido es el 12 345") == "12345"
    assert step.extract("pedido 123-456-78") == "12345678"
    assert step.extract("no lo tengo") is None and step.extract(None) is None
    free = AskStep(type="ask", var="address", text={"es": "?"}, next="x")
    assert free.extract("  Calle 5 #10  ") == "Calle 5 #10"


def test_templating_substitutes_names_only_and_encodes_url_values():
    variables = {"name": "Ana", "order": "12/34 ?x=1", "backend_url": "http://127.0.0.1:9/demo"}
    assert render("Hola {name}, {missing}.", variables) == "Hola Ana, ."
    assert render("{name.__class__} {name[0]} {0}", variables) == "{name.__class__} {name[0]} {0}"  # no format-string tricks
    assert render("{backend_url}/orders/{order}", variables, quote=True) == "http://127.0.0.1:9/demo/orders/12%2F34%20%3Fx%3D1"
    docs = [{"media_id": "1"}]
    assert render_json({"documents": "{docs}", "who": "{name}!", "n": 3}, {"docs": docs, "name": "Ana"}) == {
        "documents": docs, "who": "Ana!", "n": 3}
    assert dig({"a": {"b": [{"c": 7}]}}, "a.b.0.c") == 7 and dig({"a": 1}, "a.b") is None


def test_settings_defaults_and_strictness():
    s = FlowSettings()
    assert s.enabled and s.csat and s.backend_url is None and s.handoff_webhook_url is None and s.demo_backend
    assert "agente" in s.handoff_words["es"] and "agent" in s.handoff_words["en"]
    assert FlowSettings.model_validate({"backend_url": "http://crm.local/api", "max_invalid": 3}).max_invalid == 3
    with pytest.raises(ValueError):
        FlowSettings.model_validate({"backend": "typo"})
    with pytest.raises(ValueError):
        FlowSettings(handoff_attempts=5, handoff_max_attempts=2)


def test_message_builder_turns_buttons_and_list_payloads_into_interactive_messages():
    builder = MessageBuilder(TemplateRegistry([]), {}, ())
    buttons = builder.build({"type": "buttons", "text": "¿Qué deseas?", "buttons": [
        {"id": "confirm", "title": "Confirmar"}, {"id": "long", "title": "Un título demasiado largo para WhatsApp"}]},
        to="+525555550123", callback_data="conv:x:step:1")
    dumped = buttons.model_dump(mode="json", exclude_none=True)
    assert dumped["interactive"]["type"] == "button" and dumped["biz_opaque_callback_data"] == "conv:x:step:1"
    titles = [b["reply"]["title"] for b in dumped["interactive"]["action"]["buttons"]]
    assert titles[0] == "Confirmar" and len(titles[1]) == 20 and titles[1].endswith("…")
    listed = builder.build({"type": "list", "text": "Califica", "button": "Calificar",
                            "rows": [{"id": f"csat:{n}", "title": str(n)} for n in range(1, 6)]}, to="+525555550123", callback_data=None)
    action = listed.model_dump(mode="json", exclude_none=True)["interactive"]["action"]
    assert action["button"] == "Calificar" and [r["id"] for r in action["sections"][0]["rows"]][-1] == "csat:5"
