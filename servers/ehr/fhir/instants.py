"""FHIR R4 ``date``, ``dateTime`` and ``instant`` values as half-open time ranges (R4 2.24.0.1, 3.1.1.5.2).

A FHIR time value has a precision (year, month, day, minute, second, fraction): ``2024-03`` stands for the
whole of March 2024. Searching compares ranges, so both a resource's value and a search value become
``[start, end)`` in POSIX seconds. Values without a time zone are read as UTC (R4 leaves them to the
server's local time; this server's local time is UTC, which ``docs/ehr-fhir.md`` states).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

_VALUE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class InvalidInstant(ValueError):
    """A string that is not a FHIR date, dateTime or instant."""


@dataclass(frozen=True)
class TimeRange:
    """``[start, end)`` in POSIX seconds."""

    start: float
    end: float


def parse_range(text: str) -> TimeRange:
    """The range a FHIR date/dateTime/instant stands for, at its own precision."""
    m = _VALUE.match(text)
    if not m:
        raise InvalidInstant(f"not a FHIR date/dateTime: {text!r}")
    g = m.groupdict()
    try:
        year = int(g["y"])
        month = int(g["m"] or 1)
        day = int(g["d"] or 1)
        tz = _zone(g["tz"])
        start = datetime(year, month, day, int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0),
                         tzinfo=tz)
    except ValueError as exc:  # month 13, February 30, hour 25, ...
        raise InvalidInstant(f"not a valid date/time: {text!r}") from exc
    if g["f"] is not None:
        digits = g["f"]
        begin = start.timestamp() + int(digits) / 10 ** len(digits)
        return TimeRange(begin, begin + 10.0 ** -len(digits))
    if g["S"] is not None:
        end = start + timedelta(seconds=1)
    elif g["H"] is not None:
        end = start + timedelta(minutes=1)
    elif g["d"] is not None:
        end = start + timedelta(days=1)
    elif g["m"] is not None:
        end = start.replace(year=year + 1, month=1) if month == 12 else start.replace(month=month + 1)
    else:
        end = start.replace(year=year + 1)
    return TimeRange(start.timestamp(), end.timestamp())


def _zone(text: str | None) -> timezone:
    if not text or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"bad time zone offset {text}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_instant(moment: datetime) -> str:
    """An R4 ``instant`` (UTC, second precision unless sub-second digits are present)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
