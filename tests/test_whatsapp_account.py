"""What Meta says about the WhatsApp account (``gateway.whatsapp.account.AccountHealth``): which template
events stop deflections and which resume them, in which languages, late deliveries, quality and account
updates that only show, the state read back after a restart, and ``/healthz``."""
from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gateway.config import load_settings
from gateway.service import Gateway
from gateway.store import Store
from gateway.whatsapp import build_whatsapp, sign
from tests.support.whatsapp import T0, account_envelope, account_event, fresh_account, template_status

STATUS = "message_template_status_update"
SECRET = SecretStr("app-secret-for-tests")


def status_event(event: str, *, time: int = T0, **value):
    return account_event(STATUS, template_status(event, **value), time=time)


# --- which events stop deflections, and which resume them -------------------------------------------


@pytest.mark.parametrize("event, words", [
    ("PAUSED", "paused"), ("DISABLED", "disabled"), ("REJECTED", "rejected"),
    ("PENDING_DELETION", "pending deletion"), ("DELETED", "deleted"),
])
@pytest.mark.parametrize("resumed_by", ["APPROVED", "REINSTATED"])
def test_a_stopped_deflection_template_keeps_that_language_in_voice_until_meta_approves_it_again(event, words, resumed_by):
    account = fresh_account()
    account.record(status_event(event))
    assert account.deflection_unavailable("es") == f"WhatsApp template call_followup (es) is {words}"
    assert account.deflection_unavailable("en") is None  # its English version was not touched
    assert account.stopped() == {"es": f"WhatsApp template call_followup (es) is {words}"}
    account.record(status_event(resumed_by, time=T0 + 60))
    assert account.deflection_unavailable("es") is None and account.stopped() == {}


def test_an_event_that_names_no_language_is_about_every_language():
    account = fresh_account()
    account.record(status_event("PAUSED", language=None))
    assert account.stopped() == {"es": "WhatsApp template call_followup is paused", "en": "WhatsApp template call_followup is paused"}
    account.record(status_event("APPROVED", language="es", time=T0 + 60))
    assert account.deflection_unavailable("es") is None
    assert account.deflection_unavailable("en") == "WhatsApp template call_followup is paused"


def test_languages_match_however_meta_spells_them_and_whatever_the_caller_speaks():
    # The deflection template approved as en_US; the webhook says en-US; the caller's language is "en".
    account = fresh_account(**{"whatsapp.templates": [
        {"name": "call_followup", "language": "es_MX", "body": "Hola {{1}} {{2}}"},
        {"name": "call_followup", "language": "en_US", "body": "Hi {{1}} {{2}}"},
    ], "whatsapp.recovery_template": "call_followup", "whatsapp.documents_template": "call_followup"})
    account.record(status_event("PAUSED", language="en-US"))
    assert account.deflection_unavailable("en") == "WhatsApp template call_followup (en-US) is paused"
    assert account.deflection_unavailable("es") is None
    assert account.stopped() == {"en_US": "WhatsApp template call_followup (en-US) is paused"}


def test_other_templates_and_events_that_do_not_decide_sending_stop_nothing():
    account = fresh_account()
    account.record(status_event("PAUSED", name="spring_promo"))
    account.record(status_event("FLAGGED"))  # at risk, still sendable
    account.record(status_event("PENDING", language="en"))
    assert account.stopped() == {}
    assert account.as_dict()["templates"]["spring_promo"]["es"]["status"] == "PAUSED"


def test_a_rejected_template_stays_stopped_while_in_appeal():
    account = fresh_account()
    account.record(status_event("REJECTED", reason="INCORRECT_CATEGORY"))
    account.record(status_event("IN_APPEAL", time=T0 + 60))
    assert account.deflection_unavailable("es") == "WhatsApp template call_followup (es) is rejected"
    assert account.as_dict()["templates"]["call_followup"]["es"]["status"] == "IN_APPEAL"


def test_an_event_delivered_late_does_not_undo_a_newer_one():
    account = fresh_account()
    account.record(status_event("APPROVED", time=T0 + 60))
    account.record(status_event("PAUSED", time=T0))  # happened before the approval, arrived after it
    assert account.stopped() == {}
    assert account.as_dict()["templates"]["call_followup"]["es"]["status"] == "APPROVED"


def test_stopping_the_deflection_template_is_an_alert_and_resuming_says_so(caplog):
    account = fresh_account()
    with caplog.at_level(logging.INFO, logger="gateway.whatsapp"):
        account.record(status_event("PAUSED", other_info={"title": "FIRST_PAUSE", "description": "Paused for 3 hours."}))
        account.record(status_event("APPROVED", time=T0 + 60))
    paused, approved = caplog.records
    assert paused.levelno == logging.WARNING
    assert paused.getMessage() == ("whatsapp: alert: template call_followup (es) is paused (Paused for 3 hours.); "
                                   "callers in es stay in voice until Meta approves it again")
    assert approved.levelno == logging.INFO and "deflections resume in es" in approved.getMessage()


# --- what only shows ---------------------------------------------------------------------------------


def test_quality_phone_number_and_account_updates_show_but_stop_nothing_and_red_quality_is_an_alert(caplog):
    account = fresh_account()
    with caplog.at_level(logging.INFO, logger="gateway.whatsapp"):
        account.record(account_event("message_template_quality_update", {
            "previous_quality_score": "YELLOW", "new_quality_score": "RED", "message_template_id": 1,
            "message_template_name": "call_followup", "message_template_language": "es"}))
        account.record(account_event("template_category_update", {
            "message_template_id": 1, "message_template_name": "call_followup", "message_template_language": "es",
            "previous_category": "UTILITY", "new_category": "MARKETING"}))
        account.record(account_event("phone_number_quality_update", {
            "display_phone_number": "15550783881", "event": "THROUGHPUT_UPGRADE", "current_limit": "TIER_UNLIMITED"}))
        account.record(account_event("account_update", {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}))
    assert account.stopped() == {}
    state = account.as_dict()
    assert state["templates"]["call_followup"]["es"] == {
        "status": None, "since": None, "reason": None, "quality": "RED", "category": "MARKETING",
    }
    assert state["phone_numbers"] == {"15550783881": {"event": "THROUGHPUT_UPGRADE", "since": "2025-01-06T12:00:00+00:00",
                                                      "limit": "TIER_UNLIMITED"}}
    assert state["account"]["event"] == "ACCOUNT_VIOLATION" and json.loads(state["account"]["info"]) == {
        "violation_info": {"violation_type": "SCAM"}}
    red, category, phone, violation = caplog.records
    assert red.levelno == logging.WARNING and "call_followup (es) quality RED (was YELLOW)" in red.getMessage()
    assert (category.levelno, phone.levelno) == (logging.INFO, logging.INFO)
    assert violation.levelno == logging.WARNING and "ACCOUNT_VIOLATION" in violation.getMessage()


# --- the state survives a restart ----------------------------------------------------------------


def channel_for(store: Store):
    """The WhatsApp channel as the gateway builds it (the sandbox), signing its webhooks with ``SECRET``."""
    return build_whatsapp(load_settings(environ={}, overrides={"whatsapp.app_secret": SECRET.get_secret_value()}), store,
                          local_base_url="http://127.0.0.1:9")


async def webhook(channel, body: dict) -> int:
    app = FastAPI()
    app.include_router(channel.router)
    raw = json.dumps(body).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        answer = await http.post("/webhooks/whatsapp", content=raw, headers={"X-Hub-Signature-256": sign(SECRET, raw)})
        return answer.status_code


async def restarted(db) -> tuple[Store, object]:
    """A new store over the same file, and the channel started on it, as a gateway restart does."""
    store = Store(f"sqlite:///{db}")
    channel = channel_for(store)
    await channel.start()
    return store, channel


async def shut(store: Store, channel) -> None:
    await channel.stop()
    store.close()


def test_the_template_state_is_read_back_from_the_store_after_a_restart(tmp_path, caplog):
    db = tmp_path / "puente.db"

    async def go():
        store, channel = await restarted(db)
        assert await webhook(channel, account_envelope(STATUS, template_status("PAUSED"))) == 200
        assert await webhook(channel, account_envelope(STATUS, template_status("DISABLED", name="spring_promo"))) == 200
        await shut(store, channel)

        with caplog.at_level(logging.WARNING, logger="gateway.whatsapp"):
            store, channel = await restarted(db)
        assert channel.account.stopped() == {"es": "WhatsApp template call_followup (es) is paused"}
        assert channel.account.as_dict()["templates"]["spring_promo"]["es"]["status"] == "DISABLED"
        assert any("call_followup (es) is paused" in r.getMessage() for r in caplog.records)  # an alert at start too
        approved = account_envelope(STATUS, template_status("APPROVED"), time=T0 + 60)
        assert await webhook(channel, approved) == 200
        await shut(store, channel)

        store, channel = await restarted(db)
        assert channel.account.stopped() == {}
        assert channel.account.as_dict()["templates"]["call_followup"]["es"]["status"] == "APPROVED"
        assert await webhook(channel, approved) == 200  # Meta's retry of it, after the restart: recorded once
        assert len(await store.whatsapp.account_events()) == 3
        await shut(store, channel)
    asyncio.run(go())


def test_a_recorded_event_that_no_longer_reads_is_left_out_at_start_and_the_rest_is_restored(tmp_path, caplog):
    async def go():
        store = Store(f"sqlite:///{tmp_path / 'puente.db'}")
        unreadable = template_status("PAUSED", language="en")
        del unreadable["message_template_name"]  # as if an older version had recorded it
        await store.whatsapp.ingest([], [], now=account_event(STATUS, {}).received_at, events=[
            account_event(STATUS, unreadable), status_event("PAUSED", time=T0 + 1),
        ])
        account = fresh_account()
        with caplog.at_level(logging.WARNING, logger="gateway.whatsapp"):
            account.restore(await store.whatsapp.account_events())
        store.close()
        assert account.stopped() == {"es": "WhatsApp template call_followup (es) is paused"}
        assert any("left out" in r.getMessage() for r in caplog.records)
    asyncio.run(go())


# --- /healthz -------------------------------------------------------------------------------------


def test_health_is_degraded_and_shows_the_template_while_deflections_are_stopped(tmp_path):
    async def go():
        store = Store(f"sqlite:///{tmp_path / 'puente.db'}")
        gateway = Gateway(load_settings(environ={}))
        gateway.whatsapp = channel_for(store)
        gateway.sip = SimpleNamespace(invites={}, frames_dropped=0)  # started, without a SIP stack
        assert gateway.health()["status"] == "ok"
        paused = template_status("PAUSED", other_info={"title": "FIRST_PAUSE", "description": "Paused for 3 hours."})
        assert await webhook(gateway.whatsapp, account_envelope(STATUS, paused)) == 200
        health = gateway.health()
        assert health["status"] == "degraded"
        assert health["whatsapp"]["deflections"] == {
            "template": "call_followup", "stopped": {"es": "WhatsApp template call_followup (es) is paused"},
        }
        assert health["whatsapp"]["templates"]["call_followup"]["es"] == {
            "status": "PAUSED", "since": "2025-01-06T12:00:00+00:00", "reason": "Paused for 3 hours.",
            "quality": None, "category": None,
        }
        assert await webhook(gateway.whatsapp, account_envelope(STATUS, template_status("APPROVED"), time=T0 + 60)) == 200
        assert gateway.health()["status"] == "ok"
        await shut(store, gateway.whatsapp)
    asyncio.run(go())
