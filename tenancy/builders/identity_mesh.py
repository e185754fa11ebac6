"""Istio AuthorizationPolicies of namespace iam: who may call Keycloak and its PostgreSQL, by mTLS identity
(the caller's service account), on which port and, on Keycloak's HTTP port, which paths.

Every connection into iam, as traced (README, "Traffic and security"; tests/platform/test_iam_traffic.py):

- browsers, Argo CD's server (it reaches the issuer at its public URL) and a tenant stack run by hand,
  through the ingress gateway: the realm endpoints, static resources and RFC 8414 metadata, plus the admin
  console and admin API, which the gateway's DENY (builders.admin_access) keeps to ``adminSourceCidrs``;
- the self-service API: the realm's JWKS and its token endpoint (the portal's code exchange);
- the self-service workers: the JWKS, and the token endpoint, ``/admin/serverinfo`` and the platform
  realm's admin API for the Keycloak provider of the tenant stacks they run;
- Keycloak to Keycloak (replicated only): JGroups on 7800 and 57800, pod to pod (builders.identity);
- Keycloak, and the database's own pods (replicas streaming, join Jobs), to PostgreSQL on 5432;
- the CloudNativePG operator (outside the mesh) to each instance's status port 8000, the one PERMISSIVE
  port: admitted only without a mesh identity, so no meshed workload can use that exception.

Not here, because no policy applies to them: kubelet probes (istiod rewrites them to the sidecar agent's
15020, as it does for the database's) and metrics scraping (the agent's merged endpoint on 15020, where
it serves Keycloak's and the exporter's metrics), which the sidecar does not intercept; NetworkPolicies
bound those. The realm import runs inside Keycloak at start (no Job). Grafana, Vault and the vClusters
have no Keycloak login, and tenant workloads never call iam: nothing admits them.
"""

from __future__ import annotations

from typing import Any

from tenancy.builders.contract import NAMESPACES, REALM, SELF_SERVICE_WORKER_ACCOUNT
from tenancy.builders.identity import (
    DATABASE_CLUSTER,
    DATABASE_POD_LABELS,
    JGROUPS_PORTS,
    KEYCLOAK_HTTP_PORT,
    KEYCLOAK_POD_LABELS,
    KEYCLOAK_RELEASE,
    POSTGRES_PORT,
    STATUS_PORT,
)
from tenancy.builders.istio import GATEWAY_SERVICE_ACCOUNT, principal
from tenancy.builders.namespace import Manifest
from tenancy.builders.platform_namespace import PLATFORM_LABELS
from tenancy.builders.selfservice import API_NAME
from tenancy.spec.platform import PlatformConfig

NAMESPACE = NAMESPACES.identity
# The keycloakx chart creates the pods' service account and names it after the release's fullname
# (serviceAccount.create, default true; _helpers.tpl keycloak.serviceAccountName).
KEYCLOAK_SERVICE_ACCOUNT = KEYCLOAK_RELEASE
# CloudNativePG runs every pod of a Cluster (instances, initdb and join Jobs) as a service account named
# after the Cluster.
DATABASE_SERVICE_ACCOUNT = DATABASE_CLUSTER
# What Keycloak's reverse-proxy guide (26.4+, "Exposed path recommendations") exposes: the realms (OIDC
# endpoints, login and account pages), static resources, and RFC 8414 metadata. Not "/" (it redirects to
# the admin console), /metrics or /health (the management port 9000, which no rule admits). No platform
# client loads keycloak.js from the server, so no /js/.
PUBLIC_PATHS = ["/realms/*", "/resources/*", "/.well-known/*"]
# The admin console and the admin REST API. The master realm's login (the bootstrap admin) is under
# /realms/, in PUBLIC_PATHS: the gateway's DENY refuses /admin and /realms/master outside
# adminSourceCidrs, so both are for administrators only.
ADMIN_CONSOLE_PATHS = ["/admin", "/admin/*"]
_OIDC = f"/realms/{REALM}/protocol/openid-connect"
JWKS_PATH = f"{_OIDC}/certs"
TOKEN_PATH = f"{_OIDC}/token"
# The self-service API verifies tokens against the JWKS and exchanges the portal's authorization code.
API_PATHS = [JWKS_PATH, TOKEN_PATH]
# The workers' readiness reads the JWKS; the Keycloak provider of a tenant stack logs in (client
# credentials, then refreshes) at the token endpoint, reads /admin/serverinfo after each login (its
# error would fail the login; Keycloak 26.4+ answers the provisioner with an empty version, and the
# provider uses its configured keycloak_version) and manages groups in the platform realm's admin API.
# Nothing of the master realm or of other realms.
WORKER_PATHS = [
    JWKS_PATH,
    TOKEN_PATH,
    "/admin/serverinfo",
    f"/admin/realms/{REALM}",
    f"/admin/realms/{REALM}/*",
]


GATEWAY_PRINCIPAL = principal(NAMESPACES.ingress, GATEWAY_SERVICE_ACCOUNT)
API_PRINCIPAL = principal(NAMESPACES.self_service, API_NAME)
WORKER_PRINCIPAL = principal(NAMESPACES.self_service, SELF_SERVICE_WORKER_ACCOUNT)
KEYCLOAK_PRINCIPAL = principal(NAMESPACE, KEYCLOAK_SERVICE_ACCOUNT)
DATABASE_PRINCIPAL = principal(NAMESPACE, DATABASE_SERVICE_ACCOUNT)


def _policy(name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "spec": spec,
    }


def _ports(ports: list[int]) -> list[str]:
    return [str(port) for port in ports]  # the CRD takes ports as strings


def _allow(
    name: str,
    pods: dict[str, str],
    *,
    source: dict[str, list[str]],
    ports: list[int],
    paths: list[str] | None = None,
) -> Manifest:
    """ALLOW ``source`` to ``pods`` on ``ports`` (and ``paths``, HTTP ports only)."""
    operation: dict[str, Any] = {"ports": _ports(ports)}
    if paths is not None:
        operation["paths"] = list(paths)
    return _policy(
        name,
        {
            "selector": {"matchLabels": dict(pods)},
            "action": "ALLOW",
            "rules": [{"from": [{"source": source}], "to": [{"operation": operation}]}],
        },
    )


def deny_by_default() -> Manifest:
    """An ALLOW policy without rules matches nothing: with it, whatever no other policy of iam allows is
    denied, on every pod of the namespace (Keycloak, the database, whatever is added later)."""
    return _policy("allow-nothing", {})


def authorization_policies(config: PlatformConfig) -> list[Manifest]:
    """The ALLOW policies of iam, one per connection (see the module docstring). JGroups and replication
    exist only with more than one replica, and so do their rules."""
    keycloak, database = KEYCLOAK_POD_LABELS, DATABASE_POD_LABELS
    policies = [
        _allow(
            "allow-ingress-gateway-to-keycloak",
            keycloak,
            source={"principals": [GATEWAY_PRINCIPAL]},
            ports=[KEYCLOAK_HTTP_PORT],
            paths=PUBLIC_PATHS,
        ),
        _allow(
            "allow-ingress-gateway-to-keycloak-admin",
            keycloak,
            source={"principals": [GATEWAY_PRINCIPAL]},
            ports=[KEYCLOAK_HTTP_PORT],
            paths=ADMIN_CONSOLE_PATHS,
        ),
        _allow(
            "allow-selfservice-api-to-keycloak",
            keycloak,
            source={"principals": [API_PRINCIPAL]},
            ports=[KEYCLOAK_HTTP_PORT],
            paths=API_PATHS,
        ),
        _allow(
            "allow-selfservice-workers-to-keycloak",
            keycloak,
            source={"principals": [WORKER_PRINCIPAL]},
            ports=[KEYCLOAK_HTTP_PORT],
            paths=WORKER_PATHS,
        ),
        _allow(
            "allow-keycloak-to-postgres",
            database,
            source={"principals": [KEYCLOAK_PRINCIPAL]},
            ports=[POSTGRES_PORT],
        ),
        # The operator has no sidecar, so its connections carry no identity; "notPrincipals: *" admits
        # exactly those, so the port's PERMISSIVE exception serves nobody in the mesh.
        _allow(
            "allow-cnpg-operator-to-status",
            database,
            source={"notPrincipals": ["*"]},
            ports=[STATUS_PORT],
        ),
    ]
    if config.high_availability:
        policies += [
            # Standbys stream WAL from the primary, and a new instance's join Job copies it
            # (pg_basebackup), both through the -rw Service as the Cluster's service account.
            _allow(
                "allow-postgres-replication",
                database,
                source={"principals": [DATABASE_PRINCIPAL]},
                ports=[POSTGRES_PORT],
            ),
            _allow(
                "allow-keycloak-jgroups",
                keycloak,
                source={"principals": [KEYCLOAK_PRINCIPAL]},
                ports=JGROUPS_PORTS,
            ),
        ]
    return policies
