"""Defender for Endpoint machines and machine actions: get a machine, isolate or release it, poll
the action until it ends, list actions; the sandbox's controls of machines and action outcomes."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.defender_endpoint.api import (
    ISOLATE,
    MACHINE_READ,
    MDE_ROOT,
    bad_request,
    control_router,
    field,
    forbidden,
    invalid_body,
    mde_error,
    object_body,
    page,
    required_text,
    router,
)
from riposte.sandbox.defender_endpoint.filters import entity_filter
from riposte.sandbox.identity import needs_role
from riposte.sandbox.state import (
    MachineActionFailure,
    MachineActionProgress,
    Reject,
    SandboxState,
    get_state,
)

ACTION_TYPES = ("Isolate", "Unisolate")
ISOLATION_TYPES = ("Full", "Selective", "UnManagedDevice")
ACTIVE_STATUSES = ("Pending", "InProgress")
FINAL_STATUSES = ("Succeeded", "Failed", "TimeOut", "Cancelled")
_E_FAIL = -2147467259  # the HRESULT a failed action reports


def machine_record(
    machine_id: str,
    dns_name: str | None = None,
    *,
    os_platform: str | None = None,
    aad_device_id: str | None = None,
    rbac_group: str | None = None,
    seen: str | None = None,
) -> dict[str, Any]:
    """A Machine entity as ``GET /api/machines/{id}`` shows it."""
    return {
        "id": machine_id,
        "computerDnsName": dns_name,
        "firstSeen": seen,
        "lastSeen": seen,
        "osPlatform": os_platform or "Windows11",
        "version": None,
        "osProcessor": "x64",
        "lastIpAddress": None,
        "lastExternalIpAddress": None,
        "healthStatus": "Active",
        "onboardingStatus": "Onboarded",
        "rbacGroupName": rbac_group,
        "rbacGroupId": None,
        "riskScore": "Medium",
        "exposureLevel": "Medium",
        "aadDeviceId": aad_device_id,
        "machineTags": [],
    }


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def sync_machines(state: SandboxState) -> None:
    """Make every device the alerts name (MDE ``machineId``, Graph ``deviceEvidence`` with an
    ``mdeDeviceId``) a known machine; machines already known keep their state."""
    machines = state.endpoint.machines
    for alert in state.endpoint.alerts.values():
        machine_id = _text(alert.get("machineId"))
        if machine_id and machine_id.lower() not in machines:
            machines[machine_id.lower()] = machine_record(
                machine_id,
                _text(alert.get("computerDnsName")),
                rbac_group=_text(alert.get("rbacGroupName")),
                seen=alert.get("alertCreationTime"),
            )
    for alert in state.graph.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if not isinstance(item, dict):
                continue
            kind = str(item.get("@odata.type", "")).lower()
            machine_id = _text(item.get("mdeDeviceId"))
            if not kind.endswith("deviceevidence") or not machine_id:
                continue
            if machine_id.lower() not in machines:
                machines[machine_id.lower()] = machine_record(
                    machine_id,
                    _text(item.get("deviceDnsName")),
                    os_platform=_text(item.get("osPlatform")),
                    aad_device_id=_text(item.get("azureAdDeviceId")),
                    seen=item.get("createdDateTime"),
                )


def _machine(state: SandboxState, machine_id: str) -> dict[str, Any]:
    sync_machines(state)
    machine = state.endpoint.machines.get(machine_id.strip().lower())
    if machine is None:
        raise Reject(mde_error(404, "ResourceNotFound", f"Machine {machine_id} was not found."))
    return machine


def _request_action(
    state: SandboxState, machine: dict[str, Any], action_type: str, comment: str, scope: Any
) -> dict[str, Any]:
    endpoint = state.endpoint
    for existing in endpoint.machine_actions.values():
        if (
            existing["machineId"] == machine["id"]
            and existing["type"] == action_type
            and existing["status"] in ACTIVE_STATUSES
        ):
            raise bad_request("Action is already in progress", "ActiveRequestAlreadyExists")
    outcome = "Succeeded"
    for rule in endpoint.action_failures:
        if rule.applies_to(machine["id"], action_type):
            outcome = rule.status
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    endpoint.action_failures.remove(rule)
            break
    now = state.graph_clock.next()
    action: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": action_type,
        "title": None,
        "scope": scope,
        "requestor": state.config.client_id,
        "requestorComment": comment,
        "status": "Pending",
        "machineId": machine["id"],
        "computerDnsName": machine.get("computerDnsName"),
        "creationDateTimeUtc": now,
        "lastUpdateDateTimeUtc": now,
        "cancellationRequestor": None,
        "cancellationComment": None,
        "cancellationDateTimeUtc": None,
        "errorHResult": 0,
        "externalId": None,
        "requestSource": "PublicApi",
        "relatedFileInfo": None,
        "commands": [],
        "troubleshootInfo": None,
    }
    endpoint.machine_actions[action["id"]] = action
    endpoint.action_progress[action["id"]] = MachineActionProgress(outcome=outcome)
    return action


def _advance(state: SandboxState, action: dict[str, Any]) -> None:
    """One read of a running action: it is InProgress until its last poll, then final."""
    endpoint = state.endpoint
    progress = endpoint.action_progress.get(action["id"])
    if progress is None or action["status"] in FINAL_STATUSES:
        return
    progress.polls += 1
    done = progress.polls >= endpoint.polls_to_complete
    status = progress.outcome if done else "InProgress"
    if status == action["status"]:
        return
    now = state.graph_clock.next()
    action["status"] = status
    action["lastUpdateDateTimeUtc"] = now
    if status == "Succeeded":
        machine_id = action["machineId"].lower()
        if action["type"] == "Isolate":
            endpoint.isolated[machine_id] = action["scope"] or "Full"
        else:
            endpoint.isolated.pop(machine_id, None)
    elif status == "Cancelled":
        action["cancellationRequestor"] = "Automation"
        action["cancellationComment"] = "Cancelled by the sandbox"
        action["cancellationDateTimeUtc"] = now
    elif status in ("Failed", "TimeOut"):
        action["errorHResult"] = _E_FAIL


def _action_entity(action: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"@odata.context": f"{MDE_ROOT}/$metadata#MachineActions/$entity"}
    body.update(copy.deepcopy(action))
    return body


@router.get("/machines/{machine_id}", dependencies=[Depends(needs_role(MACHINE_READ, forbidden))])
async def get_machine(machine_id: str, request: Request) -> JSONResponse:
    body: dict[str, Any] = {"@odata.context": f"{MDE_ROOT}/$metadata#Machines/$entity"}
    body.update(copy.deepcopy(_machine(get_state(request), machine_id)))
    return JSONResponse(body)


async def _act(
    request: Request, machine_id: str, action_type: str, scope: Callable[[dict[str, Any]], Any]
) -> JSONResponse:
    """A machine action requested by ``POST /machines/{id}/<action>``: 201, Pending; its body
    names a ``Comment`` and, through ``scope``, what the action covers."""
    body = await object_body(request)
    state = get_state(request)
    machine = _machine(state, machine_id)
    comment = required_text(body, "Comment")
    action = _request_action(state, machine, action_type, comment, scope(body))
    return JSONResponse(_action_entity(action), status_code=201)


def _isolation_type(body: dict[str, Any]) -> str:
    isolation_type = field(body, "IsolationType") or "Full"
    if isolation_type not in ISOLATION_TYPES:
        raise invalid_body(
            f"'{isolation_type}' is not a valid IsolationType ({', '.join(ISOLATION_TYPES)})."
        )
    return str(isolation_type)


@router.post(
    "/machines/{machine_id}/isolate", dependencies=[Depends(needs_role(ISOLATE, forbidden))]
)
async def isolate_machine(machine_id: str, request: Request) -> JSONResponse:
    return await _act(request, machine_id, "Isolate", _isolation_type)


@router.post(
    "/machines/{machine_id}/unisolate", dependencies=[Depends(needs_role(ISOLATE, forbidden))]
)
async def release_machine(machine_id: str, request: Request) -> JSONResponse:
    return await _act(request, machine_id, "Unisolate", lambda body: None)


@router.get(
    "/machineactions/{action_id}",
    dependencies=[Depends(needs_role(MACHINE_READ, forbidden))],
)
async def get_machine_action(action_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    action = state.endpoint.machine_actions.get(action_id.strip().lower())
    if action is None:
        raise Reject(
            mde_error(404, "ResourceNotFound", f"Machine action {action_id} was not found.")
        )
    _advance(state, action)
    return JSONResponse(_action_entity(action))


@router.get("/machineactions", dependencies=[Depends(needs_role(MACHINE_READ, forbidden))])
async def list_machine_actions(request: Request) -> JSONResponse:
    state = get_state(request)
    predicates = entity_filter(
        request.query_params.get("$filter"),
        ("id", "status", "machineId", "type", "requestor"),
        datetimes=("creationDateTimeUtc",),
    )
    matching = [a for a in state.endpoint.machine_actions.values() if all(p(a) for p in predicates)]
    # Newest first, as the service lists them.
    matching.sort(key=lambda a: parse_ticks(a["creationDateTimeUtc"]) or 0, reverse=True)
    return JSONResponse(
        {
            "@odata.context": f"{MDE_ROOT}/$metadata#MachineActions",
            "value": page(request, matching),
        }
    )


# --- controls (mounted under /_sandbox) --------------------------------------------------------


class MachineIn(BaseModel):
    """A machine the simulated tenant has onboarded (beyond those its alerts name)."""

    id: str = Field(min_length=1)
    computerDnsName: str | None = None  # noqa: N815 - the API's own spelling
    osPlatform: str | None = None  # noqa: N815
    aadDeviceId: str | None = None  # noqa: N815
    rbacGroupName: str | None = None  # noqa: N815


class MachineActionSettings(BaseModel):
    """Reads of ``GET /api/machineactions/{id}`` after which an action reaches its final status
    (the reads before show InProgress)."""

    polls_to_complete: int = Field(default=2, ge=1, le=1000)


class MachineActionFailureIn(BaseModel):
    """Make the next ``times`` matching actions (None: all, until cleared) end in ``status``."""

    status: Literal["Failed", "TimeOut", "Cancelled"] = "Failed"
    machine_id: str | None = None
    type: Literal["Isolate", "Unisolate"] | None = None
    times: int | None = Field(default=1, ge=1)


@control_router.get("/machines")
async def machines(request: Request) -> list[dict[str, Any]]:
    """Every known machine, with whether it is isolated now (``isolationType`` when it is)."""
    state = get_state(request)
    sync_machines(state)
    shown = []
    for key, machine in state.endpoint.machines.items():
        scope = state.endpoint.isolated.get(key)
        shown.append(
            {**copy.deepcopy(machine), "isolated": scope is not None, "isolationType": scope}
        )
    return shown


@control_router.post("/machines")
async def add_machines(items: MachineIn | list[MachineIn], request: Request) -> dict[str, Any]:
    state = get_state(request)
    ids = []
    for item in items if isinstance(items, list) else [items]:
        state.endpoint.machines[item.id.lower()] = machine_record(
            item.id,
            item.computerDnsName,
            os_platform=item.osPlatform,
            aad_device_id=item.aadDeviceId,
            rbac_group=item.rbacGroupName,
            seen=state.graph_clock.next(),
        )
        ids.append(item.id)
    return {"loaded": len(ids), "ids": ids}


@control_router.get("/machineactions")
async def machine_actions(request: Request) -> list[dict[str, Any]]:
    """Every machine action, oldest first, as it stands (reading them here advances nothing)."""
    return copy.deepcopy(list(get_state(request).endpoint.machine_actions.values()))


# A settings pair like the others of /_sandbox (control.py): each reads and writes its own knobs.
@control_router.get("/machineactions/settings")
async def machine_action_settings(request: Request) -> MachineActionSettings:
    return MachineActionSettings(polls_to_complete=get_state(request).endpoint.polls_to_complete)


@control_router.post("/machineactions/settings")
async def set_machine_action_settings(
    settings: MachineActionSettings, request: Request
) -> MachineActionSettings:
    get_state(request).endpoint.polls_to_complete = settings.polls_to_complete
    return settings


@control_router.post("/machineactions/failures")
async def add_machine_action_failure(
    failure: MachineActionFailureIn, request: Request
) -> dict[str, Any]:
    """The next matching isolation or release is accepted (201, Pending) and ends ``status``."""
    get_state(request).endpoint.action_failures.append(
        MachineActionFailure(
            status=failure.status,
            machine_id=failure.machine_id,
            action_type=failure.type,
            remaining=failure.times,
        )
    )
    return failure.model_dump()


@control_router.delete("/machineactions/failures")
async def clear_machine_action_failures(request: Request) -> dict[str, str]:
    get_state(request).endpoint.action_failures.clear()
    return {"status": "cleared"}
