"""The policy in force: the file re-read at every evaluation, or its last good copy if it broke.

A change to the policy file applies to the next alert, without redeploying. When an edit breaks
the file, evaluation goes on with the last policy that was valid, and the snapshot says why, so
the flow can log it on every run until someone fixes the file.

Where the last good copy is kept is plugged in: ``load_last_good`` / ``save_last_good`` read and
write a JSON-able `LastGoodRecord`. In production it must survive a restart and be shared by
every worker, so the flows pass hooks over Prefect (a JSON block document is a good fit:
variables hold at most 5000 characters, less than a commented policy). Without hooks the copy
lives in memory (`InMemoryLastGood`): right for tests and the CLI, wrong for workers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from riposte.alerts.policy.document import Policy
from riposte.alerts.policy.load import (
    DEFAULT_POLICY_NAME,
    default_policy_text,
    parse_policy,
    read_policy_text,
)
from riposte.alerts.policy.problems import PolicyError, PolicyProblem, format_loc


class LastGoodRecord(TypedDict):
    """The last valid policy, as the hooks store it."""

    text: str
    origin: str
    sha256: str
    saved_at: str


LoadLastGood = Callable[[], LastGoodRecord | None]
SaveLastGood = Callable[[LastGoodRecord], None]
Validator = Callable[[Policy], list[PolicyProblem]]


class InMemoryLastGood:
    """Last-good storage in this process only (tests, CLI). Pass ``load``/``save`` as hooks."""

    def __init__(self) -> None:
        self.record: LastGoodRecord | None = None

    def load(self) -> LastGoodRecord | None:
        return self.record

    def save(self, record: LastGoodRecord) -> None:
        self.record = record


@dataclass(frozen=True)
class PolicySnapshot:
    """The policy to evaluate with, where it came from, and what went wrong getting it."""

    policy: Policy
    origin: str
    sha256: str
    error: PolicyError | None = None
    """Set when the file is broken and ``policy`` is the last good copy instead."""
    save_error: str | None = None
    """Set when the last good copy could not be saved (the policy itself is fine)."""

    @property
    def is_fallback(self) -> bool:
        return self.error is not None


def template_validator(templates_dir: Path | None) -> Validator:
    """A validator that refuses a policy naming a missing, broken or unsafe template."""

    def validate(policy: Policy) -> list[PolicyProblem]:
        # Imported here: messages imports the policy model, and the store works without it.
        from riposte.alerts.templating import check_template

        problems = []
        for loc, name in policy.template_references():
            problem = check_template(name, templates_dir)
            if problem:
                line = policy.line_of(loc)
                problems.append(PolicyProblem(policy.origin, line, format_loc(loc), problem))
        return problems

    return validate


class PolicyStore:
    """Reads the policy at every `current()` call; falls back to the last good copy.

    Example:
        ```python
        store = PolicyStore(settings.policy_file, templates_dir=settings.templates_dir)
        snapshot = store.current()
        if snapshot.error:
            logger.error("policy file broken, using the last good one:\\n%s", snapshot.error)
        decision = evaluate(snapshot.policy, alert)
        ```
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        templates_dir: Path | None = None,
        load_last_good: LoadLastGood | None = None,
        save_last_good: SaveLastGood | None = None,
        validators: tuple[Validator, ...] | None = None,
    ) -> None:
        """``path`` None means the policy shipped with Riposte."""
        if (load_last_good is None) != (save_last_good is None):
            raise ValueError("pass both load_last_good and save_last_good, or neither")
        memory = InMemoryLastGood()
        self.path = path
        self._load_last_good: LoadLastGood = load_last_good or memory.load
        self._save_last_good: SaveLastGood = save_last_good or memory.save
        self._validators = (
            validators if validators is not None else (template_validator(templates_dir),)
        )
        # Caches, not state: losing them costs one parse or one extra save.
        self._lock = threading.Lock()
        self._parsed: dict[str, Policy] = {}
        self._saved_sha: str | None = None

    @property
    def origin(self) -> str:
        return str(self.path) if self.path is not None else DEFAULT_POLICY_NAME

    def _read(self) -> str:
        return read_policy_text(self.path) if self.path is not None else default_policy_text()

    def _parse(self, text: str, origin: str) -> Policy:
        sha = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            cached = self._parsed.get(f"{origin}|{sha}")
        if cached is not None:
            return cached
        policy = parse_policy(text, origin)
        problems = [p for validate in self._validators for p in validate(policy)]
        if problems:
            raise PolicyError(problems)
        with self._lock:
            # Two policies at most are ever useful: the current file and the last good copy.
            if len(self._parsed) > 8:
                self._parsed.clear()
            self._parsed[f"{origin}|{sha}"] = policy
        return policy

    def current(self) -> PolicySnapshot:
        """The policy in force now; raises `PolicyError` only if there is no good one at all."""
        try:
            text = self._read()
            policy = self._parse(text, self.origin)
        except PolicyError as broken:
            return self._fall_back(broken)
        return PolicySnapshot(
            policy=policy,
            origin=self.origin,
            sha256=policy.sha256,
            save_error=self._remember(text, policy),
        )

    def _remember(self, text: str, policy: Policy) -> str | None:
        if self._saved_sha == policy.sha256:
            return None
        try:
            stored = self._load_last_good()
            if stored is None or stored["sha256"] != policy.sha256:
                self._save_last_good(
                    LastGoodRecord(
                        text=text,
                        origin=self.origin,
                        sha256=policy.sha256,
                        saved_at=datetime.now(UTC).isoformat(),
                    )
                )
        except Exception as exc:  # a storage hiccup must not stop a valid policy
            return f"could not save the last good policy: {type(exc).__name__}: {exc}"
        self._saved_sha = policy.sha256
        return None

    def _fall_back(self, broken: PolicyError) -> PolicySnapshot:
        record = self._load_last_good()
        if record is None:
            raise PolicyError(
                [
                    *broken.problems,
                    PolicyProblem(self.origin, None, "(store)", "and no last good policy to use"),
                ]
            )
        origin = f"last good copy of {record['origin']} (saved {record['saved_at']})"
        try:
            policy = self._parse(record["text"], origin)
        except PolicyError as stale:
            # The stored copy no longer validates (an upgrade changed the schema): say both.
            raise PolicyError([*broken.problems, *stale.problems]) from None
        return PolicySnapshot(policy=policy, origin=origin, sha256=policy.sha256, error=broken)
