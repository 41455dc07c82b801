"""Size bounds for what a template builds: no value, and no output, larger than `MAX_TEXT`.

Jinja's sandbox stops a template from reaching Python internals, not from building a gigabyte
string in one expression: ``"x"|center(10**9)``, ``"a"|replace("a", s)`` with a long ``s``,
``"%999999999s"|format(x)``, ``s ~ s`` repeated through ``set``, or a loop that prints a large
value many times. The sandbox calls these hooks:

- before a filter or method call: no integer argument above `MAX_TEXT`; no width or precision
  above it in a format string; for the calls whose result can be many times their input
  (`AMPLIFYING`), an upper bound of the result's size, computed from the arguments, within it;
- after every filter, call, ``+``, ``*``, ``%`` and ``~``: the value's size within it;
- on output: the rendered text within it.

Every value checked is also charged to a per-render budget of `MAX_WORK` characters, so that a
loop cannot build (and drop) a megabyte a step for hours.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError

# Far above any ticket, chat or email text (Slack takes 40,000 characters, Teams 28 KB).
MAX_TEXT = 1_000_000
# Characters one render may build in all, counting every intermediate value.
MAX_WORK = 50_000_000

# Filters and str methods whose result can be many times the size of their input.
AMPLIFYING = frozenset(
    {
        "center",
        "indent",
        "replace",
        "wordwrap",
        "join",
        "format",
        "format_map",
        "sum",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "batch",
        "slice",
    }
)
_FORMATTING = frozenset({"format", "format_map"})
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d*|\*)(?:\.(\d*|\*))?")
_work_left: ContextVar[list[int] | None] = ContextVar("riposte_template_work", default=None)


def start_budget() -> object:
    """Give the render about to start its own work budget; pass the token to `end_budget`."""
    return _work_left.set([MAX_WORK])


def end_budget(token: object) -> None:
    _work_left.reset(token)  # type: ignore[arg-type]


def size(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


def checked(value: Any, what: str = "a value") -> Any:
    """``value`` if it is within `MAX_TEXT` (charged to the budget); else `SecurityError`."""
    n = size(value)
    if n > MAX_TEXT:
        raise SecurityError(f"{what} of {n:,} characters or items: more than {MAX_TEXT:,}")
    left = _work_left.get()
    if left is not None and n:
        left[0] -= n
        if left[0] < 0:
            raise SecurityError(f"the template built more than {MAX_WORK:,} characters in all")
    return value


def _content(value: Any) -> int:
    """How many characters ``value`` holds, counting a sequence's string items."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) + sum(size(v) for v in list(value)[: MAX_TEXT + 1])
    if isinstance(value, Mapping):
        return len(value)
    return 1


def _format_widths(fmt: str) -> Iterator[int]:
    """The widths and precisions a %- or {}-format string asks for."""
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group and group.isdigit():
                yield int(group)
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # not a {}-format string: str.format itself will say so
    for _, _, spec, _ in parsed:
        for digits in re.findall(r"\d+", spec or ""):
            yield int(digits)


def _numbers(args: Iterable[Any]) -> Iterator[int]:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool):
            yield a
        elif isinstance(a, float) and a == a and abs(a) != float("inf"):
            yield int(a)


def check_format(name: str, fmt: str) -> None:
    """Refuse a format string that asks for a width or precision above `MAX_TEXT`."""
    for width in _format_widths(fmt):
        if width > MAX_TEXT:
            raise SecurityError(f"{name}: a width of {width:,} is larger than {MAX_TEXT:,}")


def before_call(name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call of filter or method ``name`` on ``value`` that could build too much."""
    given = (*args, *kwargs.values())
    for n in _numbers(given):
        if abs(n) > MAX_TEXT:
            raise SecurityError(f"{name}: an argument of {n:,} is larger than {MAX_TEXT:,}")
    if name not in AMPLIFYING:
        return
    if name in _FORMATTING and isinstance(value, str):
        check_format(name, value)
    widen = sum(_content(a) for a in given if isinstance(a, str | bytes | list | tuple))
    widen += max((abs(n) for n in _numbers(given)), default=0)
    bound = (_content(value) + 1) * (widen + 1)
    if bound > MAX_TEXT:
        raise SecurityError(
            f"{name} could build up to {bound:,} characters from these arguments: "
            f"more than {MAX_TEXT:,}"
        )


def before_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left <operator> right`` when its result would be too large."""
    if operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        if size(left) + size(right) > MAX_TEXT:
            raise SecurityError(f"a sum of {size(left) + size(right):,} characters or items")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and isinstance(times, int) and size(seq) * times > MAX_TEXT:
                raise SecurityError(f"a sequence longer than {MAX_TEXT:,} items")
    elif operator == "%" and isinstance(left, str):
        operands = right if isinstance(right, tuple) else (right,)
        widths = [*_format_widths(left), *_numbers(operands)]
        if any(w > MAX_TEXT for w in widths):
            raise SecurityError(f"%: a width larger than {MAX_TEXT:,}")


def bounded_output(chunks: Iterable[str], template: str) -> str:
    """Join a template's output, refusing it once it passes `MAX_TEXT` characters."""
    out: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_TEXT:
            raise SecurityError(f"the output of {template} is longer than {MAX_TEXT:,} characters")
        out.append(chunk)
    return "".join(out)
