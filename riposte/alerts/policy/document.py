"""The whole policy file as one model: its defaults, rules, fallback and sync section, and where
each field came from (file and line), checked against the playbooks of a catalog."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import Field, PrivateAttr

from riposte.alerts.policy.catalog import PlaybookCatalog, PlaybookInfo, default_catalog
from riposte.alerts.policy.model import Allow, Defaults, Fallback, Rule, Templates, _Strict
from riposte.alerts.policy.problems import Loc, PolicyProblem
from riposte.alerts.sync import SyncPolicy


class Policy(_Strict):
    """A whole policy file. Build it with `parse_policy` or `load_policy` to get line numbers."""

    version: Literal[1] = 1
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    allow: Allow | None = Field(None, description="Applies to every alert, before any rule")
    rules: tuple[Rule, ...] = ()
    fallback: Fallback = Field(default_factory=Fallback)
    sync: SyncPolicy = Field(
        default_factory=SyncPolicy,
        description="How a ticket's resolution resolves its alerts, and the other way round",
    )

    # Where the policy came from and the line of every field, for messages and `explain`.
    _origin: str = PrivateAttr(default="<policy>")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)
    _sha256: str = PrivateAttr(default="")
    _catalog: Any = PrivateAttr(default=None)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def catalog(self) -> PlaybookCatalog:
        """The playbooks this policy was checked against (the process's, by default)."""
        return self._catalog if self._catalog is not None else default_catalog()

    def playbook(self, name: str) -> PlaybookInfo:
        """The registered playbook ``name``; `KeyError` naming the known ones otherwise."""
        catalog = self.catalog
        if name not in catalog:
            raise KeyError(f"unknown playbook {name!r}; known: {', '.join(sorted(catalog))}")
        return catalog[name]

    @property
    def sha256(self) -> str:
        return self._sha256

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of ``loc`` (or of its closest located parent) in the file, if known."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), None)

    def rule_line(self, index: int) -> int | None:
        return self.line_of(("rules", index))

    def template_references(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Every template the policy names, with where it names it."""
        places: list[tuple[Loc, Templates | None]] = [
            (("defaults",), self.defaults.templates),
            *((("rules", index), rule.templates) for index, rule in enumerate(self.rules)),
            (("fallback",), self.fallback.templates),
        ]
        for loc, templates in places:
            if templates:
                for kind, name in templates.named().items():
                    yield (*loc, "templates", kind), name

    def warnings(self) -> list[PolicyProblem]:
        """Things that are legal but probably not meant (unreachable rules)."""
        found = []
        for index, rule in enumerate(self.rules):
            if rule.match.is_catch_all and not rule.continue_ and index + 1 < len(self.rules):
                later = ", ".join(r.name for r in self.rules[index + 1 :])
                found.append(
                    PolicyProblem(
                        self._origin,
                        self.rule_line(index),
                        f"rules[{index}].match",
                        f"matches every alert and does not continue: never reached: {later}",
                    )
                )
        return found
