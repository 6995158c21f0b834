"""The caller's phone number, from SIP identity headers to E.164, and the key WhatsApp replies match on.

Carriers and PBXs in the region present the same subscriber in several forms. ``phonenumbers``
already reads most of them from its metadata:

* AR: the trunk ``0`` and the mobile ``15`` (``011 15 2345-6789``, ``+54 11 15 2345-6789``) become
  ``+54 9 11 2345-6789``; ``+54 0 11…`` loses its ``0``.
* BR: the trunk ``0`` with or without a carrier selection code (``0 21 11 98765-4321``).
* CO: the trunk ``0`` with a long-distance carrier digit (``03 300 123 4567``); PE: the trunk ``0``;
  US: the trunk ``1``; and the default region's international prefix (``00``, ``011``) before a
  country code.

What its metadata no longer (or never did) accept is in ``_RULES`` below. A rule is tried only when
the number as presented is not valid, and its result is kept only when it is valid, so a rule never
changes a number that was already right.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import phonenumbers
from phonenumbers import CountryCodeSource, PhoneNumber

_URI_USER = re.compile(r"<?\s*(?:sips?|tel):\+?([^@;>]*)", re.IGNORECASE)


@dataclass(frozen=True)
class CallerNumber:
    """``e164`` when the caller can be reached on WhatsApp, otherwise ``unusable`` says why."""

    e164: str | None
    unusable: str | None

    @property
    def whatsapp(self) -> str | None:
        """The number to message on WhatsApp: ``+`` and :func:`whatsapp_key`, the form a reply's
        ``wa_id`` is stored under too (:func:`whatsapp_number`), so the two match."""
        return None if self.e164 is None else whatsapp_number(self.e164)


@dataclass(frozen=True)
class _Rewrite:
    """A national significant number (what follows the country code) that matches ``pattern`` whole
    is rewritten with ``replacement`` (``re`` template)."""

    pattern: re.Pattern[str]
    replacement: str

    def apply(self, national: str) -> str | None:
        match = self.pattern.fullmatch(national)
        return match.expand(self.replacement) if match else None


@dataclass(frozen=True)
class _Country:
    national: tuple[_Rewrite, ...] = ()  # however the number was presented
    after_country_code: tuple[_Rewrite, ...] = ()  # only when a country code was present (+52, 0052, 52…)
    whatsapp: tuple[_Rewrite, ...] = ()  # canonical number → the key a reply's wa_id is matched on


_RULES: Mapping[str, _Country] = MappingProxyType({
    "MX": _Country(
        # 01 (long distance) and 044/045 (calling a mobile, local/long distance) were abolished in
        # August 2019, but PBX dial plans and some carriers still prefix them to the 10-digit number.
        national=(_Rewrite(re.compile(r"0(?:1|4[45])(\d{10})"), r"\1"),),
        # The "1" between +52 and a mobile's 10 digits was abolished at the same time; carriers,
        # PBXs and WhatsApp's own wa_id still use it. National numbers never start with 1, so
        # dropping it is unambiguous (and the Cloud API wants 52 + 10 digits as ``to``).
        after_country_code=(_Rewrite(re.compile(r"1(\d{10})"), r"\1"),),
    ),
    "BR": _Country(
        # Mobiles got a ninth digit, a 9 after the area code, between 2012 and 2016; old PBX
        # configurations, contact lists and older WhatsApp accounts' wa_id still have 8 digits.
        # Only 8-digit numbers starting 6–9 were mobiles (fixed lines start 2–5; 7 without the 9
        # is still a valid radio/mobile number and so is never rewritten).
        national=(_Rewrite(re.compile(r"([1-9][1-9])([6-9]\d{7})"), r"\g<1>9\2"),),
    ),
    "AR": _Country(
        # Fixed and mobile lines share one 10-digit numbering space: the 9 after +54 (the 15 in
        # national dialing) only says "dial it as a mobile". Caller ids often omit it, so +54 11…
        # and +54 9 11… are the same subscriber; WhatsApp reports mobiles as 549…. Geographic
        # numbers start 1–3 (area codes 11, 2xx, 3xx), so adding the 9 cannot collide.
        whatsapp=(_Rewrite(re.compile(r"([1-3]\d{9})"), r"9\1"),),
    ),
})


def caller_number(from_uri: str, headers: Mapping[str, str], default_region: str) -> CallerNumber:
    """P-Asserted-Identity wins over From (it is what the carrier vouches for).

    A number without a country code is read as dialled in ``default_region`` first; if it is not
    a valid number there, as an international number whose ``+`` the carrier left out.
    """
    if headers.get("Privacy", "").strip().lower() in {"id", "user", "header"}:
        return CallerNumber(None, "the caller withheld their number")
    identity = _header(headers, "P-Asserted-Identity") or from_uri
    match = _URI_USER.search(identity)
    user = match.group(1) if match else ""
    if not user or user.lower() in {"anonymous", "unknown", "restricted"}:
        return CallerNumber(None, "the caller is anonymous")
    digits = re.sub(r"[\s().-]", "", user)
    had_plus = identity.split(":", 1)[-1].lstrip().startswith("+") or digits.startswith("+")
    digits = digits.removeprefix("+")
    if not digits.isdigit():
        return CallerNumber(None, f"the caller id {user!r} is not a phone number")
    parsed = _canonical("+" + digits, None) if had_plus else (
        _canonical(digits, default_region) or _canonical("+" + digits, None)
    )
    if parsed is None:
        return CallerNumber(None, f"the caller id {user!r} is not a valid phone number")
    return CallerNumber(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None)


def whatsapp_key(number: str) -> str:
    """The key that a number we sent to and the ``wa_id`` a reply comes from share when they are
    the same customer: digits, no ``+``. ``number`` is international, with or without ``+``.

    Equivalences (each side maps to the key on the right):

    * MX: ``52`` + 10 digits and ``521`` + the same 10 digits → ``52`` + 10 digits.
    * AR: ``54`` + 10 digits and ``549`` + the same 10 digits → ``549`` + 10 digits (also what a
      ``15`` national form canonicalises to: ``011 15 2345-6789`` → ``5491123456789``).
    * BR: a mobile with its ninth digit (``55 11 98765-4321``) and without it
      (``55 11 8765-4321``) → with it (``5511987654321``); only for 8-digit forms starting 6–9.

    Anything else is its own canonical E.164 digits; a number that is not valid keeps its digits
    (or, with none, stays as given), so it matches only itself. The key is for matching, not for
    sending to a phone (an Argentine fixed line's key has a 9 that its E.164 number has not), but it
    is what WhatsApp itself calls the number: see :func:`whatsapp_number`.
    """
    digits = re.sub(r"\D", "", number)
    parsed = _canonical("+" + digits, None)
    if parsed is None:
        return digits or number
    national = phonenumbers.national_significant_number(parsed)
    rules = _RULES.get(phonenumbers.region_code_for_country_code(parsed.country_code), _Country())
    for rule in rules.whatsapp:
        national = rule.apply(national) or national
    return f"{parsed.country_code}{national}"


def whatsapp_suffix(number: str) -> str:
    """Digits that every form :func:`whatsapp_key` equates with ``number`` ends in (each rule only adds or
    drops digits ahead of the last eight), for narrowing a query before comparing keys."""
    return re.sub(r"\D", "", number)[-8:]


def whatsapp_number(number: str) -> str:
    """``number`` (international, with or without ``+``; a ``wa_id``) in the one form Puente sends
    WhatsApp messages to and files replies under: ``+`` and its :func:`whatsapp_key`."""
    return "+" + whatsapp_key(number)


def _canonical(number: str, region: str | None) -> PhoneNumber | None:
    """The valid number ``number`` stands for, as presented or after its country's ``_RULES``."""
    parsed = _parse(number, region)
    if parsed is None:
        return None
    if phonenumbers.is_valid_number(parsed):
        return parsed
    home = phonenumbers.region_code_for_country_code(parsed.country_code)
    rules = _RULES.get(home, _Country())
    explicit = parsed.country_code_source != CountryCodeSource.FROM_DEFAULT_COUNTRY
    national = phonenumbers.national_significant_number(parsed)
    for rule in rules.national + (rules.after_country_code if explicit else ()):
        rewritten = rule.apply(national)
        candidate = _parse(rewritten, home) if rewritten else None
        if candidate is not None and phonenumbers.is_valid_number(candidate):
            return candidate
    return None


def _parse(number: str, region: str | None) -> PhoneNumber | None:
    try:  # the raw input keeps ``country_code_source``: whether the number had a country code
        return phonenumbers.parse(number, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
