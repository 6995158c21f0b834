"""The sender's decisions, driven by a fake clock and a scripted client: retries with jittered
backoff, terminal errors, alerts, pacing, and secrets that never show."""
from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime

import pytest

from gateway.config import load_settings
from gateway.store import Store
from gateway.whatsapp import (
    OutboxWorker,
    RetryableApiError,
    SendResult,
    TemplateError,
    Throttle,
    TokenExpiredError,
    UndeliverableError,
    backoff_delay,
    build_whatsapp,
)
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from tests.support.store import outbox_messages, whatsapp_delivery
from tests.support.whatsapp import FakeClock, deflect

SECRET_TOKEN = "EAAG-very-secret-token-value"


class ScriptedClient:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent = []

    async def send(self, message):
        self.sent.append(message)
        outcome = self.outcomes.pop(0) if self.outcomes else SendResult(f"wamid.{len(self.sent)}", None, "accepted")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def api_error(cls, code, status=400):
    return cls(f"(#{code}) error", code=code, http_status=status)


@pytest.fixture
def env(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    yield store
    store.close()


def make_worker(store, client, clock, alerts=None, **overrides):
    wa = load_settings(environ={}, overrides={f"whatsapp.{k}": v for k, v in overrides.items()}).whatsapp
    builder = MessageBuilder(TemplateRegistry(wa.templates), wa.intent_labels, wa.reason_templates)
    return wa, OutboxWorker(store, client, builder, wa, clock=clock, rng=random.Random(42),
                            on_alert=(alerts.append if alerts is not None else None))


def drive(worker, clock, store, *, until, max_steps=50):
    """Run the sender step by step, jumping the clock to the next due attempt."""
    async def go():
        for _ in range(max_steps):
            if until():
                return
            if not await worker.run_once():
                due = [d["next_attempt_at"] for m in outbox_messages(store)
                       if (d := whatsapp_delivery(store, m["id"])) and d["next_attempt_at"]]
                if not due:
                    return
                nxt = min(datetime.fromisoformat(d) for d in due)
                clock.advance(max(0.0, (nxt - clock.now()).total_seconds()) + 0.001)
        raise AssertionError("sender did not settle")
    asyncio.run(go())


def only_message(store):
    (m,) = outbox_messages(store)
    return m



def test_retryable_errors_back_off_exponentially_with_jitter_then_succeed(env):
    clock = FakeClock()
    client = ScriptedClient(api_error(RetryableApiError, 130429, 429), api_error(RetryableApiError, 131056),
                            api_error(RetryableApiError, 131000, 500), api_error(RetryableApiError, 131057))
    wa, worker = make_worker(env, client, clock, backoff_base_s=2.0, backoff_cap_s=10.0)
    deflect(env)
    times = []
    original = env.outbox.claim

    async def spy(**kw):
        claim = await original(**kw)
        if claim:
            times.append(clock.elapsed)
        return claim
    env.outbox.claim = spy
    drive(worker, clock, env, until=lambda: only_message(env)["status"] == "accepted")
    gaps = [b - a for a, b in zip(times, times[1:])]
    rng = random.Random(42)
    expected = [backoff_delay(n, base_s=2.0, cap_s=10.0, rng=rng) for n in (1, 2, 3, 4)]
    assert gaps == pytest.approx(expected, abs=0.01)
    assert 1.0 <= gaps[0] <= 2.0 and 2.0 <= gaps[1] <= 4.0 and 4.0 <= gaps[2] <= 8.0 and 5.0 <= gaps[3] <= 10.0  # capped
    m = only_message(env)
    assert m["attempts"] == 5 and m["wamid"] == "wamid.5" and m["last_error"] is None and len(client.sent) == 5


def test_attempts_are_bounded_then_the_message_fails_for_fallback(env):
    clock = FakeClock()
    client = ScriptedClient(*[api_error(RetryableApiError, 131000, 500)] * 10)
    wa, worker = make_worker(env, client, clock, max_attempts=3)
    call_id = deflect(env)
    drive(worker, clock, env, until=lambda: only_message(env)["status"] == "failed")
    assert len(client.sent) == 3 and only_message(env)["last_error"].startswith("gave up after 3 attempts")
    failed = [e for e in asyncio.run(env.calls.get(call_id))["events"] if e["type"] == "whatsapp_failed"]
    assert failed[0]["data"]["fallback"] is True


@pytest.mark.parametrize("error, alert, fallback", [
    (api_error(UndeliverableError, 131026), None, True),
    (api_error(TemplateError, 132001), "template_misconfigured", False),
])
def test_terminal_errors_are_not_retried(env, error, alert, fallback):
    clock, alerts = FakeClock(), []
    client = ScriptedClient(error)
    wa, worker = make_worker(env, client, clock, alerts)
    call_id = deflect(env)
    drive(worker, clock, env, until=lambda: only_message(env)["status"] == "failed")
    assert len(client.sent) == 1 and only_message(env)["last_error"].startswith(str(error.code))
    assert [a.kind for a in alerts] == ([alert] if alert else [])
    event = [e for e in asyncio.run(env.calls.get(call_id))["events"] if e["type"] == "whatsapp_failed"][0]
    assert event["data"]["fallback"] is fallback and event["data"]["code"] == error.code


def test_an_unknown_template_fails_without_calling_the_api(env):
    clock, alerts = FakeClock(), []
    client = ScriptedClient()
    wa, worker = make_worker(env, client, clock, alerts)
    deflect(env, payload={"template": "not_registered", "language": "es", "parameters": []})
    drive(worker, clock, env, until=lambda: only_message(env)["status"] == "failed")
    assert client.sent == [] and [a.kind for a in alerts] == ["payload_invalid"]


def test_an_expired_token_alerts_pauses_and_keeps_the_message_without_spending_attempts(env, caplog):
    clock, alerts = FakeClock(), []
    client = ScriptedClient(api_error(TokenExpiredError, 190, 401), api_error(TokenExpiredError, 190, 401))
    wa, worker = make_worker(env, client, clock, alerts, max_attempts=2, auth_pause_s=60)
    deflect(env)
    caplog.set_level(logging.DEBUG)
    drive(worker, clock, env, until=lambda: only_message(env)["status"] == "accepted")
    assert [a.kind for a in alerts] == ["token_expired", "token_expired"]
    assert clock.elapsed >= 120 and len(client.sent) == 3 and only_message(env)["attempts"] == 1


def test_one_message_per_customer_interval_and_a_global_rate(env):
    clock = FakeClock()
    client = ScriptedClient()
    wa, worker = make_worker(env, client, clock, per_user_interval_s=6.0)
    deflect(env, number="+525555550123")
    deflect(env, number="+525555550123", purpose="deflection")
    deflect(env, number="+525555550124")
    sent_at = {}
    original = client.send

    async def timed(message):
        sent_at.setdefault(message.to, []).append(clock.elapsed)
        return await original(message)
    client.send = timed
    drive(worker, clock, env, until=lambda: all(m["status"] == "accepted" for m in outbox_messages(env)))
    a, b = sent_at["+525555550123"]
    assert b - a >= 6.0 and sent_at["+525555550124"][0] < 6.0
    assert [m["attempts"] for m in outbox_messages(env)] == [1, 1, 1]  # waiting is not an attempt

    throttle = Throttle(clock, messages_per_second=2, per_user_interval_s=0)
    start = clock.elapsed

    async def burst():
        for _ in range(6):
            await throttle.acquire()
    asyncio.run(burst())
    assert clock.elapsed - start == pytest.approx(2.0, abs=0.01)  # 2 at once (burst), then 2 per second


def test_secrets_come_from_the_environment_and_never_show(env, caplog, tmp_path):
    environ = {"PUENTE_WHATSAPP__ACCESS_TOKEN": SECRET_TOKEN, "PUENTE_WHATSAPP__APP_SECRET": "0123456789",
               "PUENTE_WHATSAPP__VERIFY_TOKEN": "123456", "PUENTE_WHATSAPP__BASE_URL": "https://graph.facebook.com",
               "PUENTE_WHATSAPP__PHONE_NUMBER_ID": "106540352242922"}
    settings = load_settings(environ=environ)
    wa = settings.whatsapp
    assert not wa.sandbox and wa.access_token.get_secret_value() == SECRET_TOKEN and wa.app_secret.get_secret_value() == "0123456789"
    assert wa.phone_number_id == "106540352242922"
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET_TOKEN not in shown and "0123456789" not in shown
    with pytest.raises(Exception, match="app_secret"):
        load_settings(environ={"PUENTE_WHATSAPP__ACCESS_TOKEN": "x", "PUENTE_WHATSAPP__BASE_URL": "https://graph.facebook.com"})

    caplog.set_level(logging.DEBUG)

    async def go():
        channel = build_whatsapp(settings, env)
        assert channel.sandbox is None and channel.messages_url == "https://graph.facebook.com/v21.0/106540352242922/messages"
        assert SECRET_TOKEN not in repr(channel) and SECRET_TOKEN not in repr(channel.client)
        await channel.stop()
    asyncio.run(go())
    deflect(env)
    clock = FakeClock()
    _, worker = make_worker(env, ScriptedClient(api_error(TokenExpiredError, 190, 401)), clock)
    asyncio.run(worker.run_once())
    assert SECRET_TOKEN not in caplog.text and "whatsapp alert (token_expired)" in caplog.text
    assert SECRET_TOKEN not in str(asyncio.run(env.calls.list())) + str(outbox_messages(env))


def test_after_an_outage_an_in_doubt_attempt_waits_a_full_grace_from_restart_before_any_resend(env):
    clock = FakeClock()
    deflect(env)
    # The old process claimed and sent, then died; it stays down for 100 s (longer than the grace).
    assert asyncio.run(env.outbox.claim(now=clock.now(), lease_s=11, in_doubt_grace_s=30)) is not None
    clock.advance(100)
    client = ScriptedClient()
    _, worker = make_worker(env, client, clock, in_doubt_grace_s=30)  # the restarted sender

    async def go():
        assert await worker.run_once() is False  # not re-sent right away: Meta's retried webhook may still come
        clock.advance(29)
        assert await worker.run_once() is False
        clock.advance(2)
        assert await worker.run_once() is True
    asyncio.run(go())
    assert len(client.sent) == 1 and only_message(env)["status"] == "accepted" and only_message(env)["attempts"] == 2
