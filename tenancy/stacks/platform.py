"""The platform stack ``<env>``: shared services, and the contract tenant stacks read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pydantic.alias_generators import to_camel

from tenancy.builders.contract import tenant_contract
from tenancy.spec.platform import PlatformConfig, read_platform_config


def load_platform_config(environment: str) -> PlatformConfig:
    return read_platform_config(pulumi.Config("platform").get, environment=environment)


def declare_platform_stack(environment: str, *, project_dir: Path) -> dict[str, Any]:
    """Declare the platform services of ``environment``; return the stack outputs."""
    config = load_platform_config(environment)
    contract = tenant_contract(
        domain=config.domain,
        storage_class=config.storage_class,
        vault_kv_mount=config.vault.kv_mount,
        vault_auth_path=config.vault.kubernetes_auth_path,
    )
    return {"tenantContract": {to_camel(key): value for key, value in contract.items()}}
