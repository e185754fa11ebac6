"""Identity: CloudNativePG operator, Keycloak's PostgreSQL Cluster, Keycloak and the platform realm."""

from __future__ import annotations

import inspect
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pulumi_random as random
import pytest
import yaml
from pydantic.alias_generators import to_camel

from components.platform.identity import ACCESS_KEY_ID_CONFIG, SECRET_ACCESS_KEY_CONFIG, Identity
from tenancy import versions
from tenancy.builders import contract
from tenancy.builders import identity as build
from tenancy.render.runtime import GENERATED, DeclaredResource, StackCapture, capture_program
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.platform import SECRET_KEYS, PlatformConfig
from tests.chart_keys import load_all
from tests.platform.support import dev_config, prod_config

CREDENTIALS = {
    f"platform:{ACCESS_KEY_ID_CONFIG}": "AKIA-backup-key",
    f"platform:{SECRET_ACCESS_KEY_CONFIG}": "backup-secret-value",
}
RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
PASSWORD = "random:index/randomPassword:RandomPassword"


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        identity = Identity("identity", config=config)
        return {
            "issuerUrl": identity.issuer_url,
            "apiClientId": identity.api_client_id,
            "argocdClientId": identity.argocd_client_id,
            "argocdClientSecret": identity.argocd_client_secret,
            "keycloakUrl": identity.keycloak_url,
            "keycloakProvisionerSecret": identity.provisioner_client_secret,
            "databaseClusterName": identity.database_cluster_name,
        }

    return capture_program(program, stack=config.environment, config=CREDENTIALS)


@pytest.fixture(scope="module")
def dev() -> StackCapture:
    return capture(dev_config())


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return capture(prod_config())


def of_kind(capture: StackCapture, kind: str) -> list[DeclaredResource]:
    return [r for r in capture.resources if r.kind == kind]


def named(capture: StackCapture, kind: str, name: str) -> DeclaredResource:
    [found] = [r for r in of_kind(capture, kind) if r.inputs["metadata"]["name"] == name]
    return found


def is_secret(resource: DeclaredResource, *path: str) -> bool:
    """Marked secret at ``path`` or at any object containing it."""
    return any(path[: len(marked)] == marked for marked in resource.secret_paths)


def release(capture: StackCapture, chart: str) -> DeclaredResource:
    [found] = [r for r in capture.of_type(RELEASE) if r.inputs["chart"] == chart]
    return found


def cluster_spec(capture: StackCapture) -> dict[str, Any]:
    [cluster] = of_kind(capture, "Cluster")
    spec: dict[str, Any] = cluster.inputs["spec"]
    return spec


def policy(capture: StackCapture, namespace: str, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in of_kind(capture, "NetworkPolicy")
        if (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]) == (namespace, name)
    ]
    return found


# --- the database -------------------------------------------------------------------------------


def test_prod_runs_three_postgres_instances_one_per_node_with_a_pdb(prod: StackCapture) -> None:
    spec = cluster_spec(prod)
    assert spec["instances"] == 3
    assert spec["affinity"] == {
        "enablePodAntiAffinity": True,
        "podAntiAffinityType": "required",
        "topologyKey": "kubernetes.io/hostname",
    }
    assert spec["enablePDB"] is True
    assert spec["storage"] == {"size": "20Gi", "storageClass": "fast-ssd"}


def test_dev_runs_one_postgres_instance_without_a_pdb(dev: StackCapture) -> None:
    spec = cluster_spec(dev)
    assert spec["instances"] == 1
    # A PodDisruptionBudget on a single instance would block every node drain.
    assert spec["enablePDB"] is False
    assert spec["storage"]["storageClass"] == "standard"


def test_postgres_runs_the_pinned_image_with_equal_requests_and_limits(
    dev: StackCapture, prod: StackCapture
) -> None:
    for capture_ in (dev, prod):
        spec = cluster_spec(capture_)
        assert spec["imageName"] == versions.CNPG_POSTGRESQL_IMAGE
        assert spec["resources"]["requests"] == spec["resources"]["limits"]
        assert all(isinstance(v, str) for v in spec["postgresql"]["parameters"].values())
        # Deprecated in 1.30, and no Prometheus Operator runs on the platform.
        assert "monitoring" not in spec


def test_backups_go_to_object_storage_only_when_it_is_configured(
    dev: StackCapture, prod: StackCapture
) -> None:
    store = cluster_spec(prod)["backup"]["barmanObjectStore"]
    assert store["destinationPath"] == "s3://prod-backups/iam"
    assert store["endpointURL"] == "https://s3.eu-central-1.amazonaws.com"
    assert {ref["name"] for ref in store["s3Credentials"].values()} == {build.BACKUP_SECRET}
    assert cluster_spec(prod)["backup"]["retentionPolicy"] == "30d"
    [scheduled] = of_kind(prod, "ScheduledBackup")
    assert scheduled.inputs["spec"]["cluster"] == {"name": build.DATABASE_CLUSTER}
    assert len(scheduled.inputs["spec"]["schedule"].split()) == 6  # seconds first, robfig cron
    assert scheduled.depends_on == ["identity-database"]
    policy(prod, "iam", "allow-postgres-to-object-storage")

    assert "backup" not in cluster_spec(dev)
    assert of_kind(dev, "ScheduledBackup") == []
    assert build.BACKUP_SECRET not in {r.inputs["metadata"]["name"] for r in dev.of_type(SECRET)}
    with pytest.raises(ValueError):
        policy(dev, "iam", "allow-postgres-to-object-storage")


def test_backup_credentials_come_from_secret_config_and_stay_secret(prod: StackCapture) -> None:
    secret = named(prod, "Secret", build.BACKUP_SECRET)
    data = secret.inputs["stringData"]
    assert data["ACCESS_KEY_ID"] == "AKIA-backup-key"
    assert data["ACCESS_SECRET_KEY"] == "backup-secret-value"
    assert data["REGION"] == "eu-central-1"
    assert is_secret(secret, "stringData", "ACCESS_KEY_ID")
    assert is_secret(secret, "stringData", "ACCESS_SECRET_KEY")
    assert "identity-backup-credentials" in prod.named("identity-database").depends_on


def test_backup_credential_keys_are_declared_secret_platform_config() -> None:
    assert {ACCESS_KEY_ID_CONFIG, SECRET_ACCESS_KEY_CONFIG} <= set(SECRET_KEYS)


def test_native_backups_hold_the_operator_below_1_31() -> None:
    # spec.backup.barmanObjectStore is removed in CloudNativePG 1.31 (chart 0.30). Move the backups
    # to the barman-cloud plugin (ObjectStore + spec.plugins, needs cert-manager) before this bump.
    assert versions.CLOUDNATIVE_PG.version.startswith("0.29."), "migrate backups to the barman-cloud plugin"


# --- credentials ---------------------------------------------------------------------------------


def test_database_credentials_are_generated_basic_auth_shared_by_cluster_and_keycloak(
    dev: StackCapture,
) -> None:
    secret = named(dev, "Secret", build.DATABASE_SECRET)
    assert secret.inputs["type"] == "kubernetes.io/basic-auth"
    assert secret.inputs["stringData"] == {
        "username": build.DATABASE_OWNER,
        "password": f"{GENERATED}-identity-database-password",
    }
    assert is_secret(secret, "stringData", "password")

    initdb = cluster_spec(dev)["bootstrap"]["initdb"]
    assert initdb["secret"] == {"name": build.DATABASE_SECRET}
    assert initdb["owner"] == secret.inputs["stringData"]["username"]
    database = release(dev, "keycloakx").inputs["values"]["database"]
    assert database["existingSecret"] == build.DATABASE_SECRET
    assert database["existingSecretKey"] == "password"
    assert database["username"] == initdb["owner"]
    assert database["hostname"] == f"{build.DATABASE_CLUSTER}-rw"
    assert database["database"] == initdb["database"]


def test_admin_and_client_secrets_are_generated_and_secret(dev: StackCapture) -> None:
    passwords = {r.name for r in dev.of_type(PASSWORD)}
    assert passwords == {
        "identity-database-password",
        "identity-admin-password",
        "identity-argocd-client-secret",
        "identity-provisioner-client-secret",
    }
    admin = named(dev, "Secret", build.ADMIN_SECRET)
    assert admin.inputs["type"] == "kubernetes.io/basic-auth"
    assert is_secret(admin, "stringData", "password")
    clients = named(dev, "Secret", build.CLIENT_SECRETS)
    assert is_secret(clients, "stringData", build.ARGOCD_SECRET_KEY)
    assert is_secret(clients, "stringData", build.PROVISIONER_SECRET_KEY)
    assert "argocdClientSecret" in dev.secret_outputs
    assert dev.outputs["argocdClientSecret"] == f"{GENERATED}-identity-argocd-client-secret"
    assert "keycloakProvisionerSecret" in dev.secret_outputs
    assert dev.outputs["keycloakProvisionerSecret"] == f"{GENERATED}-identity-provisioner-client-secret"
    assert {"issuerUrl", "apiClientId", "keycloakUrl", "databaseClusterName"}.isdisjoint(dev.secret_outputs)


KEYCLOAK_TAKES_ONCE = [
    "identity-admin-password",
    "identity-argocd-client-secret",
    "identity-provisioner-client-secret",
]


@pytest.mark.parametrize("name", KEYCLOAK_TAKES_ONCE)
def test_no_config_change_replaces_a_secret_keycloak_takes_in_only_once(
    name: str, dev: StackCapture, prod: StackCapture
) -> None:
    # Keycloak reads the admin password at its first start and client secrets at the first realm
    # import; a replaced value would break Argo CD sign-in and every tenant stack without a word.
    inputs = inspect.signature(random.RandomPasswordArgs.__init__).parameters
    every_input = {to_camel(parameter) for parameter in inputs if parameter != "__self__"}
    for capture in (dev, prod):
        ignored = set(capture.named(name).ignore_changes)
        assert every_input <= ignored, f"{name}: a change of {every_input - ignored} would replace it"
    # And prod refuses `pulumi up --replace` or a delete (tests/platform/test_stateful_resources.py).
    assert prod.named(name).protect


def test_keycloak_reads_admin_and_argocd_secrets_from_secret_refs(dev: StackCapture) -> None:
    values = release(dev, "keycloakx").inputs["values"]
    env = {e["name"]: e for e in yaml.safe_load(values["extraEnv"])}
    assert env["KC_BOOTSTRAP_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": build.ADMIN_SECRET,
        "key": "password",
    }
    assert env[build.ARGOCD_SECRET_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": build.CLIENT_SECRETS,
        "key": build.ARGOCD_SECRET_KEY,
    }
    assert env[build.PROVISIONER_SECRET_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": build.CLIENT_SECRETS,
        "key": build.PROVISIONER_SECRET_KEY,
    }
    assert all("value" not in e for e in env.values() if "SECRET" in e["name"] or "PASSWORD" in e["name"])


# --- ordering ------------------------------------------------------------------------------------


def test_operator_then_database_then_keycloak(prod: StackCapture) -> None:
    database = prod.named("identity-database")
    keycloak = prod.named("identity-keycloak")
    assert "identity-operator" in database.depends_on
    assert "identity-database-credentials" in database.depends_on
    assert "identity-database" in keycloak.depends_on
    assert {"identity-admin", "identity-client-secrets", "identity-realm"} <= set(keycloak.depends_on)
    assert "identity-operator-namespace" in prod.named("identity-operator").depends_on
    # The provider waits for the Cluster's Ready condition before Keycloak starts.
    assert database.inputs["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Ready"}


# --- mesh and network ----------------------------------------------------------------------------


def test_status_port_exception_selects_only_database_pods_and_only_port_8000(dev: StackCapture) -> None:
    [exception] = [
        r.inputs for r in of_kind(dev, "PeerAuthentication") if r.name == "identity-database-status-port"
    ]
    assert exception["apiVersion"] == "security.istio.io/v1"
    assert exception["metadata"]["namespace"] == "iam"
    assert exception["spec"] == {
        "selector": {"matchLabels": {"cnpg.io/cluster": "keycloak-db", "cnpg.io/podRole": "instance"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"8000": {"mode": "PERMISSIVE"}},
    }


def test_port_8000_is_the_only_mtls_exception_and_keycloak_caches_over_mtls(
    dev: StackCapture, prod: StackCapture
) -> None:
    for capture in (dev, prod):
        assert [r.name for r in of_kind(capture, "PeerAuthentication")] == ["identity-database-status-port"]
    assert not [r for r in of_kind(dev, "Service") if "jgroups" in r.name]
    [jgroups] = [r.inputs for r in of_kind(prod, "Service") if "jgroups" in r.name]
    assert jgroups["spec"]["selector"] == build.KEYCLOAK_POD_LABELS
    assert jgroups["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in jgroups["spec"]["ports"]} == {7800, 57800}


def test_database_metrics_reach_observability_through_the_sidecar_not_an_mtls_exception(
    dev: StackCapture, prod: StackCapture
) -> None:
    for capture in (dev, prod):
        # Istio's metrics merging reads these at injection and serves the exporter on 15020.
        assert cluster_spec(capture)["inheritedMetadata"] == {
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9187",
                "prometheus.io/path": "/metrics",
                **build.PLATFORM_SIDECAR.istio_annotations(),
            }
        }
        spec = policy(capture, "iam", "allow-observability-to-postgres-metrics")["spec"]
        assert spec["podSelector"] == {"matchLabels": build.DATABASE_POD_LABELS}
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
                ],
                "ports": [{"protocol": "TCP", "port": 15020}],
            }
        ]
        # 9187 itself stays behind STRICT mTLS and no policy opens it.
        rules = [r.inputs["spec"] for r in of_kind(capture, "NetworkPolicy")]
        assert not any(
            port.get("port") == 9187
            for rule in rules
            for way in rule.get("ingress", [])
            for port in way.get("ports", [])
        )


def test_namespaces_mesh_iam_but_not_the_operator(dev: StackCapture) -> None:
    labels = {r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"] for r in of_kind(dev, "Namespace")}
    assert labels["cnpg-system"]["istio-injection"] == "disabled"
    assert labels["iam"]["istio-injection"] == "enabled"
    assert {ns["pod-security.kubernetes.io/enforce"] for ns in labels.values()} == {"restricted"}


def test_only_the_gateway_reaches_keycloak_and_only_the_operator_reaches_postgres_control_ports(
    dev: StackCapture,
) -> None:
    gateway = policy(dev, "iam", "allow-gateway-to-keycloak")["spec"]
    assert gateway["podSelector"] == {"matchLabels": build.KEYCLOAK_POD_LABELS}
    [rule] = gateway["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]

    operator = policy(dev, "iam", "allow-cnpg-operator-to-postgres")["spec"]
    assert {p["port"] for p in operator["ingress"][0]["ports"]} == {8000}
    assert operator["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "cnpg-system"
    }
    egress = policy(dev, "cnpg-system", "allow-operator-to-postgres")["spec"]["egress"][0]
    assert {p["port"] for p in egress["ports"]} == {8000}
    # Every CNPG cluster of the platform (Keycloak's in iam, Grafana's in observability), instances only.
    assert egress["to"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"cnpg.io/podRole": "instance"}}}
    ]
    policy(dev, "cnpg-system", "allow-operator-to-apiserver")
    policy(dev, "cnpg-system", "allow-apiserver-to-webhook")
    apiserver = policy(dev, "iam", "allow-postgres-to-apiserver")["spec"]
    assert apiserver["podSelector"] == {"matchLabels": {"cnpg.io/cluster": "keycloak-db"}}


def test_keycloak_is_routed_through_the_platform_gateway(dev: StackCapture) -> None:
    [route] = [r.inputs for r in of_kind(dev, "VirtualService")]
    assert route["spec"]["hosts"] == ["auth.dev.data.example.com"]
    assert route["spec"]["gateways"] == ["istio-ingress/platform-gateway"]
    destination = route["spec"]["http"][0]["route"][0]["destination"]
    assert destination == {"host": "keycloak-http.iam.svc.cluster.local", "port": {"number": 80}}


# --- Keycloak --------------------------------------------------------------------------------------


def test_issuer_is_the_contract_issuer(dev: StackCapture) -> None:
    domain = "dev.data.example.com"
    assert dev.outputs["issuerUrl"] == contract.issuer_url(domain)
    values = release(dev, "keycloakx").inputs["values"]
    env = {e["name"]: e.get("value") for e in yaml.safe_load(values["extraEnv"])}
    served = f"{env['KC_HOSTNAME']}{values['http']['relativePath'].rstrip('/')}/realms/{contract.REALM}"
    assert served == contract.issuer_url(domain)
    assert build.realm_import(domain)["realm"] == contract.REALM


def test_keycloak_imports_the_realm_from_a_mounted_secret(dev: StackCapture) -> None:
    values = release(dev, "keycloakx").inputs["values"]
    assert values["args"] == ["start", "--import-realm"]
    [volume] = [v for v in yaml.safe_load(values["extraVolumes"]) if v["name"] == "realm-import"]
    [mount] = [m for m in yaml.safe_load(values["extraVolumeMounts"]) if m["name"] == "realm-import"]
    assert volume["secret"]["secretName"] == build.REALM_SECRET
    assert mount == {"name": volume["name"], "mountPath": "/opt/keycloak/data/import", "readOnly": True}
    realm_secret = named(dev, "Secret", build.REALM_SECRET)
    assert json.loads(realm_secret.inputs["stringData"]["platform-realm.json"]) == build.realm_import(
        "dev.data.example.com"
    )


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_keycloak_verifies_the_database_certificate_against_the_clusters_ca(
    environment: str, dev: StackCapture, prod: StackCapture
) -> None:
    capture = dev if environment == "dev" else prod
    values = release(capture, "keycloakx").inputs["values"]
    env = {e["name"]: e.get("value") for e in yaml.safe_load(values["extraEnv"])}
    database = values["database"]
    # Keycloak's default PostgreSQL URL: jdbc:postgresql://<host>:<port>/<database><db-url-properties>
    url = urlsplit(
        f"postgresql://{database['hostname']}:{database['port']}/{database['database']}"
        f"{env['KC_DB_URL_PROPERTIES']}"
    )
    # Keycloak appends db-url-properties verbatim ("jdbc:postgresql://%s:%s/%s%s"): the value carries
    # pgjdbc's "?" itself, and nothing the chart's tpl would expand.
    properties = env["KC_DB_URL_PROPERTIES"]
    assert properties.startswith("?") and "{{" not in properties and " " not in properties
    query = parse_qs(url.query, strict_parsing=True)
    assert set(query) == {"sslmode", "sslrootcert"}
    assert query["sslmode"] == ["verify-full"]  # encryption, the CA and the host name
    [root_cert] = query["sslrootcert"]

    # The file is the Cluster's own CA certificate, and nothing else from that Secret (no ca.key).
    volumes = {v["name"]: v for v in yaml.safe_load(values["extraVolumes"])}
    [mount] = [
        m for m in yaml.safe_load(values["extraVolumeMounts"]) if root_cert.startswith(m["mountPath"] + "/")
    ]
    secret = volumes[mount["name"]]["secret"]
    cluster = capture.named("identity-database").inputs["metadata"]["name"]
    assert secret["secretName"] == f"{cluster}-ca"  # CloudNativePG's generated CA
    assert secret["items"] == [{"key": "ca.crt", "path": root_cert.removeprefix(mount["mountPath"] + "/")}]
    # verify-full checks the host Keycloak dials against the server certificate, which CloudNativePG
    # issues for the -rw Service under its short and qualified names.
    assert url.hostname == f"{cluster}-rw"


def test_prod_runs_two_keycloak_replicas_with_a_pdb_and_dev_one_without(
    dev: StackCapture, prod: StackCapture
) -> None:
    prod_values = release(prod, "keycloakx").inputs["values"]
    assert prod_values["replicas"] == 2
    assert prod_values["podDisruptionBudget"] == {"maxUnavailable": 1}
    dev_values = release(dev, "keycloakx").inputs["values"]
    assert dev_values["replicas"] == 1
    assert "podDisruptionBudget" not in dev_values


def test_keycloak_containers_run_restricted_with_equal_requests_and_limits(prod: StackCapture) -> None:
    values = release(prod, "keycloakx").inputs["values"]
    container = values["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["resources"]["requests"] == values["resources"]["limits"]
    # dbchecker stays off: its nc -z would only reach the local sidecar.
    assert "dbchecker" not in values


def test_operator_release_is_sized_and_replicated_in_prod(dev: StackCapture, prod: StackCapture) -> None:
    operator = release(prod, "cloudnative-pg")
    assert operator.inputs["namespace"] == "cnpg-system"
    assert operator.inputs["values"]["replicaCount"] == 2
    resources = operator.inputs["values"]["resources"]
    assert resources["requests"] == resources["limits"]
    assert release(dev, "cloudnative-pg").inputs["values"]["replicaCount"] == 1


# --- the realm -------------------------------------------------------------------------------------


REALM = build.realm_import("data.example.com")


def client(client_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in REALM["clients"] if c["clientId"] == client_id]
    [only] = found
    return only


def mapper(client_id: str, provider: str) -> dict[str, str]:
    [found] = [m for m in client(client_id)["protocolMappers"] if m["protocolMapper"] == provider]
    config: dict[str, str] = found["config"]
    return config


def test_realm_defines_the_three_roles() -> None:
    assert {r["name"] for r in REALM["roles"]["realm"]} == {"platform-admin", "tenant-admin", "tenant-viewer"}


def test_realm_creates_platform_admins_and_only_the_parent_of_tenant_groups() -> None:
    groups = {g["path"]: g for g in REALM["groups"]}
    assert groups["/platform-admins"]["realmRoles"] == ["platform-admin"]
    assert groups["/tenants"]["subGroups"] == []
    assert set(groups) == {"/platform-admins", "/tenants"}


def test_realm_has_the_api_argocd_and_provisioner_clients() -> None:
    assert {c["clientId"] for c in REALM["clients"]} == {
        "tenant-api",
        "tenant-portal",
        "argocd",
        "argocd-cli",
        "tenant-provisioner",
    }
    api = client("tenant-api")
    assert api["publicClient"] is True
    assert api["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert api["attributes"]["pkce.code.challenge.method"] == "S256"
    argocd = client("argocd")
    assert argocd["publicClient"] is False
    # Its public host, and, with the admin surfaces closed outside adminSourceCidrs (the default), a
    # port-forward: before, nobody could sign in to Argo CD by default.
    assert argocd["redirectUris"] == [
        "https://argocd.data.example.com/auth/callback",
        "http://localhost:8080/auth/callback",
    ]
    # The generated secret never enters the document: Keycloak resolves it from its environment.
    assert argocd["secret"] == "${ARGOCD_CLIENT_SECRET}"
    assert "clientScopes" not in REALM  # declaring any would drop Keycloak's built-in scopes


def test_portal_client_is_public_pkce_only_and_its_tokens_reach_the_api() -> None:
    portal = client("tenant-portal")
    assert portal["publicClient"] is True and portal["standardFlowEnabled"] is True
    assert portal["implicitFlowEnabled"] is False and portal["directAccessGrantsEnabled"] is False
    assert portal["attributes"]["pkce.code.challenge.method"] == "S256"
    # The platform serves the portal with the API, at its host (tenancy.builders.selfservice).
    from tenancy.builders import selfservice

    assert portal["redirectUris"] == [f"https://{selfservice.host('data.example.com')}/auth/callback"]
    assert mapper("tenant-portal", "oidc-audience-mapper")["included.client.audience"] == "tenant-api"
    assert mapper("tenant-portal", "oidc-group-membership-mapper")["full.path"] == "true"


def test_argocd_cli_signs_in_through_a_public_pkce_client_returning_only_to_localhost() -> None:
    # argocd login --sso redeems its code without a secret: a public client, PKCE required, no other
    # flow, and its only redirect is the listener the CLI opens (--sso-port, 8085 by default).
    cli = client("argocd-cli")
    assert cli["publicClient"] is True and "secret" not in cli
    assert cli["standardFlowEnabled"] is True
    assert not any(
        cli[flow] for flow in ("implicitFlowEnabled", "directAccessGrantsEnabled", "serviceAccountsEnabled")
    )
    assert cli["attributes"]["pkce.code.challenge.method"] == "S256"
    assert cli["redirectUris"] == ["http://localhost:8085/auth/callback"]
    # The CLI asks for offline_access: its refresh token must not outlive a working day unused.
    assert cli["attributes"]["client.offline.session.idle.timeout"] == str(8 * 3600)
    assert cli["attributes"]["client.offline.session.max.lifespan"] == str(24 * 3600)  # used or not
    # Argo CD's RBAC reads the same groups claim from the CLI's ID token as from the web client's.
    assert mapper("argocd-cli", "oidc-group-membership-mapper") == mapper(
        "argocd", "oidc-group-membership-mapper"
    )


def test_provisioner_client_logs_in_only_with_its_own_credentials() -> None:
    provisioner = client("tenant-provisioner")
    assert provisioner["publicClient"] is False
    assert provisioner["serviceAccountsEnabled"] is True
    assert not any(
        provisioner[flow]
        for flow in ("standardFlowEnabled", "implicitFlowEnabled", "directAccessGrantsEnabled")
    )
    # Resolved from Keycloak's environment, which reads it from the generated Secret.
    assert provisioner["secret"] == "${TENANT_PROVISIONER_CLIENT_SECRET}"


def test_provisioner_may_manage_groups_and_their_roles_but_not_the_realm() -> None:
    [account] = [u for u in REALM["users"] if u.get("serviceAccountClientId") == "tenant-provisioner"]
    assert account["username"] == "service-account-tenant-provisioner"
    assert account["clientRoles"] == {"realm-management": ["manage-users", "view-users", "view-realm"]}
    assert "realmRoles" not in account
    assert [u["username"] for u in REALM["users"]] == ["service-account-tenant-provisioner"]


def test_outputs_tell_tenant_stacks_where_keycloak_is(dev: StackCapture) -> None:
    assert dev.outputs["keycloakUrl"] == "https://auth.dev.data.example.com"
    assert dev.outputs["issuerUrl"].startswith(dev.outputs["keycloakUrl"] + "/realms/")


def test_api_access_tokens_carry_full_group_paths_as_groups() -> None:
    config = mapper("tenant-api", "oidc-group-membership-mapper")
    assert config["claim.name"] == "groups"
    assert config["full.path"] == "true"
    assert config["access.token.claim"] == "true"


def test_api_access_tokens_carry_realm_roles_as_a_flat_roles_list() -> None:
    config = mapper("tenant-api", "oidc-usermodel-realm-role-mapper")
    assert config["claim.name"] == "roles"
    assert config["multivalued"] == "true"
    assert config["access.token.claim"] == "true"
    assert config["usermodel.realmRoleMapping.rolePrefix"] == ""


def test_api_access_tokens_include_the_api_in_their_audience() -> None:
    config = mapper("tenant-api", "oidc-audience-mapper")
    assert config["included.client.audience"] == "tenant-api"
    assert config["access.token.claim"] == "true"


def test_argocd_tokens_carry_full_group_paths() -> None:
    config = mapper("argocd", "oidc-group-membership-mapper")
    assert config["full.path"] == "true"
    assert config["id.token.claim"] == "true"


def test_outputs_name_the_clients_and_the_database(dev: StackCapture) -> None:
    assert dev.outputs["apiClientId"] == "tenant-api"
    assert dev.outputs["argocdClientId"] == "argocd"
    assert dev.outputs["databaseClusterName"] == "keycloak-db"


# --- schema and chart keys -----------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_built_in_object_passes_the_schema(env: str, dev: StackCapture, prod: StackCapture) -> None:
    capture_ = dev if env == "dev" else prod
    assert len(capture_.kubernetes_objects()) >= 10
    assert declared_schema_problems(capture_.kubernetes_objects()) == []


@pytest.mark.parametrize("high_availability", [False, True])
def test_chart_keys_cover_every_value(high_availability: bool) -> None:
    charts = load_all()
    rendered = {
        versions.CLOUDNATIVE_PG: build.operator_values(high_availability=high_availability),
        versions.KEYCLOAKX: build.keycloak_values(
            domain="data.example.com", high_availability=high_availability
        ),
    }
    for pin, values in rendered.items():
        keys = charts[pin.chart]
        assert keys.version == pin.version
        assert keys.unknown(values) == []


def test_keycloak_and_database_pods_are_guaranteed_sidecars_included(
    dev: StackCapture, prod: StackCapture
) -> None:
    """Requests equal limits in every container, the injected sidecar too (Istio's per-pod annotations)."""
    sidecar = {
        "sidecar.istio.io/proxyCPU": "200m",
        "sidecar.istio.io/proxyCPULimit": "200m",
        "sidecar.istio.io/proxyMemory": "256Mi",
        "sidecar.istio.io/proxyMemoryLimit": "256Mi",
    }
    for capture in (dev, prod):
        database = cluster_spec(capture)
        assert database["resources"]["requests"] == database["resources"]["limits"]
        assert sidecar.items() <= database["inheritedMetadata"]["annotations"].items()
        [keycloak] = [
            r.inputs["values"]
            for r in capture.of_type("kubernetes:helm.sh/v3:Release")
            if r.inputs["chart"] == "keycloakx"
        ]
        assert keycloak["resources"]["requests"] == keycloak["resources"]["limits"]
        assert keycloak["podAnnotations"] == {**build.KEYCLOAK_SCRAPE_ANNOTATIONS, **sidecar}
