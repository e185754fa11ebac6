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
    key_plan,
    public_endpoints,
    qdrant_endpoints,
    qdrant_key_config,
    read_only_token,
    render_qdrant_values,
    server_keys_secret_manifest,
)
from tenancy.builders.qdrant_postrender import POST_RENDERER
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
    key_generation: int
    keys_in_grace: bool

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
        plan = key_plan(settings)

        def password(suffix: str, keepers: dict[str, str] | None) -> random.RandomPassword:
            return random.RandomPassword(
                f"{name}-{suffix}", length=48, special=False, keepers=keepers, opts=child
            )

        api_key = password(plan.current.name_suffix, plan.current.keepers).result
        previous_key = (
            password(plan.previous.name_suffix, plan.previous.keepers).result
            if plan.previous is not None
            else None
        )
        legacy_read_only = password("read-only-api-key", None).result if plan.legacy_read_only else None

        # Qdrant's config file: this generation's keys, and the previous generation's during the grace.
        def server_config(values: dict[str, str | None]) -> str:
            return qdrant_key_config(
                str(values["api_key"]),
                values["read_only"],
                alt_api_key=values["previous"],
                jwt_rbac=plan.jwt_rbac,
            )

        server_values = pulumi.Output.all(api_key=api_key, previous=previous_key, read_only=legacy_read_only)
        config_file: pulumi.Output[str] = pulumi.Output.secret(server_values.apply(server_config))
        server_secret = k8s.core.v1.Secret(
            f"{name}-server-keys",
            metadata=server_keys_secret_manifest(tenant)["metadata"],
            type="Opaque",
            string_data={CONFIG_FILE_KEY: config_file},
            opts=child,
        )
        # Restarts the pods (one at a time) when what Qdrant accepts changes. Not secret: 64 bits of a
        # SHA-256 over random keys of 285 bits each reveal nothing usable, and a secret here would make
        # the release's whole values secret, hiding every replica or resource change from
        # `pulumi preview --diff`.
        checksum = pulumi.Output.unsecret(config_file.apply(lambda text: _checksum([text])))
        release = helm_release(
            f"{name}-release",
            release=RELEASE_NAME,
            namespace=tenant.namespace,
            pin=versions.QDRANT,
            values=render_qdrant_values(tenant, default_storage_class=storage_class, keys_checksum=checksum),
            timeout=qdrant_release_timeout(
                replicas=settings.replicas, storage_bytes=int(parse_quantity(settings.storage_size))
            ),
            # The image by digest and no service-account token: what the chart's values cannot say.
            postrender=POST_RENDERER,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server_secret]),
        )

        # The keys clients use, handed out only once the release has rolled every pod onto a config
        # that accepts them (the release waits for the rollout): a client that re-reads its key at once
        # never meets a pod that refuses it. Vault gets these same outputs, so it waits too.
        def after_rollout(value: pulumi.Input[str]) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.all(release.id, value).apply(lambda values: str(values[1]))
            )

        client_keys: dict[str, pulumi.Output[str]] = {API_KEY: after_rollout(api_key)}
        self.read_only_api_key = None
        if settings.read_only_key:
            read_only_key: pulumi.Input[str] = (
                api_key.apply(read_only_token) if plan.read_only_token else legacy_read_only  # type: ignore[assignment]
            )
            client_keys[READ_ONLY_API_KEY] = after_rollout(read_only_key)
            self.read_only_api_key = client_keys[READ_ONLY_API_KEY]
        secret = k8s.core.v1.Secret(
            f"{name}-api-keys",
            metadata=api_key_secret_manifest(tenant)["metadata"],
            type="Opaque",
            string_data=dict(client_keys),  # secret: made of secret outputs
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
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
        self.api_key = client_keys[API_KEY]
        self.key_generation = plan.current.generation
        self.keys_in_grace = plan.in_grace
        self.register_outputs(
            {
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "public_endpoint": self.public_endpoint,
                "public_grpc_endpoint": self.public_grpc_endpoint,
                "api_key_secret_name": self.api_key_secret_name,
            }
        )
