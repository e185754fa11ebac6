"""load_yaml builds exactly what ``yaml.load(text, Loader=CSafeLoader)`` builds: same values, same
types, same shared objects, same errors, on the YAML 1.1 corner cases; except that a document that
would contain itself is refused (PyYAML builds a cyclic value nothing after it can walk)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import yaml
from yaml.constructor import ConstructorError

from tenancy.spec import text as text_module
from tenancy.spec.yaml_loading import (
    SAFE_LOADER,
    AliasExpansionError,
    DuplicateKeyError,
    RecursiveAliasError,
    _read_plain,
    load_tenant_yaml,
    load_yaml,
    yaml_problem,
)
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
    # The line reader's subset, and what lies just outside it.
    "# c\nname: acme # c\nowners:\n- a@x.example\n- 'b'\nplan: small\nq:\n  on: 1\n  x:\n    - \"1.34\"\n",
    "a:\n  b:\n    c: [x, 1, yes, ~]\n  d: {}\ne: []\nf: [ ]\n",
    "a: x\n  b: y\n",
    "a:\n    b: 1\n  c: 2\n",
    "a:\n  - x\n  b: 1\n",
    "a:\n- x\n  - y\n",
    "a:\n  text\n",
    "a: b: c\n",
    "a: b:c\nd: e#f\ng: h #i\nj: k  l\nm: n ]\n",
    "a: 'it''s'\nb: \"q\\\"\"\nc: 'x' y\n",
    'a: [a, b,]\nb: [a b]\nc: [a: b]\nd: ["x"]\ne: [a, [b]]\n',
    "yes: 1\n",
    "1: one\n",
    "a: -1\nb: - x\n",
    "a:\n-\n",
    "- a\n- b\n",
    "  a: 1\n  b: 2\n",
    "a: 1\na:\n  b: 2\n",
    "a: 0o17\nb: 1_000\nc: 190:20:30\nd: .inf\ne: 2002-12-14\nf: =\ng: <<\n",
    "a:\tb\n",
    "a: caf\u00e9\n",
    "a: b\r\nc: d\r\n",
    "k" * 1001 + ": v\n",
    "k" * 1030 + ": v\n",
    "---\na: 1\n",
    "a: 1\n...\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: &x 1\nb: *x\n",
    "a: |\n  x\n",
    "a: !!str 1\n",
    "a:   1\nb:\n\n  c: 2\n",
    # A "#" right after a plain scalar is part of it, not a comment: the line reader read "b" here.
    "a: b#  c\n",
    "a: yes#  no\n",
    "a: 1#  2\n",
    "a:\n- b#  c\n",
    "a: b#: c\n",
    "a: y#:\ny:  1n",
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


# Corner cases that give a key twice: load_yaml keeps the last value as PyYAML does; a tenant file
# refuses them (test_a_tenant_file_may_not_give_a_key_twice).
DUPLICATE_KEYS = ("a: 1\na: 2\nb: 3\n", "a: 1\na:\n  b: 2\n")


@pytest.mark.parametrize("text", CORNER_CASES)
def test_values_and_errors_are_pyyamls(text: str) -> None:
    expected = _outcome(_pyyaml, text)
    loaders = [load_yaml] if text in DUPLICATE_KEYS else [load_yaml, lambda text: load_tenant_yaml(text)[0]]
    for got in (_outcome(load, text) for load in loaders):
        assert expected[0] == got[0], (expected, got)
        if expected[0] == "error" and expected[1][0] is ValueError:  # a YAML error at the scalar instead
            assert got[1][0] is ConstructorError and expected[1][1] in got[1][1], (expected, got)
        elif expected[0] == "error":
            assert got == expected
        else:
            assert _same(expected[1], got[1]), (expected, got)
    bytes_expected, bytes_got = _outcome(_pyyaml, text.encode()), _outcome(load_yaml, text.encode())
    assert bytes_got[0] == bytes_expected[0]
    if bytes_expected[0] == "value":
        assert _same(bytes_expected[1], bytes_got[1])


def test_aliased_collections_stay_one_object() -> None:
    shared = load_yaml("a: &m {k: v}\nb: *m\nc: [*m, *m]\n")
    assert shared["a"] is shared["b"] is shared["c"][0] is shared["c"][1]


@pytest.mark.parametrize(
    ("text", "alias_at", "anchor_line"),
    [
        ("&r [*r]", "0", 1),
        ("a: &x [*x]\n", "a.0", 1),
        ("a: &x {b: *x}\n", "a.b", 1),
        (
            "owners: []\nqdrant:\n  storage: &s\n    extra: [1, {again: *s}]\n",
            "qdrant.storage.extra.1.again",
            3,
        ),
        ("base: &b {x: 1}\nloop: &l\n  <<: *b\n  self: *l\n", "loop.self", 2),
        ("? &k [*k]\n: 1\n", "(a key).0", 1),
    ],
)
def test_a_document_that_contains_itself_is_a_yaml_error_naming_the_alias(
    text: str, alias_at: str, anchor_line: int
) -> None:
    assert _outcome(_pyyaml, text)[0] == ("error" if text.startswith("?") else "value")  # a cyclic one
    with pytest.raises(RecursiveAliasError) as caught:
        load_yaml(text)
    assert isinstance(caught.value, yaml.YAMLError)
    problem = yaml_problem(caught.value)
    assert problem.startswith(f"line {anchor_line}, column ")
    assert f"a YAML alias refers to itself: the node anchored here holds the alias at {alias_at}," in problem


def test_shared_and_merged_anchors_are_no_recursion() -> None:
    text = "base: &b {x: [1, 2]}\none: {<<: *b, y: *b}\ntwo: [*b, {<<: *b}]\n"
    assert _same(load_yaml(text), _pyyaml(text))
    # The walk is not recursive: a deep document with an alias (so walked) loads as PyYAML's does.
    deep = load_yaml("a: " + "[" * 3000 + "]" * 3000 + "\nb: &x 1\nc: *x\n")
    level, depth = deep["a"], 1
    while level:
        [level] = level
        depth += 1
    assert depth == 3000 and deep["c"] == 1


def test_every_yaml_file_of_the_project_loads_as_pyyaml_loads_it() -> None:
    files = [
        path
        for path in sorted(PROJECT_DIR.rglob("*.yaml"))
        if not {".venv", "node_modules", ".git"} & set(path.parts)
    ]
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        expected = _outcome(_pyyaml, text)
        for got in (_outcome(load_yaml, text), _outcome(lambda text: load_tenant_yaml(text)[0], text)):
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
    """load_tenant_yaml' list lets the tenant check skip its walk: it must miss no string (keys
    included); None, when PyYAML's constructor built the document, sends the check to its walk."""
    if _outcome(_pyyaml, text)[0] == "error" or text in DUPLICATE_KEYS:
        return  # the same error: test_values_and_errors_are_pyyamls; refused: below
    document, strings = load_tenant_yaml(text)
    assert _same(_pyyaml(text), document)
    if strings is not None:
        found = text_module._all_strings(document)
        assert found is not None and set(found) <= set(strings), (found, strings)


def test_strings_come_with_the_plain_documents_of_tenant_files() -> None:
    for path in sorted((PROJECT_DIR / "tenants").glob("*/*.yaml")):
        document, strings = load_tenant_yaml(path.read_text(encoding="utf-8"))
        assert strings is not None and sorted(strings) == sorted(text_module._all_strings(document) or [])


def _generated_documents(count: int, seed: int) -> list[str]:
    """Documents near tenant files, from a fixed seed: nested block mappings and sequences of
    values in and just outside the line reader's subset, with comments and stray lines."""
    rng = random.Random(seed)
    keys = ["a", "name", "x.y/z", "cost-center", "_k", "K", "yes", "n", "1", "null", "<<", "a b", "-k"]
    good = ["x", "1", "0o17", "017", "1.5", "No", "~", "null", "2001-12-14", "a:b", "a#c", "x]", "[]", "{}"]
    good += ["'q'", '"dq"', ".inf", "+1", "190:20:30", "500m", '"1.34"', "/x/y", "https://x.y/z", "(a)", "$x"]
    good += ["a{b}", "0", ".NaN", "y", "off", "x\\y", "a #c", "[a, b]", "[ ]", "[yes, 1, x]", "Acme, Inc."]
    tricky = ["'it''s'", "&a", "*a", "-1", "?", "%x", "@x", "`x", "=", "<<", "a:", "#c", "'", '"', "a: b"]
    tricky += ["[a,b,]", "[a b]", "{a: 1}", '"a\\tb"', "!!str 1", "- x", "a  b", "", "\t x", "caf\u00e9"]

    def value() -> str:
        return rng.choice(good) if rng.random() < 0.93 else rng.choice(tricky)

    def block(depth: int, indent: int, out: list[str]) -> None:
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(keys[:6]) if rng.random() < 0.9 else rng.choice(keys)
            key = key if rng.random() < 0.97 else "k" * rng.choice([999, 1000, 1001, 1030])
            roll = rng.random()
            if roll < 0.5 or depth > 2:
                separator = ": " if rng.random() < 0.9 else rng.choice([":", ":  ", " : "])
                out.append(" " * indent + key + separator + value())
            elif roll < 0.75:
                out.append(" " * indent + key + rng.choice([":", ": # c", ":  "]))
                block(depth + 1, indent + rng.choice([0, 1, 2, 4]), out)
            else:
                out.append(" " * indent + key + ":")
                items = indent + rng.choice([0, 0, 2, 3])
                for _ in range(rng.randint(1, 3)):
                    out.append(
                        " " * items + ("- " if rng.random() < 0.9 else rng.choice(["-", "-  "])) + value()
                    )
            if rng.random() < 0.05:
                out.append(" " * rng.randint(0, 4) + rng.choice(["# note", "", "---", "? a", "- x", "x"]))

    documents = []
    for _ in range(count):
        lines: list[str] = []
        block(0, rng.choice([0, 0, 0, 2]), lines)
        documents.append("\n".join(lines) + rng.choice(["", "\n", "\n\n"]))
    return documents


def test_the_line_reader_builds_what_pyyaml_builds_or_leaves_the_document_to_libyaml() -> None:
    """_read_plain must never accept a document PyYAML refuses or build one differently: it answers
    None for anything it is not sure of, and libyaml parses that."""
    taken = 0
    for text in _generated_documents(3000, seed=11) + CORNER_CASES:
        read = _read_plain(text)
        if read is None:
            continue
        taken += 1
        expected = _outcome(_pyyaml, text)
        assert expected[0] == "value", (text, expected)
        assert _same(expected[1], read[0]), (text, expected, read)
        found = text_module._all_strings(read[0])
        assert found is not None and set(found) <= set(read[1]), (text, read)
    assert taken > 300  # the generator reaches the subset often enough to prove something


def test_tenant_files_are_read_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [path.read_text(encoding="utf-8") for path in sorted((PROJECT_DIR / "tenants").glob("*/*.yaml"))]
    expected = [_pyyaml(text) for text in texts]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("libyaml parsed it")

    monkeypatch.setattr(SAFE_LOADER, "get_single_node", refuse)
    assert [load_tenant_yaml(text)[0] for text in texts] == expected
    with pytest.raises(AssertionError, match="libyaml parsed it"):
        load_tenant_yaml("a: &x 1\n")
    with pytest.raises(AssertionError, match="libyaml parsed it"):
        load_yaml(texts[0])  # other files go to libyaml directly


@pytest.mark.parametrize(
    "text",
    [
        "a: 2001-13-45\nb: c: d\n",  # a scalar PyYAML resolves and cannot build, then a syntax error
        "a: 0b_\n---\nb: 1\n",
        "a: [0x_]\nb: [\n",
        "a: 2001-02-30\nb: 'x\n",
    ],
)
def test_a_syntax_error_after_an_unbuildable_scalar_is_reported_as_pyyaml_reports_it(text: str) -> None:
    """libyaml parses the whole text before building a value, so the syntax error is the one raised;
    the line reader built values line by line and raised the constructor's ValueError first."""
    expected = _outcome(_pyyaml, text)
    assert expected[0] == "error" and issubclass(expected[1][0], yaml.YAMLError)
    assert _outcome(lambda text: load_tenant_yaml(text)[0], text) == expected
    assert _outcome(load_yaml, text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 1\nsince: 2001-02-30\n", "line 2, column 8: '2001-02-30' is not a valid timestamp: day is out"),
        ("a: [1, 0x_]\n", "line 1, column 8: '0x_' is not a valid int: invalid literal for int()"),
        ("a: 1\n2001-13-01: x\n", "line 2, column 1: '2001-13-01' is not a valid timestamp: month must"),
        ("a: !!float abc\n", "line 1, column 4: 'abc' is not a valid float: could not convert"),
    ],
)
def test_a_scalar_that_cannot_be_built_is_a_yaml_error_at_its_line(text: str, problem: str) -> None:
    """PyYAML's constructors raise a bare ValueError there, which no caller reports as a YAML error
    (tenantctl validate ended in a traceback)."""
    assert _outcome(_pyyaml, text)[1][0] is ValueError
    for load in (load_yaml, lambda text: load_tenant_yaml(text)[0]):
        with pytest.raises(yaml.YAMLError) as raised:
            load(text)
        assert yaml_problem(raised.value).startswith(problem)


def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_a_document_beyond_the_limit_are_a_yaml_error() -> None:
    """A few hundred bytes of nested aliases ("billion laughs") PyYAML builds as shared objects, which
    every later check walks as a tree: tenantctl validate ran for hours on one."""
    for load in (load_yaml, lambda text: load_tenant_yaml(text)[0]):
        with pytest.raises(AliasExpansionError) as raised:
            load(_laughs(9))
        assert yaml_problem(raised.value).startswith(
            "line 1, column 1: the document's aliases repeat its anchored values 1,234,567,880 times"
        )
        assert isinstance(raised.value, yaml.YAMLError)
        assert len(str(load(_laughs(4)))) > 10_000  # 11,110 values: aliases within the limit load


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (DUPLICATE_KEYS[0], "line 2, column 1: a is given twice in one mapping (first at line 1)"),
        (DUPLICATE_KEYS[1], "line 2, column 1: a is given twice in one mapping (first at line 1)"),
        # the line reader's subset, and a document it leaves to libyaml (an anchor), nested
        ("q:\n  r: 1\n  r: 3\nz: 1\nz: 2\n", "line 3, column 3: q.r is given twice"),
        ("l: &l {t: a}\nq:\n  - {r: 1, r: 3}\n", "line 3, column 12: q.0.r is given twice"),
    ],
)
def test_a_tenant_file_may_not_give_a_key_twice(text: str, problem: str) -> None:
    with pytest.raises(DuplicateKeyError) as raised:
        load_tenant_yaml(text)
    assert yaml_problem(raised.value).startswith(problem), yaml_problem(raised.value)
    assert _read_plain(text) is None


def test_a_key_beside_a_merge_overrides_it_and_aliases_are_walked_once() -> None:
    text = "d: &d {enabled: true, replicas: 1}\nq:\n  <<: *d\n  replicas: 2\nr: [*d, *d]\n"
    assert load_tenant_yaml(text)[0]["q"] == {"enabled": True, "replicas": 2} == _pyyaml(text)["q"]
