"""Errors raised while turning a payload into an `Alert`."""

from __future__ import annotations


class AlertParseError(ValueError):
    """A payload that cannot make an alert.

    ``field`` is the dotted path of the offending field (``""`` for the whole payload), so that
    the message can name it; ``where`` is filled in by callers that know the file or request.
    """

    def __init__(self, message: str, *, field: str = "", where: str = "") -> None:
        self.message = message
        self.field = field
        self.where = where
        super().__init__(str(self))

    def located(self, where: str) -> AlertParseError:
        return AlertParseError(self.message, field=self.field, where=where)

    def __str__(self) -> str:
        parts = [p for p in (self.where, f"field '{self.field}'" if self.field else "") if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message
