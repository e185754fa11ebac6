"""A tenant spec's fingerprint: what ``sync`` compares to tell a changed tenant from an unchanged one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def spec_fingerprint(spec: Mapping[str, Any] | None) -> str | None:
    """SHA-256 of the spec document in canonical JSON (sorted keys), so formatting and key order in
    the YAML file do not count as changes; None for operations that carry no spec."""
    if spec is None:
        return None
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
