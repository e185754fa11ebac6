"""What the platform component tests share: the dev and prod configs they run with, and readers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tenancy.render.runtime import DeclaredResource
from tenancy.spec.platform import PlatformConfig, parse_platform_config

S3_ENDPOINT = "https://s3.eu-central-1.amazonaws.com"


def dev_config() -> PlatformConfig:
    return parse_platform_config(
        {"domain": "dev.data.example.com"}, environment="dev", file="Pulumi.dev.yaml"
    )


def prod_config(*, endpoint: str = S3_ENDPOINT) -> PlatformConfig:
    """The prod shape: highly available, Vault on, object storage in eu-central-1."""
    return parse_platform_config(
        {
            "domain": "data.example.com",
            "storageClass": "fast-ssd",
            "highAvailability": True,
            "vault": {"enabled": True, "address": "https://vault.example.com"},
            "objectStorage": {
                "endpoint": endpoint,
                "region": "eu-central-1",
                "lokiBucket": "prod-loki",
                "backupBucket": "prod-backups",
                "forcePathStyle": False,
            },
        },
        environment="prod",
        file="Pulumi.prod.yaml",
    )


def is_secret(resource: DeclaredResource, *path: str) -> bool:
    """Whether the value at ``path`` (or a map holding it) was marked secret."""
    return any(path[: len(secret)] == secret for secret in resource.secret_paths)


def strings(value: Any) -> Iterator[str]:
    """Every key and string value in ``value``, depth first (to look for a secret anywhere)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value
