"""Jinja2 templates rendered in a sandbox: the one environment every message template runs in.

Templates come from the built-in folder (``riposte/alerts/templates``) or from a custom folder
(settings ``templates_dir``), which is searched first, so a file there named like a built-in
one replaces it. A policy rule may name other files per kind (`riposte.alerts.policy.Templates`).

Templates are untrusted input, whoever writes them:
- before a template is compiled, its syntax tree is searched for attribute or item access to
  Python internals (``__class__``, ``__globals__``, ``mro``, ...): such a template is refused
  with `UnsafeTemplateError` and never runs;
- it then runs in Jinja's immutable sandbox (no calls that modify objects, no unsafe attributes
  even when reached dynamically), with `StrictUndefined` so a misspelt variable fails the render
  instead of shipping an empty field, with size bounds on every value it builds and on its
  output (`riposte.alerts.template_bounds`: no gigabyte string from ``*``, ``~``, ``center`` or
  a format width), and a budget of loop iterations and calls per render (``MAX_STEPS``) so
  that nested loops or a recursive macro cannot run for hours;
- HTML templates (``*.html.j2``) are autoescaped; Slack and Teams templates emit JSON through
  ``tojson``, so alert text cannot break out of a string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
    pass_context,
    select_autoescape,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)
from jinja2.utils import _PassArg

from riposte.alerts.template_bounds import (
    before_binop,
    before_call,
    bounded_output,
    check_format,
    checked,
    end_budget,
    start_budget,
)


class TemplateRenderError(ValueError):
    """A template could not be rendered; the message names the template."""


class UnsafeTemplateError(TemplateRenderError):
    """A template reaches for Python internals: it was refused and never ran."""


_UNSAFE_NAMES = frozenset(
    {"mro", "gi_yieldfrom", "f_globals", "f_locals", "f_builtins", "tb_frame", "tb_next"}
    | UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
)
MAX_EXPONENT = 64
# Loop iterations plus calls one render may make: far more than any message needs, few enough
# that ``range(100000)`` nested in itself, or a macro calling itself twice, stops within a second.
MAX_STEPS = 250_000
_steps_left: ContextVar[list[int] | None] = ContextVar("riposte_template_steps", default=None)


def _spend() -> None:
    left = _steps_left.get()
    if left is None:
        return
    left[0] -= 1
    if left[0] < 0:
        raise SecurityError(f"more than {MAX_STEPS} loop iterations and calls")


@pass_context  # never folded at compile time: it counts at run time
def _counted(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: each item spends one step."""
    for item in iterable:
        _spend()
        yield item


def _is_internal(name: str) -> bool:
    return name.startswith("_") or name in _UNSAFE_NAMES


class _Refused(SecurityError):
    """Raised while parsing: the template never ran."""


def _refuse_internals(tree: nodes.Template, name: str | None) -> None:
    """Raise `_Refused` if the template names a Python internal anywhere."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        reached: str | None = None
        if isinstance(node, nodes.Getattr) and _is_internal(node.attr):
            reached = node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and _is_internal(node.arg.value)
        ):
            reached = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            first = node.args[0]
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                reached = first.value if _is_internal(first.value) else None
        if reached is not None:
            raise _Refused(
                f"line {node.lineno} reaches for {reached!r}, a Python internal: refused "
                "without running it (templates may use only the values they are given)"
            )


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` so that its result goes through `template_bounds.checked`."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the size bounds of `template_bounds` before and after it runs."""
    passes = _PassArg.from_obj(func) is not None

    @functools.wraps(func)  # keeps `jinja_pass_arg`, so Jinja still passes the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        given = args[1:] if passes else args
        value, more = (given[0], given[1:]) if given else (None, ())
        before_call(name, value, tuple(more), kwargs)
        return checked(func(*args, **kwargs), f"the result of {name}")

    return guarded


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _Generator

    @staticmethod
    def checked_concat(value: Any) -> Any:
        return checked(value, "a concatenation")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # `"{:>999999999}".format(x)`: the sandbox hands back its own wrapper, called directly.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__name__, value.__self__)
        return wrapped

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters["riposte_counted"] = _counted  # what `_parse` wraps every loop in

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _refuse_internals(tree, name)
        for loop in list(tree.find_all(nodes.For)):
            loop.iter = nodes.Filter(
                loop.iter, "riposte_counted", [], [], None, None, lineno=loop.lineno
            )
        return tree

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend()  # a macro that calls itself twice would otherwise double its work each level
        name = str(getattr(obj, "__name__", "a call"))
        before_call(name, getattr(obj, "__self__", None), args, kwargs)
        return checked(super().call(context, obj, *args, **kwargs), f"the result of {name}")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        before_binop(operator, left, right)
        return checked(super().call_binop(context, operator, left, right), f"a {operator!r}")


def teams_text(text: str, **style: Any) -> dict[str, Any]:
    """An Adaptive Card element showing ``text`` as itself: a RichTextBlock's TextRun, which
    Teams does not read as markdown (a TextBlock would turn `[x](https://...)` into a link)."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


# No word boundary before the scheme: `_https://x_` (Slack italics) and `xhttps://` must be
# caught too; a URL inside another's path or query is defanged as well.
_URL_LIKE = re.compile(r"((?:https?|s?ftps?|file)://|www\.)([^\s<>|]*)", re.IGNORECASE)


def _defang_match(match: re.Match[str]) -> str:
    start, rest = match.group(1), match.group(2)
    host, slash, path = rest.partition("/")
    host = host.replace(".", "[.]")
    path = _URL_LIKE.sub(_defang_match, path)
    if start.lower() == "www.":
        return f"www[.]{host}{slash}{path}"
    scheme = start[:-3].lower().replace("http", "hxxp").replace("ftp", "fxp")
    return f"{scheme}[://]{host}{slash}{path}"


def defang(value: Any) -> str:
    """Alert text with its URLs written as analysts write indicators
    (`hxxps[://]evil[.]example/x`), so that no client turns them into links."""
    return _URL_LIKE.sub(_defang_match, str(value))


def slack_escape(value: Any) -> str:
    """Alert text as Slack text: the three characters mrkdwn gives meaning to escaped (mentions,
    `<url|label>` links) and bare URLs defanged (Slack links them unless told `verbatim`)."""
    return defang(str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


@lru_cache(maxsize=16)
def _environment(templates_dir: str | None) -> _Sandbox:
    loaders: list[BaseLoader] = []
    if templates_dir is not None:
        loaders.append(FileSystemLoader(templates_dir))
    loaders.append(PackageLoader("riposte.alerts", "templates"))
    env = _Sandbox(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=select_autoescape(
            enabled_extensions=("html", "htm", "xml", "html.j2", "htm.j2", "xml.j2"),
            default_for_string=False,
            default=False,
        ),
        keep_trailing_newline=False,
        trim_blocks=False,
        # Custom templates are re-read when they change: an edit applies without a restart.
        auto_reload=True,
    )
    # Helpers no message needs; fewer objects within reach is less to audit.
    for name in ("cycler", "joiner", "lipsum"):
        env.globals.pop(name, None)
    env.filters["slack_escape"] = slack_escape
    for name, func in list(env.filters.items()):
        if name != "riposte_counted":
            env.filters[name] = _guarded_filter(name, func)
    return env


def _folder(templates_dir: Path | str | None) -> str | None:
    return None if templates_dir is None else str(Path(templates_dir).resolve())


def render(template: str, templates_dir: Path | str | None = None, **context: Any) -> str:
    """Render ``template`` (built-in, or from ``templates_dir`` first) with ``context``."""
    budget = _steps_left.set([MAX_STEPS])
    work = start_budget()
    try:
        compiled = _environment(_folder(templates_dir)).get_template(template)
        return bounded_output(compiled.generate(**context), template).strip()
    except RecursionError:
        raise UnsafeTemplateError(f"template {template}: nested too deeply") from None
    except _Refused as exc:
        raise UnsafeTemplateError(f"template {template}: {exc}") from None
    except SecurityError as exc:
        raise UnsafeTemplateError(f"template {template}: refused by the sandbox: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"template {template} line {exc.lineno}: {exc.message}") from None
    except TemplateNotFound:
        where = f"{templates_dir} or " if templates_dir else ""
        raise TemplateRenderError(
            f"template {template} not found in {where}the built-in templates"
        ) from None
    except TemplateError as exc:
        raise TemplateRenderError(f"template {template}: {exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        # Errors raised by the template's own expressions (1/0, int("x")), not by our code.
        raise TemplateRenderError(f"template {template}: {type(exc).__name__}: {exc}") from None
    finally:
        _steps_left.reset(budget)
        end_budget(work)


def check_template(template: str, templates_dir: Path | str | None = None) -> str | None:
    """Why ``template`` cannot be used (missing, broken, unsafe), or None if it compiles."""
    try:
        _environment(_folder(templates_dir)).get_template(template)
    except RecursionError:
        return "nested too deeply"
    except SecurityError as exc:
        return str(exc)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    except TemplateNotFound:
        where = f"{templates_dir} or " if templates_dir else ""
        return f"template {template!r} not found in {where}the built-in templates"
    except TemplateError as exc:
        return str(exc)
    return None
