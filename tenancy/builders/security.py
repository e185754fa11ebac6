"""Pod Security "restricted", as every builder sets it on the containers and pods it configures."""

from __future__ import annotations

from typing import Any

RUNTIME_DEFAULT_SECCOMP = {"type": "RuntimeDefault"}


def runtime_default_seccomp() -> dict[str, str]:
    return dict(RUNTIME_DEFAULT_SECCOMP)


def restricted_container(**extra: Any) -> dict[str, Any]:
    """A container securityContext meeting "restricted" (non-root, no escalation, no capabilities,
    RuntimeDefault seccomp), plus ``extra`` fields (user ids, read-only root filesystem...).

    A fresh dict every call: charts merge these into their own defaults.
    """
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": runtime_default_seccomp(),
        **extra,
    }
