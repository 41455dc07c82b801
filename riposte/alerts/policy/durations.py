"""Durations in a policy: ``"15m"``, ``"1h30m"``, ``"1d"`` parsed to `timedelta` and back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
# Largest first: `format_duration` writes the units in this order.
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_WINDOW = timedelta(days=31)


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"1d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text or _DURATION_RE.sub("", text):
            raise ValueError(f"{value!r} is not a duration like 30m, 1h, 1h30m, 1d")
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(text))
    else:
        raise ValueError(f"expected a duration like 30m or 1h, got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    if seconds > MAX_WINDOW.total_seconds():
        raise ValueError("a window longer than 31 days is almost certainly a mistake")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in _DURATION_UNITS.items():
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
