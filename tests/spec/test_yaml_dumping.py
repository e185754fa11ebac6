"""dump_tenant_yaml writes exactly what ``yaml.dump(..., Dumper=CSafeDumper, sort_keys=False,
default_flow_style=False, allow_unicode=True)`` writes, the text every PUT and PATCH commits: on
every tenant file of the project, on the strings libyaml quotes or folds, and on generated
documents; and it writes the tenant files itself, without PyYAML."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from tenancy.service.core.tenants_repo import dump_document
from tenancy.spec import yaml_dumping
from tenancy.spec.tenant import parse_tenant
from tenancy.spec.yaml_dumping import dump_tenant_yaml
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR


def _pyyaml(document: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(document, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _tenant_documents() -> list[dict[str, Any]]:
    paths = sorted((PROJECT_DIR / "tenants").glob("*/*.yaml"))
    assert len(paths) >= 4
    return [parse_tenant(load_yaml(path.read_text()), file=str(path)).to_document() for path in paths]


def test_tenant_files_are_written_as_pyyaml_writes_them_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    documents = _tenant_documents()
    expected = [_pyyaml(document) for document in documents]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PyYAML wrote it")

    monkeypatch.setattr(yaml_dumping.yaml, "dump", refuse)
    assert [dump_tenant_yaml(document) for document in documents] == expected
    assert [dump_document(document) for document in documents] == expected  # what a write commits
    with pytest.raises(AssertionError, match="PyYAML wrote it"):
        dump_tenant_yaml({"displayName": "two  spaces"})  # anything unsure goes to PyYAML


SHARED = {"a": 1}
CORNER_CASES: list[dict[str, Any]] = [
    {},
    {"a": {}, "b": [], "c": [{}, []], "d": None, "e": True, "f": False, "g": -3, "h": 1.5},
    {"n": "1.33", "m": "1", "y": "yes", "o": "On", "t": "~", "d": "2026-01-01", "x": "0x1F", "s": "12:30"},
    {"e": "", "sp": " lead", "tr": "trail ", "two": "a  b", "q": "it's", "dq": 'say "hi"', "u": "é"},
    {"i": "-x", "q": "?x", "c": ":x", "h": "#x", "a": "&x", "s": "*x", "b": "!x", "p": "|x", "at": "@x"},
    {"colon": "a: b", "end": "a:", "url": "https://github.com/acme/x.git", "hash": "a #b"},
    {"cron": "0 3 * * *", "version": "v1.12.4", "cpu": "500m"},
    {"long": "word " * 15 + "end", "longer": "word " * 20, "nospace": "x" * 120},
    {"k" * 70: "v" * 9, "k" * 70 + "x": "v" * 9},
    {"nested": {"deeper": {"list": [[1, [2, 3]], {"a": [4], "b": {"c": "d"}}, [{"e": 5}]]}}},
    {"x": SHARED, "y": SHARED},
    {1: "int key", "b": "c"},
    {"null": None, "=": "=", "<<": "<<", "tab": "a\tb", "nl": "a\nb"},
    {"groups": {"admins": ["/tenants/acme/admins"]}, "labels": {"app.kubernetes.io/part-of": "acme"}},
]


@pytest.mark.parametrize("document", CORNER_CASES)
def test_corner_cases_are_written_as_pyyaml_writes_them(document: dict[str, Any]) -> None:
    assert dump_tenant_yaml(document) == _pyyaml(document)


_WORDS = [
    "acme", "owner@acme.example", "1.12.4", "500m", "2Gi", "0", "*", "/tenants/acme/admins", "a:b",
    "a:", ":a", "x-y", "-x", "(x)", "~", "=", "no", "On", "1_0", "0o7", "1.5", "2026-01-01T00:00:00Z",
    ".a", "_a", "@x", "#x", "x#y", "it's", "é", "a,b", "[x]", "{x}",
]  # fmt: skip


def _generated(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def string() -> str:
        words = rng.randint(1, 4) if rng.random() < 0.9 else rng.randint(8, 16)
        separator = " " if rng.random() < 0.9 else rng.choice(["  ", ", ", ": ", " #", "\n"])
        return separator.join(rng.choice(_WORDS) for _ in range(words))

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth < 4 and roll < 0.25:
            return {string(): value(depth + 1) for _ in range(rng.randint(0, 4))}
        if depth < 4 and roll < 0.4:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice([string(), string(), rng.randint(-5, 10**6), True, None])

    return [{string(): value(0) for _ in range(rng.randint(1, 5))} for _ in range(count)]


def test_generated_documents_are_written_as_pyyaml_writes_them() -> None:
    written_alone = 0
    for document in _generated(3000, seed=7):
        assert dump_tenant_yaml(document) == _pyyaml(document), document
        try:
            yaml_dumping._mapping(document, "", "", [], set())
        except yaml_dumping._NotPlain:
            continue
        written_alone += 1
    assert written_alone > 100  # the generator reaches what it writes itself often enough to prove something
