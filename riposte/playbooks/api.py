"""How a playbook is declared: a name, a pydantic model of its parameters, and a function.

A playbook is a plain Python function ``(alert, params, ctx) -> None`` that composes the steps
of ``ctx`` (`riposte.playbooks.Context`) with ordinary ``if``s. The decorator checks it once, at
import, and the registry (`riposte.playbooks.registry`) makes it something a policy rule can
name. Everything the policy and the reports need to know of a playbook (its parameters, its
checks, its words in `riposte policy explain`) is declared here, beside its code:

    from pydantic import BaseModel, Field
    from riposte.playbooks import Alert, Context, playbook

    class Params(BaseModel):
        project: str = Field("SEC", description="Jira project for the ticket")

    @playbook(opens_ticket=True)
    def my_playbook(alert: Alert, params: Params, ctx: Context) -> None:
        '''Open a ticket; post it only when this alert opened it.'''
        opened = ctx.ticket()
        if opened.is_new:
            ctx.notify(ticket=opened.ticket)
        ctx.update_alert(opened.ticket)
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from riposte.alerts.policy import RULE_FIELDS, Defaults, Gating, RuleParameters, format_duration
from riposte.alerts.response import Priority

if TYPE_CHECKING:
    from riposte.alerts.matching import PlannedAction
    from riposte.playbooks.context import Context

P = TypeVar("P", bound=BaseModel)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Loc = tuple[str | int, ...]
Checks = Callable[[Any, RuleParameters, Defaults], Iterator[tuple[Loc, str]]]
Describe = Callable[[Any, "PlannedAction"], list[str]]


class NoParams(BaseModel):
    """The parameters of a playbook that takes none of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlaybookDefinitionError(TypeError):
    """A playbook declared wrongly: the message names the playbook, its file and the reason."""


def _where(fn: Callable[..., Any]) -> str:
    try:
        file = inspect.getsourcefile(fn) or "?"
        line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return getattr(fn, "__module__", "?")
    return f"{file}:{line}"


class Playbook(Generic[P]):
    """A registered playbook: what `@playbook` returns. Call it like the function it wraps."""

    def __init__(
        self,
        fn: Callable[[Any, P, Context], Any],
        *,
        name: str,
        params_model: type[P],
        description: str,
        opens_ticket: bool,
        contains: bool,
        uses_digest: bool,
        notifies: bool,
        pages_oncall: bool,
        min_priority: Priority | None,
        gating: Gating,
        checks: Checks | None,
        describe: Describe | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.params_model = params_model
        self.description = description
        self.opens_ticket = opens_ticket
        self.contains = contains
        self.uses_digest = uses_digest
        self.notifies = notifies
        self.pages_oncall = pages_oncall
        self.min_priority = min_priority
        self.gating = gating
        self._checks = checks
        self._describe = describe
        self.where = _where(fn)
        self.origin = "built-in" if fn.__module__.startswith("riposte.playbooks.builtin") else ""
        """Where it comes from: ``built-in``, or the module, file or package that registered it
        (set by the registry)."""

    def __call__(self, alert: Any, params: P, ctx: Context) -> Any:
        return self.fn(alert, params, ctx)

    def __repr__(self) -> str:
        return f"<playbook {self.name} from {self.where}>"

    # --- PlaybookInfo, for the policy ---------------------------------------------------------

    def problems(
        self, params: BaseModel, rule: RuleParameters, defaults: Defaults
    ) -> Iterator[tuple[Loc, str]]:
        if self._checks is not None:
            yield from self._checks(params, rule, defaults)

    def describe(self, action: PlannedAction) -> list[str]:
        params = self.params_model.model_validate(action.params)
        if self._describe is not None:
            return list(self._describe(params, action))
        from riposte.alerts.matching import ticket_steps

        summary = " ".join(self.description.strip().split("\n\n")[0].split())
        lines = [f"run the {self.name} playbook" + (f": {summary}" if summary else "")]
        if self.opens_ticket:
            lines.extend(f"as its code decides: {step}" for step in ticket_steps(action))
        if action.containment is not None:
            lines.append(f"as its code decides: {action.containment.describe()}")
        if action.digest is not None:
            lines.append(
                f"as its code decides: add it to the digest posted to {action.digest.channel} "
                f"every {format_duration(action.digest.period)}"
            )
        return lines

    def parameters(self) -> list[dict[str, Any]]:
        """Name, type, default and description of each parameter (`riposte playbook list`)."""
        out = []
        for field_name, info in self.params_model.model_fields.items():
            required = info.is_required()
            default = None if required else info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            out.append(
                {
                    "name": info.alias or field_name,
                    "type": _type_name(info.annotation),
                    "required": required,
                    "default": default,
                    "description": info.description or "",
                }
            )
        return out


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b[a-z_.]+\.", "", str(annotation)).replace("typing.", "")


def _check_signature(fn: Callable[..., Any], name: str, has_params: bool) -> type[BaseModel] | None:
    """The parameters model named by the function's annotation, after checking its shape."""
    where = _where(fn)
    if inspect.iscoroutinefunction(fn):
        raise PlaybookDefinitionError(
            f"{where}: playbook {name}: must be a plain function (`def`), not `async def`: "
            "its steps are Prefect tasks run in the response's flow"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise PlaybookDefinitionError(f"{where}: playbook {name}: {exc}") from None
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    others = [p for p in signature.parameters.values() if p not in positional]
    if len(positional) != 3 or any(p.default is not p.empty for p in positional) or others:
        shown = f"({', '.join(signature.parameters)})"
        raise PlaybookDefinitionError(
            f"{where}: playbook {name}: takes {shown}; a playbook takes exactly "
            "(alert, params, ctx): the alert, its parameters and the step context"
        )
    annotation = positional[1].annotation
    if annotation is inspect.Parameter.empty:
        return None
    try:
        hinted = typing.get_type_hints(fn).get(positional[1].name)
    except Exception:
        hinted = None
    if isinstance(hinted, type) and issubclass(hinted, BaseModel):
        return hinted
    if has_params:
        return None
    raise PlaybookDefinitionError(
        f"{where}: playbook {name}: the annotation of `{positional[1].name}` ({annotation!r}) is "
        "not a pydantic model this module can resolve; define the model at module level, or "
        "pass `params=` to @playbook"
    )


def playbook(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    params: type[BaseModel] | None = None,
    description: str | None = None,
    opens_ticket: bool = False,
    contains: bool = False,
    uses_digest: bool = False,
    notifies: bool = True,
    pages_oncall: bool = False,
    min_priority: Priority | None = None,
    gating: Gating | None = None,
    checks: Checks | None = None,
    describe: Describe | None = None,
) -> Any:
    """Declare a playbook. Use as ``@playbook`` or ``@playbook(name=..., opens_ticket=True)``.

    - ``name``: what policy rules write after ``playbook:`` (default: the function's name).
    - ``params``: the pydantic model of its parameters (default: the annotation of the
      function's second argument; `NoParams` without one). A rule gives them beside its own
      fields; ``riposte policy check`` validates them with the file's line numbers.
    - ``opens_ticket``: the playbook files tickets, so a rule may set ``ticket``, ``throttle``
      and ``group_by_incident`` for it; the gate then decides per alert between a ticket of
      its own, a group's or throttle slot's ticket, or a note on an open one (`ctx.ticket()`).
    - ``contains``: a rule may give it ``containment`` (actions, approvers), planned into
      ``ctx.action.containment`` for `ctx.request_containment()`.
    - ``uses_digest``: a rule may give it ``digest`` (channel, period), for `ctx.add_to_digest()`.
    - ``checks``: ``(params, rule, defaults) -> iterator of (location, message)``, for checks
      across fields; ``describe``: ``(params, action) -> lines`` for ``policy explain``.

    Example:
        ```python
        @playbook(opens_ticket=True)
        def page_the_owner(alert: Alert, params: OwnerParams, ctx: Context) -> None: ...
        ```
    """

    def declare(function: Callable[..., Any]) -> Playbook[Any]:
        playbook_name = name or function.__name__
        if not _NAME_RE.match(playbook_name):
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name!r}: a name is lowercase letters, "
                "digits and '_' (at most 63), starting with a letter"
            )
        hinted = _check_signature(function, playbook_name, params is not None)
        model = params or hinted or NoParams
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name}: `params` must be a pydantic "
                f"model class, not {model!r}"
            )
        chosen = gating or ("ticket" if opens_ticket else "run")
        if chosen not in typing.get_args(Gating):
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name}: gating {chosen!r} is not one of "
                f"{', '.join(typing.get_args(Gating))}"
            )
        if chosen == "digest" and not uses_digest:
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name}: gating 'digest' needs "
                "uses_digest=True"
            )
        if chosen == "ticket" and not opens_ticket:
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name}: gating 'ticket' needs "
                "opens_ticket=True"
            )
        clashes = sorted({(f.alias or n) for n, f in model.model_fields.items()} & RULE_FIELDS)
        if clashes:
            raise PlaybookDefinitionError(
                f"{_where(function)}: playbook {playbook_name}: parameter(s) {', '.join(clashes)} "
                "have the name of a rule field; rename them"
            )
        return Playbook(
            function,
            name=playbook_name,
            params_model=model,
            description=description or inspect.getdoc(function) or "",
            opens_ticket=opens_ticket,
            contains=contains,
            uses_digest=uses_digest,
            notifies=notifies,
            pages_oncall=pages_oncall,
            min_priority=min_priority,
            gating=chosen,
            checks=checks,
            describe=describe,
        )

    if fn is not None:
        return declare(fn)
    return declare
