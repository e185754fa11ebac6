"""load_yaml builds exactly what ``yaml.load(text, Loader=CSafeLoader)`` builds: same values, same
types, same shared objects, same errors, on the YAML 1.1 corner cases."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from tenancy.spec import text as text_module
from tenancy.spec.yaml_loading import SAFE_LOADER, load_yaml, load_yaml_and_strings
from tests.conftest import PROJECT_DIR

CORNER_CASES = [
    "",
    "# only a comment\n",
    "---\n",
    "~",
    "null",
    "a: ~\nb: null\nc: Null\nd: NULL\ne:\n",
    "[yes, no, on, off, y, n, true, False, TRUE, Yes, ON, Off]",
    "[0o17, 0x1F, 017, 0b101, 1_000, -0x1f, +12, 190:20:30, 0, -0, 08, 09.5]",
    "[.inf, -.Inf, +.INF, .nan, .NaN, 1e3, 1.5e-3, 6.8523015e+5, 685.230_15e+03, 190:20:30.15, 1., .5]",
    "[2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10 -5, 2002-12-14, 2001-12-15T02:59:43.1Z,"
    " 2001-12-14 21:59:43.10, 2001-12-15 2:59:43.10]",
    "!!binary R0lGODlhDAAMAIQAAP//9/X17unp5WZmZgAAAOfn515eXvPz7Y6OjuDg4J+fn5",
    "!!set {a, b, c}",
    "!!omap [a: 1, b: 2]",
    "!!pairs [a: 1, a: 2]",
    "a: !!str 123\nb: !!int '42'\nc: !!float '1'\nd: !!bool 'yes'\ne: !!null ''\n",
    "a: '123'\nb: \"yes\"\nc: |\n  line\n  two\nd: >\n  folded\n  text\n",
    "a: 1\na: 2\nb: 3\n",
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
    "- &a [1, 2]\n- *a\n",
    "- &s hello\n- *s\n",
    "&r [*r]",
    "a: &m {k: v}\nb: *m\n",
    "merge:\n  - &A {a: 1}\n  - &B {b: 2}\n  - <<: [*A, *B]\n    c: 3\n",
    "=: value\n",
    "a: =\n",
    "? [1, 2]\n: pair key\n",
    "? {a: 1}\n: mapping key\n",
    "{1: one, 2.5: two, true: three, ~: four, 2001-01-01: five}",
    "!local {a: 1}",
    "a: !custom x",
    'tabs: "a\\tb\\x1b\\u200e"',
    "a: 1\n---\nb: 2\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "key: *undefined\n",
    "- !!int abc\n",
    "- !!timestamp yesterday\n",
    "- !!float x\n",
    "[]",
    "{}",
    "plain string",
    "'quoted'",
    "- - - deep\n",
    "\ufeffbom: yes\n",
    "a: 'R&D * team'\nschedule: '0 3 * * *'\n",
    "- !!map {a: 1}\n- !!seq [1]\n- !!str\n",
    "<<: {a: 1}\n",
    "a: !!merge <<\n",
]


def _same(left: Any, right: Any, seen: set[tuple[int, int]] | None = None) -> bool:
    """Equal values of identical types, recursively (NaN equals NaN; recursive lists end)."""
    seen = set() if seen is None else seen
    if type(left) is not type(right):
        return False
    if isinstance(left, dict | list) and (id(left), id(right)) in seen:
        return True
    seen.add((id(left), id(right)))
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[k], right[k], seen) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(_same(a, b, seen) for a, b in zip(left, right, strict=True))
    if isinstance(left, set):
        return left == right
    return bool(left == right)


def _outcome(load: Any, text: str | bytes) -> tuple[str, Any]:
    try:
        return "value", load(text)
    except Exception as error:  # the error itself is compared
        return "error", (type(error), str(error))


def _pyyaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SAFE_LOADER)


@pytest.mark.parametrize("text", CORNER_CASES)
def test_values_and_errors_are_pyyamls(text: str) -> None:
    expected, got = _outcome(_pyyaml, text), _outcome(load_yaml, text)
    assert expected[0] == got[0], (expected, got)
    if expected[0] == "error":
        assert got == expected
    else:
        assert _same(expected[1], got[1]), (expected, got)
    bytes_expected, bytes_got = _outcome(_pyyaml, text.encode()), _outcome(load_yaml, text.encode())
    assert bytes_got[0] == bytes_expected[0]
    if bytes_expected[0] == "value":
        assert _same(bytes_expected[1], bytes_got[1])


def test_aliased_collections_stay_one_object_and_recursion_works() -> None:
    shared = load_yaml("a: &m {k: v}\nb: *m\n")
    assert shared["a"] is shared["b"]
    recursive = load_yaml("&r [*r]")
    assert recursive[0] is recursive


def test_every_yaml_file_of_the_project_loads_as_pyyaml_loads_it() -> None:
    files = [
        path
        for path in sorted(PROJECT_DIR.rglob("*.yaml"))
        if not {".venv", "node_modules", ".git"} & set(path.parts)
    ]
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        expected, got = _outcome(_pyyaml, text), _outcome(load_yaml, text)
        assert expected[0] == got[0], path
        if expected[0] == "value":
            assert _same(expected[1], got[1]), path


def test_plain_documents_are_built_without_pyyamls_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken for tenant files (else the identity above would prove nothing)."""
    texts = [path.read_text(encoding="utf-8") for path in sorted((PROJECT_DIR / "tenants").glob("*/*.yaml"))]
    expected = [_pyyaml(text) for text in texts]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PyYAML's constructor was used")

    monkeypatch.setattr(SAFE_LOADER, "construct_document", refuse)
    assert [load_yaml(text) for text in texts] == expected
    with pytest.raises(AssertionError, match="constructor was used"):
        load_yaml("base: &b {x: 1}\nderived: {<<: *b}\n")


@pytest.mark.parametrize("text", CORNER_CASES)
def test_the_strings_given_with_a_document_hold_each_of_its_strings(text: str) -> None:
    """load_yaml_and_strings' list lets the tenant check skip its walk: it must miss no string (keys
    included); None, when PyYAML's constructor built the document, sends the check to its walk."""
    if _outcome(_pyyaml, text)[0] == "error":
        return  # the same error: test_values_and_errors_are_pyyamls
    document, strings = load_yaml_and_strings(text)
    assert _same(_pyyaml(text), document)
    if strings is not None:
        found = text_module._all_strings(document)
        assert found is not None and set(found) <= set(strings), (found, strings)


def test_strings_come_with_the_plain_documents_of_tenant_files() -> None:
    for path in sorted((PROJECT_DIR / "tenants").glob("*/*.yaml")):
        document, strings = load_yaml_and_strings(path.read_text(encoding="utf-8"))
        assert strings is not None and sorted(strings) == sorted(text_module._all_strings(document) or [])
    document, strings = load_yaml_and_strings('a: x\na: "\\e"\n')  # a key given twice: both values
    assert document == {"a": "\x1b"} and sorted(strings or []) == ["\x1b", "a", "a", "x"]
