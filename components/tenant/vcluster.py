"""A tenant's virtual cluster: the pinned vcluster chart, the route to its API through the platform
gateway, and its kubeconfig (the external one, see tenancy.builders.vcluster) as a secret output."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components.kubernetes import custom_resource, helm_release
from tenancy import versions
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.vcluster import (
    KUBECONFIG_KEY,
    KUBECONFIG_SECRET,
    RELEASE_NAME,
    api_virtual_service,
    render_vcluster_values,
    wait_for_secret_command,
)
from tenancy.spec.tenant import Tenant


def _kube_context() -> str | None:
    """The kubeconfig context the Kubernetes provider uses, so kubectl talks to the same cluster."""
    return pulumi.Config("kubernetes").get("context")


def _decode(data: Mapping[str, str] | None) -> str:
    encoded = (data or {}).get(KUBECONFIG_KEY, "")
    return base64.b64decode(encoded).decode() if encoded else ""


class VirtualCluster(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str]
    kubeconfig_secret_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        platform: PlatformRefs,
        image_overrides: Mapping[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``image_overrides``: the platform config's ``vclusterImages`` (by digest, validated there)."""
        super().__init__("platform:tenant:VirtualCluster", name, None, opts)
        release = helm_release(
            f"{name}-release",
            release=RELEASE_NAME,
            namespace=tenant.namespace,
            pin=versions.VCLUSTER,
            values=render_vcluster_values(
                tenant,
                storage_class=platform.storage_class,
                domain=platform.domain,
                image_overrides=image_overrides,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Istio objects in a tenant namespace are the platform's to declare (tenants may not create them).
        custom_resource(
            f"{name}-api-route", api_virtual_service(tenant, platform), pulumi.ResourceOptions(parent=self)
        )
        # The running vCluster writes this Secret from a loop that polls every few seconds once its API
        # server is up, possibly after the pod reports Ready: wait for it to exist, then read it. It
        # owns the Secret, so it is read, not managed. The id depends on the wait: unknown in a first
        # preview, so the read waits instead of failing on a Secret that does not exist yet.
        created = command.local.Command(
            f"{name}-kubeconfig-created",
            create=wait_for_secret_command(tenant.namespace, KUBECONFIG_SECRET, context=_kube_context()),
            triggers=[release.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        secret_id = created.stdout.apply(lambda _: f"{tenant.namespace}/{KUBECONFIG_SECRET}")
        kubeconfig_secret = k8s.core.v1.Secret.get(
            f"{name}-kubeconfig", secret_id, opts=pulumi.ResourceOptions(parent=self, depends_on=[created])
        )
        self.release = release
        self.kubeconfig = pulumi.Output.secret(kubeconfig_secret.data.apply(_decode))
        self.kubeconfig_secret_name = pulumi.Output.from_input(KUBECONFIG_SECRET)
        self.register_outputs({"kubeconfig_secret_name": self.kubeconfig_secret_name})
