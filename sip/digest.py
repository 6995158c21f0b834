"""Digest authentication of SIP requests, the server side (RFC 3261 §22, RFC 7616, RFC 8760).

Only ``qop=auth`` with MD5 or SHA-256 is accepted: RFC 7616 makes qop mandatory, and the
nonce count it brings is what lets a replay be told from a fresh request. Nonces carry their
own issue time and an HMAC, so no table of issued nonces is kept; the only state is a bounded
set of the (nonce, nc) pairs already used, pruned as their nonces go stale.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ALGORITHMS: dict[str, Callable[[bytes], Any]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
# (nonce, nc) pairs remembered at most: beyond that the oldest is forgotten, so a flood of
# valid requests cannot grow memory; a replay then needs a pair older than thousands of others.
_MAX_USED = 8192
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*(?:,|$)')
_NC = re.compile(r"[0-9a-fA-F]{8}")


class MalformedCredentials(ValueError):
    """An Authorization header for our realm that cannot be checked (answered with 400)."""


class Verdict(enum.Enum):
    OK = "ok"
    FORBIDDEN = "forbidden"  # unknown user or wrong password
    STALE = "stale"  # right password, but a nonce that is too old or not ours (e.g. before a restart)
    REPLAY = "replay"  # a (nonce, nc) pair already used


@dataclass(frozen=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    nc: str
    cnonce: str


def parse_auth_params(value: str) -> tuple[str, dict[str, str]] | None:
    """``Digest a="x", b=y`` → ``("digest", {"a": "x", "b": "y"})``; None when not well-formed."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if name in params:
            return None
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = m.end()
    return scheme.lower(), params


class DigestAuth:
    """Issues challenges for one realm and checks the answers to them."""

    def __init__(self, realm: str, nonce_ttl_s: float, clock: Callable[[], float],
                 algorithms: tuple[str, ...] = tuple(ALGORITHMS)) -> None:
        self._realm = realm
        self._algorithms = algorithms
        self._ttl_s = nonce_ttl_s
        self._clock = clock
        self._secret = secrets.token_bytes(32)  # per instance: nonces of another instance are stale here
        self._used: OrderedDict[tuple[str, str], float] = OrderedDict()

    def challenges(self, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm, sharing one nonce."""
        nonce = self._new_nonce()
        extra = ", stale=true" if stale else ""
        return [f'Digest realm="{self._realm}", nonce="{nonce}", qop="auth", algorithm={name}{extra}'
                for name in self._algorithms]

    def credentials(self, authorizations: list[str]) -> Credentials | None:
        """The Digest credentials for our realm among ``Authorization`` values; None if there are none.

        Raises :class:`MalformedCredentials` when our realm's credentials lack what the check needs.
        """
        for value in authorizations:
            parsed = parse_auth_params(value)
            if parsed is None:
                raise MalformedCredentials("Malformed Authorization header")
            scheme, params = parsed
            if scheme == "digest" and params.get("realm") == self._realm:
                return _credentials(params, self._algorithms)
        return None  # credentials for another realm (or none): challenge for ours

    def verify(self, creds: Credentials, method: str, password: str | None) -> Verdict:
        """Check the response first, so that stale=true is only ever said to someone who knows the password."""
        if password is None or not hmac.compare_digest(_bytes(creds.response.lower()), _response(creds, method, password).encode()):
            return Verdict.FORBIDDEN
        if not self._fresh(creds.nonce):
            return Verdict.STALE
        return Verdict.REPLAY if self._seen(creds.nonce, creds.nc.lower()) else Verdict.OK

    def _new_nonce(self) -> str:
        # A random salt keeps two challenges in the same millisecond apart, so their (nonce, nc) never collide.
        body = f"{int(self._clock() * 1000):x}.{secrets.token_hex(8)}"
        return f"{body}.{self._mac(body)}"

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, _bytes(body), hashlib.sha256).hexdigest()[:32]

    def _fresh(self, nonce: str) -> bool:
        body, _, mac = nonce.rpartition(".")
        if not hmac.compare_digest(_bytes(mac), self._mac(body).encode()):
            return False
        try:
            issued_s = int(body.split(".", 1)[0], 16) / 1000
        except ValueError:
            return False
        return 0 <= self._clock() - issued_s <= self._ttl_s

    def _seen(self, nonce: str, nc: str) -> bool:
        now = self._clock()
        while self._used and (len(self._used) >= _MAX_USED or now - next(iter(self._used.values())) > self._ttl_s):
            self._used.popitem(last=False)  # oldest first: its nonce is stale by now, or the set is full
        if (nonce, nc) in self._used:
            return True
        self._used[(nonce, nc)] = now
        return False


def _credentials(params: dict[str, str], algorithms: tuple[str, ...]) -> Credentials:
    missing = [k for k in ("username", "nonce", "uri", "response", "qop", "nc", "cnonce") if not params.get(k)]
    if missing:
        raise MalformedCredentials(f"Authorization lacks {', '.join(missing)}")
    algorithm = params.get("algorithm", "MD5").upper()  # RFC 7616 §3.4: absent means MD5
    if algorithm not in algorithms:
        raise MalformedCredentials("Unsupported digest algorithm")
    if params["qop"].lower() != "auth":
        raise MalformedCredentials("Only qop=auth is supported")
    if not _NC.fullmatch(params["nc"]):
        raise MalformedCredentials("Malformed nonce count")
    return Credentials(username=params["username"], realm=params["realm"], nonce=params["nonce"], uri=params["uri"],
                       response=params["response"], algorithm=algorithm, nc=params["nc"], cnonce=params["cnonce"])


def _response(creds: Credentials, method: str, password: str) -> str:
    def h(text: str) -> str:
        return ALGORITHMS[creds.algorithm](_bytes(text)).hexdigest()

    ha1 = h(f"{creds.username}:{creds.realm}:{password}")
    ha2 = h(f"{method}:{creds.uri}")
    return h(f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:auth:{ha2}")


def _bytes(text: str) -> bytes:
    # Requests are decoded with surrogateescape, so undecodable bytes survive to here unharmed.
    return text.encode("utf-8", "surrogateescape")
