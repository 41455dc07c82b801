"""One deployment per registered playbook, ``run_playbook/<name>``, to run it by hand from the
Prefect UI: its Custom run form asks for the alert (source from a list, alert id) and the
playbook's own parameters, each with its help text, generated from the playbook's model.

`riposte serve` (the local stack) serves them; `riposte deploy` applies them to the `riposte`
process work pool after `prefect deploy --all`, since their forms come from the registered
playbooks and not from `prefect.yaml`. A custom playbook gets its deployment the same way, once
``RIPOSTE_PLAYBOOKS`` names it where `riposte serve` or `riposte deploy` runs.
"""

from __future__ import annotations

import copy
from typing import Any, cast

from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.utilities.callables import ParameterSchema

from riposte.alerts.sources import SOURCES
from riposte.flows.playbooks import run_playbook
from riposte.playbooks.api import Playbook
from riposte.playbooks.registry import registry
from riposte.settings import PLAYBOOK_FLOW

_HIDDEN = ("playbook",)


def playbook_form(found: Playbook[Any], base: ParameterSchema) -> ParameterSchema:
    """The run form of ``found``'s deployment: the flow's parameters, with the alert's source as
    a list and ``params`` as the playbook's own model (its fields, defaults and descriptions)."""
    schema = copy.deepcopy(base)
    properties = schema.properties
    properties["source"] = {
        "title": "Source",
        "type": "string",
        "enum": sorted(SOURCES),
        "default": "graph",
        "description": "The Defender API the alert comes from",
        "position": 0,
    }
    properties["alert_id"] = {
        **properties.get("alert_id", {}),
        "title": "Alert id",
        "type": "string",
        "description": "The alert's id in that API (as in the alert's Defender link)",
        "position": 1,
    }
    try:
        model = found.params_model.model_json_schema(ref_template="#/definitions/{model}")
    except Exception as exc:  # a model of types with no JSON schema: a plain JSON object then
        model = {
            "type": "object",
            "description": f"(no form: the model has no JSON schema: {type(exc).__name__})",
        }
    # References inlined: the UI leaves out a field that is a bare `$ref` with siblings (an enum
    # with a default and a description), so the form shows every field only when it is whole.
    for field_name, prop in model.get("properties", {}).items():
        if isinstance(prop, dict):  # a `$ref` field has no title of its own: the enum's would show
            prop.setdefault("title", field_name.replace("_", " ").title())
    model = _inline(model, model.pop("$defs", {}))
    model["title"] = f"Parameters of {found.name}"
    model["description"] = (
        "Over the policy's parameters for this alert (of the rule that picks this playbook, "
        "else the defaults); leave a field out to keep the policy's value"
    )
    model["position"] = 2
    properties["params"] = model
    for name, description, position in (
        ("defender_block", "Defender credentials block (default: riposte-defender)", 3),
        ("ticketing_block", "Ticketing block to use instead of the policy's", 4),
        ("channel_blocks", "Chat or email blocks to use instead of the policy's", 5),
    ):
        if name in properties:
            properties[name] = {
                **properties[name],
                "description": description,
                "position": position,
            }
    for name in _HIDDEN:
        properties.pop(name, None)
    schema.required = [r for r in schema.required if r not in _HIDDEN]
    return schema


def _inline(node: Any, definitions: dict[str, Any], depth: int = 0) -> Any:
    if depth > 20:  # a model that refers to itself: the rest stays a plain object
        return {"type": "object"}
    if isinstance(node, list):
        return [_inline(item, definitions, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        target = definitions.get(ref.removeprefix("#/definitions/"), {"type": "object"})
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **siblings}, definitions, depth + 1)
    return {k: _inline(v, definitions, depth) for k, v in node.items()}


def playbook_deployments() -> list[tuple[RunnerDeployment, Flow[Any, Any]]]:
    """A `run_playbook` deployment for each registered playbook."""
    out = []
    for found in sorted(registry().playbooks.values(), key=lambda p: p.name):
        summary = " ".join(found.description.strip().split("\n\n")[0].split())
        deployment = cast(
            RunnerDeployment,
            run_playbook.to_deployment(
                name=found.name,
                tags=["riposte", "playbook", f"playbook:{found.name}"],
                description=f"Run the {found.name} playbook ({found.origin}) for one alert, by "
                f"hand. {summary}",
                entrypoint_type=EntrypointType.MODULE_PATH,
            ),
        )
        deployment._parameter_openapi_schema = playbook_form(
            found, deployment._parameter_openapi_schema
        )
        out.append((deployment, cast(Flow[Any, Any], run_playbook)))
    return out


def deployment_name(playbook: str) -> str:
    return f"{PLAYBOOK_FLOW}/{playbook}"
