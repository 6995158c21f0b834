"""Configuration of the SIP edge."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

TRANSPORTS = ("udp", "tcp")


@dataclass(frozen=True)
class SipConfig:
    """Where and how :class:`~sip.endpoint.SipEndpoint` listens and answers.

    ``codecs`` is a priority list of ``name/clock_rate`` ids (matched
    case-insensitively against pjsua's ``name/rate/channels`` ids); every other
    codec is disabled so the SDP offers/answers only what is listed.
    """

    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = TRANSPORTS
    public_host: str | None = None
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    codecs: tuple[str, ...] = ("opus/48000", "G722/16000", "PCMU/8000", "PCMA/8000")
    rtp_port: int = 40000
    rtp_port_range: int = 2000
    max_calls: int = 32
    user_agent: str = "Puente"
    log_level: int = 0

    def __post_init__(self) -> None:
        # Accept lists from YAML/CLI callers but store tuples so the config stays hashable.
        for name in ("transports", "allowed_networks", "codecs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [t for t in self.transports if t not in TRANSPORTS]
        if unknown or not self.transports:
            raise ValueError(
                f"SipConfig.transports must be a non-empty subset of {TRANSPORTS}, got {self.transports!r}"
            )
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

    @property
    def advertised_host(self) -> str:
        """The address written into Contact/Via and SDP."""
        return self.public_host or self.host

    def is_allowed(self, address: str) -> bool:
        """Whether a source IP (no port) belongs to one of ``allowed_networks``."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    @cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.allowed_networks)
