"""Tenant files as the service writes them: ``dump_tenant_yaml`` gives the very text of
``yaml.dump(document, Dumper=CSafeDumper, sort_keys=False, default_flow_style=False,
allow_unicode=True)``, the dump every PUT and PATCH commits.

PyYAML's dump builds a node per value through its Python representer, then libyaml's emitter asks
PyYAML's Python resolver about every scalar and decides how to write it: about 70 us for a small
tenant file and 170 us for a full one here, a few percent of a write's CPU (issue #11). Tenant
documents are simpler: block mappings and sequences of plain keys and values. ``dump_tenant_yaml``
writes those itself, one line per value, in a tenth of the time, and gives the document to PyYAML
whenever it holds anything it is not sure to write the same way:

- a string that libyaml might quote otherwise or fold: anything but printable ASCII words separated
  by single spaces, with a first character that is no YAML indicator and no ``: `` or `` #`` inside
  (such a string is written plain, or single-quoted when the resolver would read it back as another
  type: ``'1.33'``, ``'yes'``), or a line longer than libyaml's width of 80 (it folds a long value
  at a space);
- a key that is not such a string; a float (PyYAML's float text has rules of its own);
- a container met twice (PyYAML writes an anchor and an alias), or any other type.

``tests/spec/test_yaml_dumping.py`` compares it with PyYAML on generated documents and every tenant
file of the repository.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_WIDTH = 80  # libyaml's default best width: a plain value on a longer line is folded at a space
_STR = "tag:yaml.org,2002:str"
_PLAIN_IMPLICIT = (True, False)
# Words of printable ASCII without YAML's indicators, single spaces between them; the first character
# is none of - ? : , [ ] { } # & * ! | > ' " % @ ` and a colon never ends a word.
_WORD_START = r"[A-Za-z0-9_/(]"
_WORD_REST = r"(?:[A-Za-z0-9_./@+=~()*-]|:(?=[^ ]))*"
_PLAIN = re.compile(rf"{_WORD_START}{_WORD_REST}(?: [A-Za-z0-9_./@+=~()*]{_WORD_REST})*")
_RESOLVER: Any = yaml.resolver.Resolver()  # the safe dumper's own: plain text back to a tag


class _NotPlain(Exception):
    pass


def dump_tenant_yaml(document: dict[str, Any]) -> str:
    """``document`` as YAML, byte for byte what PyYAML's safe dump (libyaml's emitter) writes."""
    if type(document) is dict and document:
        lines: list[str] = []
        try:
            _mapping(document, "", "", lines, set())
        except _NotPlain:
            pass
        else:
            lines.append("")
            return "\n".join(lines)
    return yaml.dump(document, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _scalar(value: Any) -> str | None:
    """The text of a scalar as libyaml writes it plain, or None for a container."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is dict or kind is list:
        return None
    raise _NotPlain


@lru_cache(maxsize=4096)  # the same owners, versions and sizes come back write after write
def _string(value: str) -> str:
    if _PLAIN.fullmatch(value) is None:
        raise _NotPlain
    if _RESOLVER.resolve(yaml.ScalarNode, value, _PLAIN_IMPLICIT) != _STR:
        return f"'{value}'"  # read back plain it would be a number, a boolean...: single-quoted
    return value


def _line(lines: list[str], text: str) -> None:
    if len(text) > _WIDTH:
        raise _NotPlain
    lines.append(text)


def _mapping(value: dict[Any, Any], first: str, indent: str, lines: list[str], seen: set[int]) -> None:
    """The pairs of a non-empty mapping at ``indent``; the first line starts with ``first`` instead
    (``- `` for a mapping that is a sequence's item)."""
    if id(value) in seen:
        raise _NotPlain
    seen.add(id(value))
    prefix = first
    for key, item in value.items():
        if type(key) is not str:
            raise _NotPlain
        key_text = _scalar(key)
        _value(item, f"{prefix}{key_text}:", indent, lines, seen, in_mapping=True)
        prefix = indent


def _value(value: Any, head: str, indent: str, lines: list[str], seen: set[int], *, in_mapping: bool) -> None:
    """``value`` after ``head`` (a line so far: ``key:`` or ``-`` at ``indent``, the column of the
    key or the dash): a scalar on that line; a mapping's pairs two columns in (a sequence's item
    mapping starts on the dash's line); a mapping's sequence at its key's column."""
    text = _scalar(value)
    if text is not None:
        _line(lines, f"{head} {text}")
    elif not value:
        _line(lines, f"{head} {{}}" if type(value) is dict else f"{head} []")
    elif type(value) is dict:
        if in_mapping:
            lines.append(head)
            _mapping(value, f"{indent}  ", f"{indent}  ", lines, seen)
        else:
            _mapping(value, f"{head} ", f"{indent}  ", lines, seen)
    else:
        _sequence(value, head, indent, lines, seen, in_mapping=in_mapping)


def _sequence(
    value: list[Any], head: str, indent: str, lines: list[str], seen: set[int], *, in_mapping: bool
) -> None:
    if id(value) in seen:
        raise _NotPlain
    seen.add(id(value))
    if in_mapping:  # a mapping's sequence is not indented: its dashes stand under the key
        lines.append(head)
        prefixes = [f"{indent}-"] * len(value)
        below = indent
    else:  # a sequence in a sequence: its first item on the dash's line
        prefixes = [f"{head} -"] + [f"{indent}  -"] * (len(value) - 1)
        below = f"{indent}  "
    for prefix, item in zip(prefixes, value, strict=True):
        _value(item, prefix, below, lines, seen, in_mapping=False)
