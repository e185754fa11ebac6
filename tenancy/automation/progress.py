"""Plain-text renderings of progress events and summaries, shared by the CLI's plain output, its
live display and logs. Pure functions: data in, text out."""

from __future__ import annotations

from collections.abc import Mapping

from tenancy.automation.contract import Operation, OperationStatus, ProgressEvent

# Verbs in the order people read a change summary; anything else follows alphabetically.
_CHANGE_WORDS = {
    "create": "created",
    "update": "updated",
    "replace": "replaced",
    "delete": "deleted",
    "refresh": "refreshed",
    "read": "read",
    "same": "unchanged",
}
_PREVIEW_WORDS = {
    "create": "to create",
    "update": "to update",
    "replace": "to replace",
    "delete": "to delete",
    "same": "unchanged",
}
# Steps that change nothing, left out of per-resource progress lines.
QUIET_OPS = frozenset({"same", "read", "refresh"})


def describe_changes(changes: Mapping[str, int], *, planned: bool = False) -> str:
    """``{"create": 3, "same": 10}`` -> ``"3 created, 10 unchanged"`` (``"3 to create"`` when planned)."""
    words = _PREVIEW_WORDS if planned else _CHANGE_WORDS
    ordered = [key for key in words if changes.get(key)]
    ordered += sorted(key for key in changes if key not in words and changes[key])
    parts = [f"{changes[key]} {words.get(key, key)}" for key in ordered]
    return ", ".join(parts) if parts else "no changes"


def describe_event(event: ProgressEvent) -> str:
    """One line per event, e.g. ``create kubernetes:core/v1:Namespace acme-namespace: done``."""
    if event.kind == "resource":
        text = " ".join(part for part in (event.op, event.resource) if part)
        return f"{text}: {event.status}" if event.status else text
    label = {"diagnostic": "", "recovery": "recovery", "summary": "summary"}.get(event.kind, event.kind)
    message = event.message or event.status or ""
    return f"{label}: {message}" if label else message


def describe_outcome(operation: Operation) -> str:
    """``up dev.acme succeeded in 12.3s: 3 created`` / ``... failed: <actionable error>``."""
    head = f"{operation.kind.value} {operation.stack.name}"
    summary = operation.summary
    if operation.status is OperationStatus.superseded:
        return f"{head} superseded by operation {operation.superseded_by} (a newer request for the stack)"
    if summary is None:
        return f"{head} {operation.status.value}"
    took = f" in {summary.duration_seconds:.1f}s"
    recovered = " (recovered the stack from an interrupted update first)" if summary.recovered else ""
    if operation.status is OperationStatus.failed:
        return f"{head} failed{took}{recovered}: {summary.error or 'see its events'}"
    changes = describe_changes(summary.changes, planned=operation.kind.value == "preview")
    return f"{head} {operation.status.value}{took}{recovered}: {changes}"
