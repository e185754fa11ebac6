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
from collections.abc import Callable, Iterable
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
from tenancy.builders.selfservice import (
    ADMISSION_POLICY,
    OWNERSHIP_POLICY,
    WORKER_NAME,
    WORKER_USER,
)
from tenancy.builders.vcluster import CHART_ROLE, CHART_ROLE_RULES
from tenancy.render.runtime import DeclaredResource, StackCapture
from tenancy.spec.tree import load_tenants
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR, captured_stack
from tests.platform.admission import Review, failed_validations

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
VCLUSTER_ROLE_RULES = CHART_ROLE_RULES
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


def admission_policies(platform: StackCapture) -> list[dict[str, Any]]:
    policies = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in platform.kubernetes_objects()
        if r.kind == "ValidatingAdmissionPolicy"
    }
    bound = {
        r.inputs["spec"]["policyName"]
        for r in platform.kubernetes_objects()
        if r.kind == "ValidatingAdmissionPolicyBinding" and r.inputs["spec"]["validationActions"] == ["Deny"]
    }
    assert {ADMISSION_POLICY, OWNERSHIP_POLICY} <= bound
    for name in (ADMISSION_POLICY, OWNERSHIP_POLICY):
        assert policies[name]["spec"]["failurePolicy"] == "Fail"
    return [policies[ADMISSION_POLICY], policies[OWNERSHIP_POLICY]]


def refusals(policies: list[dict[str, Any]], review: Review) -> list[str]:
    """What the platform's admission policies say against the request (nothing: admitted)."""
    return [message for policy in policies for message in failed_validations(policy, review)]


def as_user(authorizer: Authorizer) -> Callable[[str, str, str], bool]:
    """The API server's authorizer for the ``authorizer`` CEL variable: a cluster-wide check."""
    return lambda group, resource, verb: authorizer.allowed(verb, group, resource, None)


def worker_writes(
    manifest: dict[str, Any], rights: Authorizer, namespace_object: dict[str, Any] | None
) -> list[Review]:
    """The workers' create, update and delete of ``manifest`` as admission sees them."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace", "")
    reviews = []
    for operation in ("CREATE", "UPDATE", "DELETE"):
        reviews.append(
            Review(
                operation,
                _plural(kind),
                name,
                # A namespace's own updates and deletes carry its name as their namespace (RBAC's view).
                namespace=name if kind == "Namespace" and operation != "CREATE" else namespace,
                group=_group(manifest["apiVersion"]),
                username=WORKER_USER,
                object=None if operation == "DELETE" else manifest,
                old_object=None if operation == "CREATE" else manifest,
                namespace_object=namespace_object if namespace else None,
                authorize=as_user(rights),
            )
        )
    return reviews


@pytest.fixture(scope="module", params=["dev", "prod"])
def environment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def platform(environment: str) -> StackCapture:
    return captured_stack(environment)


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
    policies = admission_policies(platform)
    argocd = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACES.gitops}}
    admitted_kinds: set[tuple[str, str]] = set()
    for name, resources in tenant_runs.items():
        namespace = f"tenant-{name}"
        before = worker_authorizer(platform)  # before the tenant's RoleBinding exists
        after = worker_authorizer(platform)
        after.add(r.inputs for r in resources if r.kind in ("Role", "RoleBinding"))
        [namespace_object] = [r.inputs for r in resources if r.kind == "Namespace"]

        def admit(
            manifest: dict[str, Any], rights: Authorizer, namespace_object: dict[str, Any] = namespace_object
        ) -> None:
            home = argocd if manifest["metadata"].get("namespace") == NAMESPACES.gitops else namespace_object
            # Admission decides the same way in every tenant's namespace: each Role and RoleBinding
            # (whose content it reads) by name once, one object of any other kind (cel-python is slow).
            kind = manifest["kind"]
            key = (kind, manifest["metadata"]["name"] if kind in ("Role", "RoleBinding") else "")
            if key in admitted_kinds:
                return
            admitted_kinds.add(key)
            for review in worker_writes(manifest, rights, home):
                assert not refusals(policies, review), (
                    f"admission refuses the workers' {review.operation} of {review.resource} "
                    f"{review.namespace}/{review.name}: {refusals(policies, review)}"
                )

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
                for group, plural in CHART_OBJECTS[resource.inputs["chart"]]:
                    kind = {"poddisruptionbudgets": "PodDisruptionBudget"}.get(plural, plural[:-1].title())
                    if plural not in ("roles", "rolebindings"):  # those two are written out below
                        version = f"{group}/v1" if group else "v1"
                        chart_object = {"apiVersion": version, "kind": kind, "metadata": {"name": "x"}}
                        admit({**chart_object, "metadata": {"name": "x", "namespace": release_ns}}, after)
                admit(helm_record(release_ns, resource.inputs["chart"]), after)
                if resource.inputs["chart"] == "vcluster":
                    ref = {"kind": "Role", "name": CHART_ROLE}
                    assert after.may_create_role(VCLUSTER_ROLE_RULES, release_ns)
                    assert after.may_bind(ref, VCLUSTER_ROLE_RULES, release_ns)
                    for manifest in vcluster_chart_rbac(release_ns):
                        admit(manifest, after)
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
            own_binding = object_name == WORKER_BINDING and kind == "RoleBinding"
            if own_binding:
                # Never deleted alone (it goes with the namespace): waiting for its deletion would list
                # RoleBindings in a namespace where, without it, the workers hold nothing.
                assert resource.retain_on_delete
            elif target is not None:
                # The provider waits for each create, update and delete with an informer over the
                # object's kind in its namespace.
                for verb in ("list", "watch"):
                    assert rights.allowed(verb, group, plural, target), f"{verb} {plural} in {target}"
            for verb in LIFECYCLE:
                if verb == "delete" and own_binding:
                    continue
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
            admit(manifest, rights)
    # The run reached what matters: quota, Qdrant keys, backups, mesh, routes, the AppProject in argocd.
    kinds = {kind for kind, _ in checked}
    assert {"Namespace", "ResourceQuota", "Role", "RoleBinding", "NetworkPolicy", "AuthorizationPolicy",
            "VirtualService", "AppProject", "Release"} <= kinds  # fmt: skip
    assert ("AppProject", NAMESPACES.gitops) in checked


def helm_record(namespace: str, release: str) -> dict[str, Any]:
    """The Secret Helm keeps a release's state in (its storage driver's default)."""
    metadata = {"name": f"sh.helm.release.v1.{release}.v1", "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "helm.sh/release.v1"}


def vcluster_chart_rbac(namespace: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding the pinned vCluster chart renders (role.yaml, rolebinding.yaml)."""
    metadata = {"name": CHART_ROLE, "namespace": namespace}
    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": metadata, "rules": CHART_ROLE_RULES},
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "subjects": [{"kind": "ServiceAccount", "name": CHART_ROLE, "namespace": namespace}],
            "roleRef": {"kind": "Role", "name": CHART_ROLE, "apiGroup": RBAC},
        },
    ]


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


def test_the_workers_read_other_rolebindings_only_where_a_tenant_stack_bound_them(
    platform: StackCapture, tenant_runs: dict[str, list[DeclaredResource]]
) -> None:
    """Cluster-wide they create RoleBindings (a new namespace holds no right yet) and read, change and
    delete their own by name; nobody's bindings are listed cluster-wide, nor read outside tenants."""
    authorizer = worker_authorizer(platform)
    for resources in tenant_runs.values():
        authorizer.add(r.inputs for r in resources if r.kind in ("Role", "RoleBinding"))
    for verb in ("list", "watch", "get", "update", "delete"):
        assert not authorizer.allowed(verb, RBAC, "rolebindings", None), f"{verb} RoleBindings cluster-wide"
        for namespace in OTHER_NAMESPACES:
            assert not authorizer.allowed(verb, RBAC, "rolebindings", namespace, "admin-binding")
    for verb in ("get", "update", "patch"):
        assert authorizer.allowed(verb, RBAC, "rolebindings", "tenant-new", WORKER_BINDING)
    for verb in ("list", "watch", "delete"):
        assert not authorizer.allowed(verb, RBAC, "rolebindings", "tenant-new", WORKER_BINDING)
    name = sorted(tenant_runs)[0]
    assert authorizer.allowed("list", RBAC, "rolebindings", f"tenant-{name}")  # under their binding


def _worker_review(
    operation: str, manifest: dict[str, Any], *, old: dict[str, Any] | None = None, owner: str | None = "acme"
) -> Review:
    """The workers writing ``manifest`` in ``tenant-acme``, whose namespace carries the ownership label
    naming ``owner`` (None: no label, a namespace the platform did not make)."""
    namespace = manifest["metadata"].get("namespace", "")
    labels = {} if owner is None else {"tenancy.platform/tenant": owner}
    return Review(
        operation,
        _plural(manifest["kind"]),
        manifest["metadata"]["name"],
        namespace=namespace,
        group=_group(manifest["apiVersion"]),
        username=WORKER_USER,
        object=None if operation == "DELETE" else manifest,
        old_object=old if operation != "CREATE" else None,
        namespace_object={"metadata": {"name": namespace, "labels": labels}} if namespace else None,
    )


def _tenant_namespace(name: str = "acme", **labels: str) -> dict[str, Any]:
    [tenant] = [t for t in load_tenants(PROJECT_DIR / "tenants").environment("dev") if t.name == "acme"]
    manifest = namespace_manifest(tenant.tenant)
    merged = {**manifest["metadata"]["labels"], **labels}
    return {**manifest, "metadata": {"name": f"tenant-{name}", "labels": merged}}


@pytest.mark.parametrize("namespace", ["kube-system", "tenancy-system", "iam", "argocd", "vault"])
def test_binding_the_tenant_role_outside_tenant_namespaces_is_refused_at_admission(
    platform: StackCapture, namespace: str
) -> None:
    """RBAC lets the workers bind their tenant role in any namespace (they create a new tenant's binding
    before the namespace holds any right); admission is what keeps that binding, and so Secret reads,
    to the platform's tenant namespaces."""
    policies = admission_policies(platform)
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": WORKER_BINDING, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": SELF_SERVICE_WORKER_TENANT_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": NAMESPACES.self_service}],
    }
    assert refusals(policies, _worker_review("CREATE", binding, owner=None))
    in_tenant = {**binding, "metadata": {**binding["metadata"], "namespace": "tenant-acme"}}
    assert not refusals(policies, _worker_review("CREATE", in_tenant))


def test_a_tenant_namespace_someone_else_made_stays_closed_to_the_workers(platform: StackCapture) -> None:
    """Only the workers and cluster-admins may set the ownership label; a tenant-* namespace without
    it (or naming another tenant) is no namespace the workers bind themselves or write in, and they
    adopt none by labelling it."""
    policies = admission_policies(platform)
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": WORKER_BINDING, "namespace": "tenant-x"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": SELF_SERVICE_WORKER_TENANT_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": NAMESPACES.self_service}],
    }
    assert refusals(policies, _worker_review("CREATE", binding, owner=None))
    assert refusals(policies, _worker_review("CREATE", binding, owner="acme"))  # tenant-acme's label
    assert not refusals(policies, _worker_review("CREATE", binding, owner="x"))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "tenant-x"}}
    assert refusals(policies, _worker_review("UPDATE", secret, old=secret, owner=None))

    workers = worker_authorizer(platform)
    someone = Authorizer("ci", "namespace-maker")  # may create namespaces, nothing more
    someone.add(
        [
            {"kind": "ClusterRole", "metadata": {"name": "ns"},
             "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create", "update"]}]},
            {"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "ns"},
             "subjects": [{"kind": "ServiceAccount", "name": "namespace-maker", "namespace": "ci"}]},
        ]
    )  # fmt: skip
    cluster_admin: Callable[[str, str, str], bool] = lambda group, resource, verb: True  # noqa: E731
    owned, unlabelled = _tenant_namespace("x", **{"tenancy.platform/tenant": "x"}), _tenant_namespace("x")
    unlabelled["metadata"]["labels"] = {
        k: v for k, v in unlabelled["metadata"]["labels"].items() if not k.startswith("tenancy.platform/")
    }
    platform_labels = {
        k: v for k, v in owned["metadata"]["labels"].items() if k.startswith("tenancy.platform/")
    }
    assert platform_labels

    def namespace_write(
        operation: str,
        new: dict[str, Any],
        old: dict[str, Any] | None,
        user: str,
        authorize: Callable[[str, str, str], bool],
    ) -> list[str]:
        name = new["metadata"]["name"]
        review = Review(
            operation, "namespaces", name, username=user, object=new, old_object=old, authorize=authorize
        )
        return refusals(policies, review)

    someone_user = "system:serviceaccount:ci:namespace-maker"
    # Anyone may make a tenant-* namespace, not a platform's one, nor turn one into it.
    assert not namespace_write("CREATE", unlabelled, None, someone_user, as_user(someone))
    assert namespace_write("CREATE", owned, None, someone_user, as_user(someone))
    assert namespace_write("UPDATE", owned, unlabelled, someone_user, as_user(someone))
    retargeted = _tenant_namespace("acme", **{"tenancy.platform/tenant": "globex"})
    assert namespace_write("UPDATE", retargeted, _tenant_namespace("acme"), someone_user, as_user(someone))
    assert namespace_write("UPDATE", unlabelled, owned, someone_user, as_user(someone))  # nor disown it
    # Other labels stay theirs to change.
    relabelled = {
        **owned,
        "metadata": {**owned["metadata"], "labels": {**owned["metadata"]["labels"], "team": "x"}},
    }
    assert not namespace_write("UPDATE", relabelled, owned, someone_user, as_user(someone))
    # The workers and cluster-admins may (the deploy workflow's tenantctl sync runs as cluster-admin).
    assert not namespace_write("CREATE", owned, None, WORKER_USER, as_user(workers))
    assert not namespace_write("CREATE", owned, None, "kubernetes-admin", cluster_admin)
    # The workers adopt none: a namespace they did not make keeps them out even once labelled.
    assert namespace_write("UPDATE", owned, unlabelled, WORKER_USER, as_user(workers))
    deleted = Review(
        "DELETE", "namespaces", "tenant-x", namespace="tenant-x", username=WORKER_USER, old_object=unlabelled
    )
    assert refusals(policies, deleted)
    assert namespace_write("CREATE", unlabelled, None, WORKER_USER, as_user(workers))
    assert namespace_write("CREATE", retargeted, None, WORKER_USER, as_user(workers))


def _role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "tenant-acme"}
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": metadata, "rules": rules}


def _binding(name: str, role: dict[str, str], subjects: list[dict[str, str]]) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "tenant-acme"}
    ref = {"apiGroup": RBAC, **role}
    return {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": metadata, "roleRef": ref,
            "subjects": subjects}  # fmt: skip


def test_the_workers_cannot_give_themselves_or_anyone_more_in_a_tenant_namespace(
    platform: StackCapture, tenant_runs: dict[str, list[DeclaredResource]]
) -> None:
    """``escalate`` on Roles and ``bind`` on the tenant's and the vCluster's roles are what a tenant
    stack needs; admission keeps a Role to what those roles grant and a binding to the tenant's groups
    or the namespace's own ServiceAccounts, so the workers never hold more than their tenant role."""
    policies = admission_policies(platform)
    resources = next(iter(tenant_runs.values()))
    [admin_role] = [
        r.inputs for r in resources if r.kind == "Role" and r.inputs["metadata"]["name"] == "tenant-admin"
    ]
    admin = {"kind": "Role", "name": "tenant-admin"}
    themselves = {"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": NAMESPACES.self_service}
    tenant_group = {"apiGroup": RBAC, "kind": "Group", "name": "oidc:/tenants/acme/admins"}

    def written(manifest: dict[str, Any]) -> bool:
        return not any(
            refusals(policies, _worker_review(operation, manifest, old=manifest))
            for operation in ("CREATE", "UPDATE")
        )

    assert written(_role("tenant-admin", admin_role["rules"]))
    assert written(_role(CHART_ROLE, CHART_ROLE_RULES))
    assert written(_binding("tenant-admin", admin, [tenant_group]))
    for rules in (
        [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}],
        [{"apiGroups": [RBAC], "resources": ["rolebindings", "roles"], "verbs": ["create", "update"]}],
        [{"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["escalate", "bind"]}],
        [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}],
        [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["update"]}],
        [*admin_role["rules"], {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                                "verbs": ["delete"]}],
    ):  # fmt: skip
        assert not written(_role("tenant-admin", rules)), rules
    for role, subjects in (
        (admin, [themselves]),  # exec and port-forward for the workers
        (admin, [{"apiGroup": RBAC, "kind": "Group", "name": "system:serviceaccounts:tenancy-system"}]),
        (admin, [{"apiGroup": RBAC, "kind": "Group", "name": "system:authenticated"}]),
        (admin, [{"apiGroup": RBAC, "kind": "User", "name": "mallory"}]),
        (admin, [{"kind": "ServiceAccount", "name": "argocd-server", "namespace": "argocd"}]),
        ({"kind": "Role", "name": "backdoor"}, [tenant_group]),
        ({"kind": "ClusterRole", "name": SELF_SERVICE_WORKER_TENANT_ROLE},
         [{"kind": "ServiceAccount", "name": "default", "namespace": "tenant-acme"}]),
        ({"kind": "ClusterRole", "name": SELF_SERVICE_WORKER_TENANT_ROLE}, [themselves, tenant_group]),
        ({"kind": "ClusterRole", "name": "admin"}, [themselves]),
    ):  # fmt: skip
        assert not written(_binding("b", role, subjects)), (role, subjects)
    # RBAC too: the workers bind no Role but those (holding none of their rules, so bind decides).
    authorizer = worker_authorizer(platform)
    authorizer.add(r.inputs for r in resources if r.kind in ("Role", "RoleBinding"))
    namespace = admin_role["metadata"]["namespace"]
    exec_rule = [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]
    assert not authorizer.may_bind({"kind": "Role", "name": "backdoor"}, exec_rule, namespace)
    assert authorizer.may_bind(admin, exec_rule, namespace)
    assert not authorizer.allowed("bind", RBAC, "roles", namespace, None)


def test_readme_says_where_the_workers_may_read_secrets() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme[readme.index("**Worker permissions**") :]
    assert re.search(r"Secrets[^.]*only in tenant namespaces", section)
    assert SELF_SERVICE_WORKER_TENANT_ROLE in section


def test_a_tenant_namespace_the_workers_write_keeps_pod_security_restricted(platform: StackCapture) -> None:
    """The workers may create and update their tenant namespaces and manage StatefulSets in them:
    relabelled pod-security privileged, one of those could run a privileged pod with a hostPath, and so
    the node."""
    policies = admission_policies(platform)
    workers = as_user(worker_authorizer(platform))

    def admitted_write(operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
        name = (new or old or {})["metadata"]["name"]
        review = Review(
            operation, "namespaces", name, username=WORKER_USER, object=new, old_object=old, authorize=workers
        )
        return not refusals(policies, review)

    acme = _tenant_namespace()
    labels = acme["metadata"]["labels"]

    def labelled(name: str, new_labels: dict[str, str]) -> dict[str, Any]:
        return {**acme, "metadata": {"name": name, "labels": new_labels}}

    assert admitted_write("CREATE", acme, None)
    assert admitted_write("UPDATE", labelled("tenant-acme", {**labels, "team": "search"}), acme)
    assert admitted_write("DELETE", None, acme)
    for level in ("privileged", "baseline"):
        relabelled = {**labels, "pod-security.kubernetes.io/enforce": level}
        assert not admitted_write("UPDATE", labelled("tenant-acme", relabelled), acme)
        evil = {**relabelled, "tenancy.platform/tenant": "evil"}
        assert not admitted_write("CREATE", labelled("tenant-evil", evil), None)
    unlabelled = {k: v for k, v in labels.items() if k != "pod-security.kubernetes.io/enforce"}
    assert not admitted_write("UPDATE", labelled("tenant-acme", unlabelled), acme)
    assert not admitted_write("CREATE", {"metadata": {"name": "tenant-evil"}}, None)
    assert not admitted_write("CREATE", labelled("kube-evil", labels), None)  # the name check still holds


def test_an_appproject_the_workers_write_deploys_only_to_its_tenants_namespace(
    platform: StackCapture,
) -> None:
    """Argo CD's controller deploys with every right wherever an AppProject lets it, and a tenant's
    admins create Applications in their project: a worker that widened one (or Argo CD's default)
    gave whoever holds a tenant role the cluster."""
    policies = admission_policies(platform)
    argocd = {"metadata": {"name": NAMESPACES.gitops}}

    def admitted_write(operation: str, project: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
        name = (project or old or {})["metadata"]["name"]
        review = Review(
            operation,
            "appprojects",
            name,
            namespace=NAMESPACES.gitops,
            group="argoproj.io",
            username=WORKER_USER,
            object=project,
            old_object=old,
            namespace_object=argocd,
        )
        return not refusals(policies, review)

    tenants = {t.name: t.tenant for t in load_tenants(PROJECT_DIR / "tenants").environment("dev")}
    project = app_project_manifest(tenants["acme"], NAMESPACES.gitops)
    assert admitted_write("CREATE", project, None)
    assert admitted_write("UPDATE", project, project)
    assert admitted_write("DELETE", None, project)

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
        assert not admitted_write("CREATE", bad, None), bad["spec"]
        assert not admitted_write("UPDATE", bad, project), bad["spec"]
    anything = [{"group": "*", "kind": "*"}]
    default = {
        "metadata": {"name": "default"},
        "spec": {"destinations": everywhere["spec"]["destinations"], "clusterResourceWhitelist": anything},
    }
    assert not admitted_write("UPDATE", {**default, "spec": {**default["spec"], "roles": []}}, default)
    assert not admitted_write("DELETE", None, default)


def test_a_deploy_that_changes_the_workers_rights_binds_every_tenant_with_the_workflows_credentials() -> None:
    """Upgrading needs no hand step when deployed through the workflow: a change to the files declaring
    the workers' rights makes the same run update the platform stack, then every tenant stack, with
    the workflow's cluster-admin kubeconfig and its own queue (never the service's workers, who hold
    no right in a namespace their binding is not in yet)."""
    import subprocess

    workflow = load_yaml((PROJECT_DIR / ".github/workflows/deploy-environment.yml").read_text())
    [job] = workflow["jobs"].values()
    steps = {step.get("name"): (index, step) for index, step in enumerate(job["steps"])}
    platform_at, _ = steps["Platform stack"]
    scope_at, scope = steps["Decide whether every tenant must be updated"]
    sync_at, sync = steps["Sync tenants"]
    assert platform_at < scope_at < sync_at
    assert "tenantctl sync" in sync["run"] and "$FLAGS" in sync["run"]
    assert sync["env"]["FLAGS"] == "${{ steps.scope.outputs.flags }}"
    assert not any(key.startswith("TENANCY_SERVICE_") for key in {**job["env"], **sync.get("env", {})})
    for declared in (
        "tenancy/builders/selfservice.py",  # the workers' ClusterRoles and admission policies
        "tenancy/builders/rbac.py",  # the tenant stack's RoleBinding
        "components/platform/selfservice.py",
    ):
        script = scope["run"].replace("git diff --no-renames --name-only HEAD^ HEAD", f"echo {declared}")
        result = subprocess.run(
            ["bash", "-c", script],
            env={"ALL": "false", "GITHUB_OUTPUT": "/dev/stdout", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == "flags=--all", declared
