"""One YAML loader for the files tenancy reads: libyaml's when PyYAML was built with it.

``CSafeLoader`` parses about five times faster than the pure-Python ``SafeLoader`` (it was 80% of
``tenantctl validate``, issue #11) and builds the same Python values: both are safe loaders with the
same YAML 1.1 resolvers; only the wording of some syntax errors differs.

libyaml only parses: turning its nodes into values is PyYAML's Python constructor, and that was
half of ``tenantctl validate`` even so. ``load_yaml`` therefore builds the values of the plain
documents tenancy reads (mappings, sequences and scalars with the standard tags) itself, calling
PyYAML's own ``SafeConstructor`` for every scalar that is not a string, and hands the very same node
tree to PyYAML's constructor whenever the document holds anything else: a merge key, a ``=`` key, a
node used twice (anchors and aliases), another tag (``!!set``, ``!!omap``, local tags), a key that
is not a scalar, or any error. No YAML library on the package index gives YAML 1.1 safe-load values
(``yes``/``on`` booleans, sexagesimal and ``0``-octal ints, timestamps, merge keys) faster:
rapidyaml, ryaml and yaml-rs implement YAML 1.2 and other tag rules. ``tests/spec/test_yaml_loading.py``
compares ``load_yaml`` with ``yaml.load(text, Loader=CSafeLoader)`` on the YAML 1.1 corner cases.

Tenant files are simpler still: block mappings of plain keys, with plain or quoted one-line scalars,
block sequences of those, ``[a, b]`` and ``{}``, and comments, in printable ASCII.
``load_tenant_yaml`` reads such a text line by line (``_read_plain``, one regular expression per
line), in about half the time of libyaml's parse and its Python nodes, and gives up (``None``) on
anything else, which then takes the path above: another character, a tab, an anchor, a tag, a block
or multi-line scalar, an indentation it does not expect, a key over 1,000 characters (libyaml's
limit is 1,024), anything it could not build exactly as the safe loader does. Plain scalars are
resolved by the same resolver and cache, and built by the same constructors.
``tests/spec/test_yaml_loading.py`` compares it with PyYAML on generated documents, valid or not.

A document whose alias sits inside the node its anchor names (``a: &x [*x]``) has no finite value:
PyYAML builds a list that contains itself, and every later step (the character check, pydantic, JSON)
recursed into it until RecursionError. ``load_yaml`` refuses it with ``RecursiveAliasError``, a
``yaml.YAMLError`` like a syntax error. The fast path never builds a cycle (it gives up on any node
met twice), so only documents handed to PyYAML's constructor are walked for one. Those are also
refused (``AliasExpansionError``) when their aliases would repeat more than ALIAS_EXPANSION_LIMIT
values ("billion laughs": a few hundred bytes that every check after the parse walks as a tree).

A scalar the resolver gives a type its constructor then refuses (``2001-02-30``, ``0b_``, ``!!float x``)
is a bare ValueError in PyYAML, which callers did not report as a YAML error (``tenantctl validate``
ended in a traceback): it is a ``ConstructorError`` at that scalar's line here. The line reader leaves
such a document to libyaml, which reads the whole text first, so a syntax error after the scalar is
the error reported, as with PyYAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from tenancy.spec.text import forbidden_character

SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_BOOL_VALUES: dict[str, bool] = SAFE_LOADER.bool_values
# Tags whose scalar values PyYAML's SafeConstructor builds from the node alone (no state, no
# generator); every other tag goes to PyYAML's constructor with the whole document.
_SCALAR_CONSTRUCTORS = {
    tag: SAFE_LOADER.yaml_constructors[tag]
    for tag in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:binary",
        "tag:yaml.org,2002:timestamp",
    )
}


class _Loader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """SAFE_LOADER with the tag of each plain scalar remembered by its text: libyaml asks the Python
    resolver for every scalar, and its regular expressions were a fifth of the parse. A plain
    scalar's tag depends on its text alone (the safe loaders have no path resolvers), so keys and
    values that recur across files (``enabled``, ``true``, ``1Gi``) are resolved once."""

    _plain_tags: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0] and not self.yaml_path_resolvers:
            tags = _Loader._plain_tags
            tag = tags.get(value)
            if tag is None:
                if len(tags) >= 4096:  # bounded: unique names and addresses would only pile up
                    tags.clear()
                tag = tags[value] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)

    # libyaml calls these two around every node, and they do nothing without path resolvers, which
    # the safe loaders do not have (``resolve`` above assumes the same): a fifteenth of the parse.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


class RecursiveAliasError(ComposerError):
    """A YAML alias inside the node its anchor names: the document would contain itself."""


def _children(node: Node) -> Iterator[tuple[str, Node]]:
    """(dotted path step, child) of a collection node; keys only when they are collections."""
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield str(index), item
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                yield str(key.value), value
            else:
                yield "(a key)", key
                yield "(a value)", value


def refuse_recursion(root: Node) -> None:
    """Raise RecursiveAliasError when an alias in ``root`` names a node it is inside. Depth-first
    without recursion (a deep document is no error here); a node shared by aliases is walked once."""
    finished: set[int] = set()
    entered = {id(root)}
    frames = [(root, _children(root))]
    path: list[str] = []
    while frames:
        node, children = frames[-1]
        for step, child in children:
            if child.__class__ is ScalarNode or id(child) in finished:
                continue
            if id(child) in entered:
                raise RecursiveAliasError(
                    None,
                    None,
                    f"a YAML alias refers to itself: the node anchored here holds the alias at "
                    f"{'.'.join([*path, step])}, so the document would contain itself; write the "
                    "values out instead of the alias",
                    child.start_mark,  # the anchor's: the composer keeps no mark of the alias
                )
            entered.add(id(child))
            path.append(step)
            frames.append((child, _children(child)))
            break
        else:
            frames.pop()
            entered.discard(id(node))
            finished.add(id(node))
            if path:
                path.pop()


# Values aliases may add to a document beyond its own nodes: PyYAML shares one object per alias, but
# every later step (the character check, pydantic, JSON) walks the value as a tree, so ten nested
# anchors of ten aliases each ("billion laughs", a few hundred bytes) took hours to validate.
ALIAS_EXPANSION_LIMIT = 100_000


class AliasExpansionError(ComposerError):
    """A document whose aliases expand it beyond ALIAS_EXPANSION_LIMIT values."""


def refuse_alias_expansion(root: Node) -> None:
    """Raise AliasExpansionError when ``root``, read as a tree, holds more than ALIAS_EXPANSION_LIMIT
    values more than its nodes; ``root`` has no cycle (refuse_recursion ran). Without recursion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    added = sizes[id(root)] - len(sizes)
    if added > ALIAS_EXPANSION_LIMIT:
        raise AliasExpansionError(
            None,
            None,
            f"the document's aliases repeat its anchored values {added:,} times (more than "
            f"{ALIAS_EXPANSION_LIMIT:,}): write the values out, or use fewer nested aliases",
            root.start_mark,
        )


class _Unusual(Exception):
    """The document needs PyYAML's constructor."""


class _Builder:
    """Values of a node tree as SafeConstructor builds them, for the plain subset (see the module).
    ``strings`` gets every string it builds, keys included (and any a later duplicate key replaced)."""

    __slots__ = ("constructor", "seen", "strings")

    def __init__(self, constructor: Any) -> None:
        self.constructor = constructor
        self.seen: set[int] = set()
        self.strings: list[str] = []

    def build(self, node: Any) -> Any:
        kind = node.__class__
        tag = node.tag
        if kind is ScalarNode:
            if tag == _STR:
                value = node.value
                self.strings.append(value)
                return value
            if tag == _BOOL:  # what construct_yaml_bool does, without its two calls
                return _BOOL_VALUES[node.value.lower()]
            if tag == _NULL:
                return None
            construct = _SCALAR_CONSTRUCTORS.get(tag)
            if construct is None:
                raise _Unusual
            return construct(self.constructor, node)
        if id(node) in self.seen:  # an alias (or a recursive structure): PyYAML shares the object
            raise _Unusual
        self.seen.add(id(node))
        if kind is MappingNode and tag == _MAP:
            data: dict[Any, Any] = {}
            build = self.build
            for key_node, value_node in node.value:
                # A merge (<<) or value (=) key has its own tag; a non-scalar key is an error: PyYAML's
                if key_node.__class__ is not ScalarNode or (
                    key_node.tag != _STR and key_node.tag not in _SCALAR_CONSTRUCTORS
                ):
                    raise _Unusual
                data[build(key_node)] = build(value_node)
            return data
        if kind is SequenceNode and tag == _SEQ:
            return [self.build(item) for item in node.value]
        raise _Unusual


# One line of the subset _read_plain reads: its indentation, "- " (a sequence item), a plain key and
# ": ", then one value (a one-line plain scalar, a quoted one without escapes, a flow sequence of
# plain scalars, {}), then spaces and a comment, each optional. A plain value does not start with an
# indicator, and ends before " #", ": " or the line's end; only a space or the line's end follows it
# (a "#" right after it is its own: "b#  c" is one scalar, not "b" and a comment). Runs of ordinary
# characters are taken possessively (++): what may follow a run never starts with one of them, so
# nothing is lost, and the engine no longer steps through a value one character and one alternative
# at a time.
_LINE = re.compile(
    r"""(?P<indent>\ *)(?P<dash>-\ )?(?:(?P<key>[A-Za-z0-9_][A-Za-z0-9_./-]{0,999}+):(?:\ +|(?=\n|$)))?"""
    r"""(?:(?P<plain>[A-Za-z0-9_./+=~()$^;<](?:[^\s\#:]++|:(?=\S)|\#|\ (?=[^\s\#]))*)(?=\ |\n|$)"""
    r"""|"(?P<double>[^"\\\n]*)"|'(?P<single>[^'\n]*)'|\[(?P<flow>[^\[\]{}\#"'\n]*)\]|(?P<map>\{\}))?"""
    r"""\ *(?:\#[^\n]*)?(?:\n|$)""",
    re.X,
)
_FLOW_ITEM = re.compile(r"[A-Za-z0-9_./+=~()$^;<][^\s,:\[\]{}\#\"']*")
_OUTSIDE_THE_SUBSET = re.compile(r"[^ -~\n]")  # anything but printable ASCII and line feeds
_NO_VALUE = object()
_PLAIN_IMPLICIT = (True, False)


class _Reader:
    """What _read_plain needs of a loader: the resolver (with its tag cache) and the constructors."""

    def __init__(self) -> None:
        self.loader = _Loader("")
        self.loader.dispose()

    def scalar(self, text: str, strings: list[str]) -> Any:
        """A plain scalar's value, built as the safe loader builds it; _Unusual for other tags."""
        tag = self.loader.resolve(ScalarNode, text, _PLAIN_IMPLICIT)
        if tag == _STR:
            strings.append(text)
            return text
        if tag == _BOOL:
            return _BOOL_VALUES[text.lower()]
        if tag == _NULL:
            return None
        construct = _SCALAR_CONSTRUCTORS.get(tag)
        if construct is None:
            raise _Unusual
        return construct(self.loader, ScalarNode(tag, text))


_READER: _Reader | None = None


def _read_plain(text: str) -> tuple[Any, list[str]] | None:
    """The document and its strings, if ``text`` is in the subset described in the module; None if
    it is not, or if it may not be (the caller then parses it with libyaml)."""
    global _READER
    if _OUTSIDE_THE_SUBSET.search(text) is not None:
        return None
    reader = _READER = _READER or _Reader()
    scalar, tags = reader.scalar, _Loader._plain_tags
    strings: list[str] = []
    root: dict[Any, Any] = {}
    stack: list[tuple[int, Any]] = [(0, root)]  # (indentation, mapping or sequence) of open blocks
    pending: tuple[dict[Any, Any], str, int] | None = None  # a key with no value on its line
    match_line, position, end = _LINE.match, 0, len(text)
    try:
        while position < end:
            line = match_line(text, position)
            if line is None:
                return None
            position = line.end()
            spaces, dash, key, plain, double, single, flow, empty_map = line.groups()
            value: Any
            if plain is not None:
                if tags.get(plain) == _STR:
                    strings.append(plain)
                    value = plain
                else:
                    value = scalar(plain, strings)
            elif double is not None or single is not None:
                value = double if double is not None else single
                strings.append(value)
            elif flow is not None:
                value = []
                if flow.strip(" "):
                    for item in flow.split(","):
                        item = item.strip(" ")
                        if _FLOW_ITEM.fullmatch(item) is None:
                            return None
                        value.append(scalar(item, strings))
            elif empty_map is not None:
                value = {}
            else:
                value = _NO_VALUE
            if key is None and dash is None:
                if value is _NO_VALUE:
                    continue  # a blank line or a comment
                return None
            indent = len(spaces)
            if pending is not None:
                parent, parent_key, parent_indent = pending
                pending = None
                # Deeper lines are the key's value; so is a sequence at the key's own indentation.
                if indent > parent_indent or (indent == parent_indent and dash is not None):
                    block: Any = [] if dash is not None else {}
                    parent[parent_key] = block
                    stack.append((indent, block))
            while stack[-1][0] > indent:
                stack.pop()
            top_indent, top = stack[-1]
            if top_indent != indent:
                return None
            if dash is not None:
                if top.__class__ is not list or key is not None or value is _NO_VALUE:
                    return None
                top.append(value)
                continue
            if top.__class__ is list:  # a sequence at its key's indentation ends at the next key
                stack.pop()
                top_indent, top = stack[-1]
                if top_indent != indent or top.__class__ is not dict:
                    return None
            if tags.get(key) == _STR:
                strings.append(key)
            elif scalar(key, strings).__class__ is not str:
                return None
            if key in top:
                return None  # a key given twice: refused, at its line, by the path below
            if value is _NO_VALUE:
                top[key] = None
                pending = (top, key, indent)
            else:
                top[key] = value
    except Exception:  # _Unusual, or a scalar the constructors refuse (2001-02-30, 0b_): libyaml reads
        return None  # the whole text first, so a syntax error after it is the one reported, as PyYAML does
    if not root:
        return None
    return root, strings


def yaml_problem(error: yaml.YAMLError, text: str | None = None) -> str:
    """What a person reads for a YAML error: ``line L, column C: <problem>`` (PyYAML's problem only,
    never the quoted text around it). A character YAML refuses anywhere (a raw ESC or NUL, in a
    comment too) is named, at its line and column when ``text`` is the text that was read."""
    if isinstance(error, ReaderError):
        where = ""
        if text is not None and isinstance(error.position, int) and error.position >= 0:
            # libyaml counts bytes of the text as UTF-8, not characters: the characters before it.
            before = text.encode("utf-8")[: error.position].decode("utf-8", errors="ignore")
            start = before.rfind("\n") + 1
            where = f"line {before.count(chr(10)) + 1}, column {len(before) - start + 1}: "
        code = error.character if isinstance(error.character, int) else None
        named = forbidden_character(chr(code)) if code is not None else None
        what = named or (f"U+{code:04X}" if code is not None else "a character")
        return (
            f"{where}contains the control character {what}, which YAML allows nowhere (comments "
            "included); remove it"
        )
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{getattr(error, 'problem', None) or 'not valid YAML'}"


def load_yaml(text: str | bytes) -> Any:
    """The one document in ``text`` (``yaml.safe_load`` semantics); raises yaml.YAMLError, and
    RecursiveAliasError (one) for a document that would contain itself."""
    return _parsed(text)[0]


def load_tenant_yaml(text: str) -> tuple[Any, list[str] | None]:
    """``load_yaml`` for a tenant file, and every string of the document (keys too) when this module
    built its values (None when PyYAML's constructor did): the tenant check searches them for
    forbidden characters without walking the document again. Unlike ``load_yaml``, a key given twice
    in one mapping is a ``DuplicateKeyError`` at its line (``refuse_duplicate_keys``). A tenant file
    is first read by ``_read_plain``; other files (manifests, configuration) go to libyaml directly,
    as a subset they leave late would only add to their parse."""
    read = _read_plain(text)
    if read is not None:
        return read
    return _parsed(text, unique_keys=True)


class DuplicateKeyError(ConstructorError):
    """A tenant file gives one key twice in a mapping."""


def refuse_duplicate_keys(root: Node) -> None:
    """Raise DuplicateKeyError at the first key (in the file) given twice in one mapping. YAML's
    loaders keep the last value silently, so a reviewer reading ``deletionProtection: true`` near the
    top of a file would not see the ``deletionProtection: false`` further down that wins. Merge keys
    (``<<``) are not keys of the document: a key written beside a merge overrides the merged one, as
    YAML intends. Each node is walked once, however often aliases name it."""
    stack: list[tuple[Node, str]] = [(root, "")]
    seen: set[int] = set()
    found: list[tuple[Node, Node, str]] = []  # (the second key, the first, its field)
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], Node] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    stack.append((value_node, path))
                    continue
                field = f"{path}.{key_node.value}" if path else key_node.value
                earlier = first.setdefault((key_node.tag, key_node.value), key_node)
                if earlier is not key_node:
                    found.append((key_node, earlier, field))
                stack.append((value_node, field))
        elif isinstance(node, SequenceNode):
            stack.extend((item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(node.value))
    if found:
        second, first_key, field = min(found, key=lambda duplicate: duplicate[0].start_mark.index)
        raise DuplicateKeyError(
            None,
            None,
            f"{field} is given twice in one mapping (first at line {first_key.start_mark.line + 1}); "
            "YAML keeps only the last value, which a reader of the first would not see: remove one",
            second.start_mark,
        )


def _parsed(text: str | bytes, *, unique_keys: bool = False) -> tuple[Any, list[str] | None]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        if unique_keys:
            refuse_duplicate_keys(node)
        builder = _Builder(loader)
        try:
            return builder.build(node), builder.strings
        except Exception:  # anything unusual, errors included: PyYAML decides
            refuse_recursion(node)
            refuse_alias_expansion(node)
            try:
                return loader.construct_document(node), None
            except (ValueError, OverflowError) as error:
                raise _unbuildable(loader, node, error) from None
    finally:
        loader.dispose()


def _unbuildable(loader: Any, root: Node, error: Exception) -> ConstructorError:
    """PyYAML's constructors raise a bare ValueError for a scalar they resolve but cannot build (a
    timestamp 2001-02-30, an int 0b_): a YAML error at that scalar instead, like every other one, so
    callers that report YAML errors with the file and line do so (instead of a traceback)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            try:
                construct = _SCALAR_CONSTRUCTORS.get(node.tag)
                if construct is not None:
                    construct(loader, node)
            except (ValueError, OverflowError) as found:
                kind = node.tag.rpartition(":")[2]
                return ConstructorError(
                    None, None, f"{node.value!r} is not a valid {kind}: {found}", node.start_mark
                )
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            stack.extend(child for pair in reversed(node.value) for child in reversed(pair))
    return ConstructorError(None, None, f"a value cannot be built: {error}", root.start_mark)
