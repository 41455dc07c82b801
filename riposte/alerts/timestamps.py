"""ISO 8601 timestamps as the Defender APIs write them, read into aware UTC datetimes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

_TIMESTAMP_RE = re.compile(
    r"""
    (?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})
    [Tt\ ]
    (?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})
    (?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?
    \s*
    (?P<zone>[Zz]|[+-][0-9]{2}:?[0-9]{2})?
    """,
    re.VERBOSE | re.ASCII,
)


def parse_timestamp(value: Any) -> datetime | None:
    """A timestamp as an aware UTC datetime, or None if ``value`` is not one.

    Graph and Defender for Cloud send seven fractional digits (``2023-05-10T11:58:24.7893542Z``),
    one more than a datetime holds: the fraction is truncated, never rounded, so a time never
    moves past the moment the API reported (a watermark compares with it). The grammar is spelled
    out rather than left to `datetime.fromisoformat`, whose accepted forms change between Python
    versions.
    A timestamp without an offset is UTC, as Graph's are.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        match = _TIMESTAMP_RE.fullmatch(value.strip())
        if match is None:
            return None
        fraction = (match["fraction"] or "")[:6].ljust(6, "0")
        try:
            moment = datetime(
                int(match["year"]),
                int(match["month"]),
                int(match["day"]),
                int(match["hour"]),
                int(match["minute"]),
                int(match["second"] or 0),
                int(fraction),
                tzinfo=_zone(match["zone"]),
            )
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        # An offset that pushes year 1 or year 9999 out of range.
        return None


def _zone(text: str | None) -> timezone:
    if text is None or text in ("Z", "z"):
        return UTC
    digits = text[1:].replace(":", "")
    if int(digits[2:]) >= 60:
        raise ValueError("offset minutes out of range")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-offset if text[0] == "-" else offset)  # ValueError past 24 hours
