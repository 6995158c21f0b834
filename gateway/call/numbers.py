"""The caller's phone number, from SIP identity headers to E.164."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import phonenumbers

_URI_USER = re.compile(r"<?\s*(?:sips?|tel):\+?([^@;>]*)", re.IGNORECASE)


@dataclass(frozen=True)
class CallerNumber:
    """``e164`` when the caller can be reached on WhatsApp, otherwise ``unusable`` says why."""

    e164: str | None
    unusable: str | None


def caller_number(from_uri: str, headers: Mapping[str, str], default_region: str) -> CallerNumber:
    """P-Asserted-Identity wins over From (it is what the carrier vouches for)."""
    if headers.get("Privacy", "").strip().lower() in {"id", "user", "header"}:
        return CallerNumber(None, "the caller withheld their number")
    identity = _header(headers, "P-Asserted-Identity") or from_uri
    match = _URI_USER.search(identity)
    user = match.group(1) if match else ""
    if not user or user.lower() in {"anonymous", "unknown", "restricted"}:
        return CallerNumber(None, "the caller is anonymous")
    digits = re.sub(r"[\s().-]", "", user)
    had_plus = identity.split(":", 1)[-1].lstrip().startswith("+") or digits.startswith("+")
    try:
        parsed = phonenumbers.parse(("+" if had_plus and not digits.startswith("+") else "") + digits, default_region)
    except phonenumbers.NumberParseException:
        return CallerNumber(None, f"the caller id {user!r} is not a phone number")
    if not phonenumbers.is_valid_number(parsed):
        return CallerNumber(None, f"the caller id {user!r} is not a valid phone number")
    return CallerNumber(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
