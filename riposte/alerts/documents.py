"""Reading alert files: one JSON value (an alert, a list, an envelope) or NDJSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from riposte.alerts.errors import AlertParseError

_UNREADABLE = "JSON nested too deeply or a number too long"


def read_documents(
    path: Path, on_bad_line: Callable[[AlertParseError], None] | None = None
) -> Iterator[Any]:
    """The JSON documents of a file: one JSON value, or NDJSON (one per line). A bad NDJSON
    line raises `AlertParseError`, or, given ``on_bad_line``, is handed to it and skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AlertParseError("no such file") from None
    except IsADirectoryError:
        raise AlertParseError("is a directory, not a file") from None
    except UnicodeDecodeError:
        raise AlertParseError("not UTF-8 text") from None
    except OSError as exc:
        raise AlertParseError(f"cannot read: {exc.strerror}") from None
    if not text.strip():
        raise AlertParseError("empty file")
    try:
        yield json.loads(text)
        return
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise AlertParseError(f"not JSON ({whole.msg} at line {whole.lineno})") from None
        for number, line in lines:
            try:
                document = json.loads(line)
            except json.JSONDecodeError as exc:
                bad = AlertParseError(f"line {number} is not JSON ({exc.msg})")
            except (RecursionError, ValueError):
                bad = AlertParseError(f"line {number}: {_UNREADABLE}")
            else:
                yield document
                continue
            if on_bad_line is None:
                raise bad from None
            on_bad_line(bad)
    except RecursionError:
        raise AlertParseError("JSON nested too deeply") from None
    except ValueError:  # an integer over Python's 4300-digit limit
        raise AlertParseError(_UNREADABLE) from None
