"""Ticket, comment, chat, email and digest text, rendered from Jinja2 templates in a sandbox.

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

What each kind of template is given (``alert`` is an `Alert`, ``ticket`` a `Ticket` or none):
- ``servicenow_description``, ``jira_description``: alert, route (text; Jira gets it as ADF);
- ``servicenow_work_note``, ``jira_comment``: alert, ticket_key, alert_number, reason;
- ``slack``, ``teams`` (must render a JSON object): alert, ticket, facts [(label, value)],
  text (the notification fallback), emoji, color; the ``slack_escape`` filter is available;
- ``email_subject``, ``email_text``, ``email_html``: alert, ticket, facts;
- ``digest``: bucket (channel, start, end), alerts, by_severity, max_items.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from pydantic import BaseModel, ConfigDict

from riposte.alerts.adf import to_adf
from riposte.alerts.model import Alert, Severity
from riposte.alerts.policy import Templates
from riposte.alerts.response import Route, Ticket, TicketDraft
from riposte.alerts.sync import ALERT_MARKER
from riposte.alerts.template_bounds import (
    before_binop,
    before_call,
    bounded_output,
    check_format,
    checked,
    end_budget,
    start_budget,
)
from riposte.alerts.throttle import DigestBucket


class TemplateRenderError(ValueError):
    """A template could not be rendered; the message names the template."""


class UnsafeTemplateError(TemplateRenderError):
    """A template reaches for Python internals: it was refused and never ran."""


# The template each kind uses when the policy names none.
DEFAULT_TEMPLATES = Templates(
    servicenow_description="ticket_description.j2",
    servicenow_work_note="ticket_note.j2",
    jira_description="ticket_description.j2",
    jira_comment="ticket_note.j2",
    slack="slack_message.json.j2",
    teams="teams_message.json.j2",
    email_subject="email_subject.j2",
    email_text="email_text.j2",
    email_html="email.html.j2",
    digest="digest.j2",
)

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


class EmailContent(BaseModel):
    """An email: a one-line subject, a plain-text part and an HTML part."""

    model_config = ConfigDict(frozen=True)

    subject: str
    text: str
    html: str


_SLACK_EMOJI = {Severity.HIGH: ":red_circle:", Severity.MEDIUM: ":large_orange_circle:"}
_TEAMS_COLOR = {Severity.HIGH: "attention", Severity.MEDIUM: "warning"}
# Slack refuses a section text over 3000 characters.
SLACK_SECTION_LIMIT = 3000


def _facts(alert: Alert, ticket: Ticket | None) -> list[tuple[str, str]]:
    facts = [("Severity", str(alert.severity)), ("Source", alert.source), ("Alert id", alert.id)]
    if alert.alert_type:
        facts.append(("Type", alert.alert_type))
    if ticket:
        facts.append(("Ticket", ticket.key))
    return facts


def _one_line(text: str, limit: int) -> str:
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


# The longest ticket description Riposte writes before its marker line.
DESCRIPTION_MAX = 3500


class MessageRenderer:
    """Renders every message of a playbook with the templates its policy rule names.

    Example:
        ```python
        renderer = MessageRenderer(action.templates, settings.templates_dir)
        draft = renderer.ticket_draft(alert, action.route(), system="jira")
        ```
    """

    def __init__(
        self, templates: Templates | None = None, templates_dir: Path | str | None = None
    ) -> None:
        self.templates = (templates or Templates()).merged_over(DEFAULT_TEMPLATES)
        self.templates_dir = templates_dir

    def template_for(self, kind: str) -> str:
        name: str | None = getattr(self.templates, kind)
        if name is None:  # every kind has a default; a new kind without one is our bug
            raise KeyError(f"no template for {kind!r}")
        return name

    def render(self, kind: str, **context: Any) -> str:
        return render(self.template_for(kind), self.templates_dir, **context)

    def _json(self, kind: str, **context: Any) -> dict[str, Any]:
        name = self.template_for(kind)
        text = render(name, self.templates_dir, **context)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateRenderError(
                f"template {name} did not render JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        if not isinstance(value, dict):
            raise TemplateRenderError(f"template {name} must render a JSON object")
        return value

    def problems(self) -> list[tuple[str, str]]:
        """(kind, problem) for every template that is missing, broken or unsafe."""
        found = []
        for kind, name in self.templates.named().items():
            problem = check_template(name, self.templates_dir)
            if problem:
                found.append((kind, problem))
        return found

    # --- tickets -----------------------------------------------------------------------------

    def ticket_description(self, alert: Alert, route: Route, system: str = "servicenow") -> str:
        kind = "jira_description" if system == "jira" else "servicenow_description"
        return self.render(kind, alert=alert, route=route)

    def ticket_draft(
        self,
        alert: Alert,
        route: Route,
        *,
        system: str = "servicenow",
        correlation_key: str | None = None,
    ) -> TicketDraft:
        """The ticket to find or create; ``correlation_key`` overrides the alert's own (a
        throttled group or an incident shares one ticket)."""
        summary = f"[Defender] {alert.title}"
        # The opening alert's marker ends the description, as each alert note ends with its
        # own: the ticket sync reads which alerts a ticket carries from them.
        description = self.ticket_description(alert, route, system).rstrip()
        # Cut below ServiceNow's default field length (4,000), so the marker is never cut off.
        if len(description) > DESCRIPTION_MAX:
            description = description[: DESCRIPTION_MAX - 20].rstrip() + "\n[... cut]"
        return TicketDraft(
            correlation_key=correlation_key or alert.correlation_key,
            summary=summary if len(summary) <= 255 else summary[:252] + "...",
            description=f"{description}\n\n{ALERT_MARKER} {alert.correlation_key}",
            priority=route.priority,
            source_label=f"Microsoft Defender ({alert.source})",
        )

    def jira_description(self, alert: Alert, route: Route) -> dict[str, Any]:
        """The Jira description as Atlassian Document Format."""
        return to_adf(self.ticket_description(alert, route, "jira"))

    def ticket_note(
        self,
        alert: Alert,
        *,
        system: str = "servicenow",
        ticket_key: str,
        alert_number: int,
        reason: str,
    ) -> str:
        """A ServiceNow work note or Jira comment adding ``alert`` to an existing ticket."""
        kind = "jira_comment" if system == "jira" else "servicenow_work_note"
        return self.render(
            kind, alert=alert, ticket_key=ticket_key, alert_number=alert_number, reason=reason
        )

    # --- chat --------------------------------------------------------------------------------

    def _chat_context(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        return {
            "alert": alert,
            "ticket": ticket,
            "facts": _facts(alert, ticket),
            "text": render("chat_text.j2", self.templates_dir, alert=alert, ticket=ticket),
            "emoji": _SLACK_EMOJI.get(alert.severity, ":white_circle:"),
            "color": _TEAMS_COLOR.get(alert.severity, "default"),
        }

    def slack(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        """Slack Block Kit message with a text fallback for notifications (Slack reads that
        text as mrkdwn too: escaped, so an alert's `<!channel>` or `<url|label>` stays text)."""
        context = self._chat_context(alert, ticket)
        context["text"] = slack_escape(context["text"])
        return self._json("slack", **context)

    def teams(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        """A Teams Workflows message carrying one Adaptive Card (schema 1.4)."""
        return self._json("teams", **self._chat_context(alert, ticket))

    def chat(self, kind: str, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        if kind == "slack":
            return self.slack(alert, ticket)
        if kind == "teams":
            return self.teams(alert, ticket)
        raise ValueError(f"no chat message for {kind!r} (known: slack, teams)")

    # --- email -------------------------------------------------------------------------------

    def email(self, alert: Alert, ticket: Ticket | None) -> EmailContent:
        context = {"alert": alert, "ticket": ticket, "facts": _facts(alert, ticket)}
        return EmailContent(
            # Mail headers are one line: a title with newlines must not add headers.
            subject=_one_line(self.render("email_subject", **context), 250),
            text=self.render("email_text", **context),
            html=self.render("email_html", **context),
        )

    # --- digest ------------------------------------------------------------------------------

    def digest_text(
        self, bucket: DigestBucket, alerts: Sequence[Alert], max_items: int = 50
    ) -> str:
        """The digest as text: counts by severity, then up to ``max_items`` alerts."""
        by_severity: dict[str, int] = {}
        for alert in alerts:
            by_severity[str(alert.severity)] = by_severity.get(str(alert.severity), 0) + 1
        return self.render(
            "digest",
            bucket=bucket,
            alerts=list(alerts),
            by_severity=by_severity,
            max_items=max_items,
        )

    def digest(
        self, kind: str, bucket: DigestBucket, alerts: Sequence[Alert]
    ) -> dict[str, Any] | EmailContent:
        """One summary message for a digest period: Slack, Teams, or email."""
        # Slack refuses long sections: list fewer alerts there rather than cut a line in half.
        text = self.digest_text(bucket, alerts, max_items=20 if kind == "slack" else 50)
        title = text.splitlines()[0] if text else "Riposte digest"
        if kind == "slack":
            body = slack_escape(text)
            if len(body) > SLACK_SECTION_LIMIT:
                body = body[: SLACK_SECTION_LIMIT - 20] + "\n... (truncated)"
            section = {
                "type": "section",
                "text": {"type": "mrkdwn", "text": body, "verbatim": True},
            }
            return {"text": slack_escape(title), "blocks": [section]}
        if kind == "teams":
            card = {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [teams_text(line) for line in text.splitlines() or [""]],
            }
            attachment = {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
            return {"type": "message", "attachments": [attachment]}
        if kind == "email":
            escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            return EmailContent(
                subject=_one_line(title, 250), text=text, html=f"<pre>{escaped}</pre>"
            )
        raise ValueError(f"no digest message for {kind!r} (known: slack, teams, email)")


# --- the module-level functions the tasks already call (built-in templates) ------------------

_DEFAULT = MessageRenderer()


def ticket_draft(alert: Alert, route: Route) -> TicketDraft:
    return _DEFAULT.ticket_draft(alert, route)


def alert_comment(ticket: Ticket) -> str:
    return render("alert_comment.j2", ticket=ticket)


def slack_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """Slack Block Kit message with a text fallback for notifications."""
    return _DEFAULT.slack(alert, ticket)


def teams_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """A Teams Workflows message carrying one Adaptive Card (schema 1.4)."""
    return _DEFAULT.teams(alert, ticket)


def email_message(alert: Alert, ticket: Ticket | None) -> EmailContent:
    return _DEFAULT.email(alert, ticket)


CHAT_RENDERERS = {"slack": slack_message, "teams": teams_message}
