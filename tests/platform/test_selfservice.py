"""The self-service service on the platform: API and worker Deployments that run the real settings,
the worker's narrow permissions, and exactly the traffic the service needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.platform.selfservice import SelfService
from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.stack_config import VAULT_TOKEN_KEY, tenant_stack_config
from tenancy.automation.storage import QueueSettings
from tenancy.builders.contract import INGRESS_GATEWAY_LABELS, NAMESPACES, issuer_url
from tenancy.builders.identity import API_CLIENT_ID
from tenancy.builders.redis import sentinel_hosts
from tenancy.builders.selfservice import (
    ADMISSION_POLICY,
    API_NAME,
    HTTP_PORT,
    WORKER_GITOPS_RULES,
    WORKER_NAME,
    WORKER_RULES,
    WORKER_TENANT_RULES,
    WORKER_USER,
    labels,
    trusted_proxies,
)
from tenancy.render.runtime import StackCapture, capture_program, config_values
from tenancy.render.schema import declared_schema_problems
from tenancy.service.core.config import ServiceSettings
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import PlatformConfig, parse_platform_config
from tests.conftest import PROJECT_DIR, captured_stack
from tests.platform.admission import Review, admitted
from tests.platform.support import dev_config, prod_config

IMAGE = "ghcr.io/example/tenancy-platform@sha256:" + "ab" * 32  # what the deploy workflow records


def with_image(config: PlatformConfig, **self_service: Any) -> PlatformConfig:
    document = config.model_dump(mode="json", by_alias=True, exclude={"environment"}, exclude_none=True)
    document["selfService"] = {**document["selfService"], "image": IMAGE, **self_service}
    document["kubernetesApiCidrs"] = document.get("kubernetesApiCidrs") or ["10.20.0.0/28"]
    return parse_platform_config(document, environment=config.environment, file="test")


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        service = SelfService("selfservice", config=config, redis_password="redis-secret")
        return {"url": service.url, "image": service.image}

    return capture_program(program, stack=config.environment, config=config_values(config))


@pytest.fixture(scope="module")
def dev() -> StackCapture:
    return capture(with_image(dev_config()))


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return capture(with_image(prod_config(), stateBucket="prod-tenant-state", workers=4))


def objects(captured: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [r.inputs for r in captured.kubernetes_objects() if r.kind == kind]


def deployment(captured: StackCapture, name: str) -> dict[str, Any]:
    [found] = [d for d in objects(captured, "Deployment") if d["metadata"]["name"] == name]
    return found


def container(captured: StackCapture, name: str) -> dict[str, Any]:
    [only] = deployment(captured, name)["spec"]["template"]["spec"]["containers"]
    return only


def env_of(captured: StackCapture, name: str) -> dict[str, str]:
    """The container's environment as the process sees it; Secret references read as placeholders."""
    values = {}
    for item in container(captured, name)["env"]:
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            values[item["name"]] = f"<secret {item['valueFrom']['secretKeyRef']['key']}>"
    return values


def test_both_platform_stacks_declare_the_service_schema_valid() -> None:
    for environment in ("dev", "prod"):
        captured = captured_stack(environment)
        names = {d["metadata"]["name"] for d in objects(captured, "Deployment")}
        assert {API_NAME, WORKER_NAME} <= names
        assert captured.outputs["selfServiceUrl"] == f"https://api.{captured.outputs['domain']}"
        assert declared_schema_problems(captured.kubernetes_objects()) == []
        # No image recorded in the committed stack files: declared, but nothing runs until there is one.
        assert deployment(captured, WORKER_NAME)["spec"]["replicas"] == 0


def test_the_api_serves_without_workers_and_workers_run_operations(prod: StackCapture) -> None:
    api, worker = container(prod, API_NAME), container(prod, WORKER_NAME)
    assert api["command"] == ["tenantctl", "serve"] and api["args"] == ["--workers", "0"]
    assert worker["args"] == ["--workers", "4"]
    assert api["image"] == worker["image"] == IMAGE
    assert prod.outputs["image"] == IMAGE


def test_probes_use_the_health_routes_on_the_serving_port(dev: StackCapture) -> None:
    for name in (API_NAME, WORKER_NAME):
        served = container(dev, name)
        assert served["ports"] == [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
        assert served["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert served["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert served["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_pods_run_restricted_with_a_read_only_root_and_writable_volumes_only_where_needed(
    dev: StackCapture,
) -> None:
    for name in (API_NAME, WORKER_NAME):
        served = container(dev, name)
        context = served["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert served["resources"]["limits"] and served["resources"]["requests"]
        writable = {m["mountPath"] for m in served["volumeMounts"] if not m.get("readOnly")}
        assert writable == {
            "/var/lib/tenancy",
            "/tmp",
            "/opt/pulumi/workspaces",
            "/var/lib/tenancy-workspace",
        }
        read_only = {m["mountPath"] for m in served["volumeMounts"] if m.get("readOnly")}
        # The API reads the workers' file backend (dev), nothing more (tests/platform/test_secret_reveal.py).
        assert read_only == ({"/var/lib/tenancy-workers"} if name == API_NAME else set())


def test_a_stopping_pod_gets_longer_than_the_service_waits_for_running_operations(prod: StackCapture) -> None:
    for name in (API_NAME, WORKER_NAME):
        pod = deployment(prod, name)["spec"]["template"]["spec"]
        grace = float(env_of(prod, name)["TENANCY_SERVICE_SHUTDOWN_GRACE_SECONDS"])
        prestop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > grace + prestop
    assert float(env_of(prod, WORKER_NAME)["TENANCY_SERVICE_SHUTDOWN_GRACE_SECONDS"]) >= 300


def test_the_pods_environment_is_valid_settings_for_the_service_the_queue_and_the_automation(
    prod: StackCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_image(prod_config(), stateBucket="prod-tenant-state", workers=4)
    for name, value in env_of(prod, WORKER_NAME).items():
        monkeypatch.setenv(name, value)

    service = ServiceSettings()
    queue = QueueSettings()
    automation = AutomationSettings()

    assert service.backend == queue.backend == "redis"
    assert queue.redis_sentinels == tuple(sentinel_hosts(config)) and automation.queue == queue
    assert service.issuer == issuer_url(config.domain) and service.audience == API_CLIENT_ID
    # The keys from Keycloak's Service in iam (tests/platform/test_selfservice_egress.py traces the call).
    assert (
        service.jwks_url
        == "http://keycloak-http.iam.svc.cluster.local/realms/platform/protocol/openid-connect/certs"
    )
    assert automation.stack_config == {"platform:keycloakUrl": "http://keycloak-http.iam.svc.cluster.local"}
    assert service.workers == 4 and service.audit_log == "-"  # JSON lines on stdout, for Alloy
    assert automation.backend_url is not None
    assert automation.backend_url.startswith("s3://prod-tenant-state?endpoint=s3.eu-central-1.amazonaws.com")
    assert automation.secrets_provider == "hashivault://tenants-transit"
    assert str(automation.project_dir) == str(service.project_dir) == "/app"
    assert env_of(prod, WORKER_NAME)["VAULT_SERVER_URL"] == "https://vault.example.com"
    assert env_of(prod, WORKER_NAME)["TENANCY_SERVICE_TRUSTED_PROXIES"] == ",".join(trusted_proxies(config))
    assert [str(network) for network in service.trusted_proxies] == ["127.0.0.6/32", "::6/128"]


def test_the_dev_passphrase_of_every_tenant_stack_is_never_replaced(dev: StackCapture) -> None:
    # Every dev tenant stack is encrypted with it: no input change may give it a new value (that would
    # leave every dev tenant stack undecryptable). Dev protects nothing (test_stateful_resources).
    import inspect

    import pulumi_random as random
    from pydantic.alias_generators import to_camel

    [passphrase] = [r for r in dev.resources if r.name == "selfservice-pulumi-passphrase"]
    inputs = inspect.signature(random.RandomPasswordArgs.__init__).parameters
    every_input = {to_camel(parameter) for parameter in inputs if parameter != "__self__"}
    assert every_input <= set(passphrase.ignore_changes)


def test_dev_encrypts_tenant_secrets_with_a_generated_passphrase_and_keeps_state_on_a_volume(
    dev: StackCapture,
) -> None:
    worker_env = env_of(dev, WORKER_NAME)
    assert worker_env["TENANCY_SECRETS_PROVIDER"] == "passphrase"
    assert worker_env["PULUMI_CONFIG_PASSPHRASE"] == "<secret pulumi-passphrase>"
    assert worker_env["TENANCY_BACKEND_URL"] == "file:///var/lib/tenancy/pulumi-state"
    assert deployment(dev, WORKER_NAME)["spec"]["replicas"] == 1
    assert deployment(dev, WORKER_NAME)["spec"]["strategy"] == {"type": "Recreate"}
    [claim] = objects(dev, "PersistentVolumeClaim")
    volumes = deployment(dev, WORKER_NAME)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes
    [secret] = [r for r in dev.kubernetes_objects() if r.kind == "Secret"]
    assert secret.secret_paths  # the credentials are marked secret


def test_prod_scales_the_api_and_keeps_replicas_apart_and_available(
    prod: StackCapture, dev: StackCapture
) -> None:
    [autoscaler] = objects(prod, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == API_NAME
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment(prod, API_NAME)["spec"]  # the autoscaler owns it
    assert deployment(prod, WORKER_NAME)["spec"]["replicas"] == 3
    budgets = {b["metadata"]["name"]: b["spec"] for b in objects(prod, "PodDisruptionBudget")}
    assert budgets == {
        API_NAME: {"maxUnavailable": 1, "selector": {"matchLabels": labels("api")}},
        WORKER_NAME: {"maxUnavailable": 1, "selector": {"matchLabels": labels("worker")}},
    }
    for name in (API_NAME, WORKER_NAME):
        spread = deployment(prod, name)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert objects(dev, "HorizontalPodAutoscaler") == [] and objects(dev, "PodDisruptionBudget") == []


def test_only_workers_hold_kubernetes_permissions_and_never_cluster_wide_power(prod: StackCapture) -> None:
    accounts = {a["metadata"]["name"]: a for a in objects(prod, "ServiceAccount")}
    assert accounts[API_NAME]["automountServiceAccountToken"] is False
    assert deployment(prod, API_NAME)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    [binding] = objects(prod, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": "tenancy-system"}
    ]
    assert binding["roleRef"]["name"] == WORKER_NAME != "cluster-admin"
    # The Argo CD component's binding is in argocd, for AppProjects only; none in SelfService itself.
    assert objects(prod, "RoleBinding") == []
    roles = {role["metadata"]["name"]: role for role in objects(prod, "ClusterRole")}
    assert set(roles) == {WORKER_NAME, f"{WORKER_NAME}-tenant"}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            # Never rights over nodes, webhooks or CRDs, nor ClusterRoleBindings.
            assert not {"clusterrolebindings", "nodes", "customresourcedefinitions"} & set(rule["resources"])
            assert not {"impersonate"} & set(rule["verbs"])
            # ClusterRoles: only "bind", and only the workers' tenant role.
            if "clusterroles" in rule["resources"]:
                assert rule["verbs"] == ["bind"] and rule["resourceNames"] == [f"{WORKER_NAME}-tenant"]
    # Cluster-wide, nothing over Secrets, workloads or policies: those are bound per tenant namespace.
    cluster_wide = {r for rule in roles[WORKER_NAME]["rules"] for r in rule["resources"]}
    assert cluster_wide == {"namespaces", "rolebindings", "clusterroles", "tenantnamespaces"}
    # Of RoleBindings, cluster-wide: create any (admission keeps it to tenant namespaces), the rest
    # only on their own binding by name; and escalate nowhere but on tenant namespaces' Roles.
    for rule in roles[WORKER_NAME]["rules"]:
        if "rolebindings" in rule["resources"] and set(rule["verbs"]) != {"create"}:
            assert rule["resourceNames"] == [WORKER_NAME]
        assert "escalate" not in rule["verbs"]
    assert all(rule.why for rule in (*WORKER_RULES, *WORKER_TENANT_RULES))


def test_readme_lists_every_worker_rule_and_why() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    for rule in (*WORKER_RULES, *WORKER_TENANT_RULES, *WORKER_GITOPS_RULES):
        for resource in rule.resources:
            assert f"`{resource}`" in readme, f"README does not list the worker rule for {resource}"


def test_only_the_gateway_reaches_the_api_and_nothing_reaches_the_workers(prod: StackCapture) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in objects(prod, "NetworkPolicy")}
    ingress = [
        (name, spec)
        for name, spec in policies.items()
        if "Ingress" in spec["policyTypes"] and spec.get("ingress")
    ]
    gateway = policies["allow-ingress-gateway-to-api"]
    assert gateway["podSelector"] == {"matchLabels": labels("api")}
    assert gateway["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACES.ingress}},
                    "podSelector": {"matchLabels": INGRESS_GATEWAY_LABELS},
                }
            ],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }
    ]
    # Besides the gateway: the namespace itself (baseline) and scraping of the sidecar's metrics port.
    assert {name for name, _ in ingress} == {
        "allow-same-namespace",
        "allow-ingress-gateway-to-api",
        "allow-metrics-scraping",
    }
    authz = {p["metadata"]["name"]: p["spec"] for p in objects(prod, "AuthorizationPolicy")}
    assert authz["allow-nothing"] == {}
    [rule] = authz["allow-ingress-gateway-to-api"]["rules"]
    assert rule["from"] == [
        {"source": {"principals": ["cluster.local/ns/istio-ingress/sa/istio-ingressgateway"]}}
    ]
    assert rule["to"] == [{"operation": {"ports": [str(HTTP_PORT)]}}]


def test_workers_reach_the_api_server_by_address_and_storage_and_vault_by_port(prod: StackCapture) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in objects(prod, "NetworkPolicy")}
    apiserver = policies["allow-workers-to-apiserver"]
    assert apiserver["podSelector"] == {"matchLabels": labels("worker")}
    assert apiserver["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/28"}}]
    assert {p["port"] for p in apiserver["egress"][0]["ports"]} == {443, 6443}
    redis = policies["allow-redis"]["egress"][0]
    assert redis["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "redis"}}
    assert {p["port"] for p in redis["ports"]} == {6379, 26379}
    outside = policies["allow-workers-to-storage-and-vault"]
    assert outside["podSelector"] == {"matchLabels": labels("worker")}
    assert {p["port"] for p in outside["egress"][0]["ports"]} == {443}


def test_the_route_at_api_domain_reaches_the_api_service_and_its_pods(prod: StackCapture) -> None:
    [route] = objects(prod, "VirtualService")
    assert route["spec"]["hosts"] == ["api.data.example.com"]
    assert route["spec"]["gateways"] == ["istio-ingress/platform-gateway"]
    destination = route["spec"]["http"][0]["route"][0]["destination"]
    [service] = objects(prod, "Service")
    assert destination == {
        "host": f"{service['metadata']['name']}.tenancy-system.svc.cluster.local",
        "port": {"number": service["spec"]["ports"][0]["port"]},
    }
    pod_labels = deployment(prod, API_NAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    annotations = deployment(prod, API_NAME)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(HTTP_PORT)


def test_an_image_must_be_given_by_digest() -> None:
    with pytest.raises(SpecError, match="not an image by digest"):
        with_image(dev_config(), image="ghcr.io/example/tenancy-platform:latest")


def test_the_redis_platform_admits_the_service_namespace() -> None:
    from tenancy.builders.redis import SELF_SERVICE_NAMESPACE

    assert SELF_SERVICE_NAMESPACE == NAMESPACES.self_service == "tenancy-system"
    assert Path(PROJECT_DIR / "Containerfile").is_file()


def _cel(expression: str, request: dict[str, Any]) -> bool:
    import celpy

    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    return bool(program.evaluate({"request": celpy.json_to_cel(request)}))


@pytest.mark.parametrize(
    ("namespace", "resource", "name", "allowed"),
    [
        ("tenant-acme", "secrets", "qdrant-keys", True),
        ("tenant-acme", "rolebindings", "admins", True),
        ("", "namespaces", "tenant-acme", True),
        ("argocd", "appprojects", "acme", True),
        ("kube-system", "secrets", "bootstrap-token", False),
        ("tenancy-system", "rolebindings", "escalate", False),
        ("", "namespaces", "kube-system", False),
        ("argocd", "secrets", "argocd-secret", False),
        ("iam", "statefulsets", "keycloak", False),
    ],
)
def test_admission_keeps_the_workers_writes_inside_tenant_namespaces(
    prod: StackCapture, namespace: str, resource: str, name: str, allowed: bool
) -> None:
    policies = {p["metadata"]["name"]: p for p in objects(prod, "ValidatingAdmissionPolicy")}
    bindings = {b["metadata"]["name"]: b for b in objects(prod, "ValidatingAdmissionPolicyBinding")}
    policy = policies[ADMISSION_POLICY]
    assert bindings[ADMISSION_POLICY]["spec"] == {
        "policyName": ADMISSION_POLICY,
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    [only_workers] = policy["spec"]["matchConditions"]
    worker = {"userInfo": {"username": f"system:serviceaccount:tenancy-system:{WORKER_NAME}"}}
    someone_else = {"userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller"}}
    assert _cel(only_workers["expression"], worker) and not _cel(only_workers["expression"], someone_else)
    validation, *_others = policy["spec"]["validations"]
    # The namespace it lands in, as the API server hands it over: tenant-acme is the platform's.
    owner = (
        {"tenancy.platform/tenant": namespace.removeprefix("tenant-")} if namespace == "tenant-acme" else {}
    )
    review = Review(
        "UPDATE",
        resource,
        name,
        namespace=namespace,
        group={
            "rolebindings": "rbac.authorization.k8s.io",
            "appprojects": "argoproj.io",
            "statefulsets": "apps",
        }.get(resource, ""),
        username=WORKER_USER,
        namespace_object={"metadata": {"name": namespace, "labels": owner}} if namespace else None,
    )
    assert admitted({**policy, "spec": {**policy["spec"], "validations": [validation]}}, review) is allowed
    # Every kind the workers may change is matched, so none escapes the check.
    matched = {r for rule in policy["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]}
    every = (*WORKER_RULES, *WORKER_TENANT_RULES, *WORKER_GITOPS_RULES)
    assert matched == {r for rule in every if "create" in rule.verbs for r in rule.resources}


def test_the_workers_give_prod_tenant_stacks_the_vault_token_they_require(prod: StackCapture) -> None:
    environ = dict(env_of(prod, WORKER_NAME))
    config = tenant_stack_config(
        StackRef("prod", "acme"),
        OperationKind.up,
        project_dir=PROJECT_DIR,
        extra={},
        environ=environ,
        tenants_dir=PROJECT_DIR / "tenants",
    )
    assert VAULT_TOKEN_KEY in config.secret


def test_api_and_workers_find_the_backup_bucket_with_credentials_only_by_secret_reference(
    prod: StackCapture, dev: StackCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = prod_config()
    assert config.object_storage is not None
    for name in (API_NAME, WORKER_NAME):
        env = env_of(prod, name)
        assert env["TENANCY_SERVICE_BACKUP_BUCKET"] == config.object_storage.backup_bucket
        assert env["TENANCY_SERVICE_BACKUP_S3_ENDPOINT"] == "https://s3.eu-central-1.amazonaws.com"
        assert env["TENANCY_SERVICE_BACKUP_S3_REGION"] == "eu-central-1"
        assert env["AWS_ACCESS_KEY_ID"] == "<secret object-storage-access-key-id>"
        assert env["AWS_SECRET_ACCESS_KEY"] == "<secret object-storage-secret-access-key>"
        raw = container(prod, name)["env"]
        assert len({item["name"] for item in raw}) == len(raw)  # no variable set twice
    with monkeypatch.context() as scope:
        for key, value in env_of(prod, WORKER_NAME).items():
            scope.setenv(key, value)
        from tenancy.automation.data_operations import BackupStore

        store = BackupStore()
        settings = ServiceSettings()
        assert store.backup_bucket == settings.backup_bucket == config.object_storage.backup_bucket
        assert store.backup_s3_path_style is settings.backup_s3_path_style is False
    # Dev has no object storage: no bucket, and the service refuses backups clearly (503).
    assert "TENANCY_SERVICE_BACKUP_BUCKET" not in env_of(dev, WORKER_NAME)
