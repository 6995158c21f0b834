"""A small SIP registrar (RFC 3261 §10) so agents' softphones can REGISTER with the gateway.

pjsua2 cannot act as a registrar, so this one is independent of it: asyncio over UDP on its
own port beside the pjsua2 endpoint. It keeps one binding per username (the latest REGISTER
wins), authenticates every REGISTER with Digest (MD5 or SHA-256, qop=auth; see ``sip.digest``)
and tells the gateway through ``on_change`` when an agent becomes reachable or goes away.

Responses go back to the address the request came from (what works behind NAT), with
``received``/``rport`` added to the top Via (RFC 3581). Retransmissions of a request are
answered with the response already sent, as a server transaction does (RFC 3261 §17.2.2),
so a lost 200 OK never makes the retransmitted REGISTER look like a nonce-count replay.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from sip.digest import ALGORITHMS, DigestAuth, MalformedCredentials, Verdict
from sip.errors import SipStartError
from sip.message import parse_headers, split_host_port, uri_user

log = logging.getLogger("puente.sip.registrar")

MAX_MESSAGE_BYTES = 8192
ALLOW = "REGISTER, OPTIONS"
_SWEEP_S = 1.0
# RFC 3261 Timer J (64 * T1): how long a retransmission of a non-INVITE request may still arrive.
_TRANSACTION_S = 32.0
_MAX_TRANSACTIONS = 4096
_START = re.compile(r"([A-Za-z!%*_+`'~.-]+) (\S+) SIP/2\.0")
_VIA = re.compile(r"(SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+)\s+([^\s;,]+)\s*((?:;.*)?)", re.S)
_SIP_URI = re.compile(r"sips?:(?:[^@\s<>\"]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?(?:[;?][^\s<>\"]*)?",
                      re.I)
_PARAM = re.compile(r';\s*([^\s=;]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^\s;]*))?')
_CSEQ = re.compile(r"(\d{1,10})\s+(\S+)")
_DELTA = re.compile(r"\d{1,20}")


@dataclass(frozen=True)
class RegistrarConfig:
    """Where the registrar listens and how long registrations last (seconds)."""

    host: str = "127.0.0.1"
    port: int = 5070
    realm: str = "puente"
    min_expires_s: int = 60  # shorter asked intervals get 423 Interval Too Brief with Min-Expires
    max_expires_s: int = 3600  # longer asked intervals are granted as this
    default_expires_s: int = 600  # when the REGISTER asks for no interval
    nonce_ttl_s: int = 300  # older nonces get 401 with stale=true
    # Challenged for and accepted, in this order. MD5 only by default: a softphone on libre < 2.x
    # (Debian's baresip 1.0) gives up on a 401 holding any other challenge, against RFC 8760 §2.4;
    # ("MD5", "SHA-256") once every phone takes it.
    digest_algorithms: tuple[str, ...] = ("MD5",)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("RegistrarConfig.host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"RegistrarConfig.port must be 0-65535, got {self.port}")
        if not self.realm or any(c in self.realm for c in '"\\\r\n'):
            raise ValueError(f"RegistrarConfig.realm must be non-empty, without quotes or backslashes: {self.realm!r}")
        if not 1 <= self.min_expires_s <= self.default_expires_s <= self.max_expires_s:
            raise ValueError("RegistrarConfig needs 1 <= min_expires_s <= default_expires_s <= max_expires_s, got "
                             f"{self.min_expires_s}/{self.default_expires_s}/{self.max_expires_s}")
        object.__setattr__(self, "digest_algorithms", tuple(self.digest_algorithms))  # lists from YAML
        if not self.digest_algorithms or not set(self.digest_algorithms) <= set(ALGORITHMS):
            raise ValueError(f"RegistrarConfig.digest_algorithms must be a non-empty subset of {tuple(ALGORITHMS)}, "
                             f"got {self.digest_algorithms!r}")
        if self.nonce_ttl_s < 1:
            raise ValueError(f"RegistrarConfig.nonce_ttl_s must be >= 1, got {self.nonce_ttl_s}")


@dataclass(frozen=True)
class Binding:
    """Where an agent can be called."""

    username: str
    contact: str  # the Contact URI (bare sip:/sips: URI, params kept), where to INVITE the agent
    source: str  # "ip:port" the REGISTER came from
    expires_at: float  # the registrar's clock (time.monotonic() by default), seconds


@dataclass
class _Record:
    binding: Binding
    call_id: str
    cseq: int


class _Reject(Exception):
    """A request answered with an error before it changes anything."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.headers = status, reason, headers


@dataclass
class _Request:
    method: str
    uri: str
    headers: list[tuple[str, str]]
    top_via: str  # the topmost Via value, received/rport already filled in
    other_vias: list[str]
    branch: str
    source: tuple[str, int]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def one(self, name: str) -> str | None:
        values = self.values(name)
        if len(values) > 1:
            raise _Reject(400, f"More than one {name} header")
        return values[0] if values else None

    def required(self, name: str) -> str:
        value = self.one(name)
        if value is None:
            raise _Reject(400, f"Missing {name} header")
        return value


Reply = tuple[int, str, list[tuple[str, str]]]


class Registrar:
    """A Digest-authenticating SIP registrar over UDP with one binding per username.

    ``credentials(username)`` gives an agent's password (None: unknown user). ``on_change(username,
    binding)`` runs on the event loop when a user registers or moves to another contact, and with
    None when the binding goes (unregistered or expired). Bindings survive :meth:`stop`.
    """

    def __init__(self, config: RegistrarConfig, credentials: Callable[[str], str | None],
                 on_change: Callable[[str, Binding | None], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._credentials = credentials
        self._on_change = on_change
        self._clock = clock
        self._auth = DigestAuth(config.realm, config.nonce_ttl_s, clock, config.digest_algorithms)
        self._records: dict[str, _Record] = {}
        # (branch, sent-by, method, source) -> (forget at, response): the server transactions.
        self._transactions: OrderedDict[tuple[str, str, str, tuple[str, int]], tuple[float, bytes]] = OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stats = dict.fromkeys(
            ("registered", "refreshed", "unregistered", "expired", "challenged", "refused", "malformed"), 0)

    async def start(self) -> None:
        if self._transport is not None:
            raise SipStartError("the registrar is already started")
        cfg = self._config
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(cfg.host, cfg.port))
        except OSError as exc:
            raise SipStartError(f"the registrar cannot listen on UDP {cfg.host}:{cfg.port}: {exc.strerror or exc}") from exc
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="registrar-sweeper")
        log.info("SIP registrar listening on UDP %s:%d, realm %s", cfg.host, self.port, cfg.realm)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def port(self) -> int:
        """The UDP port bound (the configured one until started; useful with port 0)."""
        return self._transport.get_extra_info("sockname")[1] if self._transport is not None else self._config.port

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: registered (new or moved contact), refreshed, unregistered, expired,
        challenged (401), refused (any other error to a well-formed request: 403, 405, 420, 423, 500)
        and malformed (answered 400/513, or dropped when no response could be formed)."""
        return dict(self._stats)

    def binding(self, username: str) -> Binding | None:
        """The live binding of ``username``; an expired one reads as None before the sweeper drops it."""
        record = self._records.get(username)
        return record.binding if record is not None and record.binding.expires_at > self._clock() else None

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        """Answer one datagram. Whatever it holds, nothing raises out of here into the transport."""
        try:
            response = self._answer(data, source)
        except Exception:  # a bug costs this packet, never the listener
            log.exception("registrar: packet from %s:%d dropped", source[0], source[1])
            self._stats["malformed"] += 1
            return
        if response is not None and self._transport is not None:
            self._transport.sendto(response, source)

    def _answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        if not data.strip():
            return None  # a CRLF keep-alive (RFC 5626 §4.4.1)
        request = _parse(data.decode("utf-8", "surrogateescape"), source)
        if request is None:
            self._stats["malformed"] += 1  # no Via to answer to
            return None
        if request.method == "ACK":
            return None  # ACKs our non-2xx final response; never answered
        now = self._clock()
        key = (request.branch, request.top_via.split(";", 1)[0], request.method, source)
        cached = self._transactions.get(key) if request.branch else None
        if cached is not None:
            return cached[1]
        try:
            status, reason, headers = self._handle(request, data)
        except _Reject as reject:
            status, reason, headers = reject.status, reject.reason, list(reject.headers)
        self._count(status)
        response = _response(request, status, reason, headers)
        if request.branch:
            self._remember(key, now, response)
        return response

    def _count(self, status: int) -> None:
        if status == 401:
            self._stats["challenged"] += 1
        elif status in (400, 513):
            self._stats["malformed"] += 1
        elif status >= 300:
            self._stats["refused"] += 1

    def _remember(self, key: tuple[str, str, str, tuple[str, int]], now: float, response: bytes) -> None:
        self._transactions[key] = (now + _TRANSACTION_S, response)
        if len(self._transactions) > _MAX_TRANSACTIONS:
            self._transactions.popitem(last=False)

    def _handle(self, request: _Request, data: bytes) -> Reply:
        if len(data) > MAX_MESSAGE_BYTES:
            raise _Reject(513, "Message Too Large")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject(400, "Invalid UTF-8") from None
        _check_common(request, data)
        if request.method == "OPTIONS":
            return 200, "OK", [("Allow", ALLOW)]
        if request.method != "REGISTER":
            return 405, "Method Not Allowed", [("Allow", ALLOW)]
        return self._register(request)

    def _register(self, request: _Request) -> Reply:
        username = uri_user(_sip_uri(request.required("To"), "To")[0])
        if not username:
            raise _Reject(400, "To has no user part")
        expires = _delta(request.one("Expires"), "Expires")
        contacts = _contacts(request, expires)
        if request.values("Require"):  # RFC 3261 §10.3 step 2: we support no extension
            return 420, "Bad Extension", [("Unsupported", ", ".join(request.values("Require")))]
        refusal = self._authenticate(request, username)
        if refusal is not None:
            return refusal
        asked = [(uri, self._config.default_expires_s if e is None else e) for uri, e in contacts]
        if any(0 < e < self._config.min_expires_s for _, e in asked):
            return 423, "Interval Too Brief", [("Min-Expires", str(self._config.min_expires_s))]
        call_id = request.required("Call-ID")
        cseq = int(request.required("CSeq").split()[0])
        now = self._clock()
        record = self._records.get(username)
        if record is not None and record.binding.expires_at <= now:
            self._remove(username, "expired")
            record = None
        if record is not None and record.call_id == call_id and cseq <= record.cseq:
            return 500, "Out of Order CSeq", []  # RFC 3261 §10.3 step 7: an older REGISTER arrived late
        for uri, seconds in asked:
            self._apply(username, uri, seconds, request, call_id, cseq, now)
        return 200, "OK", self._contact_headers(username, now) + [("Date", formatdate(usegmt=True))]

    def _authenticate(self, request: _Request, username: str) -> Reply | None:
        """None when the REGISTER carries valid credentials of ``username``, else the reply to send."""
        try:
            creds = self._auth.credentials(request.values("Authorization"))
        except MalformedCredentials as exc:
            raise _Reject(400, str(exc)) from None
        if creds is None:
            return self._challenge(stale=False)
        if creds.uri != request.uri:
            raise _Reject(400, "Digest uri does not match the Request-URI")  # RFC 2617 §3.2.2.5
        if creds.username != username:
            return 403, "Forbidden (credentials are not of the To user)", []
        verdict = self._auth.verify(creds, request.method, self._credentials(creds.username))
        if verdict is Verdict.FORBIDDEN:
            return 403, "Forbidden", []
        if verdict is Verdict.STALE:
            return self._challenge(stale=True)
        if verdict is Verdict.REPLAY:
            # Not proof of a wrong password: a fresh challenge is what the real owner needs, and useless to a replayer.
            return self._challenge(stale=False)
        return None

    def _challenge(self, *, stale: bool) -> Reply:
        return 401, "Unauthorized", [("WWW-Authenticate", value) for value in self._auth.challenges(stale=stale)]

    def _apply(self, username: str, uri: str, seconds: int, request: _Request, call_id: str, cseq: int,
               now: float) -> None:
        record = self._records.get(username)
        same = record is not None and record.binding.contact == uri
        if uri == "*" or seconds == 0:
            if record is not None and (uri == "*" or same):
                self._remove(username, "unregistered")
            return  # removing a contact that is not the binding (an old one) changes nothing
        binding = Binding(username=username, contact=uri, source=_address(request.source),
                          expires_at=now + min(seconds, self._config.max_expires_s))
        self._records[username] = _Record(binding, call_id, cseq)
        if same:
            self._stats["refreshed"] += 1
        else:
            self._stats["registered"] += 1
            self._notify(username, binding)

    def _contact_headers(self, username: str, now: float) -> list[tuple[str, str]]:
        record = self._records.get(username)
        if record is None:
            return []
        return [("Contact", f"<{record.binding.contact}>;expires={max(0, round(record.binding.expires_at - now))}")]

    def _remove(self, username: str, counter: str) -> None:
        del self._records[username]
        self._stats[counter] += 1
        self._notify(username, None)

    def _notify(self, username: str, binding: Binding | None) -> None:
        try:
            self._on_change(username, binding)
        except Exception:  # the gateway's bug must not undo a registration already answered
            log.exception("registrar: on_change(%s) failed", username)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            self._sweep(self._clock())

    def _sweep(self, now: float) -> None:
        for username in [u for u, r in self._records.items() if r.binding.expires_at <= now]:
            self._remove(username, "expired")
        while self._transactions and next(iter(self._transactions.values()))[0] <= now:
            self._transactions.popitem(last=False)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._registrar._datagram(data, addr[:2])

    def error_received(self, exc: Exception) -> None:
        log.debug("registrar: UDP error %s", exc)  # e.g. ICMP port unreachable for a response we sent


def _parse(text: str, source: tuple[str, int]) -> _Request | None:
    """The request line, headers and top Via of a datagram; None when no response can be formed."""
    start = _START.fullmatch(text.split("\n", 1)[0].rstrip("\r"))
    if start is None:
        return None  # not a request (garbage, or a stray response)
    headers = parse_headers(text)
    vias = [item for name, value in headers if name.lower() == "via" for item in _split_commas(value)]
    via = _VIA.fullmatch(vias[0].strip()) if vias else None
    if via is None:
        return None
    try:
        host, _ = split_host_port(via.group(2))
    except ValueError:
        return None  # a sent-by port that is not a number
    params = _params(via.group(3))
    rport = "rport" in params
    # RFC 3261 §18.2.1 / RFC 3581: say where the request really came from, when it differs or is asked.
    kept = [p.strip() for p in via.group(3).split(";")[1:] if p.split("=", 1)[0].strip().lower() not in ("received", "rport")]
    extra = [f"received={source[0]}"] if rport or host.lower() != source[0] else []
    extra += [f"rport={source[1]}"] if rport else []
    top_via = ";".join([f"{via.group(1)} {via.group(2)}", *kept, *extra])
    branch = params.get("branch", "")
    return _Request(method=start.group(1), uri=start.group(2), headers=headers, top_via=top_via, other_vias=vias[1:],
                    branch=branch if branch.startswith("z9hG4bK") else "", source=source)


def _check_common(request: _Request, data: bytes) -> None:
    """What every request must have right before it can be processed (raises _Reject)."""
    for name in ("To", "From", "Call-ID"):
        request.required(name)
    cseq = _CSEQ.fullmatch(request.required("CSeq"))
    if cseq is None or cseq.group(2) != request.method:
        raise _Reject(400, "Bad CSeq")
    length = request.one("Content-Length")
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    if length is not None and (not _DELTA.fullmatch(length) or int(length) > len(body)):
        raise _Reject(400, "Bad Content-Length")
    if not _SIP_URI.fullmatch(request.uri):
        raise _Reject(400, "Bad Request-URI")
    for name in ("To", "From"):
        _sip_uri(request.required(name), name)


def _contacts(request: _Request, expires: int | None) -> list[tuple[str, int | None]]:
    """(URI or "*", seconds asked or None) per Contact, in order; raises _Reject when malformed."""
    items = [item for value in request.values("Contact") for item in _split_commas(value)]
    if any(item.strip() == "*" for item in items):
        if len(items) != 1 or expires != 0:
            raise _Reject(400, "Contact: * needs Expires: 0 and no other Contact")
        return [("*", 0)]
    contacts: list[tuple[str, int | None]] = []
    for item in items:
        uri, params = _sip_uri(item, "Contact")
        asked = _delta(_params(params).get("expires"), "Contact expires")
        contacts.append((uri, expires if asked is None else asked))
    return contacts


def _delta(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not _DELTA.fullmatch(value.strip()):
        raise _Reject(400, f"Bad {what}")
    return int(value)


def _name_addr(value: str) -> tuple[str, str]:
    """``"Ana" <sip:a@h;transport=udp>;expires=60`` → (``sip:a@h;transport=udp``, ``;expires=60``).

    Without angle brackets every ``;param`` belongs to the header, not the URI (RFC 3261 §20.10).
    """
    quoted = escaped = False
    for i, char in enumerate(value):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char == "<":
            end = value.find(">", i)
            if end < 0:
                raise ValueError("unterminated <URI>")
            return value[i + 1:end].strip(), value[end + 1:]
    if quoted:
        raise ValueError("unterminated quoted string")
    uri, sep, params = value.strip().partition(";")
    return uri, sep + params


def _sip_uri(value: str, header: str) -> tuple[str, str]:
    """The sip:/sips: URI of a name-addr header value and its header params; raises _Reject (400) otherwise."""
    try:
        uri, params = _name_addr(value)
    except ValueError:
        uri, params = "", ""
    if not _SIP_URI.fullmatch(uri):
        raise _Reject(400, f"Bad {header} URI")
    return uri, params


def _params(text: str) -> dict[str, str]:
    """``;a=1;b;c="x"`` → {"a": "1", "b": "", "c": "x"} (names lower-cased)."""
    return {m.group(1).lower(): (m.group(2) or "").strip('"') for m in _PARAM.finditer(text)}


def _split_commas(value: str) -> list[str]:
    """Split a header value on the commas that separate its items (not those in quotes or <>)."""
    items, start, quoted, escaped, angle = [], 0, False, False, False
    for i, char in enumerate(value):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "<>":
            angle = char == "<"
        elif char == "," and not angle:
            items.append(value[start:i])
            start = i + 1
    items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


def _address(source: tuple[str, int]) -> str:
    host, port = source
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _response(request: _Request, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}", f"Via: {request.top_via}"]
    lines += [f"Via: {via}" for via in request.other_vias]
    for name in ("From", "To", "Call-ID", "CSeq"):
        values = request.values(name)
        if not values:
            continue  # answering a request that lacks it (400)
        value = values[0]
        if name == "To" and "tag" not in _params(_safe_name_addr(value)[1]):
            value += f";tag={secrets.token_hex(6)}"  # every final response of ours ends the transaction
        lines.append(f"{name}: {value}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _safe_name_addr(value: str) -> tuple[str, str]:
    try:
        return _name_addr(value)
    except ValueError:
        return value, ""
