"""Configuration of the SIP edge."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_TRANSPORTS = ("udp", "tcp")
# pjsua's AccountConfig.mediaConfig.srtpUse: PJMEDIA_SRTP_DISABLED / _OPTIONAL / _MANDATORY.
SRTP_MODES = ("off", "optional", "mandatory")


def in_networks(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether an IP address (no port) is in one of ``networks``; False for anything not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


@dataclass(frozen=True)
class SipConfig:
    """Where and how :class:`~sip.endpoint.SipEndpoint` listens and answers.

    ``codecs`` is a priority list of ``name/clock_rate`` ids (matched
    case-insensitively against pjsua's ``name/rate/channels`` ids); every other
    codec is disabled so the SDP offers/answers only what is listed.

    ``"tls"`` in ``transports`` listens for SIP over TLS on ``tls_port`` with
    ``tls_cert_file``/``tls_key_file`` (PEM); with ``tls_ca_file`` clients must
    also present a certificate that CA signed (mutual TLS). ``srtp`` is the media
    policy: ``off`` (RTP only; an SRTP-only offer is refused), ``optional`` (SRTP
    when the caller offers it, else RTP) or ``mandatory`` (the offer must be RTP/SAVP;
    plain RTP, even RTP/AVP with crypto lines, gets 488). The SRTP keys (SDES) travel in the SDP, so with ``srtp_require_tls``
    (the default) pjsua answers calls that did not arrive over TLS with 406
    whenever ``srtp`` is not ``off``; turn it off to accept SDES over UDP/TCP too.
    """

    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = DEFAULT_TRANSPORTS
    public_host: str | None = None
    tls_port: int = 5061
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    srtp: str = "off"
    srtp_require_tls: bool = True
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Per-source admission (sip/admission.py): sources in trusted_networks are exempt; any other
    # source IP may hold max_calls_per_source calls at once (more: 486) and start
    # invite_rate_per_source new INVITEs a second, bursts of invite_burst_per_source (more: 503 +
    # Retry-After). 0 turns a limit off. ack_timeout_s: pjsip's transaction timeout (timers H, B, F;
    # default 32 s): a 200 OK never ACKed is ended with a BYE this long after it was sent, and the
    # call is freed when that BYE is answered or after ack_timeout_s more. It also bounds how long
    # our own requests (BYE, REFER) wait for an answer.
    trusted_networks: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    max_calls_per_source: int = 8
    invite_rate_per_source: float = 2.0
    invite_burst_per_source: int = 10
    ack_timeout_s: float = 5.0
    codecs: tuple[str, ...] = ("opus/48000", "G722/16000", "PCMU/8000", "PCMA/8000")
    rtp_port: int = 40000
    rtp_port_range: int = 2000
    # Inbound calls held at once (more: 486). Agent legs the gateway dials (SipEndpoint.dial) are not
    # counted: pjsua gets 2 * max_calls + 8 call slots (one agent leg per call, plus headroom to reject),
    # bounded by the build's PJSUA_MAX_CALLS (512 on Puente's build, 4 on the PyPI wheel).
    max_calls: int = 32
    user_agent: str = "Puente"
    log_level: int = 0
    # pjmedia's quality, 1-10 (pjsua's own default is 8): 5 and up resample with the large filter,
    # 3-4 with the small one, below 3 linearly; it also sets encoder complexity. Every G.711 call
    # is resampled at the bridge (8 kHz <-> 16 kHz) both ways, and with the large filter that was
    # most of a held call's CPU (benchmarks/capacity.py: 100 calls, 84 % -> 34 % of a core).
    media_quality: int = 4

    def __post_init__(self) -> None:
        # Accept lists from YAML/CLI callers but store tuples so the config stays hashable.
        for name in ("transports", "allowed_networks", "codecs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [t for t in self.transports if t not in TRANSPORTS]
        if unknown or not self.transports:
            raise ValueError(
                f"SipConfig.transports must be a non-empty subset of {TRANSPORTS}, got {self.transports!r}"
            )
        self._check_tls_and_srtp()
        self._check_admission()
        for cidr in self.allowed_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"SipConfig.allowed_networks: {cidr!r} is not a valid CIDR ({exc})") from None
        for addr_name in ("host", "public_host"):
            addr = getattr(self, addr_name)
            if addr is not None and not addr:
                raise ValueError(f"SipConfig.{addr_name} must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"SipConfig.port must be 0-65535, got {self.port}")
        if not 0 <= self.rtp_port <= 65535 or self.rtp_port_range < 0:
            raise ValueError(f"SipConfig.rtp_port/rtp_port_range out of range: {self.rtp_port}/{self.rtp_port_range}")
        if self.max_calls < 1:
            raise ValueError(f"SipConfig.max_calls must be >= 1, got {self.max_calls}")
        if not self.codecs or any("/" not in c for c in self.codecs):
            raise ValueError(f"SipConfig.codecs must be non-empty 'name/clock_rate' ids, got {self.codecs!r}")
        if not 0 <= self.log_level <= 6:
            raise ValueError(f"SipConfig.log_level must be 0-6, got {self.log_level}")
        if not 1 <= self.media_quality <= 10:
            raise ValueError(f"SipConfig.media_quality must be 1-10, got {self.media_quality}")

    def _check_admission(self) -> None:
        object.__setattr__(self, "trusted_networks", tuple(self.trusted_networks))
        for cidr in self.trusted_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"SipConfig.trusted_networks: {cidr!r} is not a valid CIDR ({exc})") from None
        if self.max_calls_per_source < 0:
            raise ValueError(f"SipConfig.max_calls_per_source must be >= 0 (0: no cap), got {self.max_calls_per_source}")
        if self.invite_rate_per_source < 0:
            raise ValueError(f"SipConfig.invite_rate_per_source must be >= 0 (0: no limit), got {self.invite_rate_per_source}")
        if self.invite_burst_per_source < 1:
            raise ValueError(f"SipConfig.invite_burst_per_source must be >= 1, got {self.invite_burst_per_source}")
        if not 0.5 <= self.ack_timeout_s <= 32:
            raise ValueError(f"SipConfig.ack_timeout_s must be 0.5-32 s, got {self.ack_timeout_s}")

    def _check_tls_and_srtp(self) -> None:
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            value = getattr(self, name)
            if value is not None:
                if not str(value):
                    raise ValueError(f"SipConfig.{name} must not be empty")
                object.__setattr__(self, name, Path(value))
        if not 1 <= self.tls_port <= 65535:
            raise ValueError(f"SipConfig.tls_port must be 1-65535, got {self.tls_port}")
        if "tls" in self.transports:
            if self.tls_cert_file is None or self.tls_key_file is None:
                raise ValueError("SipConfig.transports has 'tls': set tls_cert_file and tls_key_file (PEM)")
            if "tcp" in self.transports and self.tls_port == self.port:
                raise ValueError(f"SipConfig.tls_port {self.tls_port} is also the TCP port: TLS needs its own")
        if self.srtp not in SRTP_MODES:
            raise ValueError(f"SipConfig.srtp must be one of {SRTP_MODES}, got {self.srtp!r}")
        if self.srtp != "off" and self.srtp_require_tls and "tls" not in self.transports:
            raise ValueError(
                f"SipConfig.srtp is {self.srtp!r} with srtp_require_tls, but 'tls' is not in transports: "
                "every call would be refused (add tls, or set srtp_require_tls false to send SDES keys in the clear)"
            )

    @property
    def advertised_host(self) -> str:
        """The address written into Contact/Via and SDP."""
        return self.public_host or self.host

    def is_allowed(self, address: str) -> bool:
        """Whether a source IP (no port) belongs to one of ``allowed_networks``."""
        return in_networks(address, self._networks)

    @cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.allowed_networks)
