"""The next key-rotation record: one generation at a time, never during a grace period, bounded grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenancy.spec.rotation import RotationRefused, begin_rotation, parse_grace
from tenancy.spec.tenant import parse_tenant

NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


def document() -> dict[str, Any]:
    return {"name": "acme", "owners": ["a@acme.example"], "plan": "small", "qdrant": {"enabled": True}}


def test_first_rotation_records_generation_one_and_a_valid_file() -> None:
    rotated = begin_rotation(document(), now=NOW, grace=timedelta(hours=1), requested_by="alice@acme.example")
    assert rotated["qdrant"]["keyRotation"] == {
        "generation": 1,
        "startedAt": "2026-12-06T14:00:00Z",
        "graceUntil": "2026-12-06T15:00:00Z",
        "requestedBy": "alice@acme.example",
    }
    assert "keyRotation" not in document()["qdrant"]
    parse_tenant(rotated, file="acme.yaml")  # the record is a valid tenant file


def test_a_rotation_during_the_grace_period_is_refused_and_after_it_advances() -> None:
    first = begin_rotation(document(), now=NOW, grace=timedelta(hours=1), requested_by="a")
    with pytest.raises(RotationRefused) as refused:
        begin_rotation(first, now=NOW + timedelta(minutes=59), grace=timedelta(hours=1), requested_by="b")
    assert refused.value.code == "rotation_in_progress" and "2026-12-06T15:00:00Z" in str(refused.value)
    second = begin_rotation(first, now=NOW + timedelta(hours=1), grace=timedelta(hours=1), requested_by="b")
    assert second["qdrant"]["keyRotation"]["generation"] == 2


@pytest.mark.parametrize("text", ["1m", "8d", "soon", "-1h", "1.5h"])
def test_grace_out_of_bounds_or_unreadable_is_refused(text: str) -> None:
    with pytest.raises(RotationRefused) as refused:
        parse_grace(text)
    assert refused.value.code == "invalid_grace" and text in str(refused.value)


def test_the_bounds_are_named_as_a_person_writes_them_and_match_the_limits() -> None:
    """Found by an outside journey review: the message read "between 0:15:00 and 7 days, 0:00:00"."""
    from tenancy.spec.rotation import MAX_GRACE, MIN_GRACE

    with pytest.raises(RotationRefused) as refused:
        parse_grace("10m")
    assert "must be between 15m and 7d" in str(refused.value) and "0:15:00" not in str(refused.value)
    assert parse_grace("15m") == MIN_GRACE and parse_grace("7d") == MAX_GRACE


def test_grace_in_bounds_parses() -> None:
    assert parse_grace("90m") == timedelta(minutes=90) and parse_grace("7d") == timedelta(days=7)


def test_a_tenant_without_qdrant_has_nothing_to_rotate() -> None:
    with pytest.raises(RotationRefused) as refused:
        begin_rotation(
            {**document(), "qdrant": {"enabled": False}}, now=NOW, grace=timedelta(hours=1), requested_by="a"
        )
    assert refused.value.code == "qdrant_not_enabled"


def test_the_grace_ends_by_recording_the_revocation_once_it_is_over() -> None:
    from tenancy.spec.rotation import end_grace

    first = begin_rotation(document(), now=NOW, grace=timedelta(hours=1), requested_by="a")
    assert end_grace(first, now=NOW + timedelta(minutes=59)) is None
    ended = end_grace(first, now=NOW + timedelta(hours=1, seconds=5))
    assert ended is not None
    assert ended["qdrant"]["keyRotation"]["revokedAt"] == "2026-12-06T15:00:05Z"
    assert "revokedAt" not in first["qdrant"]["keyRotation"]  # the input is left unchanged
    assert end_grace(ended, now=NOW + timedelta(hours=2)) is None  # once only
    assert end_grace(document(), now=NOW) is None  # never rotated: nothing to end
    parse_tenant(ended, file="acme.yaml")


def test_a_revoked_rotation_may_be_followed_at_once() -> None:
    from tenancy.spec.rotation import end_grace

    first = begin_rotation(document(), now=NOW, grace=timedelta(hours=1), requested_by="a")
    ended = end_grace(first, now=NOW + timedelta(hours=1))
    assert ended is not None
    second = begin_rotation(ended, now=NOW + timedelta(hours=1), grace=timedelta(hours=1), requested_by="b")
    assert second["qdrant"]["keyRotation"]["generation"] == 2
    assert "revokedAt" not in second["qdrant"]["keyRotation"]
