"""What is wrong with a policy file and where: `PolicyProblem`, `PolicyError` and locations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]
"""A place in the policy document: mapping keys and sequence indexes, from the top."""


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class PolicyError(ValueError):
    """A policy file that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid policy")


def by_line(problem: PolicyProblem) -> tuple[int, str]:
    """Sort key: problems in the order of the file (unlocated ones first)."""
    return problem.line or 0, problem.field


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"
