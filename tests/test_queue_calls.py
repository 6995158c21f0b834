"""End to end: real SIP calls into a real gateway with a voice queue; the agent is a real SIP user agent.

A caller states a reason that stays in voice, waits in the queue, and is connected to the agent
(the agent's INVITE carries the context; the agent's voice reaches the caller); with nobody to
answer, the caller is offered WhatsApp past the SLA and takes it with DTMF 1, and the follow-up
reaches the WhatsApp sandbox with the call's context.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import ROOT, espeak

from gateway.dev.crowd import Caller, plan_json
from gateway.dev.harness import free_ports, start_gateway
from tests.support.sip.baresip import registered_phone
from tests.support.sip.harness import UasProcess
from tests.support.sip.ringer import Ringer

pytestmark = [pytest.mark.sip, pytest.mark.asr]

BILL = "Me cobraron dos veces la factura de este mes"  # billing_dispute: voice
AGENT_VOICE = ROOT / "gateway/call/prompts/es/transfer.wav"  # what the agent "says" on answering


@pytest.fixture(scope="module")
def agent():
    with UasProcess("--greet", str(AGENT_VOICE), "--hangup-after", "3") as uas:
        yield uas


@pytest.fixture(scope="module")
def ringer():
    with Ringer() as phone:  # an agent's phone that rings and rings
        yield phone


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, agent, ringer):
    running = start_gateway(
        tmp_path_factory.mktemp("queue-gateway"),
        queues={
            # Rosa never answers and is rung first (listed first); Ana answers billing. Nobody serves
            # complaints, whose callers are offered WhatsApp.
            "billing": {"agents": [{"id": "rosa", "uri": ringer.uri}, {"id": "ana", "uri": agent.uri("ana")}],
                        "wrap_up_s": 1, "sla_s": 600, "ring_timeout_s": 2},
            "complaints": {"sla_s": 1, "offer": {"check_interval_s": 0.5}},
            # Cancellations go to Pedro by REFER: the caller's phone calls him, the call leaves the gateway.
            "cancellations": {"agents": [{"id": "pedro", "uri": agent.uri("pedro")}], "connect": "refer",
                              "refer_busy_s": 1, "wrap_up_s": 0.5,
                              "offer": {"enabled": False}},
        },
        routing={"skills": {"billing_dispute": "billing", "complaint": "complaints", "cancel_service": "cancellations"},
                 "default_queue": "billing"},
        # The operator's policy allows writing to callers about their call (the documents link).
        whatsapp={"per_user_interval_s": 0.5, "consent": {"required": False}},
    )
    yield running
    running.stop()


def test_a_waiting_caller_reaches_the_agent_with_the_calls_context(gateway, agent, tmp_path):
    wav = espeak(BILL, "es", tmp_path / "say.wav")
    with ThreadPoolExecutor(1) as pool:
        placed = pool.submit(gateway.call, "es", "--wav", str(wav), "--timeout", "40")
        incoming = agent.wait_for(lambda e: e["event"] == "incoming" and e["to_user"] == "ana", timeout=30)
        # The agent presses the desktop's "documents" button while talking to the caller.
        call_id = incoming["headers"]["X-Puente-Call-Id"]
        pressed = httpx.post(f"{gateway.api}/v1/calls/{call_id}/documents", json={"by": "ana"}, timeout=5)
        assert (pressed.status_code, pressed.json()) == (202, {"call_id": call_id, "requested": True}), pressed.text
        record = placed.result(timeout=60)
    assert record["_exit"] == 0, record
    ended = httpx.post(f"{gateway.api}/v1/calls/{call_id}/documents", timeout=5)
    assert ended.status_code == 409 and "no such call up now" in ended.text
    assert httpx.post(f"{gateway.api}/v1/calls/nope/documents", timeout=5).status_code == 404
    (link,) = record["record"]["messages"]
    assert link["purpose"] == "documents" and link["payload"]["context"]["flow"] == "send_documents"
    assert (record["intent"], record["route"], record["outcome"]) == ("billing_dispute", "voice", "served"), record
    assert record["call_id"] == call_id
    headers = incoming["headers"]
    assert headers["X-Puente-Call-Id"] == call_id and headers["X-Puente-Intent"] == "billing_dispute"
    assert headers["X-Puente-Language"] == "es" and headers["X-Puente-Queue"] == "billing"
    assert headers["X-Puente-Context-Url"].endswith(f"/v1/calls/{call_id}/context")
    assert 2 <= int(headers["X-Puente-Wait-S"]) < 12  # Rosa's ring timeout came first
    # The agent's greeting reached the caller through the bridge, after the gateway's own prompts.
    assert record["caller"]["duration_s"] > 3
    context = gateway.get(f"/v1/calls/{call_id}/context")
    assert context["intent"] == "billing_dispute" and "factura" in context["transcript"][0]["text"].lower()
    assert (context["queue"]["queue"], context["queue"]["agent_id"], context["queue"]["state"]) == ("billing", "ana", "served")
    events = gateway.get(f"/v1/calls/{call_id}")["events"]
    agents = [(e["type"], e["data"].get("agent")) for e in events if e["type"].startswith("agent_")]
    # Rosa's phone rang out; the caller kept their place and Ana, next, answered.
    assert agents == [("agent_ringing", "rosa"), ("agent_missed", "rosa"), ("agent_ringing", "ana"),
                      ("agent_connected", "ana"), ("agent_hung_up", "ana")], agents
    (billing,) = [q for q in gateway.get("/v1/queues") if q["queue"] == "billing"]
    by_id = {a["id"]: a for a in billing["agents"]}
    assert (by_id["rosa"]["missed"], by_id["rosa"]["last_outcome"], by_id["ana"]["answered"]) == (1, "no answer", 1)


def test_past_the_sla_dtmf_1_takes_the_caller_to_whatsapp_with_the_context(gateway, tmp_path):
    wav = espeak("Quiero poner una queja por el mal servicio que recibí", "es", tmp_path / "say.wav")
    number = "+525555550177"
    record = gateway.call("es", "--wav", str(wav), "--from", number, "--dtmf", "1", "--timeout", "40")
    assert record["_exit"] == 0, record
    assert (record["intent"], record["outcome"]) == ("complaint", "deflected"), record
    full = record["record"]
    assert [d["route"] for d in full["decisions"]] == ["voice", "whatsapp"]
    (message,) = full["messages"]
    context = message["payload"]["context"]
    assert (context["queue"], context["intent"], message["to_number"]) == ("complaints", "complaint", number)
    assert context["waited_s"] > 0
    deadline = time.monotonic() + 15
    while message["status"] not in ("delivered", "read") and time.monotonic() < deadline:
        time.sleep(0.2)
        (message,) = gateway.get(f"/v1/calls/{record['call_id']}")["messages"]
    assert message["status"] in ("delivered", "read"), message
    (sent,) = gateway.get(f"/sandbox/customers/{number.lstrip('+')}/messages")
    assert sent["text"].startswith("Hola, estábamos atendiendo tu llamada"), sent
    offer = [e for e in full["events"] if e["type"] == "offer_made"]
    assert offer and offer[0]["data"]["reason"].endswith("> SLA 1 s")


def test_a_gateway_crash_with_a_caller_waiting_closes_the_wait_as_interrupted_and_recovers_the_caller(tmp_path):
    queues = {"complaints": {"offer": {"enabled": False}, "recovery": {"delay_s": 0, "min_abandon_s": 0}}}
    settings = {"queues": queues, "routing": {"default_queue": "complaints"}, "whatsapp": {"consent": {"required": False}}}
    first = start_gateway(tmp_path, **settings)
    wav = espeak("Quiero poner una queja por el mal servicio que recibí", "es", tmp_path / "say.wav")
    caller = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "call", first.uri("es"), "--api", first.api, "--wav", str(wav),
         "--from", "+525555550199", "--timeout", "60"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 40
        while not gateway_waiting(first) and time.monotonic() < deadline:
            time.sleep(0.3)
        (waiting,) = gateway_waiting(first)
        time.sleep(1)  # a second in the queue, recorded
        first.stop(signal.SIGKILL)
    finally:
        caller.kill()
        caller.wait()
    second = start_gateway(tmp_path, **settings)
    try:
        record = second.get(f"/v1/calls/{waiting['call_id']}")
        assert record["outcome"] == "interrupted", record["outcome"]
        assert "left 1 call(s) open, 1 of them waiting in a queue" in second.log_path.read_text()
        (recovery,) = record["messages"]
        assert recovery["purpose"] == "recovery" and recovery["payload"]["context"]["intent"] == "complaint"
        deadline = time.monotonic() + 15
        while recovery["status"] not in ("delivered", "read") and time.monotonic() < deadline:
            time.sleep(0.2)
            (recovery,) = second.get(f"/v1/calls/{waiting['call_id']}")["messages"]
        assert recovery["status"] in ("delivered", "read"), recovery
        (sent,) = second.get("/sandbox/customers/525555550199/messages")
        assert sent["text"].startswith("Hola, vimos que nos llamaste por") and "segundo" in sent["text"], sent
    finally:
        second.stop()


def gateway_waiting(gateway) -> list[dict]:
    return [w for q in gateway.get("/v1/queues") for w in q["waiting"] if w["state"] == "waiting"]


@pytest.mark.skipif(shutil.which("baresip") is None, reason="Debian baresip is not installed")
def test_an_agent_whose_softphone_registers_with_a_password_is_called_where_it_registered(tmp_path):
    (registrar_port,) = free_ports(1)
    settings = {
        "queues": {"billing": {"agents": [{"id": "ana", "password": "s3cret"}], "offer": {"enabled": False}}},
        "registrar": {"port": registrar_port},
    }
    gateway = start_gateway(tmp_path, **settings)
    phone, _ = registered_phone(tmp_path / "baresip", f"127.0.0.1:{registrar_port}", "ana", "s3cret", auto_answer=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and agent_state(gateway) != "available":
            time.sleep(0.2)
        assert agent_state(gateway) == "available", gateway.get("/v1/queues")
        assert gateway.get("/healthz")["registrar"]["registered"] == 1
        wav = espeak(BILL, "es", tmp_path / "say.wav")
        record = gateway.call("es", "--wav", str(wav), "--hangup-after", "12", "--timeout", "40")
        assert (record["route"], record["outcome"]) == ("voice", "served"), record
        events = [e["type"] for e in record["record"]["events"]]
        assert "agent_connected" in events
    finally:
        phone.send_signal(signal.SIGINT)
        try:
            phone.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            phone.kill()
        gateway.stop()


def agent_state(gateway) -> str:
    (queue,) = gateway.get("/v1/queues")
    return queue["agents"][0]["state"]


def test_spoken_answers_to_the_offer_yes_takes_whatsapp_no_keeps_the_place(gateway, tmp_path):
    plan = [
        Caller(name="sí", lang="es", text="Quiero poner una queja por el mal servicio", number="+525555550181", behaviour="yes"),
        Caller(name="no", lang="es", text="Quiero poner una queja por el mal servicio", number="+525555550182",
               behaviour="no", hangup_after_s=25.0, start_s=1.0),
    ]
    (tmp_path / "plan.json").write_text(plan_json(plan))
    crowd = subprocess.run(
        [sys.executable, "-m", "gateway.dev.crowd", "--gateway", f"127.0.0.1:{gateway.sip_port}", "--api", gateway.api,
         "--plan", str(tmp_path / "plan.json")], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert crowd.returncode == 0, crowd.stderr[-2000:]
    calls = {c["caller_number"]: c for c in gateway.get("/v1/calls", limit=50)}
    yes = gateway.get(f"/v1/calls/{calls['+525555550181']['call_id']}")
    no = gateway.get(f"/v1/calls/{calls['+525555550182']['call_id']}")
    assert yes["outcome"] == "deflected", [e for e in yes["events"] if e["type"].startswith("offer")]
    assert [e["data"]["how"] for e in yes["events"] if e["type"] == "offer_accepted"] == ["speech"]
    assert [e["data"]["choice"] for e in no["events"] if e["type"] == "offer_answer"][:1] == ["no"]
    assert no["outcome"] == "abandoned"  # kept their place after "no", then hung up in the queue


@pytest.mark.parametrize("follow", [True, False])
def test_a_refer_queue_transfers_the_caller_to_the_agent_with_the_context(gateway, agent, tmp_path, follow):
    wav = espeak("Quiero cancelar mi servicio de internet", "es", tmp_path / "say.wav")
    args = ["--follow-transfer"] if follow else ["--hangup-after", "8"]
    record = gateway.call("es", "--wav", str(wav), "--timeout", "40", *args)
    assert record["intent"] == "cancel_service", record
    target = record["caller"]["transfer_target"]
    assert target and agent.uri("pedro").split(";")[0] in target and f"X-Puente-Call-Id={record['call_id']}" in target
    events = [(e["type"], e["data"]) for e in record["record"]["events"] if e["type"].startswith(("agent_", "transfer"))]
    if follow:  # the caller's phone called Pedro and the gateway's leg ended
        assert record["outcome"] == "transferred", events
        assert any(t == "agent_connected" and (d["agent"], d["via"]) == ("pedro", "refer") for t, d in events), events
        incoming = agent.wait_for(lambda e: e["event"] == "incoming" and e["to_user"] == "pedro", timeout=5)
        assert incoming["headers"]["X-Puente-Call-Id"] == record["call_id"]
    else:  # the caller's phone refused the REFER: Pedro "missed" them, they kept waiting, then hung up
        missed = [d for t, d in events if t == "agent_missed"]
        assert missed and missed[0]["agent"] == "pedro" and missed[0]["sip_status"] == 603, events
        assert record["outcome"] == "abandoned"
