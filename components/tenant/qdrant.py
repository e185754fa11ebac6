"""A tenant's Qdrant: generated API keys in a Secret it owns, and the pinned qdrant chart."""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.kubernetes import custom_resource, helm_release, qdrant_release_timeout
from tenancy import versions
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.qdrant import (
    API_KEY,
    CONFIG_FILE_KEY,
    READ_ONLY_API_KEY,
    RELEASE_NAME,
    api_key_secret_manifest,
    gateway_destination_rule,
    gateway_virtual_service,
    public_endpoints,
    qdrant_endpoints,
    qdrant_key_config,
    render_qdrant_values,
)
from tenancy.spec.quantity import parse_quantity
from tenancy.spec.tenant import Tenant


def _checksum(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


class QdrantCluster(pulumi.ComponentResource):
    http_endpoint: pulumi.Output[str]
    grpc_endpoint: pulumi.Output[str]
    public_endpoint: pulumi.Output[str]
    public_grpc_endpoint: pulumi.Output[str]
    api_key_secret_name: pulumi.Output[str]
    api_key: pulumi.Output[str]
    read_only_api_key: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        storage_class: pulumi.Input[str],
        platform: PlatformRefs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``storage_class``: the platform's default class; ``platform``: where the gateway is, for the
        route from ``<tenant>.qdrant.<domain>``."""
        super().__init__("platform:tenant:Qdrant", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = tenant.qdrant
        if settings is None:
            raise ValueError(f"tenant {tenant.name} has no Qdrant")

        # Alphanumeric keys: Qdrant reads them from env and YAML, where symbols need quoting.
        api_key = random.RandomPassword(f"{name}-api-key", length=48, special=False, opts=child)
        keys: dict[str, pulumi.Output[str]] = {API_KEY: api_key.result}
        self.read_only_api_key = None
        if settings.read_only_key:
            read_only = random.RandomPassword(
                f"{name}-read-only-api-key", length=48, special=False, opts=child
            )
            keys[READ_ONLY_API_KEY] = read_only.result
            self.read_only_api_key = pulumi.Output.secret(read_only.result)

        # The keys one by one (for the tenant's own workloads) and as the config file Qdrant reads.
        def key_config(values: list[str]) -> str:
            return qdrant_key_config(values[0], values[1] if len(values) > 1 else None)

        config_file: pulumi.Output[str] = pulumi.Output.all(*keys.values()).apply(key_config)
        secret = k8s.core.v1.Secret(
            f"{name}-api-keys",
            metadata=api_key_secret_manifest(tenant)["metadata"],
            type="Opaque",
            string_data={**keys, CONFIG_FILE_KEY: config_file},  # secret: made of secret outputs
            opts=child,
        )
        # Restarts the pods when a key changes. Not secret: 64 bits of a SHA-256 over random keys of
        # 285 bits each reveal nothing usable, and a secret here would make the release's whole
        # values secret, hiding every replica or resource change from `pulumi preview --diff`.
        checksum = pulumi.Output.unsecret(
            pulumi.Output.all(*keys.values()).apply(lambda values: _checksum(list(values)))
        )
        release = helm_release(
            f"{name}-release",
            release=RELEASE_NAME,
            namespace=tenant.namespace,
            pin=versions.QDRANT,
            values=render_qdrant_values(tenant, default_storage_class=storage_class, keys_checksum=checksum),
            timeout=qdrant_release_timeout(
                replicas=settings.replicas, storage_bytes=int(parse_quantity(settings.storage_size))
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[secret]),
        )

        # From outside: the platform gateway routes <tenant>.qdrant.<domain> here, within these limits.
        custom_resource(f"{name}-gateway-route", gateway_virtual_service(tenant, platform), child)
        custom_resource(f"{name}-gateway-limits", gateway_destination_rule(tenant, platform), child)
        public = public_endpoints(tenant, platform.domain)
        self.public_endpoint = public["http"]
        self.public_grpc_endpoint = public["grpc"]

        endpoints = qdrant_endpoints(tenant)
        self.release = release
        self.http_endpoint = pulumi.Output.from_input(endpoints["http"])
        self.grpc_endpoint = pulumi.Output.from_input(endpoints["grpc"])
        self.api_key_secret_name = secret.metadata.apply(lambda m: str(m.name))
        self.api_key = pulumi.Output.secret(api_key.result)
        self.register_outputs(
            {
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "public_endpoint": self.public_endpoint,
                "public_grpc_endpoint": self.public_grpc_endpoint,
                "api_key_secret_name": self.api_key_secret_name,
            }
        )
