"""Who may reach the platform's admin surfaces through the ingress gateway.

Keycloak's admin console and its master realm (where the bootstrap admin signs in), Grafana (its only
login is the generated admin) and Argo CD (platform admins; tenants follow their deployments through the
self-service API) are refused at the gateway unless the client's address is in the platform config's
``adminSourceCidrs``. One DENY AuthorizationPolicy on the gateway pods: Istio evaluates DENY before any
ALLOW, so no route added later can open them again.

The gateway sees the client's address only if the load balancer keeps it: the gateway Service runs with
``externalTrafficPolicy: Local`` (see istio.gateway_values), so a network load balancer's packets arrive
with the client's source address; behind a proxying load balancer set the mesh's numTrustedProxies so
Istio reads X-Forwarded-For instead (README, "What a cluster must provide").
"""

from __future__ import annotations

from typing import Any

from tenancy.builders.argocd import host as argocd_host
from tenancy.builders.contract import NAMESPACES
from tenancy.builders.identity import auth_host
from tenancy.builders.istio import GATEWAY_POD_LABELS, vcluster_api_hosts
from tenancy.builders.namespace import Manifest
from tenancy.builders.observability import grafana_host
from tenancy.builders.platform_namespace import PLATFORM_LABELS
from tenancy.spec.platform import PlatformConfig

POLICY_NAME = "restrict-admin-surfaces"
# Keycloak serves the admin console and its API under /admin, and the bootstrap admin's login under
# the master realm; the platform realm (what users and tenants sign in to) stays open.
KEYCLOAK_ADMIN_PATHS = ["/admin", "/admin/*", "/realms/master", "/realms/master/*"]


def _hosts(*names: str) -> list[str]:
    # A client may send the port in the Host header (auth.example.com:443); Istio compares the header
    # as sent, so each name is listed bare and with any port.
    return [pattern for name in names for pattern in (name, f"{name}:*")]


def admin_surfaces(config: PlatformConfig) -> list[dict[str, Any]]:
    """The operations (host, and paths where only part of a host is admin) that are admin surfaces."""
    return [
        {"operation": {"hosts": _hosts(auth_host(config.domain)), "paths": list(KEYCLOAK_ADMIN_PATHS)}},
        {"operation": {"hosts": _hosts(grafana_host(config), argocd_host(config.domain))}},
    ]


def admin_access_policy(config: PlatformConfig) -> Manifest:
    """DENY the admin surfaces to every client outside ``config.admin_source_cidrs`` (all, when empty).

    The gateway also passes the tenants' vCluster TLS through untouched (a TCP filter chain, chosen by
    SNI ``*.vc.<domain>``). On a TCP chain Istio drops the HTTP-only ``hosts`` and ``paths`` from a DENY
    rule, which would leave "deny every client outside the list" and cut every tenant off its vCluster.
    The SNI condition, which holds on both kinds of chain, keeps the rule off that chain; a request
    carrying such an SNI lands on the passthrough chain and never reaches an admin host.
    """
    rule: dict[str, Any] = {
        "to": admin_surfaces(config),
        "when": [{"key": "connection.sni", "notValues": vcluster_api_hosts(config)}],
    }
    if config.admin_source_cidrs:
        rule["from"] = [{"source": {"notRemoteIpBlocks": list(config.admin_source_cidrs)}}]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": NAMESPACES.ingress, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "selector": {"matchLabels": dict(GATEWAY_POD_LABELS)},
            "action": "DENY",
            "rules": [rule],
        },
    }
