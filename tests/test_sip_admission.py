"""Per-source admission: the policy alone (fake clock), then real INVITEs over loopback.

The real tests flood the UAS harness from 127.0.0.2 with INVITEs built here and never ACKed
(every Via, Contact and SDP address is that socket's own loopback address, so every answer stays
on lo), while a real pjsua2 caller from 127.0.0.1 (trusted by default) must still be answered.
"""
from __future__ import annotations

import json
import time

import pytest

from gateway.dev.flood import FLOOD_HOST, Flood, burst
from sip import CallScript, SipCaller, SipConfig
from sip.admission import BUSY_HERE, SERVICE_UNAVAILABLE, Admission
from sip.capabilities import pjsua2_build
from sip.runtime import ioqueue_name
from tests.support.sip.harness import UasProcess


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, **kwargs) -> Admission:
    limits = {"max_calls": 2, "rate": 1.0, "burst": 3, "trusted_networks": ("10.0.0.0/8",)} | kwargs
    return Admission(clock=clock, **limits)


# -- the policy ------------------------------------------------------------------------------------


def test_concurrency_cap_is_486_until_a_call_ends() -> None:
    adm = policy(Clock(), rate=0)
    assert adm.admit("192.0.2.1") is None and adm.admit("192.0.2.1") is None
    refusal = adm.admit("192.0.2.1")
    assert refusal is not None and refusal.status_code == BUSY_HERE and not refusal.headers
    adm.release("192.0.2.1")
    assert adm.calls("192.0.2.1") == 1
    assert adm.admit("192.0.2.1") is None


def test_rate_limit_is_503_with_retry_after_and_refills() -> None:
    clock = Clock()
    adm = policy(clock, max_calls=0, rate=0.5, burst=3)
    assert [adm.admit("192.0.2.1") for _ in range(3)] == [None, None, None]
    refusal = adm.admit("192.0.2.1")
    assert refusal is not None and refusal.status_code == SERVICE_UNAVAILABLE
    assert refusal.headers == {"Retry-After": "2"}  # one token at 0.5/s
    clock.now += 1.0  # half a token: still refused, sooner
    assert adm.admit("192.0.2.1").headers == {"Retry-After": "1"}
    clock.now += 1.0
    assert adm.admit("192.0.2.1") is None
    assert adm.admit("192.0.2.1") is not None
    clock.now += 60  # refills to the burst, not beyond
    assert [adm.admit("192.0.2.1") is None for _ in range(4)] == [True, True, True, False]


def test_a_refused_invite_takes_no_token_and_no_call() -> None:
    adm = policy(Clock(), max_calls=1, rate=1.0, burst=2)
    assert adm.admit("192.0.2.1") is None
    assert all(adm.admit("192.0.2.1").status_code == BUSY_HERE for _ in range(5))  # busy: no token taken
    assert adm.admit("192.0.2.1").in_a_row == 6
    adm.release("192.0.2.1")
    assert adm.admit("192.0.2.1") is None  # the burst's second token was kept
    assert adm.calls("192.0.2.1") == 1


def test_trusted_sources_are_exempt_and_never_tracked() -> None:
    adm = policy(Clock(), max_calls=1, rate=0.1, burst=1)
    assert all(adm.admit("10.1.2.3") is None for _ in range(100))
    assert adm.calls("10.1.2.3") == 0 and adm.tracked_sources() == 0
    adm.release("10.1.2.3")  # a trusted call ending is a no-op


def test_sources_are_isolated() -> None:
    adm = policy(Clock(), max_calls=1, rate=1.0, burst=1)
    assert adm.admit("192.0.2.1") is None
    assert adm.admit("192.0.2.1") is not None
    assert adm.admit("192.0.2.2") is None  # another source: its own cap and bucket
    assert adm.admit("2001:db8::1") is None
    adm.release("192.0.2.9")  # unknown source: nothing to release


def test_idle_sources_are_forgotten() -> None:
    clock = Clock()
    adm = policy(clock, max_calls=4, rate=1.0, burst=2)
    for i in range(50):
        adm.admit(f"192.0.2.{i}")
        adm.release(f"192.0.2.{i}")
    assert adm.admit("198.51.100.1") is None  # this one stays up
    assert adm.tracked_sources() == 51
    clock.now += 30
    adm.admit("198.51.100.2")
    assert adm.tracked_sources() == 2  # the call still up and the new one


def test_limits_zero_turn_them_off() -> None:
    adm = policy(Clock(), max_calls=0, rate=0, burst=1)
    assert all(adm.admit("192.0.2.1") is None for _ in range(100))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_networks": ("10.0.0.0/33",)}, "trusted_networks"),
        ({"max_calls_per_source": -1}, "max_calls_per_source"),
        ({"invite_rate_per_source": -0.5}, "invite_rate_per_source"),
        ({"invite_burst_per_source": 0}, "invite_burst_per_source"),
        ({"ack_timeout_s": 0.1}, "ack_timeout_s"),
        ({"ack_timeout_s": 60}, "ack_timeout_s"),
    ],
)
def test_config_rejects_bad_admission_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SipConfig(**kwargs)


def test_the_build_names_its_ioqueue() -> None:
    # Decides whether refusals are answered inside onIncomingCall (epoll) or held 100 ms (select).
    assert ioqueue_name().startswith(("epoll", "select"))


def test_config_trusts_this_host_only_by_default() -> None:
    config = SipConfig(trusted_networks=["192.0.2.0/24"])  # type: ignore[arg-type]
    assert config.trusted_networks == ("192.0.2.0/24",)
    assert SipConfig().trusted_networks == ("127.0.0.1/32", "::1/128")


# -- real INVITEs over loopback -------------------------------------------------------------------

@pytest.fixture(scope="module")
def caller() -> SipCaller:
    with SipCaller() as c:  # binds 127.0.0.1: trusted by default
        yield c


def _uas(**sip: object) -> UasProcess:
    args = [arg for name, value in sip.items() for arg in ("--sip", f"{name}={json.dumps(value)}")]
    return UasProcess("--max-calls", "16", *args)


@pytest.mark.sip
def test_invite_flood_from_one_source_is_refused_fast_and_others_are_answered(caller: SipCaller) -> None:
    build = pjsua2_build()
    if build.capped:  # 3 flood calls + the legitimate one + another source's: pjsua itself says 486 past 4
        pytest.skip(f"this pjsua2 build holds {build.max_calls} calls per process; the flood test needs more")
    with _uas(max_calls_per_source=0, invite_rate_per_source=0.5, invite_burst_per_source=3) as uas:
        flood = burst(uas.port, 40)
        legit = caller.call(uas.uri("es"), CallScript(hangup_after_s=1.0, max_duration_s=5))
        other = burst(uas.port, 1, host="127.0.0.3")  # another untrusted source: its own limits

    codes = sorted(a.code for a in flood.finals.values())
    assert codes == [200] * 3 + [503] * 37, codes
    refused = [a for a in flood.finals.values() if a.code == 503]
    assert {a.headers.get("retry-after") for a in refused} == {"2"}
    slowest = max(a.at - a.sent_at for a in refused)
    print(f"\n503 to a 40-INVITE burst: slowest {slowest * 1000:.0f} ms after its INVITE")
    assert slowest < 1.0
    assert legit.connected and legit.status_code == 200 and legit.ended_by == "local"
    assert [a.code for a in other.finals.values()] == [200]
    assert len(uas.named("incoming", remote_address=FLOOD_HOST)) == 3  # refused ones never reach the handler
    assert len(uas.named("incoming", remote_address="127.0.0.1")) == 1


@pytest.mark.sip
def test_calls_over_the_per_source_cap_get_486(caller: SipCaller) -> None:
    with _uas(max_calls_per_source=2, invite_rate_per_source=0, ack_timeout_s=4) as uas:
        flood = burst(uas.port, 10)
        legit = caller.call(uas.uri("es"), CallScript(hangup_after_s=0.5, max_duration_s=5))
    assert sorted(a.code for a in flood.finals.values()) == [200] * 2 + [486] * 8
    assert legit.connected


@pytest.mark.sip
@pytest.mark.parametrize("answer_byes", [False, True], ids=["bye-unanswered", "bye-answered"])
def test_an_unacked_200_frees_its_call_after_ack_timeout(answer_byes: bool) -> None:
    ack_timeout = 2.0
    with _uas(max_calls_per_source=1, invite_rate_per_source=0, ack_timeout_s=ack_timeout) as uas:
        flood = Flood(uas.port, answer_byes=answer_byes)
        try:
            first = flood.invite()
            flood.collect(time.monotonic() + 2.0, want=1)
            assert flood.finals[first].code == 200
            answered_at = flood.finals[first].at
            second = flood.invite()  # the source's one call is still up (un-ACKed)
            flood.collect(time.monotonic() + 1.0, want=2)
            assert flood.finals[second].code == 486
            incoming = uas.wait_event("incoming", sip_call_id=first)
            deadline = time.monotonic() + 2 * ack_timeout + 8
            while not uas.named("CallEnded", call_id=incoming["call_id"]):  # answering any BYE meanwhile
                assert time.monotonic() < deadline, uas.events
                flood.collect(time.monotonic() + 0.05)
            released = time.monotonic() - answered_at
            flood.collect(time.monotonic() + 0.2)
            third = flood.invite()  # released: the source may call again
            flood.collect(time.monotonic() + 2.0, want=3)
        finally:
            flood.close()
    print(f"\nun-ACKed 200 OK released {released:.2f} s after it was sent (ack_timeout_s {ack_timeout}, "
          f"BYE {'answered' if answer_byes else 'unanswered'})")
    # Timer H ends the call with a BYE; a source that does not answer it either waits out timer F.
    assert first in flood.byes
    expected = ack_timeout if answer_byes else 2 * ack_timeout
    assert expected - 0.5 <= released <= expected + 1.0
    assert flood.finals[third].code == 200
