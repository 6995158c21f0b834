"""/webhooks/whatsapp: verification, signatures, size limit, malformed bodies, duplicates and out-of-order statuses,
and the webhooks about the account (template status and quality, phone number, account updates, unknown fields)."""
from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gateway.store import Store, merge_message_status
from gateway.whatsapp import AccountHealth, create_whatsapp_router, sign
from tests.support.store import outbox_messages, whatsapp_inbound, whatsapp_statuses
from tests.support.whatsapp import T0, WABA, FakeClock, account_envelope, deflect, fresh_account, template_status

SECRET = SecretStr("app-secret-for-tests")
PHONE_ID = "106540352242922"
NUMBER = "+525555550123"


@pytest.fixture
def account() -> AccountHealth:
    """The account's state the router reports to."""
    return fresh_account()


@pytest.fixture
def env(tmp_path, account):
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    inbound_events = []

    async def on_inbound(event):
        inbound_events.append(event)

    app = FastAPI()
    app.include_router(
        create_whatsapp_router(store=store, app_secret=SECRET, verify_token=SecretStr("verify-me"), phone_number_id=PHONE_ID,
                               max_body_bytes=4096, clock=FakeClock(), account=account, on_inbound=on_inbound)
    )
    yield store, app, inbound_events
    store.close()


def run(app, fn):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await fn(http)
    return asyncio.run(go())


def envelope(value: dict) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000001", "phone_number_id": PHONE_ID}, **value}}]}]}


def status(wamid: str, status_: str, ts: int = 1736164800, callback: str | None = None, errors: list | None = None) -> dict:
    s = {"id": wamid, "status": status_, "timestamp": str(ts), "recipient_id": "525555550123"}
    if callback:
        s["biz_opaque_callback_data"] = callback
    if errors:
        s["errors"] = errors
    return s


async def post(http, payload, *, secret: SecretStr = SECRET, raw: bytes | None = None, headers: dict | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    h = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body), **(headers or {})}
    return await http.post("/webhooks/whatsapp", content=body, headers=h)


def nothing_stored(store: Store) -> bool:
    return not whatsapp_statuses(store) and not whatsapp_inbound(store) and all(m["status"] == "pending" for m in outbox_messages(store))


def claim_next(store: Store):
    return asyncio.run(store.outbox.claim(now=FakeClock().now(), lease_s=60, in_doubt_grace_s=30))


def accepted(store: Store, outbox_id: int, wamid: str) -> None:
    asyncio.run(store.outbox.accepted(outbox_id, wamid, now=FakeClock().now()))


def test_verification_echoes_the_challenge_only_for_the_right_token(env):
    _, app, _ = env

    async def go(http):
        ok = await http.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"})
        assert ok.status_code == 200 and ok.text == "1158201444"
        for params in (
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": "verify-me", "hub.challenge": "1"},
            {"hub.mode": "subscribe", "hub.challenge": "1"},
            {},
        ):
            assert (await http.get("/webhooks/whatsapp", params=params)).status_code == 403
    run(app, go)


def test_forged_unsigned_oversized_and_malformed_posts_are_refused_and_change_nothing(env):
    store, app, events = env
    call_id = deflect(store)
    good = envelope({"statuses": [status("wamid.X", "delivered", callback=f"{call_id}:deflection")]})

    async def go(http):
        assert (await post(http, good, secret=SecretStr("not-the-secret"))).status_code == 401
        body = json.dumps(good).encode()
        assert (await http.post("/webhooks/whatsapp", content=body, headers={"Content-Type": "application/json"})).status_code == 401
        # Signature of another body (replayed header on a tampered payload).
        tampered = body.replace(b"delivered", b"read")
        assert (await http.post("/webhooks/whatsapp", content=tampered, headers={"X-Hub-Signature-256": sign(SECRET, body)})).status_code == 401
        assert (await http.post("/webhooks/whatsapp", content=body, headers={"X-Hub-Signature-256": "sha256=ñ".encode("latin-1")})).status_code == 401
        # Oversized: refused by declared length, and while streaming when the length is not declared.
        big = envelope({"statuses": [status("wamid.X", "read")] * 60})
        assert (await post(http, big)).status_code == 413

        async def chunks():
            for _ in range(10):
                yield b" " * 1000
        streamed = await http.post("/webhooks/whatsapp", content=chunks(), headers={"X-Hub-Signature-256": "sha256=00"})
        assert streamed.status_code == 413
        # Signed but malformed: not JSON, wrong object, missing fields, bad timestamp.
        for raw in (b"{not json", json.dumps({"object": "page", "entry": []}).encode(),
                    json.dumps(envelope({"statuses": [{"id": "wamid.X"}]})).encode(),
                    json.dumps(envelope({"statuses": [status("wamid.X", "read") | {"timestamp": "yesterday"}]})).encode(),
                    json.dumps(envelope({"messages": [{"from": "525555550123", "id": "wamid.in", "timestamp": "1", "type": "text", "text": {}}]})).encode()):
            assert (await post(http, None, raw=raw)).status_code == 400
    run(app, go)
    assert nothing_stored(store) and events == []


def test_duplicate_and_out_of_order_statuses_end_at_the_right_status(env):
    store, app, _ = env
    call_a, call_b, call_c = (deflect(store, number=n) for n in ("+525555550101", "+525555550102", "+525555550103"))
    for call_id, wamid in ((call_a, "wamid.A"), (call_b, "wamid.B"), (call_c, "wamid.C")):
        claim = claim_next(store)
        accepted(store, claim.id, wamid)
    failed = [{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable", "error_data": {"details": "x"}}]

    async def go(http):
        # A: read arrives first, then delivered and sent, each twice.
        for s in ("read", "delivered", "read", "sent", "delivered", "sent"):
            assert (await post(http, envelope({"statuses": [status("wamid.A", s)]}))).status_code == 200
        # B: failed, then delivered proves it reached the phone.
        await post(http, envelope({"statuses": [status("wamid.B", "failed", errors=failed)]}))
        await post(http, envelope({"statuses": [status("wamid.B", "delivered"), status("wamid.B", "sent")]}))
        # C: sent, then failed; a duplicate failed changes nothing.
        for _ in range(2):
            await post(http, envelope({"statuses": [status("wamid.C", "sent"), status("wamid.C", "failed", errors=failed)]}))
    run(app, go)
    by_call = {m["call_id"]: m for m in outbox_messages(store)}
    assert by_call[call_a]["status"] == "read"
    assert by_call[call_b]["status"] == "delivered" and by_call[call_b]["last_error"] is None
    assert by_call[call_c]["status"] == "failed" and by_call[call_c]["last_error"].startswith("131026")
    assert len(whatsapp_statuses(store, "wamid.A")) == 3
    failures = [e for e in asyncio.run(store.calls.get(call_c))["events"] if e["type"] == "whatsapp_failed"]
    assert len(failures) == 1 and failures[0]["data"]["fallback"] is True


def test_a_status_arriving_before_the_send_answer_is_kept_and_applied(env):
    store, app, _ = env
    call_id = deflect(store)
    claim = claim_next(store)

    async def go(http):
        # The webhook for another process's wamid (no callback data) is kept, unattached.
        await post(http, envelope({"statuses": [status("wamid.EARLY", "delivered")]}))
    run(app, go)
    assert outbox_messages(store)[0]["status"] == "sending"
    accepted(store, claim.id, "wamid.EARLY")
    m = asyncio.run(store.calls.get(call_id))["messages"][0]
    assert (m["status"], m["wamid"]) == ("delivered", "wamid.EARLY")


def test_inbound_messages_are_stored_once_open_the_window_and_reach_the_handler(env):
    store, app, events = env
    call_id = deflect(store)
    claim = claim_next(store)
    accepted(store, claim.id, "wamid.OURS")
    reply = envelope({
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5215555550123"}],  # Mexico's WhatsApp id keeps the legacy "1"
        "messages": [{"from": "5215555550123", "id": "wamid.IN1", "timestamp": "1736164900", "type": "button",
                      "button": {"payload": f"continue|{call_id}:deflection", "text": "Sí, sigamos"},
                      "context": {"from": "15550000001", "id": "wamid.OURS"}}],
    })
    other_number = envelope({"messages": [{"from": "14155550100", "id": "wamid.IN2", "timestamp": "1736164901", "type": "text", "text": {"body": "hi"}}]})
    other_number["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "someone-else"

    async def go(http):
        for _ in range(3):
            assert (await post(http, reply)).status_code == 200
        assert (await post(http, other_number)).status_code == 200
        await asyncio.sleep(0.05)  # the handler runs after the answer
    run(app, go)
    inbound = whatsapp_inbound(store)
    assert len(inbound) == 1 and inbound[0]["from_number"] == NUMBER and inbound[0]["call_id"] == call_id
    assert inbound[0]["text"] == "Sí, sigamos"
    assert asyncio.run(store.whatsapp.last_inbound(NUMBER)).timestamp() == 1736164900
    assert asyncio.run(store.whatsapp.last_inbound("+14155550100")) is None
    assert len(events) == 1 and events[0].call_id == call_id and events[0].payload.startswith("continue|")
    assert any(e["type"] == "whatsapp_reply" for e in asyncio.run(store.calls.get(call_id))["events"])


@pytest.mark.parametrize("current, incoming, result", [
    ("accepted", "sent", "sent"), ("sent", "delivered", "delivered"), ("delivered", "sent", "delivered"),
    ("read", "delivered", "read"), ("read", "sent", "read"), ("sent", "failed", "failed"),
    ("delivered", "failed", "delivered"), ("read", "failed", "read"), ("failed", "sent", "failed"),
    ("failed", "delivered", "delivered"), ("failed", "read", "read"), ("sending", "sent", "sent"),
])
def test_status_order_never_moves_backwards(current, incoming, result):
    assert merge_message_status(current, incoming) == result
    assert merge_message_status(merge_message_status(current, incoming), incoming) == result  # idempotent


# --- webhooks about the account --------------------------------------------------------------------


def account_events(store: Store):
    return asyncio.run(store.whatsapp.account_events())


def test_a_signed_template_status_update_is_answered_200_recorded_as_received_and_stops_deflections(env, account):
    store, app, events = env
    paused = template_status("PAUSED", other_info={"title": "FIRST_PAUSE", "description": "Paused for 3 hours."},
                             message_template_category="UTILITY", added_by_meta_later={"x": 1})

    async def go(http):
        answer = await post(http, account_envelope("message_template_status_update", paused))
        assert (answer.status_code, answer.json()) == (200, {"received": 1})
    run(app, go)
    [event] = account_events(store)
    assert (event.field, event.account_id, event.value) == ("message_template_status_update", WABA, paused)
    assert event.occurred_at.timestamp() == T0
    assert account.deflection_unavailable("es") == "WhatsApp template call_followup (es) is paused"
    assert account.deflection_unavailable("en") is None
    assert nothing_stored(store) and events == []  # no message status or customer message came with it


@pytest.mark.parametrize("field, value", [
    ("message_template_quality_update", {"previous_quality_score": "GREEN", "new_quality_score": "YELLOW",
                                         "message_template_id": 806312974732579, "message_template_name": "call_followup",
                                         "message_template_language": "en"}),
    ("template_category_update", {"message_template_id": 278077987957091, "message_template_name": "call_followup",
                                  "message_template_language": "es", "previous_category": "UTILITY", "new_category": "MARKETING"}),
    ("phone_number_quality_update", {"display_phone_number": "15550783881", "event": "FLAGGED", "current_limit": "TIER_1K"}),
    ("account_update", {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}),
    ("business_capability_update", {"max_daily_conversation_per_phone": 1000}),  # a field Puente does not know
    ("some_future_field", ["any", "json", 1]),
])
def test_every_other_field_is_answered_200_and_recorded_as_received_without_stopping_deflections(env, account, field, value):
    store, app, _ = env

    async def go(http):
        answer = await post(http, account_envelope(field, value))
        assert (answer.status_code, answer.json()) == (200, {"received": 1})
    run(app, go)
    assert [(e.field, e.value) for e in account_events(store)] == [(field, value)]
    assert account.stopped() == {}


def test_an_unknown_field_is_logged_at_info_as_not_acted_on(env, caplog):
    _, app, _ = env

    async def go(http):
        assert (await post(http, account_envelope("some_future_field", {"a": 1}))).status_code == 200
    with caplog.at_level(logging.INFO, logger="gateway.whatsapp"):
        run(app, go)
    [line] = [r for r in caplog.records if "some_future_field" in r.getMessage()]
    assert line.levelno == logging.INFO and "not acted on" in line.getMessage()


def test_a_redelivered_account_event_is_recorded_once_and_alerts_once(env, account, caplog):
    store, app, _ = env
    body = account_envelope("message_template_status_update", template_status("DISABLED"))

    async def go(http):
        for _ in range(3):  # Meta retries what it thinks was not answered
            assert (await post(http, body)).status_code == 200
    with caplog.at_level(logging.INFO, logger="gateway.whatsapp"):
        run(app, go)
    assert len(account_events(store)) == 1
    alerts = [r for r in caplog.records if r.levelno == logging.WARNING and "call_followup" in r.getMessage()]
    assert len(alerts) == 1 and "disabled" in alerts[0].getMessage() and "stay in voice" in alerts[0].getMessage()
    assert account.deflection_unavailable("es") == "WhatsApp template call_followup (es) is disabled"


def test_a_message_status_and_a_template_event_in_one_body_are_both_taken(env, account):
    store, app, _ = env
    call_id = deflect(store)
    claim = claim_next(store)
    accepted(store, claim.id, "wamid.X")
    body = envelope({"statuses": [status("wamid.X", "delivered")]})
    body["entry"].append(account_envelope("message_template_status_update", template_status("REJECTED", language=None))["entry"][0])

    async def go(http):
        answer = await post(http, body)
        assert (answer.status_code, answer.json()) == (200, {"received": 2})
    run(app, go)
    assert asyncio.run(store.calls.get(call_id))["messages"][0]["status"] == "delivered"
    assert [e.field for e in account_events(store)] == ["message_template_status_update"]
    assert account.deflection_unavailable("en") == "WhatsApp template call_followup is rejected"


def test_forged_or_malformed_account_events_are_refused_and_change_nothing(env, account):
    store, app, _ = env
    paused = account_envelope("message_template_status_update", template_status("PAUSED"))

    async def go(http):
        assert (await post(http, paused, secret=SecretStr("not-the-secret"))).status_code == 401
        unsigned = await http.post("/webhooks/whatsapp", content=json.dumps(paused).encode(), headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401
        # Signed, but not what Meta sends for this field: no template named, no event, no value, a bad time.
        nameless = template_status("PAUSED")
        del nameless["message_template_name"]
        for bad in (account_envelope("message_template_status_update", nameless),
                    account_envelope("phone_number_quality_update", {"display_phone_number": "15550783881"}),
                    {"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "account_update"}]}]},
                    {"object": "whatsapp_business_account",
                     "entry": [{"id": WABA, "time": "yesterday", "changes": [{"field": "x", "value": {}}]}]}):
            assert (await post(http, bad)).status_code == 400
    run(app, go)
    assert account_events(store) == [] and account.stopped() == {}
