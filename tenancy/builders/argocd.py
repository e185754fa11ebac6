"""Argo CD: Helm values (argoproj/argo-helm charts/argo-cd, pinned in tenancy.versions), the Secret
holding the Keycloak client secret, the VirtualService behind the platform gateway, and the
NetworkPolicies of its namespace.

Sign-in is Keycloak OIDC only (no Dex, no local admin); who may do what comes from Keycloak groups.
TLS ends at the Istio gateway, so argocd-server serves plain HTTP inside the (mTLS) mesh.
"""

from __future__ import annotations

from typing import Any

import pulumi
import yaml

from tenancy.builders.contract import (
    ARGOCD_CLI_CLIENT_ID,
    ARGOCD_PORT_FORWARD_URL,
    GATEWAY_REFERENCE,
    INGRESS_GATEWAY_LABELS,
    NAMESPACES,
)
from tenancy.builders.istio import GATEWAY_HTTPS_PORT  # the gateway pod's port behind the LB's 443
from tenancy.builders.namespace import Manifest
from tenancy.builders.network import ISTIO_METRICS_PORT
from tenancy.builders.platform_namespace import (
    PLATFORM_LABELS,
    allow_egress_outside,
    allow_egress_to_api_server,
    allow_egress_to_cidrs,
    allow_ingress,
    network_policy,
)
from tenancy.spec.platform import PlatformConfig

# With release "argocd" every object is called argocd-<component> (argo-cd.fullname).
RELEASE_NAME = "argocd"
NAMESPACE = NAMESPACES.gitops
HOST_PREFIX = "argocd"
OIDC_CLIENT_ID = "argocd"

OIDC_SECRET_NAME = "argocd-oidc"
OIDC_SECRET_KEY = "clientSecret"
PLATFORM_ADMINS_GROUP = "/platform-admins"
SERVER_POD_LABELS = {"app.kubernetes.io/name": "argocd-server"}
REPO_SERVER_POD_LABELS = {"app.kubernetes.io/name": "argocd-repo-server"}
SERVER_CONTAINER_PORT = 8080  # server.containerPorts.server; the Service's port 80 targets it
SERVER_SERVICE_PORT = 80  # plain HTTP because server.insecure is on
# The chart's Service (templates/argocd-server/service.yaml) maps both its ports, 80 and 443, to the one
# container port 8080. Named "http" and "https" (the chart's defaults), Istio would see two protocols on
# one target port, and 443 would claim TLS where argocd-server speaks plain HTTP (server.insecure). Both
# names carry the "http" prefix, and 443 declares appProtocol http, so every path to 8080 is plain HTTP.
SERVER_SERVICE_PORT_NAMES = {"servicePortHttpName": "http", "servicePortHttpsName": "http-443"}
SERVER_HTTPS_APP_PROTOCOL = "http"
KEYCLOAK_PUBLIC_PORT = 443  # the issuer https://auth.<domain>, at the gateway's load balancer

# Argo CD finds a secret referenced as $<secret>:<key> only in Secrets carrying this label.
ARGOCD_SECRET_LABELS = {"app.kubernetes.io/part-of": "argocd"}


def host(domain: str) -> str:
    return f"{HOST_PREFIX}.{domain}"


def oidc_config(issuer_url: str) -> str:
    """The ``oidc.config`` entry of argocd-cm. The chart renders the value with ``toString``, so it
    must be a YAML string; the client secret is a reference Argo CD resolves from our Secret.

    No ``groups`` scope: the realm has none (the ``groups`` claim comes from a mapper on the argocd
    client, see builders.identity), and Keycloak rejects a request naming an unknown scope. Argo CD's
    default scope list includes ``groups``, so the list is given explicitly.
    """
    return yaml.safe_dump(
        {
            "name": "Keycloak",
            "issuer": issuer_url,
            "clientID": OIDC_CLIENT_ID,
            "clientSecret": f"${OIDC_SECRET_NAME}:{OIDC_SECRET_KEY}",
            # argocd login --sso: PKCE through a public client of its own (no allowedAudiences here,
            # so Argo CD accepts tokens issued to either client).
            "cliClientID": ARGOCD_CLI_CLIENT_ID,
            "requestedScopes": ["openid", "profile", "email"],
        },
        sort_keys=False,
    )


def rbac_policy_csv() -> str:
    # Tenants get their rights from their AppProject's roles, not from here.
    return f"g, {PLATFORM_ADMINS_GROUP}, role:admin\n"


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def _replicated(replicas: int) -> dict[str, Any]:
    # pdb.enabled alone renders minAvailable 0, which protects nothing.
    return {"replicas": replicas, "pdb": {"enabled": True, "minAvailable": 1}}


def render_argocd_values(config: PlatformConfig, *, oidc_config: pulumi.Input[str]) -> dict[str, Any]:
    """Chart values; ``oidc_config`` is :func:`oidc_config` of the issuer URL (an Input)."""
    ha = config.high_availability
    controller = _resources("500m", "1Gi", "2", "2Gi") if ha else _resources("250m", "512Mi", "1", "1Gi")
    server = _resources("100m", "256Mi", "1", "512Mi") if ha else _resources("50m", "128Mi", "500m", "256Mi")
    # The repo-server renders manifests (helm template, kustomize build): it is the one that needs memory.
    repo_server = _resources("250m", "512Mi", "2", "2Gi") if ha else _resources("100m", "256Mi", "1", "1Gi")
    values: dict[str, Any] = {
        # argocd-cm "url" (the OIDC redirect base) and the notifications links derive from it.
        "global": {
            "domain": host(config.domain),
            # The namespace's policies are ours (default deny both ways, explicit allows). The chart's are
            # ingress-only and open argocd-server to every pod, and policies add up: they would widen ours.
            "networkPolicy": {"create": False},
        },
        "dex": {"enabled": False},
        "configs": {
            "cm": {
                "oidc.config": oidc_config,
                # Sign-in through Keycloak only; break-glass is `argocd admin` with cluster credentials.
                "admin.enabled": False,
                "additionalUrls": f"- {ARGOCD_PORT_FORWARD_URL}\n",
            },
            # Pinned although equal to the chart's defaults: access control must not move with a chart bump.
            "rbac": {
                "policy.csv": rbac_policy_csv(),
                "policy.default": "",
                "scopes": "[groups]",
            },
            # TLS ends at the Istio gateway; without this argocd-server redirects its HTTP port to HTTPS.
            "params": {"server.insecure": True},
        },
        # One controller replica even in prod: more replicas shard clusters, not stand in for each other.
        "controller": {"resources": controller},
        "server": {
            "resources": server,
            "service": {
                **SERVER_SERVICE_PORT_NAMES,
                "servicePortHttpsAppProtocol": SERVER_HTTPS_APP_PROTOCOL,
            },
        },
        "repoServer": {"resources": repo_server},
        "applicationSet": {"resources": _resources("50m", "128Mi", "500m", "256Mi")},
        "notifications": {"resources": _resources("50m", "64Mi", "250m", "128Mi")},
        "redisSecretInit": {"resources": _resources("10m", "32Mi", "100m", "64Mi")},
    }
    if ha:
        # The chart's documented HA setup without autoscaling (README "High Availability").
        values["server"] |= _replicated(2)
        values["repoServer"] |= _replicated(2)
        # More than one replica also turns on the controller's leader election (chart preset).
        values["applicationSet"] |= _replicated(2)
        small = _resources("20m", "32Mi", "100m", "64Mi")
        # Three Redis nodes with Sentinel behind HAProxy; it replaces the single Redis Deployment.
        # Hard anti-affinity (the chart's default) needs three schedulable nodes.
        values["redis-ha"] = {
            "enabled": True,
            "redis": {"resources": _resources("100m", "256Mi", "500m", "512Mi")},
            "sentinel": {"resources": small},
            "splitBrainDetection": {"resources": small},
            "init": {"resources": small},
            "haproxy": {
                "resources": _resources("50m", "64Mi", "250m", "128Mi"),
                "init": {"resources": small},
                "podDisruptionBudget": {"maxUnavailable": 1},
            },
            "podDisruptionBudget": {"maxUnavailable": 1},
        }
    else:
        values["redis"] = {"resources": _resources("50m", "64Mi", "250m", "256Mi")}
    return values


def oidc_secret_manifest() -> Manifest:
    """The Secret the ``$argocd-oidc:clientSecret`` reference reads; its data is set by the component."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": OIDC_SECRET_NAME,
            "namespace": NAMESPACE,
            "labels": {**PLATFORM_LABELS, **ARGOCD_SECRET_LABELS},
        },
        "type": "Opaque",
    }


def virtual_service_manifest(config: PlatformConfig) -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "argocd-server", "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "hosts": [host(config.domain)],
            "gateways": [GATEWAY_REFERENCE],
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": f"{RELEASE_NAME}-server.{NAMESPACE}.svc.cluster.local",
                                "port": {"number": SERVER_SERVICE_PORT},
                            }
                        }
                    ]
                }
            ],
        },
    }


def _server_to_keycloak(config: PlatformConfig) -> Manifest:
    """OIDC discovery, JWKS and the code exchange at https://auth.<domain>, which resolves to the
    gateway's load balancer. Inside the cluster kube-proxy may hand a connection to that address
    straight to a gateway pod, or it leaves through the load balancer: both peers are allowed. Without
    ``gatewayCidrs`` the address is unknown, so any address on 443 (README, accepted findings)."""
    if not config.gateway_cidrs:
        return allow_egress_outside(
            NAMESPACE, "allow-server-to-keycloak", pods=SERVER_POD_LABELS, ports=[KEYCLOAK_PUBLIC_PORT]
        )
    gateway_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACES.ingress}},
        "podSelector": {"matchLabels": dict(INGRESS_GATEWAY_LABELS)},
    }
    return network_policy(
        NAMESPACE,
        "allow-server-to-keycloak",
        {
            "podSelector": {"matchLabels": dict(SERVER_POD_LABELS)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [gateway_pods, *({"ipBlock": {"cidr": cidr}} for cidr in config.gateway_cidrs)],
                    "ports": [
                        {"protocol": "TCP", "port": port}
                        for port in sorted({KEYCLOAK_PUBLIC_PORT, GATEWAY_HTTPS_PORT})
                    ],
                }
            ],
        },
    )


def namespace_policies(config: PlatformConfig) -> list[Manifest]:
    """argocd: the gateway reaches the UI/API; every component reaches the API server at its addresses,
    the server Keycloak's public URL, and the repo-server the tenants' repositories (``gitHosts``)."""
    return [
        allow_ingress(
            NAMESPACE,
            "allow-ingress-gateway-to-server",
            pods=SERVER_POD_LABELS,
            from_namespace=NAMESPACES.ingress,
            from_pods=INGRESS_GATEWAY_LABELS,
            ports=[SERVER_CONTAINER_PORT],
        ),
        # The controllers, the server (sessions, RBAC, the UI's resource views) and the ApplicationSet
        # and notifications controllers all watch the API.
        allow_egress_to_api_server(NAMESPACE, "allow-apiserver", pods=None, config=config),
        _server_to_keycloak(config),
        allow_egress_to_cidrs(
            NAMESPACE,
            "allow-repo-server-to-git",
            pods=REPO_SERVER_POD_LABELS,
            cidrs=config.git_hosts.cidrs,
            ports=config.git_hosts.ports,
        ),
        allow_ingress(
            NAMESPACE,
            "allow-metrics-scraping",
            from_namespace=NAMESPACES.observability,
            ports=[ISTIO_METRICS_PORT],
        ),
    ]
