"""SIP over TLS and SRTP, over loopback: the pjsua2 test caller and baresip → the UAS harness.

The UAS (tests/support/sip/uas.py, a SipEndpoint in its own process) listens on TLS with a
self-signed certificate made by ``gateway.dev.certs`` (the openssl CLI); the caller verifies it
against that certificate. Skips on a pjsua2 build without TLS/SRTP (the capped PyPI wheel).
"""
from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest

from gateway.dev.certs import CertPair, openssl_available, self_signed
from gateway.dev.harness import free_port
from sip import CallScript, SipCaller, SipConfig
from sip.capabilities import pjsua2_build
from tests.support.sip import baresip
from tests.support.sip.audio import SOUNDS, duration_seconds, speech_seconds
from tests.support.sip.harness import UasProcess

SPEECH = SOUNDS / "agent-pass.wav"  # "Please enter your password" — 3.3 s, 8 kHz
SHORT = SOUNDS / "hello-world.wav"  # 1.4 s


def _missing() -> str | None:
    if not SOUNDS.is_dir():
        return "asterisk-core-sounds-en-wav is not installed"
    if not openssl_available():
        return "the openssl command is not installed (it makes the test certificate)"
    build = pjsua2_build()
    lacks = [name for name, on in (("TLS", build.tls), ("SRTP", build.srtp)) if not on]
    if lacks:
        return (f"pjsua2 here ({build.distribution or build.module} {build.version or ''}) has no "
                f"{'/'.join(lacks)}; Puente's own build has them (./scripts/setup.sh, see scripts/pjsua2/)")
    return None


pytestmark = pytest.mark.sip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    """Every test that places a call needs it: the skip for a build without TLS/SRTP lives here."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def caller(certs: CertPair) -> SipCaller:
    # Verifies the UAS's certificate, and presents the same pair where a UAS asks (mutual TLS).
    with SipCaller(tls=True, tls_ca_file=certs.cert_file, tls_cert_file=certs.cert_file,
                   tls_key_file=certs.key_file) as c:
        yield c


def secure_uas(certs: CertPair, srtp: str, *extra: str) -> tuple[UasProcess, int]:
    tls_port = free_port()
    options = {"transports": ["udp", "tcp", "tls"], "tls_port": tls_port, "tls_cert_file": str(certs.cert_file),
               "tls_key_file": str(certs.key_file), "srtp": srtp}
    args = [arg for name, value in options.items() for arg in ("--sip", f"{name}={json.dumps(value)}")]
    return UasProcess(*args, *extra), tls_port


@pytest.fixture(scope="module")
def mandatory(certs: CertPair) -> tuple[UasProcess, str]:
    """A UAS on UDP, TCP and TLS with ``srtp: mandatory``; yields it and its TLS URI."""
    proc, tls_port = secure_uas(certs, "mandatory")
    with proc:
        yield proc, f"sip:es@127.0.0.1:{tls_port};transport=tls"


def frames_of(uas: UasProcess, sip_call_id: str) -> dict:
    incoming = uas.wait_event("incoming", sip_call_id=sip_call_id)
    uas.wait_event("CallEnded", call_id=incoming["call_id"])
    return uas.wait_event("frames", call_id=incoming["call_id"])


def test_a_tls_and_srtp_call_is_answered_and_carries_audio(caller: SipCaller, mandatory) -> None:
    uas, uri = mandatory
    script = CallScript(wav=SPEECH, speak_after_s=0.3, hangup_after_s=duration_seconds(SPEECH) + 0.8,
                        srtp="mandatory", codecs=("PCMU/8000",))
    result = caller.call(uri, script)

    assert result.connected and result.status_code == 200 and result.ended_by == "local"
    assert result.srtp in ("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80")  # pjsua's best first
    assert result.codec == "PCMU/8000"
    frames = frames_of(uas, result.sip_call_id)
    assert frames["gaps"] == 0 and frames["count"] == pytest.approx(result.duration_s * 50, abs=25)
    assert frames["speech_s"] == pytest.approx(speech_seconds(SPEECH), abs=0.4)  # decrypted, decoded speech


def test_a_plain_rtp_offer_is_refused_with_488_when_srtp_is_mandatory(caller: SipCaller, mandatory) -> None:
    uas, uri = mandatory
    result = caller.call(uri, CallScript(hangup_after_s=1.0, srtp="off"))

    assert not result.connected and result.status_code == 488
    # pjsua refuses it while building the answer: the call never reaches the handler.
    assert not uas.named("incoming", sip_call_id=result.sip_call_id)


def test_srtp_keys_are_refused_over_plain_signalling_unless_allowed(caller: SipCaller, mandatory) -> None:
    uas, _ = mandatory
    result = caller.call(uas.uri("es"), CallScript(hangup_after_s=1.0, srtp="mandatory"))  # UDP
    assert not result.connected and result.status_code == 406  # srtp_require_tls: SDES needs TLS

    relaxed = UasProcess("--sip", 'srtp="mandatory"', "--sip", "srtp_require_tls=false")  # no TLS at all
    with relaxed:
        result = caller.call(relaxed.uri("es"), CallScript(hangup_after_s=1.0, srtp="mandatory"))
    assert result.connected and result.srtp


def test_srtp_off_refuses_an_srtp_only_offer_and_answers_optional_with_rtp(caller: SipCaller) -> None:
    with UasProcess() as plain:  # SipConfig's defaults: srtp off
        only_srtp = caller.call(plain.uri("es"), CallScript(hangup_after_s=0.5, srtp="mandatory"))
        either = caller.call(plain.uri("es"), CallScript(hangup_after_s=0.5, srtp="optional"))
    assert not only_srtp.connected and only_srtp.status_code == 488
    assert either.connected and either.srtp is None


def test_opus_is_negotiated_with_a_client_that_offers_only_opus(caller: SipCaller, mandatory) -> None:
    if not any(c.lower().startswith("opus/") for c in caller.available_codecs):
        pytest.skip(f"opus is not in this pjsua2 build ({', '.join(caller.available_codecs)})")
    uas, uri = mandatory
    script = CallScript(wav=SHORT, speak_after_s=0.3, hangup_after_s=duration_seconds(SHORT) + 0.8,
                        srtp="mandatory", codecs=("opus/48000",))
    result = caller.call(uri, script)

    assert result.connected and result.codec == "opus/48000" and result.srtp
    assert frames_of(uas, result.sip_call_id)["speech_s"] == pytest.approx(speech_seconds(SHORT), abs=0.4)


def test_optional_srtp_follows_the_offer(caller: SipCaller, certs: CertPair, mandatory) -> None:
    _, mandatory_uri = mandatory
    proc, tls_port = secure_uas(certs, "optional")
    uri = f"sip:es@127.0.0.1:{tls_port};transport=tls"
    with proc:
        plain = caller.call(uri, CallScript(hangup_after_s=0.5, srtp="off"))
        offered = caller.call(uri, CallScript(hangup_after_s=0.5, srtp="optional"))
        required = caller.call(uri, CallScript(hangup_after_s=0.5, srtp="mandatory"))
    optional_to_mandatory = caller.call(mandatory_uri, CallScript(hangup_after_s=0.5, srtp="optional"))
    assert plain.connected and plain.srtp is None
    assert offered.connected and offered.srtp  # SRTP inside an RTP/AVP offer (a=crypto)
    assert required.connected and required.srtp
    # mandatory wants an RTP/SAVP offer: RTP/AVP with a=crypto lines is refused as plain RTP
    assert not optional_to_mandatory.connected and optional_to_mandatory.status_code == 488


def options_over_tls(port: int, ca_file: Path) -> str:
    """Python's ssl, with no client certificate: send OPTIONS, return the answer or why there is none."""
    request = (f"OPTIONS sip:es@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
               "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-probe;rport\r\nMax-Forwards: 70\r\n"
               f"To: <sip:es@127.0.0.1:{port}>\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\n"
               "Call-ID: tls-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request.encode())
            return tls.recv(4096).decode("utf-8", "replace") or "closed"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"


def test_with_a_ca_file_tls_clients_must_present_a_certificate(caller: SipCaller, certs: CertPair, mandatory) -> None:
    proc, tls_port = secure_uas(certs, "off", "--sip", f"tls_ca_file={json.dumps(str(certs.cert_file))}")
    with proc:
        result = caller.call(f"sip:es@127.0.0.1:{tls_port};transport=tls", CallScript(hangup_after_s=0.5))
        assert result.connected  # the caller's certificate is signed by the CA file (it is the CA)
        anonymous = options_over_tls(tls_port, certs.cert_file)
    # TLS 1.3 (OpenSSL 3) names the missing certificate; the PyPI wheel's OpenSSL 1.0.2 has no TLS 1.3
    # and no such alert, only a failed handshake.
    old_openssl = (pjsua2_build().openssl or "").startswith("1.")
    alert = "HANDSHAKE_FAILURE" if old_openssl else "CERTIFICATE_REQUIRED"
    assert anonymous.startswith("refused") and alert in anonymous.upper(), anonymous
    uas, uri = mandatory  # no tls_ca_file: the same client is answered
    assert options_over_tls(int(uri.split(":")[2].split(";")[0]), certs.cert_file).startswith("SIP/2.0 200")


def test_a_tls_listener_needs_a_readable_certificate(certs: CertPair, tmp_path: Path) -> None:
    proc = UasProcess("--sip", 'transports=["udp", "tls"]', "--sip", f"tls_port={free_port()}",
                      "--sip", f"tls_cert_file={json.dumps(str(tmp_path / 'missing.crt'))}",
                      "--sip", f"tls_key_file={json.dumps(str(certs.key_file))}")
    try:
        event = proc.started()
    finally:
        proc.stop()
    assert event["event"] == "start_error" and "cannot read TLS file" in event["message"]


@pytest.mark.skipif(not baresip.available(), reason="baresip or sox is not installed")
def test_baresip_calls_over_tls_with_mandatory_srtp(mandatory, certs: CertPair, tmp_path: Path) -> None:
    if "srtp" not in baresip.modules():
        pytest.skip("this baresip has no srtp module")
    uas, uri = mandatory
    # baresip listens for TLS too (sip_certificate: cert and key in one PEM): pjsua sends the BYE
    # and any in-dialog request to the Contact, over a new connection, not the caller's own.
    both = tmp_path / "baresip.pem"
    both.write_text(certs.cert_file.read_text() + certs.key_file.read_text())
    result = baresip.call(uri, SHORT, pad_s=1.0, timeout=20.0, extra_modules=("srtp",),
                          extra_config=f"sip_cafile\t\t{certs.cert_file}\nsip_certificate\t\t{both}\n",
                          account_params=";mediaenc=srtp-mand")

    assert result.connected, result.output[-2000:]
    assert "SRTP is Enabled" in result.output
    incoming = uas.wait_for(lambda e: e["event"] == "incoming" and e["headers"].get("User-Agent", "").startswith("baresip"))
    uas.wait_event("CallEnded", call_id=incoming["call_id"])
    frames = uas.wait_event("frames", call_id=incoming["call_id"])
    assert frames["speech_s"] == pytest.approx(speech_seconds(SHORT), abs=0.4)


def test_config_checks_tls_and_srtp_settings() -> None:
    ok = SipConfig(transports=["udp", "tls"], tls_cert_file="/etc/puente/sip.crt", tls_key_file="/etc/puente/sip.key",
                   srtp="mandatory")
    assert ok.tls_cert_file == Path("/etc/puente/sip.crt") and ok.transports == ("udp", "tls")
    assert SipConfig().srtp == "off" and "tls" not in SipConfig().transports
    with pytest.raises(ValueError, match="set tls_cert_file and tls_key_file"):
        SipConfig(transports=("tls",))
    with pytest.raises(ValueError, match="srtp must be one of"):
        SipConfig(srtp="sdes")
    with pytest.raises(ValueError, match="'tls' is not in transports"):
        SipConfig(srtp="optional")
    assert SipConfig(srtp="optional", srtp_require_tls=False).srtp == "optional"
