"""Alert text shown as text where the Prefect UI renders it: markdown (artifacts, the Resume
form of a suspended run) and log rows (which link URLs and colour ANSI escapes).

Alert text comes from whoever raised the alert (a title, a URL, a user name): it must never
become a link, an image, a mention or a colour of ours.
"""

from __future__ import annotations

import re

# Control characters (ANSI escapes start with \x1b), line and paragraph separators, and the
# bidirectional overrides and isolates that make text read otherwise than it is.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# Backslashes right before a pipe: in a GFM table, a pipe after an even number of them (`\\|`)
# splits the cell, code span or not (marked, the Prefect UI's renderer, counts them).
_BACKSLASHES_BEFORE_PIPE = re.compile(r"\\+(?=\|)")
BACKSLASH_LOOKALIKE = "\u29f5"  # ⧵, REVERSE SOLIDUS OPERATOR


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line, control and bidirectional characters escaped (`\\x1b`,
    `\\u202e`), cut at ``limit`` characters."""
    flat = UNPRINTABLE.sub(_escaped, " ".join(text.split()))
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return flat


def code_span(text: str, limit: int | None = None, *, cell: bool = False) -> str:
    """``text`` shown as itself in markdown: a code span (no link, image, mention, emphasis or
    HTML), on one line, control and bidirectional characters escaped, cut at ``limit``; empty
    for empty text. In a table ``cell``, its pipes escaped (GFM splits cells on them even in
    code) and the backslashes right before a pipe shown as ⧵, so that no pipe of the text ever
    ends the cell."""
    flat = one_line(text, limit).replace("`", "'")
    if cell:
        flat = _BACKSLASHES_BEFORE_PIPE.sub(lambda m: BACKSLASH_LOOKALIKE * len(m.group()), flat)
        flat = flat.replace("|", "\\|")
    return f"`{flat}`" if flat else ""


def log_text(text: object) -> str:
    """``text`` for a log line the Prefect UI shows: on one line, control characters dropped
    (no ANSI colours), and every `://` written `[:]//`, so that no URL in it becomes a link."""
    kept = UNPRINTABLE.sub(lambda m: " " if m.group().isspace() else "", str(text))
    return " ".join(kept.split()).replace("://", "[:]//")
