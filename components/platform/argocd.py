"""Argo CD: its meshed namespace, the Keycloak client secret, the pinned chart, and its route
through the platform gateway."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes import custom_resource, helm_release
from components.platform.namespace import PlatformNamespace
from tenancy import versions
from tenancy.builders.argocd import (
    NAMESPACE,
    OIDC_SECRET_KEY,
    RELEASE_NAME,
    host,
    namespace_policies,
    oidc_config,
    oidc_secret_manifest,
    render_argocd_values,
    virtual_service_manifest,
)
from tenancy.builders.selfservice import worker_gitops_role, worker_gitops_role_binding
from tenancy.spec.platform import PlatformConfig


class ArgoCD(pulumi.ComponentResource):
    """Argo CD in namespace ``argocd``, signed into through Keycloak at ``issuer_url``.

    Its pods are meshed, so pass ``depends_on`` Istio's ``ready`` in ``opts``; the VirtualService
    also needs Istio's CRDs.
    """

    namespace: pulumi.Output[str]
    url: pulumi.Output[str]
    release: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        oidc_client_secret: pulumi.Input[str],
        issuer_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:platform:ArgoCD", name, None, opts)
        namespace = PlatformNamespace(
            f"{name}-namespace",
            namespace=NAMESPACE,
            mesh=True,
            policies=namespace_policies(config),
            dns=config.dns,
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])

        secret_manifest = oidc_secret_manifest()
        oidc_secret = k8s.core.v1.Secret(
            f"{name}-oidc-client",
            metadata=secret_manifest["metadata"],
            type=secret_manifest["type"],
            string_data={OIDC_SECRET_KEY: pulumi.Output.secret(oidc_client_secret)},
            opts=in_namespace,
        )
        self.release = helm_release(
            f"{name}-release",
            release=RELEASE_NAME,
            namespace=NAMESPACE,
            pin=versions.ARGO_CD,
            values=render_argocd_values(
                config, oidc_config=pulumi.Output.from_input(issuer_url).apply(oidc_config)
            ),
            # argocd-server resolves $argocd-oidc:clientSecret when it starts.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, oidc_secret]),
        )
        route = virtual_service_manifest(config)
        custom_resource(f"{name}-route", route, in_namespace)
        # The self-service workers' one right here: tenant stacks' AppProjects (nothing else in argocd,
        # its Secrets included). Their namespace need not exist yet: a binding names its subject only.
        worker_role = worker_gitops_role(NAMESPACE)
        gitops_role = k8s.rbac.v1.Role(
            f"{name}-selfservice-worker-role",
            metadata=worker_role["metadata"],
            rules=worker_role["rules"],
            opts=in_namespace,
        )
        worker_binding = worker_gitops_role_binding(NAMESPACE)
        k8s.rbac.v1.RoleBinding(
            f"{name}-selfservice-worker-binding",
            metadata=worker_binding["metadata"],
            role_ref=worker_binding["roleRef"],
            subjects=worker_binding["subjects"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, gitops_role]),
        )

        self.namespace = namespace.name
        self.url = pulumi.Output.from_input(f"https://{host(config.domain)}")
        self.register_outputs({"namespace": self.namespace, "url": self.url})
