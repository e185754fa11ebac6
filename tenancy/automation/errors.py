"""Errors of the automation layer: each has a stable ``code`` and a message a person can act on.

Engines raise these instead of Pulumi's exceptions; the worker turns them into an operation's
``summary.error`` and ``summary.code``. Callers map codes, never messages: the HTTP service answers
``conflict`` with 409 and ``not_found`` with 404; the CLI exits 4 on ``pulumi_cli_missing``.

This table is the operations' codes (an operation's ``summary.code``), not the HTTP service's
(``tenancy.service.core.errors.ERROR_CODES``): the same word may mean a stack here and a route
there. Every ``AutomationError`` subclass's code is in it, whichever module defines the class.
"""

from __future__ import annotations

import logging
from typing import ClassVar

ERROR_CODES: dict[str, str] = {
    "conflict": "another update holds the stack, or the stack already exists (HTTP 409)",
    "not_found": "the stack does not exist (HTTP 404)",
    "protected": "the stack has protected resources: turn deletion protection off first",
    "program_error": "the Pulumi program failed (a tenant file or platform config problem)",
    "fixed_volumes": "the spec would change volumes that are fixed once created; pin their sizes",
    "secrets_unavailable": "the secrets provider cannot be opened (passphrase or Vault token missing)",
    "config_missing": "a credential the stack needs is not set (e.g. VAULT_TOKEN), or a setting of "
    "TENANCY_STACK_CONFIG is invalid (e.g. platform:keycloakUrl not a URL); nothing ran",
    "pulumi_cli_missing": "the Pulumi CLI is missing or too old",
    "interrupted": "the operation stopped before it finished; the stack is recovered before the next one",
    "locked_elsewhere": "the stack holds a lock or pending operations this queue's workers did not leave "
    "(another update may be running on it) and still did after the worker waited for it; nothing ran "
    "and nothing was cancelled",
    "engine_error": "the Pulumi engine reported an error",
    "scaling_failed": "scaling the tenant's workloads in place failed or was refused (e.g. a scale-down)",
    "backup_failed": "the backup (asked for, or taken before a destroy or a Qdrant upgrade/removal) failed; "
    "nothing was destroyed, upgraded or removed",
    "restore_failed": "the restore failed (no backup, a checksum that does not match, Qdrant refused it)",
    "backup_retire_failed": "a destroyed tenant's backups could not be set aside; the destroy stopped",
    "backup_expired": "the deleted tenant's backup is past its retention period; it cannot be restored",
    "data_unavailable": "the tenant's data cannot be reached (no Qdrant deployed, no backup bucket)",
    "previous_incarnation_not_destroyed": "the stack still holds an earlier tenant of the same name whose "
    "destroy failed (its resources, its Qdrant data); nothing of the new tenant runs on it until that "
    "destroy is retried and succeeds",
    "environment_not_served": "the worker runs another environment's stacks (each platform's workers run "
    "their own environment's, in their own cluster); nothing ran: run it where that environment is served",
    "internal": "an unexpected error in the automation layer (details in the worker's log)",
}

_log = logging.getLogger(__name__)


class AutomationError(Exception):
    """An error with a code callers can branch on and a message a person can act on."""

    code: ClassVar[str] = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PulumiCliMissing(AutomationError):
    code = "pulumi_cli_missing"


class StackConflict(AutomationError):
    code = "conflict"


class StackLocked(StackConflict):
    """Pulumi refused to start: another update holds the stack's lock (nothing ran)."""


class StackNotFound(AutomationError):
    code = "not_found"


class ProtectedResources(AutomationError):
    code = "protected"


class ProgramError(AutomationError):
    code = "program_error"


class FixedVolumesChanged(AutomationError):
    code = "fixed_volumes"


class SecretsUnavailable(AutomationError):
    code = "secrets_unavailable"


class StackConfigMissing(AutomationError):
    code = "config_missing"


class StackLockedElsewhere(AutomationError):
    code = "locked_elsewhere"


class OperationInterrupted(AutomationError):
    code = "interrupted"


class EngineFailed(AutomationError):
    code = "engine_error"


class PreviousIncarnationNotDestroyed(AutomationError):
    code = "previous_incarnation_not_destroyed"


class EnvironmentNotServed(AutomationError):
    code = "environment_not_served"


def describe_failure(error: BaseException, *, what: str) -> tuple[str, str]:
    """(code, message) for an operation that raised ``error``; never a traceback or a raw dump.

    Errors the layer does not know are logged with their traceback (for whoever runs the worker)
    and reported by type only: their text may hold anything, secrets included.
    """
    if isinstance(error, AutomationError):
        return error.code, error.message
    _log.error("unexpected error while running %s", what, exc_info=error)
    return (
        "internal",
        f"{what} failed with an unexpected {type(error).__name__}; the worker's log has the details. "
        "Retry the operation; if it fails again, report it to the platform team.",
    )
