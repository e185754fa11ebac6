"""Characters no tenant string may hold, wherever it comes from (a file in a pull request or the API).

Control characters (C0 such as NUL and ESC, DEL, C1) can truncate values in C libraries, rewrite a
terminal showing ``git log`` or an audit line, and split log records; bidirectional formatting
characters make a reviewer read something other than what is stored (Trojan Source); line and
paragraph separators, byte-order marks and lone surrogates break YAML, JSON and git in their own
ways. None belongs in a name, an e-mail address, a label or any other field of a tenant, so every
string (mapping keys included) is checked, not only the fields that have a pattern.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional formatting
    "\u2028\u2029\ufeff"  # line/paragraph separators, byte-order mark
    "\ud800-\udfff]"  # lone surrogates (JSON can escape them; UTF-8 cannot hold them)
)
_NAMES = {0x00: "NUL", 0x09: "TAB", 0x0A: "LF", 0x0D: "CR", 0x1B: "ESC", 0x7F: "DEL"}


def forbidden_character(text: str) -> str | None:
    """The first character of ``text`` no tenant string may hold, described (``U+001B ESC``); None if
    there is none."""
    match = _FORBIDDEN.search(text)
    if match is None:
        return None
    code = ord(match.group())
    name = _NAMES.get(code) or unicodedata.name(match.group(), "")
    if not name:
        name = "surrogate" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"U+{code:04X} {name}"


def without_forbidden(text: str) -> str:
    """``text`` with every character no tenant string may hold removed: for what is only recorded,
    never refused (a caller's display name as a git author)."""
    return _FORBIDDEN.sub("", text)


# What a loaded document holds besides strings, mappings and lists; none is checked.
_UNCHECKED = frozenset({int, float, bool, type(None), date, datetime, bytes})


def _all_strings(data: Any) -> list[str] | None:
    """Every string in ``data`` (keys too), or None when it holds a type this walk does not know or
    a mapping or list twice (a YAML alias: one that contains itself would keep this loop going)."""
    strings: list[str] = []
    pending = [data]
    containers: set[int] = set()
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            strings.append(item)
        elif kind is dict or kind is list:
            if id(item) in containers:
                return None
            containers.add(id(item))
            if kind is dict:
                for key, value in item.items():
                    pending.append(key)
                    pending.append(value)
            else:
                pending.extend(item)
        elif kind not in _UNCHECKED:
            return None
    return strings


def forbidden_characters(
    data: Any, path: str = "", *, strings: list[str] | None = None
) -> Iterator[tuple[str, str]]:
    """(field path, reason) for every string in ``data`` (keys too) holding a forbidden character;
    paths are dotted as in the file (``owners.0``, ``labels.team``). ``strings``, if given, holds at
    least every string of ``data`` (``load_tenant_yaml`` collects them as it builds the
    document), which saves walking it when none has such a character."""
    if strings is None:
        strings = _all_strings(data)
    # One search over every string joined (a character class cannot match across the joins) answers
    # for the usual document, which has none; the walk below then names each one.
    if strings is not None and _FORBIDDEN.search("".join(strings)) is None:
        return
    yield from _forbidden_characters(data, path)


def _forbidden_characters(data: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(data, str):
        found = forbidden_character(data)
        if found is not None:
            yield path, f"contains the control or formatting character {found}; remove it"
    elif isinstance(data, Mapping):
        for key, value in data.items():
            in_key = forbidden_character(key) if isinstance(key, str) else None
            if in_key is not None:  # the path would carry the character itself: name the parent
                yield path or "(document)", f"a key contains the control or formatting character {in_key}"
                continue
            yield from _forbidden_characters(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            yield from _forbidden_characters(value, f"{path}.{index}" if path else str(index))
