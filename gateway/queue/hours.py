"""Business hours: when a queue may make WhatsApp offers ("mon-fri 08:00-20:00", "sat 09:00-14:00")."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\s*$")


class HoursError(ValueError):
    """A business-hours line or time zone that cannot be understood."""


@dataclass(frozen=True)
class _Window:
    days: frozenset[int]
    start: int  # minutes after midnight
    end: int  # exclusive; 1440 is midnight at the end of the day


class OpenHours:
    """``OpenHours(["mon-fri 08:00-20:00"], "America/Mexico_City").is_open(datetime.now(UTC))``."""

    def __init__(self, specs: list[str], timezone: str) -> None:
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise HoursError(f"unknown time zone {timezone!r}") from None
        self._windows = [_parse(spec) for spec in specs]

    def is_open(self, when: datetime) -> bool:
        if when.tzinfo is None:
            raise ValueError("is_open needs an aware datetime")
        local = when.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(local.weekday() in w.days and w.start <= minute < w.end for w in self._windows)


def _parse(spec: str) -> _Window:
    match = _SPEC.match(spec.lower())
    if not match or match["first"] not in DAYS or (match["last"] and match["last"] not in DAYS):
        raise HoursError(f'business hours {spec!r}: expected "mon-fri 08:00-20:00" (days mon…sun)')
    first = DAYS.index(match["first"])
    last = DAYS.index(match["last"]) if match["last"] else first
    days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
    start, end = _minutes(match["start"], spec), _minutes(match["end"], spec)
    if start >= end:
        raise HoursError(f"business hours {spec!r}: the end must come after the start")
    return _Window(frozenset(days), start, end)


def _minutes(text: str, spec: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if text == "24:00":
        return 1440
    try:
        time(hours, minutes)
    except ValueError:
        raise HoursError(f"business hours {spec!r}: {text} is not a time of day") from None
    return hours * 60 + minutes
