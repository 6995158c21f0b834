"""The gateway as a B2BUA: it dials an agent for a waiting caller and bridges the two calls.

Three roles, over loopback: a SipCaller here (the customer), a gateway UAS in ``--bridge`` mode
(tests/support/sip/uas.py: each call's ``X-Bridge-To`` header names the agent it dials, with
X-Puente context headers, and it bridges caller and leg once the leg answers; DTMF 0 hangs the
leg up; the leg is hung up 0.5 s after its caller left), and the agent: a second UAS (user
``record`` answers and records, ``agent`` hangs up 1 s after answering, ``busy`` refuses 486;
every answered call hears a tone) or a Ringer here that rings forever.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from sip import CallResult, CallScript, SipCaller
from sip.endpoint import pjsua_max_calls
from tests.support.sip.harness import UasProcess
from tests.support.sip.ringer import Ringer

pytestmark = pytest.mark.sip

RATE = 16000
CALLER_HZ, AGENT_HZ = 700, 1900  # multiples of 50 Hz: whole cycles in a 20 ms frame
CALLER_TONE_S, AGENT_TONE_S = 2.0, 1.5


def tone(path: Path, hz: int, seconds: float) -> Path:
    t = np.arange(int(RATE * seconds)) / RATE
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())
    return path


def tone_seconds(pcm: bytes, hz: int) -> float:
    """Seconds of 20 ms frames that are audible and whose strongest frequency is ``hz``."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 300
    peak = np.abs(np.fft.rfft(frames, axis=1)).argmax(axis=1) * 50  # bins are 50 Hz apart
    return float((loud & (peak == hz)).sum()) * 0.02


@pytest.fixture(scope="module")
def caller() -> SipCaller:
    with SipCaller() as c:
        yield c


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> UasProcess:
    tmp = tmp_path_factory.mktemp("agent")
    with UasProcess("--record", str(tmp), "--greet", str(tone(tmp / "agent.wav", AGENT_HZ, AGENT_TONE_S))) as proc:
        yield proc


@pytest.fixture(scope="module")
def gateway() -> UasProcess:
    # One caller at a time: a leg still up (0.5 s after its caller left) must not refuse the next caller.
    with UasProcess("--bridge", "--max-calls", "1") as proc:
        yield proc
        assert proc.stop() == 0  # every call and leg ended without a crash
        assert "Traceback" not in proc.stderr  # nor an exception logged on the SIP thread


@pytest.fixture(scope="module")
def caller_tone(tmp_path_factory) -> Path:
    return tone(tmp_path_factory.mktemp("caller") / "caller.wav", CALLER_HZ, CALLER_TONE_S)


def call_via_gateway(caller: SipCaller, gateway: UasProcess, agent_uri: str, **script: object) -> tuple[CallResult, dict, dict]:
    """Call the gateway asking it to bridge ``agent_uri``: (result, gateway's incoming, its dial event)."""
    result = caller.call(gateway.uri("es"), CallScript(headers={"X-Bridge-To": agent_uri}, **script))
    incoming = gateway.wait_event("incoming", sip_call_id=result.sip_call_id)
    dial = gateway.wait_event("dial", call_id=incoming["call_id"])
    return result, incoming, dial


def position(proc: UasProcess, name: str, call_id: str) -> int:
    """Where the (one) ``name`` event of ``call_id`` is in the process's event stream, once it came."""
    proc.wait_event(name, call_id=call_id)
    matches = [i for i, e in enumerate(proc.events) if e["event"] == name and e.get("call_id") == call_id]
    assert len(matches) == 1, f"{name} for {call_id}: {matches}"
    return matches[0]


def test_pjsua_has_a_call_slot_for_every_admitted_call_and_its_agent_leg() -> None:
    assert pjsua_max_calls(32, build_cap=512) == 2 * 32 + 8
    assert pjsua_max_calls(300, build_cap=512) == 512  # never more than the build holds
    assert pjsua_max_calls(32, build_cap=4) == 4


def test_the_agent_invite_carries_the_context_headers(caller, gateway, agent) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, agent.uri("record"), hangup_after_s=1.0)

    assert result.connected
    offered = agent.wait_for(lambda e: e["event"] == "incoming"
                             and e["headers"].get("X-Puente-Call-Id") == incoming["call_id"])
    assert {k: offered["headers"].get(k) for k in dial["headers"]} == dial["headers"]
    assert dial["headers"]["X-Puente-Intent"] == "billing dispute"  # spaces survive
    assert offered["to_user"] == "record" and offered["from_uri"].startswith("sip:puente@")
    assert gateway.wait_event("bridge", call_id=incoming["call_id"])["leg_id"] == dial["leg_id"]


def test_caller_and_agent_hear_each_other_through_the_bridge(caller, gateway, agent, caller_tone) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, agent.uri("record"), wav=caller_tone,
                                              speak_after_s=1.0, hangup_after_s=1.0 + CALLER_TONE_S + 1.0)
    leg = dial["leg_id"]

    assert result.connected and result.ended_by == "local"
    # The agent's tone reached the caller (the gateway itself plays nothing to either side).
    assert result.received_audio_s == pytest.approx(AGENT_TONE_S, abs=0.4)
    # The caller's tone reached the agent, and the agent's own tone did not come back to it.
    offered = agent.wait_for(lambda e: e["event"] == "incoming"
                             and e["headers"].get("X-Puente-Call-Id") == incoming["call_id"])
    pcm = Path(agent.wait_event("recorded", call_id=offered["call_id"])["path"]).read_bytes()
    assert tone_seconds(pcm, CALLER_HZ) == pytest.approx(CALLER_TONE_S, abs=0.3)
    assert tone_seconds(pcm, AGENT_HZ) < 0.2
    # The caller's frames still reach the gateway's handler; the agent leg's never do.
    assert gateway.wait_event("frames", call_id=incoming["call_id"])["speech_frames"] >= 80
    assert gateway.wait_event("frames", call_id=leg)["count"] == 0
    assert gateway.wait_event("CallEnded", call_id=leg)["by"] == "local"  # hung up after the caller left


def test_an_agent_that_is_busy_ends_the_leg_with_486_and_the_caller_stays(caller, gateway, agent) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, agent.uri("busy"), hangup_after_s=2.0)
    leg = dial["leg_id"]

    end = gateway.wait_event("CallEnded", call_id=leg)
    assert (end["sip_status"], end["by"]) == (486, "remote")
    assert not gateway.named("bridge", call_id=incoming["call_id"])
    # The caller was still up after the refusal and hung up on its own schedule.
    assert result.ended_by == "local" and result.duration_s == pytest.approx(2.0, abs=0.3)
    assert gateway.wait_event("CallEnded", call_id=incoming["call_id"])["by"] == "remote"
    assert position(gateway, "CallEnded", leg) < position(gateway, "CallEnded", incoming["call_id"])


def test_a_ringing_agent_is_cancelled_by_hangup_and_the_caller_stays(caller, gateway) -> None:
    with Ringer() as ringer:
        result, incoming, dial = call_via_gateway(caller, gateway, ringer.uri,
                                                  dtmf=[(1.0, "0", "rfc4733")], hangup_after_s=2.5)
        leg = dial["leg_id"]

        end = gateway.wait_event("CallEnded", call_id=leg)
        assert (end["sip_status"], end["by"]) == (487, "local")
        assert [e["status_code"] for e in gateway.named("DialProgress", call_id=leg)] == [180]  # once, retransmits or not
        assert "CANCEL" in ringer.methods()
        assert result.ended_by == "local" and result.duration_s == pytest.approx(2.5, abs=0.3)
        assert position(gateway, "CallEnded", leg) < position(gateway, "CallEnded", incoming["call_id"])


def test_an_agent_hanging_up_ends_only_the_leg(caller, gateway, agent) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, agent.uri("agent"), hangup_after_s=3.0)
    leg = dial["leg_id"]

    gateway.wait_event("bridge", call_id=incoming["call_id"])
    assert gateway.wait_event("CallEnded", call_id=leg)["by"] == "remote"
    assert result.ended_by == "local" and result.duration_s == pytest.approx(3.0, abs=0.3)
    assert position(gateway, "CallEnded", leg) < position(gateway, "CallEnded", incoming["call_id"])


def test_a_caller_hanging_up_while_bridged_leaves_the_leg_to_the_gateway(caller, gateway, agent) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, agent.uri("stay"), hangup_after_s=1.5)
    leg = dial["leg_id"]

    gateway.wait_event("bridge", call_id=incoming["call_id"])
    assert gateway.wait_event("CallEnded", call_id=incoming["call_id"])["by"] == "remote"
    # The leg outlived its caller until the gateway hung it up, and the agent saw a BYE.
    assert gateway.wait_event("CallEnded", call_id=leg)["by"] == "local"
    offered = agent.wait_for(lambda e: e["event"] == "incoming"
                             and e["headers"].get("X-Puente-Call-Id") == incoming["call_id"])
    assert agent.wait_event("CallEnded", call_id=offered["call_id"])["by"] == "remote"
    assert gateway.proc.poll() is None and agent.proc.poll() is None


def test_a_leg_that_cannot_be_dialled_ends_at_once_and_the_caller_stays(caller, gateway) -> None:
    result, incoming, dial = call_via_gateway(caller, gateway, "not a sip uri", hangup_after_s=1.0)

    end = gateway.wait_event("CallEnded", call_id=dial["leg_id"])
    assert (end["sip_status"], end["by"]) == (500, "local") and end["reason"]
    assert result.ended_by == "local" and result.duration_s == pytest.approx(1.0, abs=0.3)
