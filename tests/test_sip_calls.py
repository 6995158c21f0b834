"""Real SIP calls over loopback: SipCaller (in this process) → UAS harness (a subprocess).

pjsua2 allows one Endpoint per process, so every SipEndpoint runs in
``tests/support/sip/uas.py`` and this process only hosts the caller.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from gateway.dev.harness import free_port
from sip import CallResult, CallScript, SipCaller, SipConfig, SipEndpoint, SipStartError
from tests.support.sip import baresip
from tests.support.sip.audio import SOUNDS, duration_seconds, speech_seconds
from tests.support.sip.harness import UasProcess

pytestmark = [
    pytest.mark.sip,
    pytest.mark.skipif(not SOUNDS.is_dir(), reason="asterisk-core-sounds-en-wav is not installed"),
]

SPEECH = SOUNDS / "agent-pass.wav"  # "Please enter your password" — 3.3 s, 8 kHz
SHORT = SOUNDS / "hello-world.wav"  # 1.4 s
PROMPT = SOUNDS / "conf-getpin.wav"  # 2.4 s
LONG_PROMPT = SOUNDS / "tt-monkeys.wav"  # 16 s
CALLER_ID = "sip:+5215555550123@127.0.0.1"


@pytest.fixture(scope="module")
def caller() -> SipCaller:
    with SipCaller() as c:
        yield c


@pytest.fixture(scope="module")
def uas() -> UasProcess:
    """A shared UAS: '5' plays PROMPT, '9' transfers to its own 'agent' user, '#' hangs up."""
    port = free_port()
    with UasProcess("--prompt", str(PROMPT), "--transfer-to", f"sip:agent@127.0.0.1:{port}", port=port) as proc:
        yield proc


def ended(uas: UasProcess, result: CallResult, timeout: float = 5.0) -> tuple[dict, dict]:
    """The UAS's (incoming, CallEnded) events for the call behind ``result``."""
    incoming = uas.wait_event("incoming", sip_call_id=result.sip_call_id)
    end = uas.wait_event("CallEnded", timeout=timeout, call_id=incoming["call_id"])
    return incoming, end


@pytest.mark.parametrize("codec", ["PCMU/8000", "PCMA/8000", "G722/16000", "opus/48000"])
def test_speech_arrives_as_continuous_16k_frames(caller: SipCaller, uas: UasProcess, codec: str) -> None:
    if not any(c.lower().startswith(codec.lower() + "/") for c in caller.available_codecs):
        pytest.skip(f"{codec} is not in this pjsua2 build ({', '.join(caller.available_codecs)})")
    script = CallScript(wav=SPEECH, speak_after_s=0.3, hangup_after_s=duration_seconds(SPEECH) + 0.8,
                        from_uri=CALLER_ID, headers={"X-Customer-Tier": "gold"}, codecs=(codec,))
    result = caller.call(uas.uri("es"), script)

    assert result.connected and result.status_code == 200 and result.ended_by == "local"
    assert result.codec == codec
    assert result.speech_started_at and result.speech_ended_at
    assert result.speech_ended_at - result.speech_started_at == pytest.approx(duration_seconds(SPEECH), abs=0.3)

    incoming, end = ended(uas, result)
    assert incoming["to_user"] == "es"
    assert incoming["from_uri"] == CALLER_ID
    assert incoming["to_uri"] == "sip:es@127.0.0.1"
    assert incoming["remote_address"] == "127.0.0.1"
    assert incoming["headers"]["X-Customer-Tier"] == "gold"
    assert end["by"] == "remote"
    frames = uas.wait_event("frames", call_id=incoming["call_id"])
    assert frames["gaps"] == 0 and frames["first_index"] == 0 and frames["last_index"] == frames["count"] - 1
    assert frames["count"] == pytest.approx(result.duration_s * 50, abs=25)  # 20 ms frames for the whole call
    assert frames["speech_s"] == pytest.approx(speech_seconds(SPEECH), abs=0.4)
    assert len(uas.named("CallEnded", call_id=incoming["call_id"])) == 1


def test_dtmf_rfc4733_and_sip_info_then_local_hangup(caller: SipCaller, uas: UasProcess) -> None:
    script = CallScript(dtmf=[(0.3, "1", "rfc4733"), (0.6, "2", "sip_info"), (0.9, "#", "sip_info")],
                        max_duration_s=10)
    result = caller.call(uas.uri("es"), script)

    assert result.ended_by == "remote"  # '#' made the UAS hang up
    incoming, end = ended(uas, result)
    digits = [(e["digit"], e["method"]) for e in uas.named("DtmfReceived", call_id=incoming["call_id"])]
    assert digits == [("1", "rfc4733"), ("2", "sip_info"), ("#", "sip_info")]
    assert end["by"] == "local"


def test_prompt_plays_to_the_end(caller: SipCaller, uas: UasProcess) -> None:
    script = CallScript(dtmf=[(0.3, "5", "rfc4733")], hangup_after_s=duration_seconds(PROMPT) + 1.5)
    result = caller.call(uas.uri("es"), script)

    incoming, _ = ended(uas, result)
    play = uas.wait_event("play", call_id=incoming["call_id"])
    finished = uas.named("PlaybackFinished", call_id=incoming["call_id"])
    assert [(f["playback_id"], f["interrupted"]) for f in finished] == [(play["playback_id"], False)]
    assert result.received_audio_s == pytest.approx(speech_seconds(PROMPT), abs=0.5)


def test_transfer_carries_context_in_refer_and_refer_to(caller: SipCaller, uas: UasProcess) -> None:
    result = caller.call(uas.uri("es"), CallScript(dtmf=[(0.3, "9", "rfc4733")], follow_transfer=True,
                                                   max_duration_s=15))

    incoming, end = ended(uas, result)
    call_id = incoming["call_id"]
    expected = {"X-Puente-Call-Id": call_id, "X-Puente-Intent": "billing dispute", "X-Puente-Lang": "es"}
    assert result.transfer_headers == expected  # on the REFER itself
    assert result.transfer_target is not None
    assert result.transfer_target.startswith(f"<sip:agent@127.0.0.1:{uas.port}?")
    assert f"X-Puente-Call-Id={call_id}" in result.transfer_target
    assert "X-Puente-Intent=billing%20dispute" in result.transfer_target  # escaped inside the URI
    assert result.transfer_status == 200
    # The transferee's new INVITE carried the headers from the Refer-To URI.
    agent = uas.wait_event("incoming", to_user="agent")
    assert {k: agent["headers"][k] for k in expected} == expected
    updates = uas.named("TransferUpdate", call_id=call_id)
    assert updates[-1]["final"] and updates[-1]["status_code"] == 200
    assert end["by"] == "local"  # the UAS hung up after the final NOTIFY
    assert result.ended_by == "remote"


def test_declined_transfer_reports_final_603(caller: SipCaller, uas: UasProcess) -> None:
    result = caller.call(uas.uri("es"), CallScript(dtmf=[(0.3, "9", "sip_info")], hangup_after_s=1.5))

    incoming, _ = ended(uas, result)
    update = uas.wait_event("TransferUpdate", call_id=incoming["call_id"], final=True)
    assert update["status_code"] == 603
    assert result.transfer_headers["X-Puente-Call-Id"] == incoming["call_id"]


def test_remote_hangup_mid_playback_ends_call_once(caller: SipCaller) -> None:
    with UasProcess("--greet", str(LONG_PROMPT)) as uas:
        result = caller.call(uas.uri("es"), CallScript(hangup_after_s=1.5))
        incoming, end = ended(uas, result)
        time.sleep(0.5)  # room for a (wrong) second CallEnded
        call_id = incoming["call_id"]
        assert end["by"] == "remote"
        assert len(uas.named("CallEnded", call_id=call_id)) == 1
        finished = uas.named("PlaybackFinished", call_id=call_id)
        assert [f["interrupted"] for f in finished] == [True]
        assert result.received_audio_s > 0.5  # the greeting was audible before the hangup


def test_disallowed_source_gets_403_and_handler_never_sees_it(caller: SipCaller) -> None:
    with UasProcess("--allow", "10.0.0.0/8") as uas:
        result = caller.call(uas.uri("es"), CallScript(max_duration_s=5))
        time.sleep(0.3)
        assert result.status_code == 403 and not result.connected and result.ended_by == "rejected"
        assert [e["event"] for e in uas.events] == ["started"]


def test_calls_over_max_calls_get_busy(caller: SipCaller) -> None:
    with UasProcess("--max-calls", "1") as uas:
        first: list[CallResult] = []
        holder = threading.Thread(target=lambda: first.append(caller.call(uas.uri("es"), CallScript(hangup_after_s=2))))
        holder.start()
        uas.wait_event("CallMediaReady")
        second = caller.call(uas.uri("es"), CallScript(max_duration_s=5))
        holder.join()
        assert second.status_code == 486 and second.ended_by == "rejected"
        assert first[0].connected
        assert len(uas.named("incoming")) == 1


def test_reused_call_slots_never_hang_up_a_live_call(caller: SipCaller) -> None:
    """pjsua2's ~Call hangs up whatever call holds its old slot id, so a Call
    object that outlives its disconnect kills a later call. Wrap both sides'
    slot tables with rejected calls, then check a new call lives its full length."""
    with UasProcess("--max-calls", "1") as uas:
        holder: list[CallResult] = []
        thread = threading.Thread(target=lambda: holder.append(caller.call(uas.uri("es"), CallScript(hangup_after_s=3))))
        thread.start()
        uas.wait_event("CallMediaReady")
        # This pjsua2 build has 4 call slots per process (see the report), so 12 calls wrap both tables.
        busy = [caller.call(uas.uri("es"), CallScript(max_duration_s=4)) for _ in range(12)]
        thread.join()
        last = caller.call(uas.uri("es"), CallScript(hangup_after_s=3))

        assert {r.status_code for r in busy} == {486}
        assert holder[0].ended_by == "local" and last.ended_by == "local"
        assert last.duration_s == pytest.approx(3.0, abs=0.3)
        ended(uas, last)
        assert [e["by"] for e in uas.named("CallEnded")] == ["remote", "remote"]


def test_sigterm_with_calls_up_exits_cleanly(caller: SipCaller) -> None:
    uas = UasProcess("--greet", str(LONG_PROMPT)).__enter__()
    results: list[CallResult] = []
    threads = [threading.Thread(target=lambda: results.append(caller.call(uas.uri("es"), CallScript(max_duration_s=20))))
               for _ in range(2)]
    for t in threads:
        t.start()
    uas.wait_for(lambda e: len(uas.named("CallMediaReady")) == 2)
    time.sleep(0.5)
    rc = uas.stop(timeout=15)
    for t in threads:
        t.join(10)

    assert rc == 0, uas.stderr[-2000:]
    for bad in ("Assertion", "abort", "Segmentation", "Traceback"):
        assert bad not in uas.stderr
    assert uas.events[-1]["event"] == "stopped"
    assert sorted(e["by"] for e in uas.named("CallEnded")) == ["local", "local"], uas.events
    assert [r.ended_by for r in results] == ["remote", "remote"]


def test_port_in_use_is_a_start_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        proc = UasProcess(port=busy.getsockname()[1])
        event = proc.started()
        assert proc.proc.wait(10) == 2
    assert event["event"] == "start_error"
    assert "Address already in use" in event["message"] and "udp" in event["message"]


def test_second_endpoint_in_process_is_refused_not_aborted(caller: SipCaller) -> None:
    endpoint = SipEndpoint(SipConfig(port=free_port()), handler=None)  # type: ignore[arg-type]
    with pytest.raises(SipStartError, match="already runs in this process"):
        endpoint.start()


def test_malformed_sip_does_not_stop_the_endpoint(caller: SipCaller, uas: UasProcess) -> None:
    truncated = (
        f"INVITE sip:es@127.0.0.1:{uas.port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-broken\r\n"
        "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:es@127.0.0.1>\r\nCall-ID: broken-1\r\n"
        "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 500\r\n\r\nv=0\r\no=- 1 1 IN"
    ).encode()
    garbage = [b"\x00\xff" * 300, b"NOT SIP AT ALL\r\n\r\n", truncated, b"INVITE sip:", b"SIP/2.0 200 OK\r\n\r\n"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in garbage:
            udp.sendto(packet, ("127.0.0.1", uas.port))
    with socket.create_connection(("127.0.0.1", uas.port)) as tcp:
        tcp.sendall(garbage[0] + truncated)
    time.sleep(0.3)

    result = caller.call(uas.uri("es"), CallScript(wav=SHORT, speak_after_s=0.2, hangup_after_s=2.0))
    assert result.connected and result.ended_by == "local"
    incoming, _ = ended(uas, result)
    assert uas.wait_event("frames", call_id=incoming["call_id"])["speech_s"] > 0.5


@pytest.mark.skipif(not baresip.available(), reason="baresip or sox is not installed")
def test_baresip_call_delivers_speech(uas: UasProcess) -> None:
    result = baresip.call(uas.uri("es"), SHORT, pad_s=0.5, timeout=20)

    assert result.connected, result.output[-2000:]
    assert result.closed_reason is not None and not result.ended_by_remote  # baresip hung up after its file
    incoming = uas.wait_event("incoming", from_uri="sip:baresip@127.0.0.1", timeout=5)
    assert incoming["headers"]["User-Agent"].startswith("baresip")
    end = uas.wait_event("CallEnded", call_id=incoming["call_id"])
    assert end["by"] == "remote"
    frames = uas.wait_event("frames", call_id=incoming["call_id"])
    assert frames["gaps"] == 0
    assert frames["speech_s"] == pytest.approx(speech_seconds(SHORT), abs=0.4)
