"""Containment actions planned from an alert: what to isolate, block or disable, and on what.

Pure: no I/O and no clock. The approval flow shows each planned action's `describe()` to the
approver; `riposte.tasks.containment.execute_action` carries an approved one out, once, keyed by
its `param_hash()`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.model import Alert, Entity, EntityType, Severity


class ActionKind(StrEnum):
    ISOLATE_DEVICE = "isolate_device"
    RELEASE_DEVICE = "release_device"
    BLOCK_IP = "block_ip"
    BLOCK_URL = "block_url"
    BLOCK_FILE = "block_file"
    DISABLE_USER = "disable_user"
    REVOKE_SESSIONS = "revoke_sessions"


DEVICE_KINDS = frozenset({ActionKind.ISOLATE_DEVICE, ActionKind.RELEASE_DEVICE})
INDICATOR_KINDS = frozenset({ActionKind.BLOCK_IP, ActionKind.BLOCK_URL, ActionKind.BLOCK_FILE})
USER_KINDS = frozenset({ActionKind.DISABLE_USER, ActionKind.REVOKE_SESSIONS})

ISOLATION_TYPES = ("Full", "Selective", "UnManagedDevice")
# The Defender for Endpoint indicator actions that block (the others only alert, warn or allow).
BLOCKING_ACTIONS = ("AlertAndBlock", "Block", "BlockAndRemediate")
DEFAULT_INDICATOR_ACTION = "AlertAndBlock"

# Indicator severity from the alert's: the API has no "unknown".
_INDICATOR_SEVERITY = {
    Severity.UNKNOWN: "Medium",
    Severity.INFORMATIONAL: "Informational",
    Severity.LOW: "Low",
    Severity.MEDIUM: "Medium",
    Severity.HIGH: "High",
}
_TITLE_LIMIT = 100

_SHA1_RE = re.compile(r"^[0-9a-fA-F]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

# Addresses a block must never name: they are the tenant's own side (its private networks, its
# hosts' loopback and link-local addresses) or no single host at all. Documentation ranges
# (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are deliberately not here: no real traffic
# comes from them, and the vendors' sample alerts use them for the attacker.
_NOT_BLOCKABLE: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "a 'this network' address, not a host"),
    ("10.0.0.0/8", "a private address (RFC 1918): blocking it would cut internal traffic"),
    ("100.64.0.0/10", "a carrier-grade NAT address shared by many hosts (RFC 6598)"),
    ("127.0.0.0/8", "a loopback address: every device would block itself"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address (RFC 1918): blocking it would cut internal traffic"),
    ("192.168.0.0/16", "a private address (RFC 1918): blocking it would cut internal traffic"),
    ("224.0.0.0/4", "a multicast address, not a host"),
    ("240.0.0.0/4", "a reserved or broadcast address, not a host"),
    ("::/128", "the unspecified address, not a host"),
    ("::1/128", "a loopback address: every device would block itself"),
    ("fc00::/7", "a private (unique local) address: blocking it would cut internal traffic"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address, not a host"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in _NOT_BLOCKABLE)


class ContainmentPlanError(ValueError):
    """The alert does not say enough to plan a requested action; the message says what is
    missing (the field, or why a target was refused)."""


class ContainmentAction(BaseModel):
    """One containment step on one target, as approved: immutable, hashed, described.

    ``target`` is what the API takes: an MDE machine id, an IP address, a URL or domain, a
    SHA-1/SHA-256 hash, or an Entra ID user (object id, else UPN). ``label`` is what a person
    recognises (a device's DNS name, a user's UPN).
    """

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    target: str = Field(min_length=1)
    label: str
    parameters: dict[str, str] = Field(default_factory=dict)

    def __hash__(self) -> int:
        # The generated hash would fail on the dict field.
        return hash(self.param_hash())

    def param_hash(self) -> str:
        """A digest of what the action does (kind, target, parameters; not the label): the same
        approved action always has the same hash, whichever run planned it."""
        canonical = json.dumps(
            {"kind": str(self.kind), "target": self.target, "parameters": self.parameters},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]

    def describe(self) -> str:
        """One line for the approver: what will be done, to what."""
        params = self.parameters
        kind = self.kind
        if kind is ActionKind.ISOLATE_DEVICE:
            how = params.get("isolation_type", "Full")
            return f"Isolate device {self.label} (MDE machine {self.target}) with {how} isolation"
        if kind is ActionKind.RELEASE_DEVICE:
            return f"Release device {self.label} (MDE machine {self.target}) from isolation"
        if kind in INDICATOR_KINDS:
            what = {
                "IpAddress": "IP address",
                "Url": "URL",
                "DomainName": "domain",
                "FileSha1": "file",
                "FileSha256": "file",
            }.get(params.get("indicator_type", ""), "indicator")
            # An address's label is the address and its country: no need to repeat it.
            plain = self.label.startswith(self.target)
            shown = self.label if plain else f"{self.label} ({self.target})"
            expiry = f", until {params['expiration']}" if params.get("expiration") else ""
            action = params.get("action", DEFAULT_INDICATOR_ACTION)
            return f"Block {what} {shown} in Defender for Endpoint ({action}{expiry})"
        shown = self.label if self.label == self.target else f"{self.label} ({self.target})"
        if kind is ActionKind.DISABLE_USER:
            return f"Disable Entra ID user {shown}"
        return f"Revoke every sign-in session of Entra ID user {shown}"


def correlation_marker(alert: Alert) -> str:
    """What Riposte writes in an action's comment so that a later run can find the action it
    already started for this alert (correlation keys have no brackets, so it cannot match a
    longer key)."""
    return f"[{alert.correlation_key}]"


def external_comment(alert: Alert, action: ContainmentAction) -> str:
    """The comment sent with the action (MDE ``Comment``, indicator description): the approved
    comment, ending with the alert's correlation marker."""
    comment = action.parameters.get("comment", "").strip()
    marker = correlation_marker(alert)
    if marker in comment:
        return comment
    return f"{comment} {marker}" if comment else f"Riposte containment {marker}"


def plan_actions(
    alert: Alert,
    kinds: Sequence[ActionKind | str],
    *,
    comment: str,
    isolation_type: str = "Full",
    indicator_action: str = DEFAULT_INDICATOR_ACTION,
    expires_at: datetime | None = None,
) -> list[ContainmentAction]:
    """The actions of ``kinds`` on the targets the alert names, one per distinct target.

    Ordered by ``kinds`` as given (repeats ignored), then by target. Raises
    `ContainmentPlanError` when a kind cannot be planned: a device known only by its DNS name
    (no MDE machine id), or no target of that kind left (private and loopback addresses are
    never blocked; accounts need an Entra object id or a UPN; files a SHA-1 or SHA-256).

    Example:
        ```python
        actions = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment="Approved by SOC")
        print([a.describe() for a in actions])
        ```
    """
    if isolation_type not in ISOLATION_TYPES:
        raise ContainmentPlanError(
            f"unknown isolation type '{isolation_type}' (one of {', '.join(ISOLATION_TYPES)})"
        )
    if indicator_action not in BLOCKING_ACTIONS:
        raise ContainmentPlanError(
            f"'{indicator_action}' does not block (use one of {', '.join(BLOCKING_ACTIONS)})"
        )
    if expires_at is not None and expires_at.tzinfo is None:
        raise ContainmentPlanError("expires_at must carry a timezone")
    base = {"comment": comment.strip()}
    indicator = {
        **base,
        "action": indicator_action,
        "severity": _INDICATOR_SEVERITY[alert.severity],
        "title": _indicator_title(alert),
    }
    if expires_at is not None:
        indicator["expiration"] = expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    actions: list[ContainmentAction] = []
    for kind in dict.fromkeys(ActionKind(k) for k in kinds):
        if kind in DEVICE_KINDS:
            params = (
                {**base, "isolation_type": isolation_type}
                if kind is ActionKind.ISOLATE_DEVICE
                else base
            )
            targets = _devices(alert, kind)
        elif kind in USER_KINDS:
            params = base
            targets = _users(alert, kind)
        else:
            params = indicator
            targets = _INDICATOR_TARGETS[kind](alert)
        for target, label, extra in sorted(targets, key=lambda t: (t[0].casefold(), t[0])):
            actions.append(
                ContainmentAction(
                    kind=kind, target=target, label=label, parameters={**params, **extra}
                )
            )
    return actions


_Target = tuple[str, str, dict[str, str]]  # target, label, extra parameters


def _indicator_title(alert: Alert) -> str:
    title = f"Riposte: {alert.title}"
    return title if len(title) <= _TITLE_LIMIT else title[: _TITLE_LIMIT - 1] + "…"


def _unique(targets: list[_Target]) -> list[_Target]:
    seen: dict[str, _Target] = {}
    for target in targets:
        seen.setdefault(target[0].casefold(), target)
    return list(seen.values())


def _nothing_to(verb: str, what: str, alert: Alert, refused: list[str]) -> ContainmentPlanError:
    reasons = f": {'; '.join(refused)}" if refused else ""
    return ContainmentPlanError(
        f"cannot {verb}: alert {alert.source}/{alert.id} names no {what}{reasons}"
    )


def _devices(alert: Alert, kind: ActionKind) -> list[_Target]:
    verb = "isolate" if kind is ActionKind.ISOLATE_DEVICE else "release"
    targets: list[_Target] = []
    for device in alert.entities_of(EntityType.DEVICE):
        attrs = device.attributes
        label = attrs.get("dns_name") or attrs.get("hostname") or attrs.get("name") or device.value
        machine_id = attrs.get("mde_device_id", "").strip()
        if not machine_id:
            # Refused rather than skipped: a device of the alert left running is a gap the
            # approver must see, and isolation takes the MDE machine id, not a name.
            known = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) or f"'{device.value}'"
            raise ContainmentPlanError(
                f"cannot {verb} device '{label}': alert {alert.source}/{alert.id} gives no"
                f" Defender for Endpoint machine id (mde_device_id) for it, only {known}"
            )
        targets.append((machine_id, label, {}))
    if not targets:
        raise _nothing_to(f"{verb} a device", "device", alert, [])
    return _unique(targets)


def blockable_ip(value: str) -> tuple[str | None, str]:
    """``(address, "")`` for an address an indicator may block (normalised), else
    ``(None, reason)``."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None, f"'{value}' is not an IP address"
    checked: ipaddress.IPv4Address | ipaddress.IPv6Address = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        checked = address.ipv4_mapped
    for network, reason in _NETWORKS:
        if checked.version == network.version and checked in network:
            return None, f"{address} is {reason}"
    return str(address), ""


def _ips(alert: Alert) -> list[_Target]:
    targets: list[_Target] = []
    refused: list[str] = []
    for entity in alert.entities_of(EntityType.IP):
        address, reason = blockable_ip(entity.value)
        if address is None:
            refused.append(reason)
            continue
        country = entity.attributes.get("country")
        label = f"{address} ({country})" if country else address
        targets.append((address, label, {"indicator_type": "IpAddress"}))
    if not targets:
        raise _nothing_to("block an IP address", "public IP address", alert, refused)
    return _unique(targets)


def _urls(alert: Alert) -> list[_Target]:
    targets: list[_Target] = []
    for entity in alert.entities_of(EntityType.URL):
        value = entity.value.strip()
        # A bare host name (MDE's alertDomains) is a domain indicator; anything with a scheme
        # or a path is a URL indicator.
        is_domain = "://" not in value and "/" not in value
        if is_domain:
            value = value.rstrip(".").lower()
        targets.append((value, value, {"indicator_type": "DomainName" if is_domain else "Url"}))
    if not targets:
        raise _nothing_to("block a URL", "URL or domain", alert, [])
    return _unique(targets)


def _file_hash(entity: Entity) -> tuple[str, str] | None:
    attrs = entity.attributes
    for candidate in (attrs.get("sha256"), entity.value):
        if candidate and _SHA256_RE.match(candidate.strip()):
            return candidate.strip().lower(), "FileSha256"
    for candidate in (attrs.get("sha1"), entity.value):
        if candidate and _SHA1_RE.match(candidate.strip()):
            return candidate.strip().lower(), "FileSha1"
    return None


# Folders of the operating system and of Defender itself, and publishers whose binaries an alert
# names as the process that ran something (rundll32.exe, powershell.exe, MsSense.exe): blocking
# such a hash would break every device, not stop the attack.
_SYSTEM_FOLDERS = re.compile(
    r"^(?:[a-z]:)?\\(?:windows|program files(?: \(x86\))?\\windows defender(?: advanced threat"
    r" protection)?|programdata\\microsoft\\windows defender)\\",
    re.IGNORECASE,
)
_SYSTEM_PUBLISHERS = frozenset({"microsoft corporation", "microsoft windows"})


def _system_binary(entity: Entity) -> str | None:
    """Why the file must not be blocked, when it is an OS or Defender binary; else None."""
    attrs = entity.attributes
    path = attrs.get("path", "")
    if _SYSTEM_FOLDERS.match(path):
        return f"it is a Windows system file ({path})"
    publisher = attrs.get("publisher", "")
    if publisher.strip().lower() in _SYSTEM_PUBLISHERS:
        return f"it is signed by {publisher}"
    return None


def _files(alert: Alert) -> list[_Target]:
    targets: list[_Target] = []
    refused: list[str] = []
    for entity in alert.entities_of(EntityType.FILE):
        found = _file_hash(entity)
        name = entity.attributes.get("name") or entity.attributes.get("path") or entity.value
        if found is None:
            refused.append(f"file '{name}' has no SHA-1 or SHA-256")
            continue
        system = _system_binary(entity)
        if system is not None:
            refused.append(f"file '{name}' is not blocked: {system}")
            continue
        digest, indicator_type = found
        targets.append((digest, name, {"indicator_type": indicator_type}))
    if not targets:
        raise _nothing_to("block a file", "file hash", alert, refused)
    return _unique(targets)


_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _users(alert: Alert, kind: ActionKind) -> list[_Target]:
    verb = "disable a user" if kind is ActionKind.DISABLE_USER else "revoke a user's sessions"
    by_id: list[_Target] = []
    by_upn: list[_Target] = []
    refused: list[str] = []
    for account in alert.entities_of(EntityType.ACCOUNT):
        attrs = account.attributes
        upn = attrs.get("upn") or (account.value if _looks_like_upn(account.value) else None)
        object_id = attrs.get("aad_user_id")
        label = upn or attrs.get("display_name") or account.value
        if object_id and _GUID_RE.match(object_id.strip()):
            # The object id survives a rename; the UPN does not.
            by_id.append((object_id.strip().lower(), label, {}))
        elif upn:
            by_upn.append((upn.strip(), label, {}))
        else:
            refused.append(
                f"account '{account.value}' has no Entra ID object id (aad_user_id) or UPN"
            )
    known_upns = {label.casefold() for _, label, _ in by_id}
    targets = by_id + [t for t in by_upn if t[0].casefold() not in known_upns]
    if not targets:
        raise _nothing_to(verb, "Entra ID user", alert, refused)
    return _unique(targets)


def _looks_like_upn(value: str) -> bool:
    name, at, domain = value.strip().partition("@")
    return bool(at and name and "." in domain and "\\" not in value and " " not in value)


_INDICATOR_TARGETS: dict[ActionKind, Callable[[Alert], list[_Target]]] = {
    ActionKind.BLOCK_IP: _ips,
    ActionKind.BLOCK_URL: _urls,
    ActionKind.BLOCK_FILE: _files,
}
