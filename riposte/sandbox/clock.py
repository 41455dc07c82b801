"""Timestamps in each vendor's format, and a clock whose Graph timestamps never repeat."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

TICKS_PER_SECOND = 10_000_000  # Graph/.NET timestamps carry 100 ns ticks (7 fractional digits)
_TICKS_PER_MICROSECOND = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})$"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def ticks_of(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * _TICKS_PER_MICROSECOND


def format_ticks(ticks: int) -> str:
    """``2024-05-01T12:00:00.1234560Z``: how Graph writes every timestamp."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:07d}Z"


def graph_time(moment: datetime) -> str:
    return format_ticks(ticks_of(moment))


def parse_ticks(text: str) -> int | None:
    """Ticks of an ISO 8601 timestamp with an offset (up to 7 fractional digits count)."""
    match = _ISO_RE.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=UTC
        )
    except ValueError:
        return None
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        moment -= sign * timedelta(hours=hours, minutes=minutes)
    sub = int((fraction or "0")[:7].ljust(7, "0"))
    return ticks_of(moment) + sub


def servicenow_time(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def parse_servicenow_time(text: str) -> datetime | None:
    """A ``YYYY-MM-DD HH:MM:SS`` value of the Table API (UTC), or None."""
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def jira_time(moment: datetime, zone: str = "UTC") -> str:
    """``2024-05-01T12:00:00.123+0000``: Jira Cloud's timestamp format, with the offset of the
    account's time zone (``zone``, an IANA name)."""
    moment = moment.astimezone(ZoneInfo(zone))
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}{moment:%z}"


def parse_jira_time(text: str) -> datetime | None:
    """A Jira timestamp (``2024-05-01T12:00:00.123+0100``) as an aware datetime, or None."""
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


class MonotonicGraphClock:
    """Hands out Graph timestamps that strictly increase, even within one microsecond.

    Steps are whole microseconds so that a client parsing them into Python datetimes (which
    drop the 7th digit) still sees strictly increasing values: a watermark relies on that.
    """

    def __init__(self) -> None:
        self._last = 0

    def next_ticks(self) -> int:
        now = time.time_ns() // 100
        now -= now % _TICKS_PER_MICROSECOND
        self._last = max(now, self._last + _TICKS_PER_MICROSECOND)
        return self._last

    def next(self) -> str:
        return format_ticks(self.next_ticks())
