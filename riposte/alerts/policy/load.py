"""Loading a policy: text to a checked `Policy`, or a `PolicyError` listing every problem."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from riposte.alerts.policy.catalog import PlaybookCatalog, default_catalog
from riposte.alerts.policy.checks import playbook_problems, unknown_playbooks
from riposte.alerts.policy.document import Policy
from riposte.alerts.policy.lines import line_index, located, problems_from_validation
from riposte.alerts.policy.problems import PolicyError, PolicyProblem, by_line

DEFAULT_POLICY_NAME = "built-in default policy"

# A policy is a few hundred lines; a bigger input is a mistake or an attack (alias bombs).
MAX_POLICY_BYTES = 1_000_000


def parse_policy(
    text: str, origin: str = "<policy>", catalog: PlaybookCatalog | None = None
) -> Policy:
    """Validate policy ``text`` against the playbooks of ``catalog`` (the process's registered
    playbooks by default); raise `PolicyError` listing every problem with its line."""
    catalog = catalog if catalog is not None else default_catalog()
    if len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
        raise PolicyError(
            [PolicyProblem(origin, None, "(file)", f"larger than {MAX_POLICY_BYTES} bytes")]
        )
    lines, problems = line_index(text, origin)
    data = yaml.SafeLoader(text).get_single_data()
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        found = problems + problems_from_validation(exc, lines, origin)
        for loc, message in unknown_playbooks(data, catalog):
            found.append(located(lines, origin, loc, message))
        raise PolicyError(sorted(found, key=by_line)) from None
    for loc, message in playbook_problems(policy, data, catalog):
        problems.append(located(lines, origin, loc, message))
    if problems:
        raise PolicyError(sorted(problems, key=by_line))
    policy._origin = origin
    policy._lines = lines
    policy._sha256 = hashlib.sha256(text.encode()).hexdigest()
    policy._catalog = catalog
    return policy


def read_policy_text(path: Path) -> str:
    """The text of a policy file; unreadable files raise `PolicyError` naming the reason."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    raise PolicyError([PolicyProblem(str(path), None, "(file)", reason)])


def load_policy(path: Path, catalog: PlaybookCatalog | None = None) -> Policy:
    return parse_policy(read_policy_text(path), str(path), catalog)


def default_policy_text() -> str:
    return resources.files("riposte").joinpath("policies/default.yaml").read_text(encoding="utf-8")


def default_policy() -> Policy:
    """The policy shipped with Riposte (``riposte/policies/default.yaml``)."""
    return parse_policy(default_policy_text(), DEFAULT_POLICY_NAME)
