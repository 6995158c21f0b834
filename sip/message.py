"""Small, dependency-free helpers for the raw SIP text pjsua2 hands us."""
from __future__ import annotations

import re
from urllib.parse import quote

# RFC 3261 §7.3.3 compact header names.
_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "r": "Refer-To", "b": "Referred-By", "o": "Event",
}

# Headers worth passing to the application besides every X-* header.
IDENTITY_HEADERS = (
    "P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Privacy",
    "Diversion", "History-Info", "User-Agent", "Subject", "Referred-By",
)

# RFC 3261 "hnv-unreserved"/"unreserved" characters may stay unescaped in a URI
# header value; "?", "&" and "=" are escaped too so no parser can misread them.
_HVALUE_SAFE = "-_.!~*'()[]/:+$"


def parse_headers(message: str) -> list[tuple[str, str]]:
    """Header (name, value) pairs of a SIP message, unfolded, compact names expanded."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")[1:]  # skip the start line
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, value = line.split(":", 1)
            name = name.strip()
            headers.append((_COMPACT.get(name.lower(), name) if len(name) == 1 else name, value.strip()))
    return headers


def app_headers(message: str) -> dict[str, str]:
    """The identity headers and every ``X-*`` header; repeats are joined with ", ".

    Names are case-insensitive: identity headers get their canonical spelling,
    X-* headers the spelling of their first occurrence.
    """
    names = {h.lower(): h for h in IDENTITY_HEADERS}
    out: dict[str, str] = {}
    for name, value in parse_headers(message):
        lower = name.lower()
        if lower not in names and lower.startswith("x-"):
            names[lower] = name
        key = names.get(lower)
        if key is not None:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def request_uri(message: str) -> str:
    """The Request-URI of a request's start line ("INVITE sip:es@host SIP/2.0")."""
    parts = message.split("\r\n", 1)[0].split(" ")
    return parts[1] if len(parts) == 3 else ""


def addr_spec(name_addr: str) -> str:
    """The bare URI of a name-addr: ``"Bob" <sip:es@h>;tag=a`` → ``sip:es@h``."""
    m = re.search(r"<([^>]*)>", name_addr)
    return (m.group(1) if m else name_addr.split(";", 1)[0]).strip()


def uri_user(uri: str) -> str:
    """User part of a SIP URI or name-addr: ``"Bob" <sip:es@h;x=1>;tag=a`` → ``es``."""
    addr = re.sub(r"^[a-zA-Z]+:", "", addr_spec(uri))
    return addr.split("@", 1)[0] if "@" in addr else ""


def split_host_port(address: str) -> tuple[str, int]:
    """``"127.0.0.1:5060"`` / ``"[::1]:5060"`` → host, port (0 when absent)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 0
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:  # no port, or a bare IPv6 address
        return address, 0
    return host, int(port)


def refer_to_uri(target: str, headers: dict[str, str]) -> str:
    """A Refer-To name-addr whose URI embeds ``headers`` (RFC 3261 §19.1.1).

    The transferee copies URI headers into its new INVITE, so the context
    reaches the agent even through a transferee that drops REFER headers.
    """
    uri = target.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    if headers:
        query = "&".join(f"{quote(k, safe='-_.!~*()')}={quote(v, safe=_HVALUE_SAFE)}" for k, v in headers.items())
        uri = f"{uri}{'&' if '?' in uri else '?'}{query}"
    return f"<{uri}>"
