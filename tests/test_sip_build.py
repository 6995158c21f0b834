"""The installed pjsua2 build: what ``sip.capabilities`` reports, and many calls at once on our own build.

Whichever build is installed must be reported as what it is: Puente's own (scripts/pjsua2: hundreds
of calls, epoll, opus, TLS, SRTP) or the capped PyPI wheel (4 calls, select(), no opus). Tests that
need more than 4 calls in one process skip on the capped wheel, saying so.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from gateway.dev.harness import free_port
from sip import SipCaller
from sip.capabilities import CAPPED_CALLS, PYPI_DISTRIBUTION, pjsua2_build
from tests.support.sip.harness import ROOT, UasProcess

pytestmark = pytest.mark.sip

BUILD_DIR = ROOT / "scripts" / "pjsua2"
CONCURRENT = 20  # calls held at once by one callee: 5x the PyPI wheel's cap, small enough for CI


def _configured_max_calls() -> int:
    match = re.search(r"^#define PJSUA_MAX_CALLS\s+(\d+)", (BUILD_DIR / "config.sh").read_text(), re.MULTILINE)
    assert match, "scripts/pjsua2/config.sh defines no PJSUA_MAX_CALLS"
    return int(match.group(1))


def _skip_unless_own_build(calls: int) -> None:
    build = pjsua2_build()
    if build.max_calls < calls:
        pytest.skip(f"pjsua2 here is {build.distribution or build.module} {build.version or ''}, capped at "
                    f"{build.max_calls} calls per process; {calls} calls at once need Puente's own build "
                    "(./scripts/setup.sh with the pjproject source, see scripts/pjsua2/)")


def test_the_report_describes_the_installed_build() -> None:
    build = pjsua2_build()
    assert build.error is None, build.error
    assert build.pjsip_version == "2.15.1"
    assert build.codecs and all(c.count("/") == 2 for c in build.codecs)
    if build.own_build:
        assert build.max_calls == _configured_max_calls() >= 256
        assert build.ioqueue == "epoll"
        assert build.opus and build.tls and build.srtp and build.frame_tap
        assert build.max_conf_ports >= 3 * build.max_calls  # stream + frame tap + player per call
        assert build.openssl and build.openssl.startswith("3.")
        assert not build.capped and build.warning() is None
    elif build.distribution == PYPI_DISTRIBUTION:
        assert build.max_calls == CAPPED_CALLS
        assert build.ioqueue == "select"
        assert not build.opus and not build.frame_tap
        assert build.capped
        assert f"capped at {CAPPED_CALLS} calls" in build.warning()
    else:
        pytest.fail(f"pjsua2 at {build.module} is neither Puente's build nor {PYPI_DISTRIBUTION}: {build.summary()}")
    report = build.as_dict()
    assert report["max_calls"] == build.max_calls and report["capped"] == build.capped
    assert report["own_build"] == build.own_build and isinstance(report["codecs"], list)


def test_our_build_is_the_one_this_checkout_configures() -> None:
    build = pjsua2_build()
    if not build.own_build:
        pytest.skip(f"pjsua2 here is {build.distribution} {build.version}, not Puente's own build")
    key = subprocess.run(["bash", str(BUILD_DIR / "build.sh"), "--key"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert build.build_key == key, (f"the installed pjsua2 was built from another scripts/pjsua2 config "
                                    f"({build.build_key}, this checkout: {key}): run ./scripts/setup.sh")
    assert build.version == f"2.15.1+puente.{key}"


def test_the_report_is_cached_and_safe_next_to_a_running_endpoint() -> None:
    before = pjsua2_build()
    assert pjsua2_build() is before  # probed once per process
    with SipCaller() as caller:  # this process's one Endpoint is up while the report is refreshed
        started = time.monotonic()
        again = pjsua2_build(refresh=True)
        assert time.monotonic() - started < 10
        assert caller.available_codecs  # the running Endpoint is untouched
    assert again == before


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed (Debian sip-tester)")
def test_more_than_four_calls_held_at_once_by_one_callee(tmp_path) -> None:
    _skip_unless_own_build(CONCURRENT)
    with UasProcess("--max-calls", str(CONCURRENT)) as uas:
        sipp = subprocess.run(
            ["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port() // 2 * 2),
             "-s", "es", "-m", str(CONCURRENT), "-l", str(CONCURRENT), "-r", str(CONCURRENT * 5),
             "-d", "4000", "-timeout", "30", "-timeout_error", "-nostdin", "-bind_local",
             uas.uri_host],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )
        assert sipp.returncode == 0, f"SIPp: exit {sipp.returncode}\n{sipp.stdout[-3000:]}\n{sipp.stderr[-2000:]}"
        uas.wait_for(lambda e: len(uas.named("CallEnded")) >= CONCURRENT, timeout=10)
        events = [e["event"] for e in uas.events]
        first_end = events.index("CallEnded")
        assert events[:first_end].count("CallMediaReady") == CONCURRENT  # all up before any ended
        assert events.count("incoming") == CONCURRENT
        assert not [e for e in uas.named("CallEnded") if e.get("by") != "remote"]


def test_healthz_shows_the_build_and_how_many_calls_this_node_answers(gateway) -> None:
    build = pjsua2_build()
    sip = gateway.get("/healthz")["sip"]
    assert sip["pjsua2"]["max_calls"] == build.max_calls and sip["pjsua2"]["opus"] == build.opus
    assert (sip["pjsua2"]["tls"], sip["pjsua2"]["srtp"], sip["pjsua2"]["capped"]) == (build.tls, build.srtp, build.capped)
    assert sip["pjsua2"]["frame_tap"] == build.frame_tap
    # The gateway's own limit (sip.max_calls, 32 by default), unless the build holds fewer.
    assert sip["max_calls"] == min(32, build.max_calls)
    # Slots for those calls, one agent leg each, and 8 to refuse INVITEs with (capped by the build).
    assert sip["call_slots"] == min(2 * 32 + 8, build.max_calls)
