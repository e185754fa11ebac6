"""The values keys each pinned chart reads, as read from its values.yaml and templates.

One YAML file per chart: ``chart``, ``version`` (must equal the pin in tenancy.versions), ``source``
(where the keys were read), and ``keys``: dotted paths the chart's templates read. A path ending in
``.*`` accepts any subtree (free-form maps the chart renders verbatim, such as ``resources``).
Tests walk every Helm release a stack declares and fail on any value outside these paths: a
misspelt or misplaced key that the chart would silently ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


@dataclass(frozen=True)
class ChartKeys:
    chart: str
    version: str
    source: str
    keys: tuple[str, ...]

    def accepts(self, path: str) -> bool:
        for key in self.keys:
            if key.endswith(".*"):
                prefix = key[:-2]
                if path == prefix or path.startswith(prefix + "."):
                    return True
            elif path == key:
                return True
        return False

    def unknown(self, values: Any) -> list[str]:
        """Leaf paths of ``values`` this chart does not read."""
        return [path for path in leaf_paths(values) if not self.accepts(path)]


def load_all() -> dict[str, ChartKeys]:
    charts = {}
    for path in sorted(HERE.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        charts[data["chart"]] = ChartKeys(
            chart=data["chart"], version=str(data["version"]), source=data["source"], keys=tuple(data["keys"])
        )
    return charts


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf; lists are leaves (charts render them whole)."""
    if values in ({}, None) and not prefix:
        return []
    if isinstance(values, dict) and values:
        paths = []
        for key, value in values.items():
            paths.extend(leaf_paths(value, f"{prefix}.{key}" if prefix else str(key)))
        return paths
    return [prefix]
