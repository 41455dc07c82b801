"""The playbooks a policy may name: built-in names, what the policy needs of one, the catalog."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from riposte.alerts.policy.model import Defaults, RuleParameters
from riposte.alerts.response import Priority

Gating = Literal["ticket", "close", "digest", "ignore", "run"]
"""How the throttles, grouping and suppression windows account for a playbook's response:
``ticket`` (a ticket per alert, group or throttle slot, or a note on the open one), ``close``,
``digest``, ``ignore`` (recorded only) or ``run`` (the playbook runs; no ticket accounting)."""


@runtime_checkable
class PlaybookInfo(Protocol):
    """What the policy needs to know of a playbook: implemented by `riposte.playbooks.Playbook`.

    The domain defines the interface and the playbooks layer implements it, so that imports keep
    pointing down while a rule may name a playbook that a user wrote.
    """

    name: str
    params_model: type[BaseModel]
    opens_ticket: bool
    contains: bool
    uses_digest: bool
    notifies: bool
    pages_oncall: bool
    min_priority: Priority | None
    gating: Gating

    def problems(
        self, params: BaseModel, rule: RuleParameters, defaults: Defaults
    ) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Checks across fields: (location under the rule, message)."""
        ...

    def describe(self, action: Any) -> list[str]:
        """What the playbook does for a `PlannedAction`, in words (explain, run reports)."""
        ...


PlaybookCatalog = Mapping[str, PlaybookInfo]

_catalog_provider: list[Callable[[], PlaybookCatalog]] = []


def set_catalog_provider(provider: Callable[[], PlaybookCatalog]) -> None:
    """Install the function that gives the registered playbooks (done by `riposte.playbooks`)."""
    _catalog_provider[:] = [provider]


def default_catalog() -> PlaybookCatalog:
    """The playbooks of this process: built-ins and those ``RIPOSTE_PLAYBOOKS`` names.

    The registry lives in `riposte.playbooks`, above this layer; it is found at run time, as a
    plugin is, rather than imported (which would make the domain depend on the flows' steps).
    """
    if not _catalog_provider:
        importlib.import_module("riposte.playbooks")
    if not _catalog_provider:  # pragma: no cover - riposte.playbooks installs it on import
        raise RuntimeError("riposte.playbooks did not register its playbook catalog")
    return _catalog_provider[0]()
