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
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

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


def load_yaml(text: str | bytes) -> Any:
    """The one document in ``text`` (``yaml.safe_load`` semantics); raises yaml.YAMLError."""
    return load_yaml_and_strings(text)[0]


def load_yaml_and_strings(text: str | bytes) -> tuple[Any, list[str] | None]:
    """``load_yaml``, and every string of the document (keys too) when this module built its values
    (None when PyYAML's constructor did): the tenant check searches them for forbidden characters
    without walking the document again. The list may hold more than the document (the values of a
    key given twice), never less."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        builder = _Builder(loader)
        try:
            return builder.build(node), builder.strings
        except Exception:  # anything unusual, errors included: PyYAML decides
            return loader.construct_document(node), None
    finally:
        loader.dispose()
