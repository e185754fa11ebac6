"""Starting a Qdrant key rotation: the next ``qdrant.keyRotation`` record of a tenant document.

Pure functions the API, the CLI and the portal share. ``begin_rotation`` refuses a rotation while the
previous generation's grace period runs (its keys would be dropped without a grace period) and a grace
period outside the bounds, and returns the document with the next generation recorded.
``end_grace`` records the revocation (``revokedAt``) once the grace period is over: the Pulumi program
reads only the file, never the clock, so ending the grace is a commit like any other change.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tenancy.spec.tenant import parse_utc_time

DEFAULT_GRACE = timedelta(hours=1)
# At least the time a rolling restart of a large tenant may take before clients can act; at most a week,
# so an old key never lingers.
MIN_GRACE = timedelta(minutes=15)
MAX_GRACE = timedelta(days=7)
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class RotationRefused(ValueError):
    """Why a rotation cannot start; ``code`` is stable for callers that map errors."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_grace(text: str) -> timedelta:
    """``90m``, ``1h``, ``2d``: a grace period within the bounds, or RotationRefused naming them."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise RotationRefused("invalid_grace", f"grace period '{text}' is not a duration like 30m, 1h or 2d")
    grace = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if not MIN_GRACE <= grace <= MAX_GRACE:
        raise RotationRefused(
            "invalid_grace", f"grace period '{text}' must be between 15m and 7d (15 minutes to 7 days)"
        )
    return grace


def begin_rotation(
    document: dict[str, Any], *, now: datetime, grace: timedelta, requested_by: str
) -> dict[str, Any]:
    """The tenant document with the next key generation recorded (the input is left unchanged)."""
    if not MIN_GRACE <= grace <= MAX_GRACE:
        raise RotationRefused(
            "invalid_grace", "grace period must be between 15m and 7d (15 minutes to 7 days)"
        )
    qdrant = document.get("qdrant") or {}
    if not qdrant.get("enabled"):
        raise RotationRefused(
            "qdrant_not_enabled", f"tenant {document.get('name')} has no Qdrant: no keys to rotate"
        )
    current = qdrant.get("keyRotation")
    if current is not None and in_grace(current, now=now):
        raise RotationRefused(
            "rotation_in_progress",
            f"a key rotation is in progress until {current['graceUntil']}: the keys of generation "
            f"{int(current['generation']) - 1} still work until then; rotate again after it",
        )
    generation = int(current["generation"]) + 1 if current is not None else 1
    result = copy.deepcopy(document)
    result["qdrant"]["keyRotation"] = {
        "generation": generation,
        "startedAt": _utc(now),
        "graceUntil": _utc(now + grace),
        "requestedBy": requested_by,
    }
    return result


def in_grace(record: dict[str, Any], *, now: datetime) -> bool:
    """The previous generation's keys are meant to work at ``now``: not revoked, grace not over."""
    return record.get("revokedAt") is None and now < parse_utc_time(str(record["graceUntil"]))


def grace_due(document: dict[str, Any], *, now: datetime) -> bool:
    """The document's rotation has a grace period that is over but not yet ended by a revocation."""
    qdrant = document.get("qdrant")
    record = qdrant.get("keyRotation") if isinstance(qdrant, dict) else None
    if not isinstance(record, dict) or record.get("revokedAt") is not None:
        return False
    try:
        return now >= parse_utc_time(str(record["graceUntil"]))
    except (KeyError, ValueError):
        return False  # an invalid file is validate's to report, not this function's to revoke


def end_grace(document: dict[str, Any], *, now: datetime) -> dict[str, Any] | None:
    """The document with the previous generation revoked (``revokedAt: now``), or None when there is
    nothing to end yet (no rotation, grace period still running, already revoked)."""
    if not grace_due(document, now=now):
        return None
    result = copy.deepcopy(document)
    result["qdrant"]["keyRotation"]["revokedAt"] = _utc(now)
    return result


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a rotation's times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
