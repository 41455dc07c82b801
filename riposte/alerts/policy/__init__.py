"""The policy file: which playbook answers which alert, with which parameters, as validated data.

A policy is YAML. Rules are tried in order; the first one whose every condition holds decides,
unless it says ``continue: true``, in which case its action is kept and the next rules are
tried too. When no rule stops the evaluation, ``fallback`` decides. Every model forbids unknown
fields, so a typo in a field name fails the load instead of silently matching everything.

Errors are reported as ``file:line: field: problem``: the YAML is composed into nodes first, so
each pydantic error location can be mapped back to the line it came from.

The modules, from the bottom up: `problems` (`PolicyError`, locations), `durations`, `fields`
(the validated field types, the built-in playbook names), `model` (the pydantic models of a
rule and of the defaults), `catalog` (what the policy needs of a playbook), `document` (the
whole file as a `Policy`), `lines` (YAML lines, pydantic errors), `checks` (checks that need
the playbooks), `load` (text to `Policy`) and `store` (the policy in force, or its last good
copy).
"""

from riposte.alerts.policy.catalog import (
    Gating,
    PlaybookCatalog,
    PlaybookInfo,
    default_catalog,
    set_catalog_provider,
)
from riposte.alerts.policy.checks import validate_playbook_params
from riposte.alerts.policy.document import Policy
from riposte.alerts.policy.durations import MAX_WINDOW, Duration, format_duration, parse_duration
from riposte.alerts.policy.fields import (
    KEY_FIELDS,
    BlockRef,
    BlockRefs,
    IPNetwork,
    KeyParts,
    Names,
    Network,
    Networks,
    Pattern,
    Playbook,
    PlaybookName,
    PriorityMap,
    RuleName,
    Severities,
    TemplateName,
)
from riposte.alerts.policy.lines import MAX_YAML_NODES
from riposte.alerts.policy.load import (
    DEFAULT_POLICY_NAME,
    MAX_POLICY_BYTES,
    default_policy,
    default_policy_text,
    load_policy,
    parse_policy,
    read_policy_text,
)
from riposte.alerts.policy.model import (
    DEFAULT_APPROVAL_TIMEOUT,
    RULE_FIELDS,
    Allow,
    Approver,
    Close,
    Containment,
    Defaults,
    Digest,
    Fallback,
    Match,
    OnTimeout,
    Rule,
    RuleParameters,
    Suppress,
    Templates,
    Throttle,
    TicketTarget,
)
from riposte.alerts.policy.problems import Loc, PolicyError, PolicyProblem, format_loc

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_POLICY_NAME",
    "KEY_FIELDS",
    "MAX_POLICY_BYTES",
    "MAX_WINDOW",
    "MAX_YAML_NODES",
    "RULE_FIELDS",
    "Allow",
    "Approver",
    "BlockRef",
    "BlockRefs",
    "Close",
    "Containment",
    "Defaults",
    "Digest",
    "Duration",
    "Fallback",
    "Gating",
    "IPNetwork",
    "KeyParts",
    "Loc",
    "Match",
    "Names",
    "Network",
    "Networks",
    "OnTimeout",
    "Pattern",
    "Playbook",
    "PlaybookCatalog",
    "PlaybookInfo",
    "PlaybookName",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "PriorityMap",
    "Rule",
    "RuleName",
    "RuleParameters",
    "Severities",
    "Suppress",
    "TemplateName",
    "Templates",
    "Throttle",
    "TicketTarget",
    "default_catalog",
    "default_policy",
    "default_policy_text",
    "format_duration",
    "format_loc",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "read_policy_text",
    "set_catalog_provider",
    "validate_playbook_params",
]
