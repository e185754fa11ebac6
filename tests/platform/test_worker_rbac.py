"""The self-service workers' Kubernetes rights, as the API server's RBAC authorizer would decide them.

The rights come from the real platform program (dev and prod, their committed stack files): its
ClusterRoles, ClusterRoleBinding, the Role and RoleBinding in argocd, and the admission policy. The
requests come from the real tenant program, run the way the workers run it (the engine's stack config,
``TenantProgram``) for every example tenant: every object it declares, in the order its dependencies
allow (the workers' RoleBinding in a new namespace before anything else there), what the pinned Qdrant
and vCluster charts render into the namespace, Helm's release records and readiness reads, and the
vCluster kubeconfig read. Secrets anywhere else stay out of reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import EngineRequest, OperationKind, StackRef
from tenancy.automation.fake_engine import TenantProgram
from tenancy.builders.contract import NAMESPACES, SELF_SERVICE_WORKER_TENANT_ROLE
from tenancy.builders.gitops import IN_CLUSTER, app_project_manifest
from tenancy.builders.namespace import namespace_manifest
from tenancy.builders.rbac import WORKER_BINDING
from tenancy.builders.selfservice import WORKER_NAME, WORKER_USER, worker_admission_policy
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_stack
from tenancy.spec.tree import load_tenants
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR

RBAC = "rbac.authorization.k8s.io"
LIFECYCLE = ("create", "get", "update", "patch", "delete")  # what Pulumi does with what it declares
HELM_RECORDS = ("create", "get", "list", "update", "patch", "delete")  # sh.helm.release.v1.* Secrets
WAIT_READS = ("get", "list", "watch")
# What helm install --wait reads to decide a release is ready (helm kube/ready.go) and the provider's
# own readiness checks follow.
READINESS = [
    ("", "pods"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("", "endpoints"),
    ("", "events"),
    ("apps", "statefulsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "controllerrevisions"),
]
# What each pinned chart renders into the release namespace with the program's values (templates at the
# pinned tags: qdrant/qdrant-helm qdrant-1.19.0 charts/qdrant/templates; loft-sh/vcluster v0.36.1
# chart/templates, ClusterRole off, no etcd, ingress, quota, limits, policies or PDB).
CHART_OBJECTS: dict[str, list[tuple[str, str]]] = {
    "qdrant": [
        ("", "configmaps"),
        ("", "secrets"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("apps", "statefulsets"),
        ("policy", "poddisruptionbudgets"),
        ("", "persistentvolumeclaims"),  # the StatefulSet's claims, which scaling resizes and deletes
    ],
    "vcluster": [
        ("", "secrets"),  # config-secret.yaml
        ("", "serviceaccounts"),
        ("", "services"),
        ("apps", "statefulsets"),
        (RBAC, "roles"),
        (RBAC, "rolebindings"),
    ],
}
# The vCluster chart's Role vc-<release> (chart/templates/role.yaml at v0.36.1, namespaced sync): rights
# the workers do not hold themselves, so creating it needs escalate and binding it needs bind.
VCLUSTER_ROLE_RULES = [
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "pods", "pods/attach", "pods/portforward",
                      "pods/exec", "persistentvolumeclaims"],
        "verbs": ["create", "delete", "patch", "update", "get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods/status", "pods/ephemeralcontainers"],
     "verbs": ["patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets", "replicasets", "deployments"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": [""], "resources": ["endpoints", "pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
     "verbs": ["create", "get", "list", "watch"]},
]  # fmt: skip
OTHER_NAMESPACES = ["kube-system", "default", "tenancy-system", "iam", "argocd", "redis", "istio-system"]


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _matches(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    names = rule.get("resourceNames")
    return (
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not names or (name is not None and name in names))
    )


@dataclass
class Authorizer:
    """RBAC for one user over declared ClusterRoles, Roles and their bindings (no aggregation, no
    wildcards: the platform writes none)."""

    user_namespace: str
    user_name: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def add(self, manifests: Iterable[dict[str, Any]]) -> None:
        self.objects.extend(manifests)

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def _bound(self, binding: dict[str, Any]) -> bool:
        return {"kind": "ServiceAccount", "name": self.user_name, "namespace": self.user_namespace} in [
            {k: s.get(k) for k in ("kind", "name", "namespace")} for s in binding["subjects"]
        ]

    def _role_rules(self, ref: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
        if ref["kind"] == "ClusterRole":
            found = [r for r in self._of("ClusterRole") if r["metadata"]["name"] == ref["name"]]
        else:
            found = [
                r
                for r in self._of("Role")
                if r["metadata"]["name"] == ref["name"] and r["metadata"]["namespace"] == namespace
            ]
        return [rule for role in found for rule in role["rules"]]

    def rules(self, namespace: str | None) -> list[dict[str, Any]]:
        """The rules that apply to requests in ``namespace`` (None: cluster-scoped or all namespaces)."""
        held = [
            rule
            for binding in self._of("ClusterRoleBinding")
            if self._bound(binding)
            for rule in self._role_rules(binding["roleRef"], None)
        ]
        if namespace is not None:
            held += [
                rule
                for binding in self._of("RoleBinding")
                if binding["metadata"]["namespace"] == namespace and self._bound(binding)
                for rule in self._role_rules(binding["roleRef"], namespace)
            ]
        return held

    def allowed(
        self, verb: str, group: str, resource: str, namespace: str | None, name: str | None = None
    ) -> bool:
        return any(_matches(rule, verb, group, resource, name) for rule in self.rules(namespace))

    def covers(self, rules: list[dict[str, Any]], namespace: str) -> bool:
        return all(
            self.allowed(verb, group, resource, namespace)
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        )

    def may_create_role(self, rules: list[dict[str, Any]], namespace: str) -> bool:
        """RBAC's escalation check: the rules must be held already, or ``escalate`` on roles."""
        return self.allowed("create", RBAC, "roles", namespace) and (
            self.allowed("escalate", RBAC, "roles", namespace) or self.covers(rules, namespace)
        )

    def may_bind(self, ref: dict[str, Any], rules: list[dict[str, Any]], namespace: str) -> bool:
        """RBAC's check on a RoleBinding: ``bind`` on the role it names, or holding all its rules."""
        resource = "clusterroles" if ref["kind"] == "ClusterRole" else "roles"
        return self.allowed("create", RBAC, "rolebindings", namespace) and (
            self.allowed("bind", RBAC, resource, namespace, ref["name"]) or self.covers(rules, namespace)
        )


def worker_authorizer(platform: StackCapture) -> Authorizer:
    authorizer = Authorizer(NAMESPACES.self_service, WORKER_NAME)
    authorizer.add(
        r.inputs
        for r in platform.kubernetes_objects()
        if r.kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    )
    return authorizer


@pytest.fixture(scope="module", params=["dev", "prod"])
def environment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def platform(environment: str) -> StackCapture:
    return capture_stack(environment, project_dir=PROJECT_DIR)


@pytest.fixture(scope="module")
def tenant_runs(
    environment: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[DeclaredResource]]:
    """Every example tenant of the environment, through the program as the workers run it."""
    program = TenantProgram(
        PROJECT_DIR,
        scratch_dir=tmp_path_factory.mktemp(f"scratch-{environment}"),
        environ={"VAULT_TOKEN": "s.worker-rbac-test"},
    )
    runs = {}
    for tenant in load_tenants(PROJECT_DIR / "tenants").environment(environment):
        name = tenant.spec.name
        spec = load_yaml(Path(PROJECT_DIR / "tenants" / environment / f"{name}.yaml").read_text())
        run = program.run(EngineRequest(f"op-{name}", StackRef(environment, name), OperationKind.up, spec))
        runs[name] = list(run.declared)
    assert runs
    return runs


def _namespace_of(resource: DeclaredResource) -> str | None:
    return resource.inputs.get("metadata", {}).get("namespace")


def _ancestry(resources: list[DeclaredResource], resource: DeclaredResource) -> set[str]:
    """Names ``resource`` waits for: its own depends_on and every ancestor's, and a component's
    children when it depends on that component (Pulumi expands a component into its children)."""
    by_name = {r.name: r for r in resources}
    waits: set[str] = set()
    current: DeclaredResource | None = resource
    while current is not None:
        waits.update(current.depends_on)
        current = by_name.get(current.parent) if current.parent else None
    expanded = set(waits)
    for name in waits:
        expanded.update(r.name for r in resources if _descends_from(resources, r, name))
    return expanded


def _descends_from(resources: list[DeclaredResource], resource: DeclaredResource, ancestor: str) -> bool:
    by_name = {r.name: r for r in resources}
    parent = resource.parent
    while parent is not None:
        if parent == ancestor:
            return True
        parent = by_name[parent].parent if parent in by_name else None
    return False


def test_a_tenant_stack_binds_the_workers_first_and_only_to_the_platforms_tenant_role(
    tenant_runs: dict[str, list[DeclaredResource]],
) -> None:
    for name, resources in tenant_runs.items():
        [binding] = [
            r for r in resources if r.kind == "RoleBinding" and r.inputs["metadata"]["name"] == WORKER_BINDING
        ]
        assert binding.inputs["metadata"]["namespace"] == f"tenant-{name}"
        assert binding.inputs["roleRef"] == {
            "apiGroup": RBAC,
            "kind": "ClusterRole",
            "name": SELF_SERVICE_WORKER_TENANT_ROLE,
        }
        assert binding.inputs["subjects"] == [
            {"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": NAMESPACES.self_service}
        ]
        # Everything else in the namespace waits for it (so is created after and deleted before it).
        for resource in resources:
            in_namespace = _namespace_of(resource) == f"tenant-{name}" or (
                resource.type == "kubernetes:helm.sh/v3:Release"
            )
            if in_namespace and resource is not binding:
                assert binding.name in _ancestry(resources, resource), (
                    f"{resource.name} may precede the binding"
                )


def test_the_workers_may_do_everything_the_real_tenant_program_declares(
    platform: StackCapture, tenant_runs: dict[str, list[DeclaredResource]]
) -> None:
    checked: set[tuple[str, str]] = set()
    for name, resources in tenant_runs.items():
        namespace = f"tenant-{name}"
        before = worker_authorizer(platform)  # before the tenant's RoleBinding exists
        after = worker_authorizer(platform)
        after.add(r.inputs for r in resources if r.kind in ("Role", "RoleBinding"))
        for resource in resources:
            if not resource.type.startswith("kubernetes:"):
                continue
            if resource.read:  # Secret.get of the kubeconfig the running vCluster writes
                assert resource.type == "kubernetes:core/v1:Secret"
                assert all(after.allowed(v, "", "secrets", namespace, "vc-vcluster") for v in WAIT_READS)
                continue
            if resource.type == "kubernetes:helm.sh/v3:Release":
                release_ns = resource.inputs["namespace"]
                assert release_ns == namespace
                for verb in HELM_RECORDS:
                    assert after.allowed(verb, "", "secrets", release_ns), f"Helm cannot {verb} its records"
                for group, plural in [*CHART_OBJECTS[resource.inputs["chart"]], *READINESS]:
                    for verb in WAIT_READS:
                        assert after.allowed(verb, group, plural, release_ns), f"{verb} {plural} {name}"
                for group, plural in CHART_OBJECTS[resource.inputs["chart"]]:
                    for verb in LIFECYCLE:
                        if plural in ("roles", "rolebindings") and verb == "create":
                            continue  # checked with RBAC's escalation rules below
                        assert after.allowed(verb, group, plural, release_ns), f"{verb} {plural} ({name})"
                if resource.inputs["chart"] == "vcluster":
                    ref = {"kind": "Role", "name": "vc-vcluster"}
                    assert after.may_create_role(VCLUSTER_ROLE_RULES, release_ns)
                    assert after.may_bind(ref, VCLUSTER_ROLE_RULES, release_ns)
                checked.add(("Release", resource.inputs["chart"]))
                continue
            manifest = resource.inputs
            kind, group = manifest["kind"], _group(manifest["apiVersion"])
            plural, target = _plural(kind), manifest["metadata"].get("namespace")
            object_name = manifest["metadata"]["name"]
            checked.add((kind, target or ""))
            # The workers' own binding is made with what they hold before it exists.
            rights = (
                before
                if kind == "Namespace" or (object_name == WORKER_BINDING and kind == "RoleBinding")
                else after
            )
            for verb in LIFECYCLE:
                if verb == "create" and kind == "Role":
                    assert rights.may_create_role(manifest["rules"], target), f"create Role {object_name}"
                elif verb == "create" and kind == "RoleBinding":
                    ref = manifest["roleRef"]
                    rules = rights._role_rules(ref, target)
                    assert rules, f"RoleBinding {object_name} names a role nobody declares"
                    assert rights.may_bind(ref, rules, target), f"create RoleBinding {object_name}"
                else:
                    assert rights.allowed(verb, group, plural, target, object_name), (
                        f"the workers cannot {verb} {kind} {target}/{object_name} ({name})"
                    )
    # The run reached what matters: quota, Qdrant keys, backups, mesh, routes, the AppProject in argocd.
    kinds = {kind for kind, _ in checked}
    assert {"Namespace", "ResourceQuota", "Role", "RoleBinding", "NetworkPolicy", "AuthorizationPolicy",
            "VirtualService", "AppProject", "Release"} <= kinds  # fmt: skip
    assert ("AppProject", NAMESPACES.gitops) in checked


def test_the_workers_read_no_secret_outside_tenant_namespaces(
    platform: StackCapture, tenant_runs: dict[str, list[DeclaredResource]]
) -> None:
    authorizer = worker_authorizer(platform)
    for resources in tenant_runs.values():
        authorizer.add(r.inputs for r in resources if r.kind in ("Role", "RoleBinding"))
    for verb in ("get", "list", "watch", "create", "update", "delete"):
        assert not authorizer.allowed(verb, "", "secrets", None), f"{verb} Secrets cluster-wide"
        for namespace in OTHER_NAMESPACES:
            assert not authorizer.allowed(verb, "", "secrets", namespace), f"{verb} Secrets in {namespace}"
            assert not authorizer.allowed(verb, "", "configmaps", namespace)
            assert not authorizer.allowed(verb, "apps", "deployments", namespace)
    # A tenant namespace the workers never bound (made by hand, or another environment's) is closed too.
    assert not authorizer.allowed("get", "", "secrets", "tenant-not-deployed")
    # Only AppProjects in argocd; nothing else there.
    assert authorizer.allowed("create", "argoproj.io", "appprojects", NAMESPACES.gitops)
    assert not authorizer.allowed("get", "argoproj.io", "appprojects", "kube-system")
    # The one ClusterRole they may bind is their tenant role; never admin, edit or cluster-admin.
    for role in ("cluster-admin", "admin", "edit", "view", WORKER_NAME):
        assert not authorizer.may_bind({"kind": "ClusterRole", "name": role}, [{"apiGroups": ["*"],
               "resources": ["*"], "verbs": ["*"]}], "tenant-acme")  # fmt: skip


def _cel(expression: str, request: dict[str, Any]) -> bool:
    import celpy

    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    return bool(program.evaluate({"request": celpy.json_to_cel(request)}))


@pytest.mark.parametrize("namespace", ["kube-system", "tenancy-system", "iam", "argocd", "vault"])
def test_binding_the_tenant_role_outside_tenant_namespaces_is_refused_at_admission(namespace: str) -> None:
    """RBAC lets the workers bind their tenant role in any namespace (they create a new tenant's binding
    before the namespace holds any right); admission is what keeps that binding, and so Secret reads,
    to tenant namespaces."""
    spec = worker_admission_policy()["spec"]
    assert any(
        "rolebindings" in rule["resources"] and "CREATE" in rule["operations"]
        for rule in spec["matchConstraints"]["resourceRules"]
    )
    [condition] = spec["matchConditions"]
    validation, *_others = spec["validations"]

    def admitted(target: str) -> bool:
        request = {
            "namespace": target,
            "name": WORKER_BINDING,
            "resource": {"group": RBAC, "resource": "rolebindings"},
            "operation": "CREATE",
            "userInfo": {"username": WORKER_USER},
        }
        assert _cel(condition["expression"], request)
        return _cel(validation["expression"], request)

    assert not admitted(namespace)
    assert admitted("tenant-acme")


def test_readme_says_where_the_workers_may_read_secrets() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme[readme.index("**Worker permissions**") :]
    assert re.search(r"Secrets[^.]*only in tenant namespaces", section)
    assert SELF_SERVICE_WORKER_TENANT_ROLE in section


def _admitted_namespace_write(operation: str, name: str, labels: dict[str, str] | None) -> bool:
    """Whether the workers' admission policy admits their ``operation`` on namespace ``name`` carrying
    ``labels`` (every validation, with ``object`` bound as the API server binds it: null for DELETE)."""
    import celpy

    spec = worker_admission_policy()["spec"]
    request = {
        "namespace": "",
        "name": name,
        "resource": {"group": "", "resource": "namespaces"},
        "operation": operation,
        "userInfo": {"username": WORKER_USER},
    }
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    bound = {
        "request": celpy.json_to_cel(request),
        "object": None if operation == "DELETE" else celpy.json_to_cel({"metadata": metadata}),
    }
    environment = celpy.Environment()
    [condition] = spec["matchConditions"]
    assert environment.program(environment.compile(condition["expression"])).evaluate(bound)
    return all(
        bool(environment.program(environment.compile(v["expression"])).evaluate(bound))
        for v in spec["validations"]
    )


def test_a_tenant_namespace_the_workers_write_keeps_pod_security_restricted() -> None:
    """The workers may create and update tenant-* namespaces and manage StatefulSets in them: relabelled
    pod-security privileged, one of those could run a privileged pod with a hostPath, and so the node."""
    [tenant] = [t for t in load_tenants(PROJECT_DIR / "tenants").environment("dev") if t.name == "acme"]
    labels = namespace_manifest(tenant.tenant)["metadata"]["labels"]
    assert _admitted_namespace_write("CREATE", "tenant-acme", labels)
    assert _admitted_namespace_write("UPDATE", "tenant-acme", {**labels, "team": "search"})
    assert _admitted_namespace_write("DELETE", "tenant-acme", None)
    for level in ("privileged", "baseline"):
        relabelled = {**labels, "pod-security.kubernetes.io/enforce": level}
        assert not _admitted_namespace_write("UPDATE", "tenant-acme", relabelled)
        assert not _admitted_namespace_write("CREATE", "tenant-evil", relabelled)
    unlabelled = {k: v for k, v in labels.items() if k != "pod-security.kubernetes.io/enforce"}
    assert not _admitted_namespace_write("UPDATE", "tenant-acme", unlabelled)
    assert not _admitted_namespace_write("CREATE", "tenant-evil", None)
    assert not _admitted_namespace_write("CREATE", "kube-evil", labels)  # the name check still holds


def _admitted_project_write(
    operation: str, project: dict[str, Any] | None, old: dict[str, Any] | None
) -> bool:
    """Whether the workers' admission policy admits their ``operation`` on an AppProject in argocd."""
    import celpy

    spec = worker_admission_policy()["spec"]
    name = (project or old or {})["metadata"]["name"]
    request = {
        "namespace": NAMESPACES.gitops,
        "name": name,
        "resource": {"group": "argoproj.io", "resource": "appprojects"},
        "operation": operation,
        "userInfo": {"username": WORKER_USER},
    }
    bound = {
        "request": celpy.json_to_cel(request),
        "object": None if project is None else celpy.json_to_cel(project),
        "oldObject": None if old is None else celpy.json_to_cel(old),
    }
    environment = celpy.Environment()
    return all(
        bool(environment.program(environment.compile(v["expression"])).evaluate(bound))
        for v in spec["validations"]
    )


def test_an_appproject_the_workers_write_deploys_only_to_its_tenants_namespace() -> None:
    """Argo CD's controller deploys with every right wherever an AppProject lets it, and a tenant's
    admins create Applications in their project: a worker that widened one (or Argo CD's default)
    gave whoever holds a tenant role the cluster."""
    tenants = {t.name: t.tenant for t in load_tenants(PROJECT_DIR / "tenants").environment("dev")}
    project = app_project_manifest(tenants["acme"], NAMESPACES.gitops)
    assert _admitted_project_write("CREATE", project, None)
    assert _admitted_project_write("UPDATE", project, project)
    assert _admitted_project_write("DELETE", None, project)

    def widened(**spec: Any) -> dict[str, Any]:
        return {**project, "spec": {**project["spec"], **spec}}

    everywhere = widened(destinations=[{"server": "*", "namespace": "*"}])
    for bad in (
        everywhere,
        widened(destinations=[{"server": IN_CLUSTER, "namespace": "kube-system"}]),
        widened(
            destinations=[*project["spec"]["destinations"], {"server": IN_CLUSTER, "namespace": "tenant-*"}]
        ),
        widened(destinations=[{"server": IN_CLUSTER, "namespace": "tenant-initech"}]),
        widened(destinations=[{"name": "in-cluster", "server": IN_CLUSTER, "namespace": "tenant-acme"}]),
        widened(destinations=[]),
        widened(clusterResourceWhitelist=[{"group": "*", "kind": "*"}]),
    ):
        assert not _admitted_project_write("CREATE", bad, None), bad["spec"]
        assert not _admitted_project_write("UPDATE", bad, project), bad["spec"]
    anything = [{"group": "*", "kind": "*"}]
    default = {
        "metadata": {"name": "default"},
        "spec": {"destinations": everywhere["spec"]["destinations"], "clusterResourceWhitelist": anything},
    }
    assert not _admitted_project_write(
        "UPDATE", {**default, "spec": {**default["spec"], "roles": []}}, default
    )
    assert not _admitted_project_write("DELETE", None, default)
