"""Credentials out of text that came from a subprocess (git, the Pulumi CLI) before it reaches a
log, an operation's error or a person.

A subprocess's own message is what lets someone fix a failure ("could not lock config file",
"Permission denied"), so it is kept; what it may echo of a credential is not: the user-info part of
URLs (``https://user:token@host/...``), bearer and basic authorization values, tokens with a
well-known prefix (GitHub, GitLab, Vault, Pulumi, this service's API keys), and ``name=value`` pairs
whose name says secret (``password=``, ``token=``, ``X-Amz-Signature=`` ...). The values of environment
variables that hold secrets (``VAULT_TOKEN`` ...) are replaced wherever they appear.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"

# Environment variables whose values are credentials wherever they turn up.
SECRET_ENVIRONMENT = (
    "VAULT_TOKEN",
    "VAULT_SERVER_TOKEN",
    "PULUMI_ACCESS_TOKEN",
    "PULUMI_CONFIG_PASSPHRASE",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "TENANCY_SERVICE_REDIS_PASSWORD",
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host or scheme://token@host
    (
        re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@"),
        rf"\g<scheme>{REDACTED}@",
    ),
    # Authorization: Bearer x / Basic x (also "bearer=x")
    (
        re.compile(r"(?i)\b(?P<kind>bearer|basic)(?P<sep>[\s=:]+)[A-Za-z0-9._~+/=-]{8,}"),
        rf"\g<kind>\g<sep>{REDACTED}",
    ),
    # well-known token shapes
    (
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
            r"|hv[sbr]\.[A-Za-z0-9_-]{20,}|pul-[a-f0-9]{20,}|tnk_[A-Za-z0-9_-]{10,}"
            r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*)"
        ),
        REDACTED,
    ),
    # name=value / name: value where the name says secret
    (
        re.compile(
            r"(?i)\b(?P<name>[\w.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|signature|credential)"
            r"[\w.-]*)(?P<sep>\s*[=:]\s*)(?P<quote>[\"']?)[^\s\"'&;,]+"
        ),
        rf"\g<name>\g<sep>\g<quote>{REDACTED}",
    ),
)


def redact(text: str, *, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` with credentials replaced by ``[redacted]``: the given ``secrets``, the values of the
    secret environment variables, and anything shaped like a credential (see the module docstring)."""
    environment = os.environ if environ is None else environ
    known = [value for value in secrets if value]
    known += [environment[name] for name in SECRET_ENVIRONMENT if environment.get(name)]
    # Longest first, so a secret containing another is replaced whole.
    for value in sorted(set(known), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def subprocess_message(stderr: str | bytes | None, *, limit: int = 500) -> str:
    """The useful part of a failed subprocess's stderr, redacted: its error lines (``fatal:``,
    ``error:``) or else its last lines, on one line, at most ``limit`` characters."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("fatal:", "error:"))]
    text = " ".join(errors or lines[-3:])
    text = redact(re.sub(r"\s+", " ", text))
    return text if len(text) <= limit else text[: limit - 1] + "…"
