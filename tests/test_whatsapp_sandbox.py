"""The sandbox validates like the Cloud API, and the client maps each answer to the right error class."""
from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from pydantic import SecretStr

from gateway.config import load_settings
from gateway.whatsapp import (
    CloudApiClient,
    DeliveryInDoubt,
    InvalidRequestError,
    ReengagementError,
    ReplyRequest,
    RetryableApiError,
    Sandbox,
    SendNotAttempted,
    TemplateError,
    TokenExpiredError,
    UndeliverableError,
    wire,
)
from gateway.whatsapp.errors import classify
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from tests.support.whatsapp import FakeClock

TOKEN = SecretStr("sandbox-token-123")
TO = "+525555550123"


def make(**kwargs):
    wa = load_settings(environ={}).whatsapp
    registry = TemplateRegistry(wa.templates)
    sandbox = Sandbox(registry=registry, phone_number_id=wa.phone_number_id, display_phone_number="15550000001",
                      business_account_id="waba", app_secret=SecretStr("s"), webhook_url=None, http=None,
                      clock=FakeClock(), rng=random.Random(7), access_token=TOKEN, **kwargs)
    return wa, sandbox, MessageBuilder(registry, wa.intent_labels, wa.reason_templates)


def run(sandbox, fn, token=TOKEN, phone_number_id=None):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
            client = CloudApiClient(http, base_url="http://sandbox", api_version="v21.0",
                                    phone_number_id=phone_number_id or sandbox.phone_number_id, access_token=token)
            try:
                return await fn(client, http)
            finally:
                await sandbox.aclose()
    return asyncio.run(go())


def template(builder, **payload):
    base = {"template": "call_followup", "language": "es", "parameters": ["order_status", "dónde está mi pedido"]}
    return builder.build(base | payload, to=TO, callback_data="call-1:deflection")


def test_a_valid_template_is_accepted_with_a_wamid_in_the_cloud_api_shape():
    wa, sandbox, builder = make()

    async def go(client, http):
        result = await client.send(template(builder))
        raw = await http.post(f"/v21.0/{wa.phone_number_id}/messages", headers={"Authorization": f"Bearer {TOKEN.get_secret_value()}"},
                              json=wire.dump(template(builder, language="en")))
        return result, raw.json()
    result, body = run(sandbox, go)
    assert result.wamid.startswith("wamid.") and result.wa_id == "525555550123" and result.message_status == "accepted"
    assert body["messaging_product"] == "whatsapp" and body["contacts"] == [{"input": TO, "wa_id": "525555550123"}]
    assert body["messages"][0]["id"].startswith("wamid.") and body["messages"][0]["message_status"] == "accepted"
    assert [m.callback_data for m in sandbox.outbound()] == ["call-1:deflection"] * 2


def test_template_errors_phone_numbers_and_limits_are_validated_like_the_api():
    wa, sandbox, builder = make()
    good = template(builder)

    async def go(client, http):
        errors = {}
        unknown = good.model_copy(update={"template": good.template.model_copy(update={"name": "no_such_template"})})
        wrong_lang = good.model_copy(update={"template": good.template.model_copy(update={"language": wire.TemplateLanguage(code="fr")})})
        one_param = good.model_copy(update={"template": good.template.model_copy(update={"components": [
            wire.BodyComponent(parameters=[wire.TextParameter(text="x")])]})})
        newline = good.model_copy(update={"template": good.template.model_copy(update={"components": [
            wire.BodyComponent(parameters=[wire.TextParameter(text="a\nb"), wire.TextParameter(text="c")])]})})
        for name, message in {"unknown": unknown, "lang": wrong_lang, "count": one_param, "newline": newline,
                              "to": good.model_copy(update={"to": "12"})}.items():
            with pytest.raises((TemplateError, InvalidRequestError)) as info:
                await client.send(message)
            errors[name] = (type(info.value), info.value.code)
        return errors
    errors = run(sandbox, go)
    assert errors == {
        "unknown": (TemplateError, 132001), "lang": (TemplateError, 132001), "count": (TemplateError, 132000),
        "newline": (TemplateError, 132018), "to": (InvalidRequestError, 100),
    }
    assert sandbox.outbound() == []


def test_free_form_messages_need_the_24_hour_window_which_only_the_customer_opens():
    wa, sandbox, builder = make()
    text = builder.build({"type": "text", "text": "¿Algo más?"}, to=TO, callback_data=None)
    buttons = builder.build({"type": "interactive", "interactive": {"type": "button", "body": {"text": "¿Seguimos?"},
                             "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Sí"}},
                                                    {"type": "reply", "reply": {"id": "no", "title": "No"}}]}}},
                            to=TO, callback_data=None)
    listing = builder.build({"type": "interactive", "interactive": {"type": "list", "body": {"text": "Elige"}, "action": {
        "button": "Opciones", "sections": [{"title": "Pedidos", "rows": [{"id": f"r{i}", "title": f"Opción {i}"} for i in range(3)]}]}}},
        to=TO, callback_data=None)

    async def go(client, http):
        with pytest.raises(ReengagementError) as info:
            await client.send(text)  # a phone call happened, but nobody wrote on WhatsApp
        assert info.value.code == 131047
        await sandbox.reply(TO, ReplyRequest(text="hola"))
        for m in (text, buttons, listing):
            await client.send(m)
        sandbox._clock.advance(24 * 3600 + 1)
        with pytest.raises(ReengagementError):
            await client.send(text)
        await client.send(template(builder))  # templates are always allowed
    run(sandbox, go)
    out = sandbox.outbound()
    assert [m.type for m in out] == ["text", "interactive", "interactive", "template"]
    assert [b["title"] for b in out[1].buttons] == ["Sí", "No"] and len(out[2].buttons) == 3


def test_wire_models_enforce_text_and_interactive_limits():
    with pytest.raises(ValueError):
        wire.Text(body="x" * 4097)
    wire.Text(body="x" * 4096)
    with pytest.raises(ValueError):
        wire.ButtonAction(buttons=[wire.ReplyButton(reply=wire.ReplyButtonReply(id=str(i), title="t")) for i in range(4)])
    with pytest.raises(ValueError):
        wire.ReplyButtonReply(id="a", title="x" * 21)
    with pytest.raises(ValueError):
        wire.ListSection(rows=[wire.ListRow(id=str(i), title="t") for i in range(11)])


def test_token_phone_number_id_throughput_and_injected_faults():
    wa, sandbox, builder = make(messages_per_second=3)

    async def go(client, http):
        seen = []
        bad = CloudApiClient(http, base_url="http://sandbox", api_version="v21.0", phone_number_id=wa.phone_number_id, access_token=SecretStr("nope"))
        with pytest.raises(TokenExpiredError) as info:
            await bad.send(template(builder))
        seen.append(info.value.code)
        other = CloudApiClient(http, base_url="http://sandbox", api_version="v21.0", phone_number_id="999", access_token=TOKEN)
        with pytest.raises(InvalidRequestError) as info:
            await other.send(template(builder))
        seen.append(info.value.code)
        for _ in range(3):
            await client.send(template(builder))
        with pytest.raises(RetryableApiError) as info:
            await client.send(template(builder))  # 4th within one second
        seen.append(info.value.code)
        sandbox._clock.advance(1.0)
        await http.post("/faults", json={"mode": "500", "count": 1})
        await http.post("/faults", json={"mode": "429", "count": 2})
        for _ in range(3):
            with pytest.raises(RetryableApiError) as info:
                await client.send(template(builder))
            seen.append((info.value.code, info.value.http_status))
        await client.send(template(builder))
        return seen
    seen = run(sandbox, go)
    assert seen == [190, 100, 130429, (131000, 500), (130429, 429), (130429, 429)]
    assert len(sandbox.outbound()) == 4


def test_timeouts_and_refused_connections_are_told_apart():
    wa, sandbox, builder = make()

    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    def hang(request):
        raise httpx.ReadTimeout("slow", request=request)

    async def go():
        for handler, expected in ((refuse, SendNotAttempted), (hang, DeliveryInDoubt)):
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
                client = CloudApiClient(http, base_url="http://x", api_version="v21.0", phone_number_id="1", access_token=TOKEN)
                with pytest.raises(expected):
                    await client.send(template(builder))
    asyncio.run(go())


@pytest.mark.parametrize("code, http_status, cls", [
    (130429, 400, RetryableApiError), (131056, 400, RetryableApiError), (131049, 400, RetryableApiError),
    (131057, 400, RetryableApiError), (131000, 500, RetryableApiError), (None, 503, RetryableApiError),
    (131026, 400, UndeliverableError), (131047, 400, ReengagementError), (132001, 400, TemplateError),
    (132000, 400, TemplateError), (190, 401, TokenExpiredError), (100, 400, InvalidRequestError),
])
def test_error_codes_map_to_what_the_sender_must_do(code, http_status, cls):
    assert type(classify(code, http_status, "m", None, None)) is cls
