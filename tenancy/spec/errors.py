"""Errors a person can act on: which file, which field, what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class SpecIssue:
    file: str
    field: str
    reason: str
    # What ``file`` names: a file (an issue of the whole file reads "(file)" as its field), or something
    # else ("directory", "revision"), whose issue has no field to name.
    subject: str = "file"

    def __str__(self) -> str:
        if not self.field and self.subject != "file":
            return f"{self.file}: {self.reason}"
        field = self.field or "(file)"
        return f"{self.file}: {field}: {self.reason}"


class SpecError(Exception):
    """One or more problems with specs or config; ``issues`` lists each one."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


_STRICT_TYPES = {
    "int_type": "must be a whole number (written without quotes)",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "float_type": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


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
        elif detail["type"] in _STRICT_TYPES:
            # Strict types: say what was sent instead (its kind only: the value may be a secret).
            reason = f"{_STRICT_TYPES[detail['type']]}, not {_kind(detail.get('input'))}"
            if detail["type"] == "string_type" and isinstance(detail.get("input"), int | float):
                # A version written bare: YAML reads 1.30 as the number 1.3, so say how to keep it.
                reason += "; write it in quotes (YAML reads an unquoted 1.30 as the number 1.3)"
        else:
            reason = reason.removeprefix("Value error, ")
        issues.append(SpecIssue(file=file, field=field, reason=reason))
    return issues
