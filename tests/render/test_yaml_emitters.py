"""Render writes YAML with libyaml's emitter where it gives PyYAML's bytes, and PyYAML's elsewhere.

Output must stay byte-stable whichever emitter runs: ``dump_yaml`` is compared with the PyYAML-only
path over strings built from the characters and shapes where the two emitters are known to differ.
"""

from __future__ import annotations

import random

import pytest
import yaml

from tenancy.render.write import _plain_node, dump_yaml, emits_identically

PIECES = [
    "", " ", "a", "yes", "null", "~", "1", "1.0", "0x1f", "-", "- a", ": ", "a: b", "#", " #x", "\n",
    "a\n", "a\nb", "a\n\n", "\na", " a\nb", "a \nb", "a\n ", "\t", "é", "日本", "\u2028", "\x85",
    "\ufeff", "\x07", "'", '"', "|", ">", "{", "[", "?", "  lead", "trail  ", "\r", "\r\n", "\U0001d518",
    "\U0001f600", "\ue000", "---", "...", "a\n---\nb", "<<", "2026-01-01", ".inf", "True", "\\",
    "\x7f", "\xa0",
    "a" * 130,
]  # fmt: skip


def _documents(text: str) -> list[object]:
    return [
        {"k": text},
        [text],
        {text: 1},
        {"a": {"b": [text, {"c": text, "d": [1, None, True, 1.5]}]}, "z": text},
    ]


def _texts() -> list[str]:
    chance = random.Random(11)
    return [*PIECES, *("".join(chance.choices(PIECES, k=chance.randint(2, 4))) for _ in range(300))]


def test_dump_yaml_writes_the_bytes_of_pyyamls_emitter_for_any_string() -> None:
    differ = [
        (text, document)
        for text in _texts()
        for document in _documents(text)
        if dump_yaml(document) != dump_yaml(document, fast=False)
    ]
    assert differ == []


def test_the_fast_emitter_is_used_for_ordinary_documents() -> None:
    document = {"metadata": {"name": "qdrant", "labels": {"tenant": "acme"}}, "data": {"run.sh": "a\nb\n"}}
    assert emits_identically(document)
    assert dump_yaml(document) == dump_yaml(document, fast=False)
    assert "run.sh: |\n    a\n    b\n" in dump_yaml(document)


@pytest.mark.parametrize("text", ["😀", "a\x85b", "a\rb", "a\n\n", "\ufeff"])
def test_documents_libyaml_writes_differently_go_through_pyyaml(text: str) -> None:
    assert not emits_identically({"k": text})
    assert not emits_identically({"k": [{"x": text}]})


class _Text(str):
    pass


def _shared() -> dict[str, object]:
    labels = {"tenant": "acme"}
    return {"a": labels, "b": [labels, labels]}


@pytest.mark.parametrize(
    "document",
    [
        _shared(),  # one container twice: PyYAML writes an anchor and an alias
        {"empty": {}, "none": [], "nested": [[], [{}]]},
        {"floats": [0.5, 1e17, -2.5e-8, float("inf"), -float("inf"), float("nan"), -0.0, 3.0]},
        {"ints": [0, -5, 10**30], "bools": [True, False], "none": None},
        {2: "b", 1: "a"},  # keys that are not strings
        {"b": 1, 2: "mixed"},
        [{"kind": "ConfigMap", "data": {"run.sh": "set -e\nexec app\n", "empty": ""}}],
    ],
)
def test_documents_of_every_shape_keep_pyyamls_bytes(document: object) -> None:
    assert dump_yaml(document) == dump_yaml(document, fast=False)


def test_a_value_pyyaml_cannot_represent_fails_as_before() -> None:
    for fast in (True, False):
        with pytest.raises(yaml.representer.RepresenterError):
            dump_yaml({"text": _Text("a subclass")}, fast=fast)


def test_plain_documents_are_written_from_nodes_built_in_one_pass() -> None:
    document = {"metadata": {"name": "qdrant", "labels": {"tenant": "acme"}}, "spec": {"replicas": 3}}
    assert _plain_node(document) is not None
    for other in (_shared(), {2: "b"}, {"text": _Text("x")}, {"k": "😀"}, {"": 1}):
        assert _plain_node(other) is None
