"""The config a tenant stack gets when the automation runs it, built in ONE place.

The Pulumi engine sets exactly this on the stack before each operation; the engine double in tests
runs the real program under mocks with exactly this (plus what the Pulumi CLI itself adds: the
defaults ``Pulumi.yaml`` declares). So a key the program requires that this does not provide, or
provides under another name, fails a test instead of a production update.

What goes in:

- plain: the extra ``TENANCY_STACK_CONFIG`` entries; for ``up`` and ``preview`` the operation's
  ``platform:tenantsDir`` (the spec it applies), and for ``up`` ``platform:specHash``;
- secret: the credentials the tenant program reads with ``require_secret``, from the environment
  (``VAULT_TOKEN``) or a file it names (``VAULT_TOKEN_FILE``, e.g. a mounted Kubernetes Secret). They
  are set as *secret* config (encrypted by the stack's secrets provider in ``Pulumi.<stack>.yaml``),
  never as plain text. Today that is ``platform:vaultToken`` in environments with Vault: tenant stacks
  keep their Qdrant keys there. Tenant stacks read no object-storage credentials (only the platform
  stack does, for Loki and backups).

A credential the operation needs but cannot find fails before any Pulumi run, naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.errors import ProgramError, StackConfigMissing
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import (
    CONFIG_NAMESPACE,
    SECRET_KEYS,
    PlatformConfig,
    read_platform_config_file,
    tenant_stack_setting_problems,
)

TENANTS_DIR_KEY = f"{CONFIG_NAMESPACE}:tenantsDir"
SPEC_HASH_KEY = f"{CONFIG_NAMESPACE}:specHash"
# Set for one operation only, and removed afterwards (a hand-run `pulumi up` reads tenants/ as usual).
OPERATION_KEYS = (TENANTS_DIR_KEY, SPEC_HASH_KEY)
VAULT_TOKEN_KEY = f"{CONFIG_NAMESPACE}:vaultToken"
# Secret config key -> the environment variable it comes from (``<VARIABLE>_FILE``: a file holding it).
SECRET_SOURCES: dict[str, str] = {VAULT_TOKEN_KEY: "VAULT_TOKEN"}
# Operations that run the program (refresh and destroy work from the state, its providers included).
PROGRAM_KINDS = (OperationKind.up, OperationKind.preview)


@dataclass(frozen=True)
class StackConfig:
    plain: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict, repr=False)  # values never printed

    def keys(self) -> list[str]:
        return sorted({*self.plain, *self.secret})


def platform_config_of(project_dir: Path, environment: str) -> PlatformConfig:
    """The environment's ``Pulumi.<env>.yaml``, which the tenant program also reads: a broken file
    fails here, clearly, before any Pulumi run."""
    try:
        return read_platform_config_file(project_dir / f"Pulumi.{environment}.yaml")
    except SpecError as error:
        raise ProgramError(f"the platform config of {environment} is invalid: {error}") from None


def secret_keys_needed(platform: PlatformConfig) -> tuple[str, ...]:
    """The secret config keys a tenant program of this platform requires."""
    return (VAULT_TOKEN_KEY,) if platform.vault.enabled else ()


def tenant_stack_config(
    stack: StackRef,
    kind: OperationKind,
    *,
    project_dir: Path,
    extra: Mapping[str, str],
    environ: Mapping[str, str],
    tenants_dir: Path | None = None,
    spec_hash: str | None = None,
) -> StackConfig:
    """Everything ``stack`` needs for an operation of ``kind`` (see the module docstring)."""
    plain_secrets = sorted(key for key in extra if key.partition(":")[2] in SECRET_KEYS)
    if plain_secrets:
        raise StackConfigMissing(
            f"TENANCY_STACK_CONFIG sets {', '.join(plain_secrets)} in plain text; remove it and set "
            + ", ".join(_source(key) for key in plain_secrets)
            + " instead (the engine sets it as secret config)"
        )
    prefix = f"{CONFIG_NAMESPACE}:"
    settings = {key.removeprefix(prefix): value for key, value in extra.items() if key.startswith(prefix)}
    problems = tenant_stack_setting_problems(settings)
    if problems:
        raise StackConfigMissing("TENANCY_STACK_CONFIG: " + "; ".join(problems))
    plain = dict(extra)
    if kind in PROGRAM_KINDS:
        if tenants_dir is None:
            raise ProgramError(f"{kind.value} of {stack.name} needs the tenant's spec")
        plain[TENANTS_DIR_KEY] = str(tenants_dir)
    if kind is OperationKind.up and spec_hash:
        plain[SPEC_HASH_KEY] = spec_hash
    platform = platform_config_of(project_dir, stack.environment)
    secret: dict[str, str] = {}
    for key in secret_keys_needed(platform):
        value = _secret_value(key, environ)
        if value:
            secret[key] = value
        elif kind in PROGRAM_KINDS:
            raise StackConfigMissing(
                f"stack {stack.name} needs the secret config {key} ({stack.environment} keeps tenant "
                f"secrets in Vault): set {_source(key)} for whoever runs the automation (tenantctl, the "
                "service's workers, the deploy workflow)"
            )
    return StackConfig(plain=plain, secret=secret)


def _source(key: str) -> str:
    variable = SECRET_SOURCES[key]
    return f"{variable} (or {variable}_FILE naming a file that holds it)"


def _secret_value(key: str, environ: Mapping[str, str]) -> str | None:
    variable = SECRET_SOURCES[key]
    value = environ.get(variable, "").strip()
    if value:
        return value
    path = environ.get(f"{variable}_FILE", "").strip()
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as error:
        raise StackConfigMissing(
            f"{variable}_FILE names {path}, which cannot be read ({error.strerror or type(error).__name__})"
        ) from None


def write_operation_spec(operation_dir: Path, stack: StackRef, spec: Mapping[str, Any]) -> Path:
    """Write the operation's spec where the program reads it (``platform:tenantsDir``); return that
    tenants root."""
    root = operation_dir / "tenants"
    path = root / stack.environment / f"{stack.tenant}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return root
