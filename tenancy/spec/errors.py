"""Errors a person can act on: which file, which field, what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class SpecIssue:
    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        field = self.field or "(file)"
        return f"{self.file}: {field}: {self.reason}"


class SpecError(Exception):
    """One or more problems with specs or config; ``issues`` lists each one."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def issues_from_validation_error(error: ValidationError, *, file: str, prefix: str = "") -> list[SpecIssue]:
    """Turn pydantic's errors into SpecIssues whose field is a dotted path as written in the file."""
    issues = []
    for detail in error.errors():
        parts = [str(part) for part in detail["loc"]]
        path = ".".join(parts)
        field = f"{prefix}{path}" if prefix.endswith(":") else ".".join(filter(None, [prefix, path]))
        reason = detail["msg"]
        if detail["type"] == "extra_forbidden":
            reason = "unknown key; check the spelling against the documented fields"
        elif detail["type"] == "missing":
            reason = "required field is missing"
        else:
            reason = reason.removeprefix("Value error, ")
        issues.append(SpecIssue(file=file, field=field, reason=reason))
    return issues
