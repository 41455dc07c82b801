"""Riposte's playbook API: declare a playbook, compose its steps, register it.

A playbook is a function ``(alert, params, ctx)`` decorated with `playbook`; ``ctx`` is a
`Context` whose methods are the steps (``ticket``, ``note``, ``notify``, ``update_alert``,
``close_alert``, ``add_to_digest``, ``request_containment``, ``record``), each a Prefect task
run of the response that is safe to call twice. Register a file, folder or module with
``RIPOSTE_PLAYBOOKS``, or ship a package with a ``riposte.playbooks`` entry point; a policy rule
then names it (``playbook: my_playbook``) with its parameters beside the rule's fields.

    from riposte.playbooks import Alert, Context, NoParams, playbook

    @playbook(opens_ticket=True)
    def ticket_only(alert: Alert, params: NoParams, ctx: Context) -> None:
        '''A ticket, and the alert marked in progress; no message.'''
        ctx.update_alert(ctx.ticket().ticket)
"""

from riposte.alerts.containment import ActionKind
from riposte.alerts.model import Alert, Entity, EntityType, Severity
from riposte.alerts.policy import Defaults, RuleParameters
from riposte.alerts.response import Delivery, Ticket
from riposte.playbooks.api import NoParams, Playbook, PlaybookDefinitionError, playbook
from riposte.playbooks.context import (
    ActionResult,
    Context,
    NotificationsFailed,
    Plan,
    ResponseContext,
    TicketStep,
    public_ips,
)
from riposte.playbooks.registry import (
    ENTRY_POINT_GROUP,
    LoadProblem,
    PlaybookLoadError,
    Registry,
    load_registry,
    registry,
)
from riposte.playbooks.runner import carry_out, run_action

# The class's earlier name, kept so that playbooks that import it go on working.
Response = ResponseContext

__all__ = [
    "ENTRY_POINT_GROUP",
    "ActionKind",
    "ActionResult",
    "Alert",
    "Context",
    "Defaults",
    "Delivery",
    "Entity",
    "EntityType",
    "LoadProblem",
    "NoParams",
    "NotificationsFailed",
    "Plan",
    "Playbook",
    "PlaybookDefinitionError",
    "PlaybookLoadError",
    "Registry",
    "Response",
    "ResponseContext",
    "RuleParameters",
    "Severity",
    "Ticket",
    "TicketStep",
    "carry_out",
    "load_registry",
    "playbook",
    "public_ips",
    "registry",
    "run_action",
]
