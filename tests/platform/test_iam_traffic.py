"""Every connection to and from Keycloak's pods and its CloudNativePG PostgreSQL in namespace iam, traced
through the real dev and prod platform programs (their stack files, under mocks): NetworkPolicies on both
ends, mutual TLS (the caller's Sidecar scope, or a PERMISSIVE port for a caller outside the mesh), and iam's
Istio AuthorizationPolicies, by the caller's identity, port and path. Each rule is removed in turn and
exactly the connections it serves must fail; what nobody needs (a tenant's pod at the admin API, the
management port, the status port over mTLS) is refused by the mesh on its own.

The tenant stack's own calls and Argo CD's reach the gateway from outside (the public URL); they are the
gateway's connections here. Probes and metrics go to the sidecar agent's 15020, which no policy covers.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml

from tenancy.builders import identity, identity_mesh, selfservice
from tenancy.builders.contract import INGRESS_GATEWAY_LABELS, NAMESPACES, REALM, issuer_url
from tenancy.builders.istio import GATEWAY_POD_LABELS
from tenancy.builders.observability import (
    ALLOY_POD_LABELS,
    GRAFANA_DATABASE_METRICS_PORT,
    GRAFANA_DATABASE_POD_LABELS,
)
from tenancy.builders.platform_namespace import SIDECAR_METRICS_PORT
from tenancy.render.runtime import StackCapture, capture_stack
from tests.conftest import PROJECT_DIR, captured_stack
from tests.platform.support import (
    accepts_plaintext,
    authorization_allows,
    connection_allowed,
    namespace_of,
    sidecar_knows,
)

IAM = NAMESPACES.identity
KINDS = ("NetworkPolicy", "AuthorizationPolicy", "PeerAuthentication", "Sidecar", "Service")
Rule = tuple[str, str, str]  # kind, namespace, name


class Platform(NamedTuple):
    environment: str
    capture: StackCapture


@pytest.fixture(scope="module", params=["dev", "prod", "prod-store-in-cluster"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """The shipped dev and prod programs, and prod with its object store in the cluster, where the
    database's pods get a Sidecar of their own (identity.database_sidecar) that must keep their Service."""
    if request.param != "prod-store-in-cluster":
        return Platform(request.param, captured_stack(request.param))
    project = tmp_path_factory.mktemp("prod-store-in-cluster")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", project / "Pulumi.yaml")
    stack_file = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    store = {
        "endpoint": "http://minio.object-store.svc.cluster.local",
        "namespace": "object-store",
        "listenerPort": 9000,
    }
    stack_file["config"]["platform:objectStorage"] = {
        "lokiBucket": "loki",
        "backupBucket": "backups",
        **store,
    }
    (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(stack_file))
    capture = capture_stack("prod", project_dir=project)
    assert any(
        r.kind == "Sidecar" and r.inputs["metadata"]["namespace"] == IAM for r in capture.kubernetes_objects()
    )
    return Platform("prod", capture)


def declared(capture: StackCapture) -> list[dict[str, Any]]:
    return [{"kind": r.kind, **r.inputs} for r in capture.kubernetes_objects() if r.kind in KINDS]


def of_kind(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in found if o["kind"] == kind]


def key(found: dict[str, Any]) -> Rule:
    return (found["kind"], found["metadata"]["namespace"], found["metadata"]["name"])


def namespace(capture: StackCapture, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == "Namespace" and r.inputs["metadata"]["name"] == name
    ]
    return namespace_of(name, found["metadata"].get("labels", {}))


def deployment(capture: StackCapture, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == "Deployment" and r.inputs["metadata"]["name"] == name
    ]
    return found


def env_of(capture: StackCapture, name: str) -> dict[str, str]:
    [container] = deployment(capture, name)["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def keycloak_pod(capture: StackCapture) -> dict[str, str]:
    """A Keycloak pod as keycloakx 7.1.11 labels it (statefulset.yaml: keycloak.selectorLabels, podLabels),
    running as the chart's service account (serviceAccount.create, named after the fullname)."""
    [release] = [
        r.inputs
        for r in capture.resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "keycloakx"
    ]
    values = release["values"]
    assert release["version"] == "7.1.11" and "nameOverride" not in values
    assert values["fullnameOverride"] == identity_mesh.KEYCLOAK_SERVICE_ACCOUNT
    assert values.get("serviceAccount", {}).get("create", True) and not values["serviceAccount"].get("name")
    return {
        "app.kubernetes.io/name": "keycloakx",
        "app.kubernetes.io/instance": release["name"],
        **values.get("podLabels", {}),
    }


# CloudNativePG 1.30's labels (pkg/specs): instances carry podRole and instanceRole, Jobs their jobRole.
PRIMARY = {**identity.DATABASE_POD_LABELS, "cnpg.io/instanceRole": "primary", "role": "primary"}
STANDBY = {**identity.DATABASE_POD_LABELS, "cnpg.io/instanceRole": "replica", "role": "replica"}
JOIN_JOB = {"cnpg.io/cluster": identity.DATABASE_CLUSTER, "cnpg.io/jobRole": "join"}
INITDB_JOB = {"cnpg.io/cluster": identity.DATABASE_CLUSTER, "cnpg.io/jobRole": "initdb"}
DATABASE_HOST = f"{identity.DATABASE_SERVICE}.{IAM}.svc.cluster.local"
JGROUPS_HOST = f"{identity.KEYCLOAK_RELEASE}-jgroups.{IAM}.svc.cluster.local"
GATEWAY = "gateway"  # the gateway is no sidecar: its routes, not a Sidecar, name what it reaches


class Call(NamedTuple):
    """One connection: who (namespace, pod labels, service account; None: outside the mesh), to what
    (iam pod labels, port, HTTP path or None for TCP), through which Service host (the caller's Sidecar
    must know it), and the rules it needs."""

    name: str
    source: tuple[str, dict[str, str], str | None]
    destination: dict[str, str]
    port: int
    path: str | None
    host: str | None
    rules: list[Rule]


def calls(platform: Platform) -> list[Call]:
    capture = platform.capture
    keycloak = keycloak_pod(capture)
    api_pod = dict(deployment(capture, selfservice.API_NAME)["spec"]["template"]["metadata"]["labels"])
    worker_pod = dict(deployment(capture, selfservice.WORKER_NAME)["spec"]["template"]["metadata"]["labels"])
    api_env, worker_env = env_of(capture, selfservice.API_NAME), env_of(capture, selfservice.WORKER_NAME)
    gateway = (NAMESPACES.ingress, {**GATEWAY_POD_LABELS, **INGRESS_GATEWAY_LABELS}, GATEWAY)
    api = (NAMESPACES.self_service, api_pod, selfservice.API_NAME)
    worker = (NAMESPACES.self_service, worker_pod, selfservice.WORKER_NAME)
    keycloak_caller = (IAM, keycloak, identity_mesh.KEYCLOAK_SERVICE_ACCOUNT)
    http = identity.KEYCLOAK_HTTP_PORT
    gateway_in = [
        ("NetworkPolicy", NAMESPACES.ingress, "allow-egress-to-meshed-namespaces"),
        ("NetworkPolicy", IAM, "allow-gateway-to-keycloak"),
    ]
    public = [*gateway_in, ("AuthorizationPolicy", IAM, "allow-ingress-gateway-to-keycloak")]
    admin = [*gateway_in, ("AuthorizationPolicy", IAM, "allow-ingress-gateway-to-keycloak-admin")]
    issuer = urlsplit(issuer_url("x")).path  # /realms/platform
    found = [
        # Browsers (people, the portal's sign-in), Argo CD's server (discovery, code exchange, keys): all
        # at https://auth.<domain>, through the gateway.
        Call(
            "discovery", gateway, keycloak, http, f"{issuer}/.well-known/openid-configuration", None, public
        ),
        Call("login page", gateway, keycloak, http, f"{issuer}/protocol/openid-connect/auth", None, public),
        Call(
            "argocd code exchange",
            gateway,
            keycloak,
            http,
            f"{issuer}/protocol/openid-connect/token",
            None,
            public,
        ),
        Call(
            "login styles",
            gateway,
            keycloak,
            http,
            "/resources/abc12/login/keycloak.v2/css/styles.css",
            None,
            public,
        ),
        Call(
            "rfc 8414 metadata",
            gateway,
            keycloak,
            http,
            f"/.well-known/oauth-authorization-server{issuer}",
            None,
            public,
        ),
        Call(
            "bootstrap admin login",
            gateway,
            keycloak,
            http,
            "/realms/master/protocol/openid-connect/auth",
            None,
            public,
        ),
        # The admin console, and a tenant stack run by hand (its provider at the public URL).
        Call("admin console", gateway, keycloak, http, "/admin/master/console/", None, admin),
        Call("admin api by hand", gateway, keycloak, http, f"/admin/realms/{REALM}/groups", None, admin),
    ]
    for role, caller, env, policy in (
        ("api", api, api_env, "allow-selfservice-api-to-keycloak"),
        ("worker", worker, worker_env, "allow-selfservice-workers-to-keycloak"),
    ):
        rules: list[Rule] = [
            ("NetworkPolicy", NAMESPACES.self_service, "allow-keycloak"),
            ("NetworkPolicy", IAM, "allow-selfservice-to-keycloak"),
            ("Sidecar", NAMESPACES.self_service, selfservice.NAMES[role]),  # type: ignore[index]
            ("AuthorizationPolicy", IAM, policy),
        ]
        urls = [env["TENANCY_SERVICE_JWKS_URL"]]
        if role == "api":
            urls.append(env["TENANCY_SERVICE_PORTAL_TOKEN_URL"])  # the portal's code exchange
        else:  # the Keycloak provider of the tenant stacks the workers run
            base = json.loads(env["TENANCY_STACK_CONFIG"])["platform:keycloakUrl"]
            urls += [
                f"{base}/realms/{REALM}/protocol/openid-connect/token",
                f"{base}/admin/serverinfo",
                f"{base}/admin/realms/{REALM}/group-by-path/tenants",
                f"{base}/admin/realms/{REALM}/roles/tenant-admin",
                f"{base}/admin/realms/{REALM}/groups/0f7e/children",
            ]
        for url in urls:
            parts = urlsplit(url)
            assert parts.scheme == "http" and (parts.port or 80) == identity.KEYCLOAK_SERVICE_PORT, url
            found.append(
                Call(f"{role} {parts.path}", caller, keycloak, http, parts.path, parts.hostname, rules)
            )
    same_namespace: Rule = ("NetworkPolicy", IAM, "allow-same-namespace")
    found += [
        Call(
            "keycloak to postgres",
            keycloak_caller,
            PRIMARY,
            identity.POSTGRES_PORT,
            None,
            DATABASE_HOST,
            [same_namespace, ("AuthorizationPolicy", IAM, "allow-keycloak-to-postgres")],
        ),
        Call(
            "operator to status port",
            (NAMESPACES.database_operator, identity.OPERATOR_POD_LABELS, None),
            PRIMARY,
            identity.STATUS_PORT,
            None,
            None,
            [
                ("NetworkPolicy", NAMESPACES.database_operator, "allow-operator-to-postgres"),
                ("NetworkPolicy", IAM, "allow-cnpg-operator-to-postgres"),
                ("PeerAuthentication", IAM, f"{identity.DATABASE_CLUSTER}-operator-status"),
                ("AuthorizationPolicy", IAM, "allow-cnpg-operator-to-status"),
            ],
        ),
    ]
    if platform.environment == "prod":
        database = identity_mesh.DATABASE_SERVICE_ACCOUNT
        replication = [same_namespace, ("AuthorizationPolicy", IAM, "allow-postgres-replication")]
        jgroups = [
            same_namespace,
            ("Service", IAM, f"{identity.KEYCLOAK_RELEASE}-jgroups"),
            ("AuthorizationPolicy", IAM, "allow-keycloak-jgroups"),
        ]
        found += [
            Call(
                "standby streaming",
                (IAM, STANDBY, database),
                PRIMARY,
                identity.POSTGRES_PORT,
                None,
                DATABASE_HOST,
                replication,
            ),
            Call(
                "join job base backup",
                (IAM, JOIN_JOB, database),
                PRIMARY,
                identity.POSTGRES_PORT,
                None,
                DATABASE_HOST,
                replication,
            ),
            *(
                Call(f"jgroups {port}", keycloak_caller, keycloak, port, None, JGROUPS_HOST, jgroups)
                for port in identity.JGROUPS_PORTS
            ),
        ]
    return found


def reaches(capture: StackCapture, found: list[dict[str, Any]], call: Call) -> bool:
    """Whether ``call`` gets through everything in ``found``."""
    source_namespace, source_pod, account = call.source
    caller_ns = (
        namespace(capture, source_namespace) if source_namespace != "tenant-acme" else TENANT_NAMESPACE
    )
    iam = namespace(capture, IAM)
    if not connection_allowed(
        of_kind(found, "NetworkPolicy"),
        source=(caller_ns, source_pod),
        destination=(iam, call.destination),
        port=call.port,
    ):
        return False
    meshed = account is not None and caller_ns["labels"].get("istio-injection") == "enabled"
    if account == GATEWAY:
        mutual_tls = True  # its route names Keycloak's Service (test_the_gateway_routes_...)
    elif meshed and call.host is not None:
        mutual_tls = sidecar_knows(
            of_kind(found, "Sidecar"),
            namespace=source_namespace,
            pod=source_pod,
            host=call.host,
            port=call.port,
        ) and service_declares(found, call.host, call.port)
    else:
        mutual_tls = False  # outside the mesh, or to a pod address no Service names: passed through
    if not mutual_tls and not accepts_plaintext(
        of_kind(found, "PeerAuthentication"), namespace=IAM, pod=call.destination, port=call.port
    ):
        return False  # the sidecar passes an unknown destination through in plaintext; STRICT refuses it
    service_account = identity_mesh.GATEWAY_PRINCIPAL.rsplit("/", 1)[1] if account == GATEWAY else account
    return authorization_allows(
        of_kind(found, "AuthorizationPolicy"),
        namespace=IAM,
        pod=call.destination,
        source_namespace=source_namespace if mutual_tls else None,
        principal=f"cluster.local/ns/{source_namespace}/sa/{service_account}" if mutual_tls else None,
        port=call.port,
        path=call.path,
    )


def service_declares(found: list[dict[str, Any]], host: str, port: int) -> bool:
    """Services the program declares must name their ports (JGroups'); those a chart or the operator
    makes (keycloak-http, keycloak-db-rw) are taken as they render."""
    name, service_namespace = host.split(".")[:2]
    mine = [
        s
        for s in of_kind(found, "Service")
        if (s["metadata"]["namespace"], s["metadata"]["name"]) == (service_namespace, name)
    ]
    if host == JGROUPS_HOST:
        return any(p["port"] == port for s in mine for p in s["spec"]["ports"])
    return True


TENANT_NAMESPACE = namespace_of(
    "tenant-acme", {"istio-injection": "enabled", "tenancy.platform/tenant": "acme"}
)


# --- the connections ---------------------------------------------------------------------------------


def test_every_traced_connection_gets_through(platform: Platform) -> None:
    found = declared(platform.capture)
    for call in calls(platform):
        assert reaches(platform.capture, found, call), call.name


def test_removing_each_rule_breaks_exactly_the_connections_it_serves(platform: Platform) -> None:
    found, traced = declared(platform.capture), calls(platform)
    for rule in sorted({rule for call in traced for rule in call.rules}):
        kept = [o for o in found if key(o) != rule]
        assert len(kept) == len(found) - 1, f"{rule} is declared once"
        broken = {call.name for call in traced if not reaches(platform.capture, kept, call)}
        assert broken == {call.name for call in traced if rule in call.rules}, rule


def test_every_iam_authorization_policy_serves_a_traced_connection(platform: Platform) -> None:
    """Nothing is allowed that no connection needs; the one rule-less policy is the deny-by-default."""
    served = {rule for call in calls(platform) for rule in call.rules}
    for policy in of_kind(declared(platform.capture), "AuthorizationPolicy"):
        if policy["metadata"]["namespace"] == IAM:
            assert key(policy) in served or policy["spec"] == {}, key(policy)


def test_replication_and_jgroups_are_allowed_only_where_there_are_replicas(platform: Platform) -> None:
    names = {o["metadata"]["name"] for o in of_kind(declared(platform.capture), "AuthorizationPolicy")}
    replicated = platform.environment == "prod"
    assert ("allow-postgres-replication" in names) is replicated
    assert ("allow-keycloak-jgroups" in names) is replicated


# --- what is refused ---------------------------------------------------------------------------------


def refused(platform: Platform) -> list[Call]:
    capture = platform.capture
    keycloak = keycloak_pod(capture)
    worker_pod = dict(deployment(capture, selfservice.WORKER_NAME)["spec"]["template"]["metadata"]["labels"])
    api_pod = dict(deployment(capture, selfservice.API_NAME)["spec"]["template"]["metadata"]["labels"])
    gateway = (NAMESPACES.ingress, {**GATEWAY_POD_LABELS, **INGRESS_GATEWAY_LABELS}, GATEWAY)
    tenant = ("tenant-acme", {"app": "anything"}, "default")
    api = (NAMESPACES.self_service, api_pod, selfservice.API_NAME)
    worker = (NAMESPACES.self_service, worker_pod, selfservice.WORKER_NAME)
    keycloak_caller = (IAM, keycloak, identity_mesh.KEYCLOAK_SERVICE_ACCOUNT)
    database = (IAM, STANDBY, identity_mesh.DATABASE_SERVICE_ACCOUNT)
    argocd = (NAMESPACES.gitops, {"app.kubernetes.io/name": "argocd-server"}, "argocd-server")
    http, management = identity.KEYCLOAK_HTTP_PORT, identity.KEYCLOAK_MANAGEMENT_PORT
    host = identity.KEYCLOAK_INTERNAL_HOST
    found = [
        Call("tenant to admin api", tenant, keycloak, http, f"/admin/realms/{REALM}/users", host, []),
        Call(
            "tenant to token endpoint",
            tenant,
            keycloak,
            http,
            f"/realms/{REALM}/protocol/openid-connect/token",
            host,
            [],
        ),
        Call(
            "argocd around the gateway",
            argocd,
            keycloak,
            http,
            f"/realms/{REALM}/protocol/openid-connect/token",
            host,
            [],
        ),
        Call("api to admin api", api, keycloak, http, f"/admin/realms/{REALM}/groups", host, []),
        Call(
            "api to master realm",
            api,
            keycloak,
            http,
            "/realms/master/protocol/openid-connect/token",
            host,
            [],
        ),
        Call("worker to master admin", worker, keycloak, http, "/admin/realms/master/users", host, []),
        Call(
            "worker to master token",
            worker,
            keycloak,
            http,
            "/realms/master/protocol/openid-connect/token",
            host,
            [],
        ),
        Call("worker to another realm", worker, keycloak, http, "/admin/realms/platformx/users", host, []),
        Call("gateway to the root", gateway, keycloak, http, "/", None, []),
        Call("gateway to metrics", gateway, keycloak, http, "/metrics", None, []),
        Call("gateway to the management port", gateway, keycloak, management, "/health/ready", None, []),
        Call("api to the management port", api, keycloak, management, "/metrics", host, []),
        Call("worker to postgres", worker, PRIMARY, identity.POSTGRES_PORT, None, DATABASE_HOST, []),
        Call("worker to the status port", worker, PRIMARY, identity.STATUS_PORT, None, None, []),
        Call(
            "keycloak to an initdb job", keycloak_caller, INITDB_JOB, identity.POSTGRES_PORT, None, None, []
        ),
        Call(
            "database to keycloak jgroups",
            database,
            keycloak,
            identity.JGROUPS_PORTS[0],
            None,
            JGROUPS_HOST,
            [],
        ),
        Call(
            "keycloak to keycloak over http",
            keycloak_caller,
            keycloak,
            http,
            f"/admin/realms/{REALM}/users",
            host,
            [],
        ),
    ]
    if platform.environment == "dev":
        found.append(
            Call("jgroups without replicas", keycloak_caller, keycloak, 7800, None, JGROUPS_HOST, [])
        )
    return found


def mesh_admits(found: list[dict[str, Any]], call: Call, *, mutual_tls: bool = True) -> bool:
    """The AuthorizationPolicies alone, as if every other layer let the call through with its identity."""
    source_namespace, _, account = call.source
    service_account = identity_mesh.GATEWAY_PRINCIPAL.rsplit("/", 1)[1] if account == GATEWAY else account
    return authorization_allows(
        of_kind(found, "AuthorizationPolicy"),
        namespace=IAM,
        pod=call.destination,
        source_namespace=source_namespace if mutual_tls else None,
        principal=f"cluster.local/ns/{source_namespace}/sa/{service_account}" if mutual_tls else None,
        port=call.port,
        path=call.path,
    )


def test_what_no_connection_needs_is_refused_by_the_mesh_itself(platform: Platform) -> None:
    found = declared(platform.capture)
    for call in refused(platform):
        assert not mesh_admits(found, call), call.name
        assert not reaches(platform.capture, found, call), call.name
    # Without mTLS nothing but the status port is admitted (the operator's; STRICT refuses the rest first).
    operator = Call(
        "", (NAMESPACES.database_operator, {}, None), PRIMARY, identity.POSTGRES_PORT, None, None, []
    )
    assert not mesh_admits(found, operator, mutual_tls=False)
    assert mesh_admits(found, operator._replace(port=identity.STATUS_PORT), mutual_tls=False)


def test_the_operator_reaches_each_database_instance_on_its_status_port_only(platform: Platform) -> None:
    """CloudNativePG 1.30's operator connects to an instance only at the instance manager's status port
    8000 (its remote clients, pkg/management/postgres/webserver/client/remote, build every URL with
    url.StatusPort); it opens no PostgreSQL connection: the connection pools are the instance manager's,
    inside the database pods. So the NetworkPolicies alone let it reach 8000 and nothing else, on every
    CloudNativePG cluster of the platform (Keycloak's in iam; Grafana's in observability, prod)."""
    policies = of_kind(declared(platform.capture), "NetworkPolicy")
    operator = (namespace(platform.capture, NAMESPACES.database_operator), identity.OPERATOR_POD_LABELS)
    clusters = [(IAM, PRIMARY), (IAM, STANDBY)]
    if platform.environment != "dev":
        grafana = {**GRAFANA_DATABASE_POD_LABELS, "cnpg.io/podRole": "instance", "role": "primary"}
        clusters.append((NAMESPACES.observability, grafana))
    for name, pod in clusters:
        destination = (namespace(platform.capture, name), pod)
        for port in (identity.STATUS_PORT, identity.POSTGRES_PORT, GRAFANA_DATABASE_METRICS_PORT):
            allowed = connection_allowed(policies, source=operator, destination=destination, port=port)
            assert allowed is (port == identity.STATUS_PORT), (name, port)


def test_the_status_port_admits_callers_without_a_mesh_identity_only(platform: Platform) -> None:
    """The operator's plaintext, and what a meshed pod of iam sends to an instance's address, which its
    sidecar passes through (no Service names port 8000): the mesh cannot tell those apart, so CNPG's own
    TLS on that port authenticates them. Any caller with an mTLS identity is refused there."""
    found = declared(platform.capture)
    status = Call(
        "",
        (IAM, keycloak_pod(platform.capture), identity_mesh.KEYCLOAK_SERVICE_ACCOUNT),
        PRIMARY,
        identity.STATUS_PORT,
        None,
        None,
        [],
    )
    assert mesh_admits(found, status, mutual_tls=False)
    for account in (identity_mesh.KEYCLOAK_SERVICE_ACCOUNT, identity_mesh.DATABASE_SERVICE_ACCOUNT):
        assert not mesh_admits(found, status._replace(source=(IAM, {}, account)))


def test_the_deny_by_default_covers_pods_no_allow_selects(platform: Platform) -> None:
    """An initdb Job's pod, or anything added to iam later, takes no calls because of allow-nothing."""
    found = declared(platform.capture)
    job = Call(
        "",
        (IAM, {}, identity_mesh.KEYCLOAK_SERVICE_ACCOUNT),
        INITDB_JOB,
        identity.POSTGRES_PORT,
        None,
        None,
        [],
    )
    assert not mesh_admits(found, job)
    assert mesh_admits([o for o in found if key(o) != ("AuthorizationPolicy", IAM, "allow-nothing")], job)


def test_the_deny_by_default_is_applied_after_the_allows(platform: Platform) -> None:
    """On a running platform the deny must not land before the allows, or Keycloak refuses everyone."""
    policies = {
        r.inputs["metadata"]["name"]: r
        for r in platform.capture.kubernetes_objects()
        if r.kind == "AuthorizationPolicy" and r.inputs["metadata"]["namespace"] == IAM
    }
    deny = policies.pop("allow-nothing")
    assert {r.name for r in policies.values()} <= set(deny.depends_on), deny.depends_on


def test_the_gateway_routes_the_auth_host_to_keycloaks_http_port(platform: Platform) -> None:
    [route] = [
        r.inputs
        for r in platform.capture.kubernetes_objects()
        if r.kind == "VirtualService" and r.inputs["metadata"]["namespace"] == IAM
    ]
    [[destination]] = [[d["destination"] for d in http["route"]] for http in route["spec"]["http"]]
    assert destination == {
        "host": identity.KEYCLOAK_INTERNAL_HOST,
        "port": {"number": identity.KEYCLOAK_SERVICE_PORT},
    }


# --- schema -------------------------------------------------------------------------------------------

# AuthorizationPolicy and PeerAuthentication in security.istio.io/v1 as the pinned Istio (1.30.3,
# manifests/charts/base/files/crd-all.gen.yaml) defines them, for the fields the platform uses.
SOURCE_FIELDS = {
    "principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
    "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals", "serviceAccounts", "notServiceAccounts",
    "trustDomains", "notTrustDomains",
}  # fmt: skip
OPERATION_FIELDS = {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"}


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def authorization_policy_problems(policy: dict[str, Any]) -> list[str]:
    spec, problems = policy["spec"], []
    if policy["apiVersion"] != "security.istio.io/v1":
        problems.append("apiVersion")
    if not set(spec) <= {"selector", "targetRef", "targetRefs", "rules", "action", "provider"}:
        problems.append(f"spec fields {sorted(spec)}")
    if spec.get("action", "ALLOW") not in {"ALLOW", "DENY", "AUDIT", "CUSTOM"}:
        problems.append("action")
    labels = spec.get("selector", {}).get("matchLabels", {})
    if set(spec.get("selector", {})) - {"matchLabels"} or any(
        "*" in k or "*" in v or not k or len(v) > 63 for k, v in labels.items()
    ):
        problems.append("selector")
    for rule in spec.get("rules", []):
        if not set(rule) <= {"from", "to", "when"}:
            problems.append(f"rule fields {sorted(rule)}")
        for item in rule.get("from", []):
            source = item["source"]
            if (
                set(item) != {"source"}
                or not set(source) <= SOURCE_FIELDS
                or not all(map(_strings, source.values()))
            ):
                problems.append(f"source {source}")
        for item in rule.get("to", []):
            operation = item["operation"]
            if set(item) != {"operation"} or not set(operation) <= OPERATION_FIELDS:
                problems.append(f"operation {operation}")
            if not all(map(_strings, operation.values())):
                problems.append(f"operation values {operation}")
            # istiod's validation: ports are port numbers; paths start with "/" or use a leading "*".
            if not all(p.isdigit() and 0 < int(p) < 65536 for p in operation.get("ports", [])):
                problems.append(f"ports {operation['ports']}")
            if not all(p.startswith(("/", "*")) for p in operation.get("paths", [])):
                problems.append(f"paths {operation['paths']}")
    return problems


def test_iams_authorization_policies_are_valid_istio_v1(platform: Platform) -> None:
    policies = [
        p
        for p in of_kind(declared(platform.capture), "AuthorizationPolicy")
        if p["metadata"]["namespace"] == IAM
    ]
    assert len(policies) == (9 if platform.environment == "prod" else 7)
    for policy in policies:
        assert authorization_policy_problems(policy) == [], policy["metadata"]["name"]
        for rule in policy["spec"].get("rules", []):
            # Every principal names one service account; no wildcard widens an identity.
            for item in rule["from"]:
                assert all("*" not in p for p in item["source"].get("principals", []))
            # HTTP paths only on Keycloak's HTTP port (a TCP port would drop the rule).
            for item in rule["to"]:
                if "paths" in item["operation"]:
                    assert item["operation"]["ports"] == [str(identity.KEYCLOAK_HTTP_PORT)]


def test_probes_reach_the_sidecar_agent_not_a_policed_port(platform: Platform) -> None:
    """kubelet's probes carry no mesh identity; istiod's injector rewrites httpGet probes (keycloakx
    7.1.11 probes /health/* on the named port http-internal, 9000; CloudNativePG probes 8000) to the
    agent's 15020, which the sidecar does not intercept. Nothing here may turn that rewrite off."""
    releases = {
        r.inputs.get("chart"): r.inputs["values"]
        for r in platform.capture.resources
        if r.type == "kubernetes:helm.sh/v3:Release"
    }
    assert releases["istiod"].get("sidecarInjectorWebhook", {}).get("rewriteAppHTTPProbe", True) is True
    keycloak = releases["keycloakx"]
    assert keycloak.get("podAnnotations", {}).get("sidecar.istio.io/rewriteAppHTTPProbers", "true") == "true"
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(
        keycloak
    )  # the chart's httpGet probes
    [cluster] = [
        r.inputs
        for r in platform.capture.kubernetes_objects()
        if r.kind == "Cluster" and r.inputs["metadata"]["namespace"] == IAM
    ]
    annotations = cluster["spec"].get("inheritedMetadata", {}).get("annotations", {})
    assert annotations.get("sidecar.istio.io/rewriteAppHTTPProbers", "true") == "true"


def test_keycloaks_metrics_are_scraped_from_the_agent_never_from_the_management_port(
    platform: Platform,
) -> None:
    """Keycloak's metrics (the management port's /metrics) are announced for Istio's metrics merging, so
    the collector in observability (unmeshed: no identity to show) reads them on the agent's 15020, which
    iam admits; the management port itself stays closed to it."""
    capture = platform.capture
    [values] = [
        r.inputs["values"]
        for r in capture.resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "keycloakx"
    ]
    assert values.get("metrics", {}).get("enabled", True)  # the chart's default: KC_METRICS_ENABLED
    annotations = values["podAnnotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(identity.KEYCLOAK_MANAGEMENT_PORT)
    policies = of_kind(declared(capture), "NetworkPolicy")
    collector = (namespace(capture, NAMESPACES.observability), dict(ALLOY_POD_LABELS))
    for pod in (keycloak_pod(capture), PRIMARY):
        destination = (namespace(capture, IAM), pod)
        assert connection_allowed(
            policies, source=collector, destination=destination, port=SIDECAR_METRICS_PORT
        )
        for port in (identity.KEYCLOAK_MANAGEMENT_PORT, identity.METRICS_PORT):
            assert not connection_allowed(policies, source=collector, destination=destination, port=port)
