"""In-memory state of every simulator, kept on ``app.state.sandbox`` and cleared by reset."""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from riposte.sandbox.clock import MonotonicGraphClock
from riposte.sandbox.config import SandboxConfig

# Path prefix -> simulated service; the fault middleware and the request counter rely on it.
SERVICE_PREFIXES: dict[str, str] = {
    "/login/": "identity",
    "/graph/": "graph",
    "/servicenow/": "servicenow",
    "/jira/": "jira",
    "/slack/": "slack",
    "/teams/": "teams",
    "/mde/": "mde",
    "/mdca/": "mdca",
    "/arm/": "arm",
}
SERVICES = frozenset(SERVICE_PREFIXES.values())


def service_for_path(path: str) -> str | None:
    for prefix, service in SERVICE_PREFIXES.items():
        if path.startswith(prefix):
            return service
    return None


class Reject(Exception):
    """Abort a handler (or an auth dependency) with a response in the simulated API's shape."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class IssuedToken:
    audience: str
    expires_at: float
    roles: tuple[str, ...] = ()


@dataclass
class IdentityState:
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    issued: int = 0
    issued_by_audience: Counter[str] = field(default_factory=Counter)


@dataclass
class GraphState:
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Entra ID users by lower-cased object id: added by control, or found in alerts' evidence.
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Security incidents by id, made when the first alert naming one is loaded.
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every PATCH of an incident (id, fields written): what a test counts writes by.
    incident_updates: list[dict[str, Any]] = field(default_factory=list)
    # revokeSignInSessions answers 204 as documented; 200 {"value": true} is a known issue that
    # tenants see today (`/_sandbox/graph/settings`).
    revoke_answers_200: bool = False
    # Listing: `@odata.nextLink` when more results remain (as documented); some tenants were
    # reported to send none (`next_link` False). `$orderby` is not among the documented query
    # options of alerts_v2: it is checked but not applied unless `honor_orderby`.
    next_link: bool = True
    honor_orderby: bool = False


@dataclass
class MachineActionProgress:
    """How far a machine action is: it ends after ``polls_to_complete`` reads, in ``outcome``."""

    outcome: str = "Succeeded"
    polls: int = 0


@dataclass
class MachineActionFailure:
    """Makes the next matching machine actions end in ``status`` (Failed, TimeOut, Cancelled)."""

    status: str
    machine_id: str | None = None
    action_type: str | None = None
    remaining: int | None = 1  # None: until cleared

    def applies_to(self, machine_id: str, action_type: str) -> bool:
        return (
            (self.machine_id is None or self.machine_id.lower() == machine_id.lower())
            and (self.action_type is None or self.action_type == action_type)
            and (self.remaining is None or self.remaining > 0)
        )


@dataclass
class EndpointState:
    """Defender for Endpoint alerts by id; machines, machine actions and indicators."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Machines by lower-cased id: added by control, or found in the alerts.
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    action_progress: dict[str, MachineActionProgress] = field(default_factory=dict)
    action_failures: list[MachineActionFailure] = field(default_factory=list)
    polls_to_complete: int = 2
    isolated: dict[str, str] = field(default_factory=dict)  # machine id -> isolation scope
    indicators: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    next_indicator_id: int = 1001


@dataclass
class CloudAppsThrottle:
    """MDCA's documented 30 requests a minute per tenant; off unless a test switches it on."""

    enabled: bool = False
    requests: int = 30
    window_seconds: float = 60.0


@dataclass
class CloudAppsState:
    """Defender for Cloud Apps alerts by ``_id``, and the throttle window."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    throttle: CloudAppsThrottle = field(default_factory=CloudAppsThrottle)
    recent: deque[float] = field(default_factory=deque)  # monotonic times of admitted requests
    next_id_value: int = 1000


@dataclass
class DefenderCloudState:
    """Defender for Cloud alerts by lower-cased ARM id (ARM ids are case-insensitive)."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    page_size: int = 100


@dataclass
class ServiceNowState:
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    journals: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    next_number: int = 10001
    # sys_user records by sys_id: the API user and the analysts that control calls act as.
    users: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class JiraIssue:
    id: str
    key: str
    fields: dict[str, Any]
    comments: list[dict[str, Any]] = field(default_factory=list)
    indexed_at: float = 0.0  # monotonic time from which search can see the issue
    changelog: list[dict[str, Any]] = field(default_factory=list)  # histories, oldest first
    # What search sees: (monotonic time from which it is visible, the fields then), oldest first.
    index: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


@dataclass
class JiraState:
    issues: dict[str, JiraIssue] = field(default_factory=dict)
    next_issue_id: int = 10001
    next_comment_id: int = 10000
    next_number: dict[str, int] = field(default_factory=lambda: defaultdict(lambda: 1))
    search_lag_seconds: float = 0.0
    next_history_id: int = 10000
    # The API account's time zone: JQL date literals are read in it, timestamps written in it.
    time_zone: str = "UTC"
    # Accounts by accountId: the API account and the analysts that control calls act as.
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def find(self, key_or_id: str) -> JiraIssue | None:
        if key_or_id in self.issues:
            return self.issues[key_or_id]
        wanted = key_or_id.upper()
        return next((i for i in self.issues.values() if i.key == wanted), None)


@dataclass
class ChatState:
    slack: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Fault:
    id: str
    service: str
    method: str | None
    path_contains: str | None
    status: int | None
    retry_after: int | None
    delay: float
    remaining: int | None  # None: until cleared

    def applies_to(self, service: str, method: str, target: str) -> bool:
        return (
            self.service == service
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path_contains is None or self.path_contains in target)
            and (self.remaining is None or self.remaining > 0)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "method": self.method,
            "path_contains": self.path_contains,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "remaining": self.remaining,
        }


@dataclass
class FaultState:
    faults: list[Fault] = field(default_factory=list)

    def take(self, service: str, method: str, target: str) -> Fault | None:
        """The oldest fault matching the request, with one use consumed."""
        for fault in self.faults:
            if fault.applies_to(service, method, target):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                return fault
        return None


@dataclass
class RequestLog:
    by_service: Counter[str] = field(default_factory=Counter)
    by_route: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_status: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def record(self, service: str, route: str, status: int) -> None:
        self.by_service[service] += 1
        self.by_route[service][route] += 1
        self.by_status[service][str(status)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "services": dict(self.by_service),
            "routes": {s: dict(c) for s, c in self.by_route.items()},
            "statuses": {s: dict(c) for s, c in self.by_status.items()},
        }


class SandboxState:
    """Everything the simulators remember; ``reset`` forgets it all but the configuration.

    Handlers are ``async`` and never await while mutating, so the event loop serialises them
    and no lock is needed.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        # Survives reset: lastUpdateDateTime must keep increasing for a watermark held elsewhere.
        self.graph_clock = MonotonicGraphClock()
        self.reset()

    def reset(self) -> None:
        self.identity = IdentityState()
        self.graph = GraphState()
        self.endpoint = EndpointState()
        self.cloud_apps = CloudAppsState()
        self.defender_cloud = DefenderCloudState()
        self.servicenow = ServiceNowState()
        self.jira = JiraState(
            search_lag_seconds=self.config.jira_search_lag_seconds,
            time_zone=self.config.jira_time_zone,
        )
        self.chat = ChatState()
        self.faults = FaultState()
        self.requests = RequestLog()


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state
