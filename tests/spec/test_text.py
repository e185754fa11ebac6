"""forbidden_characters: the one-search shortcut answers exactly as the walk that names each field."""

from __future__ import annotations

from collections import OrderedDict
from datetime import date, datetime
from typing import Any

import pytest

from tenancy.spec import text
from tenancy.spec.text import forbidden_characters

CLEAN: Any = {
    "name": "acme",
    "owners": ["a@example.com"],
    "qdrant": {"replicas": 3, "ratio": 1.5, "on": True, "none": None, 7: "seven"},
    "when": [date(2026, 1, 1), datetime(2026, 1, 1, 12), b"\x00bytes are not text"],
}
DIRTY = [
    ({"name": "ac\x1bme"}, [("name", "contains the control or formatting character U+001B ESC; remove it")]),
    (
        {"labels": {"te\u202eam": "x\x00"}, "owners": ["ok", "b\u2028"]},
        [
            ("labels", "a key contains the control or formatting character U+202E RIGHT-TO-LEFT OVERRIDE"),
            ("owners.1", "contains the control or formatting character U+2028 LINE SEPARATOR; remove it"),
        ],
    ),
    (
        {"a": [["\ud800"]], 1: {"b": "\t"}},
        [
            ("a.0.0", "contains the control or formatting character U+D800 surrogate; remove it"),
            ("1.b", "contains the control or formatting character U+0009 TAB; remove it"),
        ],
    ),
    ("top\x7f", [("", "contains the control or formatting character U+007F DEL; remove it")]),
    # Types the shortcut does not know go through the walk: a tuple, another Mapping, a set.
    (
        ("x", "y\x85"),
        [("1", "contains the control or formatting character U+0085 control character; remove it")],
    ),
    (
        OrderedDict(k="\x0b"),
        [("k", "contains the control or formatting character U+000B control character; remove it")],
    ),
    ({"s": {"\x00"}}, []),
]


def test_clean_documents_have_no_findings_and_skip_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(*args: object) -> Any:
        raise AssertionError("walked a clean document")

    monkeypatch.setattr(text, "_forbidden_characters", walked)
    assert list(forbidden_characters(CLEAN)) == []


@pytest.mark.parametrize(("data", "expected"), DIRTY)
def test_findings_are_the_walks(data: Any, expected: list[tuple[str, str]]) -> None:
    assert list(forbidden_characters(data)) == expected
    assert list(forbidden_characters(data)) == list(text._forbidden_characters(data, ""))


@pytest.mark.timeout(30)
def test_a_recursive_document_is_walked_as_before_instead_of_spinning() -> None:
    """YAML aliases can make a list contain itself (``owners: &o [a, *o]``): the shortcut went round
    it forever (tenantctl validate, the service's reconcile at start-up); the walk raises as it did."""
    owners: list[Any] = ["a@example.com"]
    owners.append(owners)
    with pytest.raises(RecursionError):
        list(forbidden_characters({"name": "acme", "owners": owners}))
    labels: dict[str, Any] = {"team": "x"}
    labels["self"] = labels
    with pytest.raises(RecursionError):
        list(forbidden_characters({"labels": labels}))


def test_a_shared_alias_is_reported_at_each_place() -> None:
    shared = ["b\x1b"]
    assert list(forbidden_characters({"a": shared, "b": shared})) == [
        ("a.0", "contains the control or formatting character U+001B ESC; remove it"),
        ("b.0", "contains the control or formatting character U+001B ESC; remove it"),
    ]
