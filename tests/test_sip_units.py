"""The sip package's pure parts: config validation, SIP text helpers, WAV preparation."""
from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest

from sip import CallScript, SipConfig
from sip.media import WavCache
from sip.message import addr_spec, app_headers, parse_headers, refer_to_uri, request_uri, split_host_port, uri_user

INVITE = (
    "INVITE sip:es@127.0.0.1:5060;transport=udp SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1\r\n"
    "f: \"Ana\" <sip:+5215555550123@10.1.1.1>;tag=1\r\n"
    "t: <sip:es@127.0.0.1>\r\n"
    "i: abc@10.1.1.1\r\n"
    "P-Asserted-Identity: <sip:+5215555550123@carrier.example>\r\n"
    "User-Agent: PBX 1.0\r\n"
    "X-Queue: billing\r\n"
    "X-Trace: a,\r\n b\r\n"
    "x-queue: overflow\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_config_defaults_are_valid() -> None:
    config = SipConfig()
    assert config.advertised_host == "127.0.0.1"
    assert config.is_allowed("127.0.0.1") and config.is_allowed("::1")
    assert not config.is_allowed("10.0.0.1") and not config.is_allowed("not-an-ip")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allowed_networks": ("10.0.0.0/33",)}, "not a valid CIDR"),
        ({"transports": ("udp", "sctp")}, "transports"),
        ({"transports": ()}, "transports"),
        ({"max_calls": 0}, "max_calls"),
        ({"port": 70000}, "port"),
        ({"codecs": ("PCMU",)}, "codecs"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SipConfig(**kwargs)


def test_config_accepts_lists_and_public_host() -> None:
    config = SipConfig(allowed_networks=["192.168.0.0/16"], public_host="203.0.113.7")  # type: ignore[arg-type]
    assert config.allowed_networks == ("192.168.0.0/16",)
    assert config.advertised_host == "203.0.113.7"
    assert config.is_allowed("192.168.10.20")


def test_headers_are_unfolded_and_compact_names_expanded() -> None:
    headers = parse_headers(INVITE)
    assert ("From", '"Ana" <sip:+5215555550123@10.1.1.1>;tag=1') in headers
    assert ("Call-ID", "abc@10.1.1.1") in headers
    assert ("X-Trace", "a, b") in headers


def test_app_headers_keep_identity_and_x_headers_only() -> None:
    assert app_headers(INVITE) == {
        "P-Asserted-Identity": "<sip:+5215555550123@carrier.example>",
        "User-Agent": "PBX 1.0",
        "X-Queue": "billing, overflow",
        "X-Trace": "a, b",
    }


def test_uri_helpers() -> None:
    assert request_uri(INVITE) == "sip:es@127.0.0.1:5060;transport=udp"
    assert uri_user(request_uri(INVITE)) == "es"
    assert uri_user('"Bob" <sip:+52155@h;user=phone>;tag=9') == "+52155"
    assert uri_user("sip:127.0.0.1") == ""
    assert addr_spec('"Ana" <sip:+52155@h;user=phone>;tag=9') == "sip:+52155@h;user=phone"
    assert addr_spec("sip:es@h;tag=1") == "sip:es@h"
    assert split_host_port("127.0.0.1:5070") == ("127.0.0.1", 5070)
    assert split_host_port("[::1]:5070") == ("::1", 5070)
    assert split_host_port("::1") == ("::1", 0)


def test_refer_to_embeds_escaped_headers() -> None:
    refer_to = refer_to_uri("sip:agent@10.0.0.5", {"X-Puente-Intent": "billing & más=1?", "X-Puente-Call-Id": "c-1"})
    assert refer_to == "<sip:agent@10.0.0.5?X-Puente-Intent=billing%20%26%20m%C3%A1s%3D1%3F&X-Puente-Call-Id=c-1>"
    assert refer_to_uri("<sip:a@h?X-A=1>", {"X-B": "2"}) == "<sip:a@h?X-A=1&X-B=2>"


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_wav_cache_converts_to_16k_mono_once(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    with wave.open(str(source), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\x00\x10" * 2 * 22050)
    cache = WavCache(tmp_path / "cache")
    converted = cache.prepare(source)
    with wave.open(str(converted), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() == pytest.approx(16000, abs=50)
    assert cache.prepare(source) == converted
    assert cache.prepare(converted) == converted  # already in the bridge format


def test_wav_cache_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WavCache(tmp_path).prepare(tmp_path / "nope.wav")


def test_call_script_validates_dtmf() -> None:
    with pytest.raises(ValueError, match="DTMF method"):
        CallScript(dtmf=[(1.0, "1", "inband")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_duration_s"):
        CallScript(max_duration_s=0)
