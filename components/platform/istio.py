"""The service mesh: Istio's CRDs, CNI node agent, control plane and ingress gateway, mesh-wide
STRICT mTLS, the mesh-wide default Sidecar scope, and the platform Gateway that every public host goes
through."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes import custom_resource, helm_release
from components.platform.namespace import PlatformNamespace
from tenancy import versions
from tenancy.builders.admin_access import admin_access_policy
from tenancy.builders.contract import GATEWAY_REFERENCE, NAMESPACES
from tenancy.builders.istio import (
    BASE_RELEASE,
    CNI_NAMESPACE,
    CNI_RELEASE,
    GATEWAY_RELEASE,
    ISTIOD_RELEASE,
    base_values,
    cni_values,
    gateway_manifest,
    gateway_values,
    ingress_namespace_policies,
    istiod_values,
    mesh_default_sidecar,
    mesh_namespace_policies,
    mesh_peer_authentication,
)
from tenancy.spec.platform import PlatformConfig


class Istio(pulumi.ComponentResource):
    """Releases base -> cni -> istiod -> gateway, each waiting for the one before.

    Meshed workloads must wait for ``ready`` (istiod): its webhook injects their sidecars, and a pod
    created before it runs has none. Istio custom resources need only ``base`` (their CRDs).
    """

    gateway_name: pulumi.Output[str]
    ingress_namespace: pulumi.Output[str]
    mesh_namespace: pulumi.Output[str]
    base: k8s.helm.v3.Release
    cni: k8s.helm.v3.Release
    istiod: k8s.helm.v3.Release
    gateway: k8s.helm.v3.Release
    peer_authentication: k8s.apiextensions.CustomResource
    default_sidecar: k8s.apiextensions.CustomResource
    platform_gateway: k8s.apiextensions.CustomResource
    admin_access: k8s.apiextensions.CustomResource
    ready: list[pulumi.Resource]

    def __init__(
        self, name: str, *, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("platform:platform:Istio", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # istiod's pods opt out of injection themselves; the namespace is not meshed.
        mesh_namespace = PlatformNamespace(
            f"{name}-mesh-namespace",
            namespace=NAMESPACES.mesh,
            mesh=False,
            policies=mesh_namespace_policies(config),
            dns=config.dns,
            opts=child,
        )
        # mesh=True although the gateway has no sidecar: the gateway pods are injected (image "auto",
        # the "gateway" template), and a namespace labelled istio-injection=disabled gets no injection at
        # all. It also lets the gateway reach istiod for its configuration and certificates.
        ingress_namespace = PlatformNamespace(
            f"{name}-ingress-namespace",
            namespace=NAMESPACES.ingress,
            mesh=True,
            policies=ingress_namespace_policies(),
            dns=config.dns,
            opts=child,
        )

        self.base = helm_release(
            f"{name}-base",
            release=BASE_RELEASE,
            namespace=NAMESPACES.mesh,
            pin=versions.ISTIO_BASE,
            values=base_values(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[mesh_namespace]),
        )
        # kube-system exists in every cluster: no namespace of ours to wait for.
        self.cni = helm_release(
            f"{name}-cni",
            release=CNI_RELEASE,
            namespace=CNI_NAMESPACE,
            pin=versions.ISTIO_CNI,
            values=cni_values(config),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.base]),
        )
        self.istiod = helm_release(
            f"{name}-istiod",
            release=ISTIOD_RELEASE,
            namespace=NAMESPACES.mesh,
            pin=versions.ISTIOD,
            values=istiod_values(config),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cni]),
        )
        self.gateway = helm_release(
            f"{name}-gateway",
            release=GATEWAY_RELEASE,
            namespace=NAMESPACES.ingress,
            pin=versions.ISTIO_GATEWAY,
            values=gateway_values(config),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ingress_namespace, self.istiod]),
        )

        self.peer_authentication = custom_resource(
            f"{name}-strict-mtls",
            mesh_peer_authentication(),
            pulumi.ResourceOptions(parent=self, depends_on=[self.base]),
        )
        self.default_sidecar = custom_resource(
            f"{name}-default-sidecar",
            mesh_default_sidecar(),
            pulumi.ResourceOptions(parent=self, depends_on=[self.base]),
        )
        self.platform_gateway = custom_resource(
            f"{name}-platform-gateway",
            gateway_manifest(config),
            pulumi.ResourceOptions(parent=self, depends_on=[self.base, ingress_namespace]),
        )

        # Keycloak's admin console, Grafana and Argo CD only from platform:adminSourceCidrs.
        self.admin_access = custom_resource(
            f"{name}-admin-access",
            admin_access_policy(config),
            pulumi.ResourceOptions(parent=self, depends_on=[self.base, ingress_namespace]),
        )

        self.ready = [self.istiod]
        self.gateway_name = pulumi.Output.from_input(GATEWAY_REFERENCE)
        self.ingress_namespace = ingress_namespace.name
        self.mesh_namespace = mesh_namespace.name
        self.register_outputs(
            {
                "gateway_name": self.gateway_name,
                "ingress_namespace": self.ingress_namespace,
                "mesh_namespace": self.mesh_namespace,
            }
        )
