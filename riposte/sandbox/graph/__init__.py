"""Microsoft Graph: security alerts_v2 (list with $filter/$orderby/$top, get, update, comment),
security incidents (get, list, update, comment) and Entra ID users (get, enable or disable,
revoke sign-in sessions).

`router` serves the API under ``/graph/v1.0``, `control_router` the sandbox's controls under
``/_sandbox/graph``; the modules `alerts`, `incidents` and `users` register their routes on them
when imported here (no two of their paths overlap, so the order does not matter). `api` is what
every route shares.
"""

from __future__ import annotations

from riposte.sandbox.graph import alerts, incidents, users
from riposte.sandbox.graph.alerts import (
    COMMENT_TYPES,
    MAX_TOP,
    UNKNOWN_ENUM_MEMBERS,
    WRITABLE_STATUSES,
    append_comment,
    ensure_incident,
    load_alerts,
    present,
    wants_unknown_members,
)
from riposte.sandbox.graph.api import (
    GRAPH_ROOT,
    GraphSettings,
    bad_request,
    control_router,
    graph_body,
    graph_error,
    graph_forbidden,
    require_graph_token,
    router,
)
from riposte.sandbox.graph.users import DEFAULT_USER_PROPERTIES, UserIn, sync_users, user_record

__all__ = [
    "COMMENT_TYPES",
    "DEFAULT_USER_PROPERTIES",
    "GRAPH_ROOT",
    "MAX_TOP",
    "UNKNOWN_ENUM_MEMBERS",
    "WRITABLE_STATUSES",
    "GraphSettings",
    "UserIn",
    "alerts",
    "append_comment",
    "bad_request",
    "control_router",
    "ensure_incident",
    "graph_body",
    "graph_error",
    "graph_forbidden",
    "incidents",
    "load_alerts",
    "present",
    "require_graph_token",
    "router",
    "sync_users",
    "user_record",
    "users",
    "wants_unknown_members",
]
