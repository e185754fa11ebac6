"""Platform logs: Loki, Alloy collecting every pod's logs, Grafana at grafana.<domain>.

The namespace is not in the mesh. Alloy talks only to the API server (outside the mesh) and to Loki;
Grafana and Loki talk only inside the namespace; the one way in is the ingress gateway to Grafana,
which NetworkPolicy limits to the gateway pods. A sidecar would add a proxy to every node (Alloy is a
DaemonSet) and sit in the path of Loki's memberlist gossip and gRPC between pod IPs, for no isolation
that the namespace's policies do not already give. The cost: the gateway -> Grafana hop is plain HTTP
inside the cluster (TLS ends at the gateway), and the gateway's egress must allow it.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes import custom_resource, helm_release
from components.platform.namespace import PlatformNamespace
from components.platform.passwords import password_taken_once
from tenancy import versions
from tenancy.builders.namespace import Manifest
from tenancy.builders.observability import (
    ACCESS_KEY_ID_ENV,
    ALLOY_RELEASE,
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_ADMIN_USER,
    GRAFANA_ADMIN_USER_KEY,
    GRAFANA_RELEASE,
    LOKI_PUSH_URL,
    LOKI_RELEASE,
    NAMESPACE,
    SECRET_ACCESS_KEY_ENV,
    grafana_admin_secret_manifest,
    grafana_database_manifest,
    grafana_host,
    grafana_virtual_service,
    loki_storage_secret_manifest,
    observability_policies,
    render_alloy_values,
    render_grafana_values,
    render_loki_values,
)
from tenancy.spec.platform import CONFIG_NAMESPACE, PlatformConfig
from tenancy.versions import ChartPin

# Secret config keys (`pulumi config set --secret platform:<key>`), read only where Loki uses object storage.
OBJECT_STORAGE_ACCESS_KEY_ID = "objectStorageAccessKeyId"
OBJECT_STORAGE_SECRET_ACCESS_KEY = "objectStorageSecretAccessKey"


class Observability(pulumi.ComponentResource):
    """Loki, Alloy and Grafana in namespace ``observability``.

    Its Istio VirtualService and (prod) CloudNativePG Cluster need those CRDs: pass the releases that
    install them in ``opts.depends_on``; the component forwards them to these two resources.
    """

    loki_push_url: pulumi.Output[str]
    grafana_url: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(
        self, name: str, *, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("platform:platform:Observability", name, None, opts)
        namespace = PlatformNamespace(
            f"{name}-namespace",
            namespace=NAMESPACE,
            mesh=False,
            policies=observability_policies(config),
            dns=config.dns,
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        after_crds = in_namespace
        if opts is not None and opts.depends_on is not None:
            after_crds = pulumi.ResourceOptions.merge(
                in_namespace, pulumi.ResourceOptions(depends_on=opts.depends_on)
            )

        loki_inputs: list[pulumi.Resource] = []
        if config.high_availability and config.object_storage is not None:
            platform = pulumi.Config(CONFIG_NAMESPACE)
            loki_inputs.append(
                self._secret(
                    f"{name}-loki-object-storage",
                    loki_storage_secret_manifest(),
                    {
                        ACCESS_KEY_ID_ENV: platform.require_secret(OBJECT_STORAGE_ACCESS_KEY_ID),
                        SECRET_ACCESS_KEY_ENV: platform.require_secret(OBJECT_STORAGE_SECRET_ACCESS_KEY),
                    },
                    in_namespace,
                )
            )
        # In prod a deleted Loki release leaves its StatefulSets and volumes (the WAL and the index
        # not yet shipped to object storage) in the cluster instead of taking them along.
        loki = _release(
            f"{name}-loki",
            LOKI_RELEASE,
            versions.LOKI,
            render_loki_values(config),
            in_namespace.merge(pulumi.ResourceOptions(retain_on_delete=config.high_availability)),
            loki_inputs,
        )

        # Alphanumeric: typed into a login form and passed through env. Grafana sets it when it creates
        # its database, on the first start only.
        admin_password = password_taken_once(
            f"{name}-grafana-admin-password", length=32, parent=self, protect=config.high_availability
        )
        grafana_inputs: list[pulumi.Resource] = [
            self._secret(
                f"{name}-grafana-admin",
                grafana_admin_secret_manifest(),
                {
                    GRAFANA_ADMIN_USER_KEY: GRAFANA_ADMIN_USER,
                    GRAFANA_ADMIN_PASSWORD_KEY: admin_password.result,
                },
                in_namespace,
            )
        ]
        if config.high_availability:
            # Grafana's dashboards, users and alerts live here: protected, and kept if it ever
            # leaves the program (CNPG deletes the volumes with the Cluster).
            keep = after_crds.merge(pulumi.ResourceOptions(protect=True, retain_on_delete=True))
            grafana_inputs.append(
                custom_resource(f"{name}-grafana-db", grafana_database_manifest(config), keep)
            )
        _release(
            f"{name}-grafana",
            GRAFANA_RELEASE,
            versions.GRAFANA,
            render_grafana_values(config),
            in_namespace,
            grafana_inputs,
        )
        custom_resource(f"{name}-grafana-route", grafana_virtual_service(config), after_crds)

        _release(f"{name}-alloy", ALLOY_RELEASE, versions.ALLOY, render_alloy_values(), in_namespace, [loki])

        self.loki_push_url = pulumi.Output.from_input(LOKI_PUSH_URL)
        self.grafana_url = pulumi.Output.from_input(f"https://{grafana_host(config)}")
        self.grafana_admin_password = pulumi.Output.secret(admin_password.result)
        self.namespace = namespace.name
        self.register_outputs(
            {
                "loki_push_url": self.loki_push_url,
                "grafana_url": self.grafana_url,
                "grafana_admin_password": self.grafana_admin_password,
                "namespace": self.namespace,
            }
        )

    def _secret(
        self,
        resource_name: str,
        manifest: Manifest,
        string_data: dict[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions,
    ) -> k8s.core.v1.Secret:
        return k8s.core.v1.Secret(
            resource_name,
            metadata=manifest["metadata"],
            type=manifest["type"],
            string_data=string_data,
            opts=opts,
        )


def _release(
    resource_name: str,
    release: str,
    pin: ChartPin,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    after: list[pulumi.Resource],
) -> k8s.helm.v3.Release:
    return helm_release(
        resource_name,
        release=release,
        namespace=NAMESPACE,
        pin=pin,
        values=values,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=after)),
    )
