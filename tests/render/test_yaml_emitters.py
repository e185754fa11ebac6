"""Render writes YAML with libyaml's emitter where it gives PyYAML's bytes, and PyYAML's elsewhere.

Output must stay byte-stable whichever emitter runs: ``dump_yaml`` is compared with the PyYAML-only
path over strings built from the characters and shapes where the two emitters are known to differ.
"""

from __future__ import annotations

import random

import pytest

from tenancy.render.write import dump_yaml, emits_identically

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
