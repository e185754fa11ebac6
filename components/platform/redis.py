"""Redis with Sentinel in namespace ``redis``, for the platform's own services.

The namespace is not in the mesh: Sentinel and the chart's init container reach the other nodes
through their announce Services while the pod starts, before a sidecar would be ready, and clients
connect to whichever address Sentinel hands out. Access is bounded by NetworkPolicy (client namespaces
only) and by the generated password.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.kubernetes import helm_release
from components.platform.namespace import PlatformNamespace
from tenancy import versions
from tenancy.builders.redis import (
    AUTH_KEY,
    MASTER_GROUP_NAME,
    NAMESPACE,
    RELEASE_NAME,
    SELF_SERVICE_NAMESPACE,
    auth_secret_manifest,
    redis_policies,
    render_redis_values,
    sentinel_hosts,
)
from tenancy.spec.platform import PlatformConfig


class RedisSentinel(pulumi.ComponentResource):
    """Redis + Sentinel (redis-ha): 3 nodes in prod, 1 in dev; clients find the master via Sentinel.

    ``password`` authenticates to both Redis and Sentinel.
    """

    sentinel_hosts: pulumi.Output[list[str]]
    master_group_name: pulumi.Output[str]
    password: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        client_namespaces: Sequence[str] = (SELF_SERVICE_NAMESPACE,),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:platform:RedisSentinel", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = PlatformNamespace(
            f"{name}-namespace",
            namespace=NAMESPACE,
            mesh=False,
            policies=redis_policies(client_namespaces),
            dns=config.dns,
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])

        # Alphanumeric: the chart's init script splices the password into its config files with sed.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)
        manifest = auth_secret_manifest()
        secret = k8s.core.v1.Secret(
            f"{name}-auth",
            metadata=manifest["metadata"],
            type=manifest["type"],
            string_data={AUTH_KEY: password.result},
            opts=in_namespace,
        )
        helm_release(
            f"{name}-release",
            release=RELEASE_NAME,
            namespace=NAMESPACE,
            pin=versions.REDIS_HA,
            values=render_redis_values(config),
            # In prod a deleted release leaves its StatefulSet and volumes in the cluster: dropping
            # Redis from the program, or a stack mix-up, must not take the data with it.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[namespace, secret], retain_on_delete=config.high_availability
            ),
        )

        self.sentinel_hosts = pulumi.Output.from_input(sentinel_hosts(config))
        self.master_group_name = pulumi.Output.from_input(MASTER_GROUP_NAME)
        self.password = pulumi.Output.secret(password.result)
        self.namespace = namespace.name
        self.register_outputs(
            {
                "sentinel_hosts": self.sentinel_hosts,
                "master_group_name": self.master_group_name,
                "password": self.password,
                "namespace": self.namespace,
            }
        )
