"""The platform's policies, each written once as a pure function over ``PolicyObject``s.

Resource rules look at one object; stack rules at every object of one stack. Both run over render
output (``tenantctl policy``) and inside the CrossGuard pack (``policy_pack/``). Patches (partial objects)
are not checked. A finding names the object, the field and the fix; for Helm releases the field is the
values key (see ``tenancy.policy.charts`` for which charts are modelled).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from tenancy import versions
from tenancy.policy import charts
from tenancy.policy.model import (
    FieldPath,
    Finding,
    PolicyObject,
    ResourceRule,
    StackRule,
    Violation,
    display_path,
    mapping_at,
    owning_tenant,
    tenant_namespace_of,
    tenant_of_namespace,
    value_at,
    violation,
)
from tenancy.policy.pods import (
    PodTemplate,
    guaranteed_findings,
    hardening_findings,
    host_access_findings,
    image_findings,
    image_problem,
    manifest_pod_templates,
    resource_findings,
    restricted_findings,
)
from tenancy.spec.tenant import LABEL_TENANT, NAMESPACE_PREFIX

# An exact chart version: 1.2.3, v1.2.3, 1.2.3-rc.1. Ranges (^1.2, ~1.2, >=1, 1.x, *) are not.
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
EXTERNAL_SERVICE_TYPES = frozenset({"LoadBalancer", "NodePort"})
# The port only the Kubernetes API server listens on (kubeadm's endpoint port, which NetworkPolicies see
# after the kubernetes Service's 443 is translated); nothing else in the platform uses it.
API_SERVER_ENDPOINT_PORT = 6443


def pod_templates(obj: PolicyObject) -> list[PodTemplate]:
    """Pods a manifest declares, or a modelled chart renders."""
    model = charts.model_of(obj)
    return model.pods(obj) if model else manifest_pod_templates(obj)


def _in_tenant_namespace(obj: PolicyObject) -> bool:
    return tenant_of_namespace(obj.namespace) is not None


# --- resource rules ----------------------------------------------------------------------------------------
def check_pod_security(obj: PolicyObject) -> Iterator[Finding]:
    if not _in_tenant_namespace(obj):
        return
    for template in pod_templates(obj):
        yield from restricted_findings(template)


def check_tenant_workload_hardening(obj: PolicyObject) -> Iterator[Finding]:
    if not _in_tenant_namespace(obj) or charts.model_of(obj) is None:
        return  # the tenant charts the program deploys; tenants' own workloads follow Pod Security only
    for template in pod_templates(obj):
        if template.rendered:
            yield from hardening_findings(template)
            yield from guaranteed_findings(template)


def check_container_resources(obj: PolicyObject) -> Iterator[Finding]:
    for template in pod_templates(obj):
        yield from resource_findings(template)


def _latest_in_values(value: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    """Image references in a chart's values that ask for latest (``tag: latest``, ``image: x:latest``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = (*path, str(key))
            name = str(key)
            if isinstance(item, str) and (name == "tag" or name.endswith("Tag")) and item == "latest":
                yield where, f"{display_path(where)} asks for the latest image"
            elif isinstance(item, str) and (name == "image" or name.endswith("Image")):
                if image_problem(item) == "uses the latest tag":
                    yield where, f"image {item!r} uses the latest tag"
            else:
                yield from _latest_in_values(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _latest_in_values(item, (*path, index))


def check_image_pinned(obj: PolicyObject) -> Iterator[Finding]:
    reported: set[FieldPath] = set()
    for template in pod_templates(obj):
        for finding in image_findings(template):
            reported.add(finding.path)
            yield finding
    if obj.is_release:
        for path, problem in _latest_in_values(obj.values, ("values",)):
            if path not in reported:
                yield Finding(
                    obj, path, problem, f"set {display_path(path)} to a version kept in tenancy/versions.py"
                )


def check_host_access(obj: PolicyObject) -> Iterator[Finding]:
    for template in pod_templates(obj):
        yield from host_access_findings(template)


def check_external_service(obj: PolicyObject) -> Iterator[Finding]:
    if not _in_tenant_namespace(obj):
        return
    fix = "tenants are reached through the platform gateway: use type ClusterIP at {field}"
    if obj.kind == "Service" and obj.api_version == "v1":
        kind = value_at(obj.body, ("spec", "type"))
        if kind in EXTERNAL_SERVICE_TYPES:
            path: FieldPath = ("spec", "type")
            yield Finding(obj, path, f"Service is of type {kind}", fix.format(field=display_path(path)))
    model = charts.model_of(obj)
    for service in model.services(obj) if model else []:
        if service.type in EXTERNAL_SERVICE_TYPES:
            yield Finding(
                obj,
                service.path,
                f"{service.what} is of type {service.type}",
                fix.format(field=display_path(service.path)),
            )


def _opens_port(rule: Mapping[str, Any], port: int) -> bool:
    """Whether a NetworkPolicy egress rule allows TCP ``port`` (no ports: every port)."""
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if not isinstance(entry, Mapping) or entry.get("protocol", "TCP") != "TCP":
            continue
        first = entry.get("port")
        if first is None:
            return True
        if isinstance(first, int) and first <= port <= int(entry.get("endPort", first)):
            return True
    return False


def _is_default_route(peer: Mapping[str, Any]) -> bool:
    cidr = value_at(peer, ("ipBlock", "cidr"))
    try:
        return isinstance(cidr, str) and ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def check_api_server_egress(obj: PolicyObject) -> Iterator[Finding]:
    if obj.kind != "NetworkPolicy" or obj.api_version != "networking.k8s.io/v1":
        return
    for index, rule in enumerate(value_at(obj.body, ("spec", "egress")) or []):
        if not isinstance(rule, Mapping) or not _opens_port(rule, API_SERVER_ENDPOINT_PORT):
            continue
        peers = rule.get("to") or []
        if not peers or any(isinstance(peer, Mapping) and _is_default_route(peer) for peer in peers):
            path: FieldPath = ("spec", "egress", index)
            yield Finding(
                obj,
                path,
                f"egress to any address on port {API_SERVER_ENDPOINT_PORT}, the Kubernetes API server's",
                "reach the API server at its addresses only: ipBlocks from platform:kubernetesApiCidrs "
                "(tenancy.builders.platform_namespace.allow_egress_to_api_server), and list the ports",
            )


def _label_finding(obj: PolicyObject, tenant: str, labels: Any, path: FieldPath, what: str) -> Finding | None:
    found = labels.get(LABEL_TENANT) if isinstance(labels, Mapping) else None
    fix = f"add {LABEL_TENANT}: {tenant} to {display_path(path)} (tenant.labels in the builders carries it)"
    if found is None:
        return Finding(obj, path, f"{what} has no {LABEL_TENANT} label", fix)
    if str(found) != tenant:
        return Finding(
            obj, path, f"{what} is labelled for tenant {found!r} but belongs to tenant {tenant!r}", fix
        )
    return None


def check_tenant_label(obj: PolicyObject) -> Iterator[Finding]:
    tenant = owning_tenant(obj)
    if tenant is None:
        return
    candidates: list[tuple[Any, FieldPath, str]] = []
    if obj.is_release:
        model = charts.model_of(obj)
        for path in model.label_paths if model else ():
            candidates.append((value_at(obj.body, path), path, f"what the {obj.chart} chart renders"))
    else:
        candidates.append((obj.labels, ("metadata", "labels"), "the object"))
        for template in manifest_pod_templates(obj):
            candidates.append((template.labels, template.labels_path, "its pod template"))
    for labels, path, what in candidates:
        finding = _label_finding(obj, tenant, labels, path, what)
        if finding:
            yield finding


def check_helm_version_pinned(obj: PolicyObject) -> Iterator[Finding]:
    if not obj.is_release:
        return
    version = obj.body.get("version")
    fix = f"pin {obj.chart or 'the chart'} to an exact version in tenancy/versions.py and pass it as version"
    if not version:
        yield Finding(
            obj, ("version",), f"chart {obj.chart} has no version, so every install may differ", fix
        )
    elif not EXACT_VERSION.match(str(version)):
        yield Finding(obj, ("version",), f"chart version {version!r} is a range, not one version", fix)


def check_tenant_chart_modelled(obj: PolicyObject) -> Iterator[Finding]:
    if not obj.is_release or not _in_tenant_namespace(obj):
        return
    model = charts.model_of(obj)
    if model is None:
        yield Finding(
            obj,
            ("chart",),
            f"chart {obj.chart!r} is not modelled by the policies, so Pod Security, resources and labels "
            "of what it renders in a tenant namespace cannot be checked",
            "model the chart in tenancy/policy/charts.py, or install it outside tenant namespaces",
        )
    elif str(obj.body.get("version")) != model.version:
        yield Finding(
            obj,
            ("version",),
            f"the policies model {model.chart} {model.version}, not {obj.body.get('version')}",
            f"read the {model.chart} chart's templates at that version and update tenancy/policy/charts.py",
        )


# --- stack rules -------------------------------------------------------------------------------------------
def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    for key, value in mapping_at(selector, ("matchLabels",)).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if (
            (operator == "In" and (not present or labels[key] not in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _replicas(obj: PolicyObject, path: FieldPath, default: int = 1) -> int:
    try:
        return int(value_at(obj.body, path, default))
    except (TypeError, ValueError):
        return default


def check_stateful_pdb(objects: Sequence[PolicyObject]) -> Iterator[Finding]:
    budgets = [o for o in objects if o.kind == "PodDisruptionBudget" and o.api_version == "policy/v1"]
    for obj in objects:
        if (
            obj.kind == "StatefulSet"
            and obj.api_version == "apps/v1"
            and _replicas(obj, ("spec", "replicas")) > 1
        ):
            labels = mapping_at(obj.body, ("spec", "template", "metadata", "labels"))
            covered = any(
                b.namespace == obj.namespace
                and selector_matches(mapping_at(b.body, ("spec", "selector")), labels)
                for b in budgets
            )
            if not covered:
                yield Finding(
                    obj,
                    ("spec", "replicas"),
                    f"{_replicas(obj, ('spec', 'replicas'))} replicas of stateful pods and no "
                    "PodDisruptionBudget selects them, so a node drain may take several down at once",
                    f"declare a policy/v1 PodDisruptionBudget in {obj.namespace} whose selector matches "
                    "spec.template.metadata.labels, with maxUnavailable: 1",
                )
        elif obj.is_release:
            for state in charts.replicated_state(obj):
                if state.replicas > 1 and not state.protected:
                    yield Finding(
                        obj,
                        state.replicas_path,
                        f"{state.workload} runs {state.replicas} replicas and the chart is told to add no "
                        "PodDisruptionBudget",
                        state.fix,
                    )
        elif (
            # CloudNativePG creates the PDBs itself unless spec.enablePDB is false (default true).
            obj.kind == "Cluster"
            and obj.api_version.startswith("postgresql.cnpg.io/")
            and _replicas(obj, ("spec", "instances")) > 1
            and value_at(obj.body, ("spec", "enablePDB")) is False
        ):
            yield Finding(
                obj,
                ("spec", "enablePDB"),
                f"{_replicas(obj, ('spec', 'instances'))} PostgreSQL instances with PodDisruptionBudgets off",
                "remove spec.enablePDB (it defaults to true) or set it to true",
            )


def _denies(policy: PolicyObject, direction: str) -> bool:
    """A NetworkPolicy selecting every pod, of ``direction``, with no rule: it denies that direction."""
    spec = mapping_at(policy.body, ("spec",))
    selector = mapping_at(spec, ("podSelector",))
    if selector.get("matchLabels") or selector.get("matchExpressions"):
        return False
    # Without policyTypes, Ingress always applies and Egress only with egress rules (which allow something).
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    return direction in types and not spec.get(direction.lower())


def check_tenant_namespace_guardrails(objects: Sequence[PolicyObject]) -> Iterator[Finding]:
    by_namespace: dict[str | None, list[PolicyObject]] = defaultdict(list)
    for obj in objects:
        by_namespace[obj.namespace].append(obj)
    for namespace in objects:
        if namespace.kind != "Namespace" or tenant_namespace_of(namespace) is None:
            continue
        inside = by_namespace[namespace.name]
        missing = []
        policies = [
            o for o in inside if o.kind == "NetworkPolicy" and o.api_version == "networking.k8s.io/v1"
        ]
        for direction in ("Ingress", "Egress"):
            if not any(_denies(p, direction) for p in policies):
                missing.append(
                    f"a default-deny {direction} NetworkPolicy "
                    f"(podSelector {{}}, no {direction.lower()} rules)"
                )
        if not any(o.kind == "ResourceQuota" and o.api_version == "v1" for o in inside):
            missing.append("a ResourceQuota")
        if not any(o.kind == "LimitRange" and o.api_version == "v1" for o in inside):
            missing.append("a LimitRange")
        if missing:
            yield Finding(
                namespace,
                (),
                f"tenant namespace {namespace.name} lacks {'; '.join(missing)}",
                f"declare them in {namespace.name} in the same stack (components/tenant/namespace.py and "
                "network.py build them from the tenant's plan)",
            )


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule(
        "pod-security-restricted",
        "Pods in tenant namespaces meet Pod Security restricted: runAsNonRoot, allowPrivilegeEscalation "
        "false, capabilities drop ALL, seccomp RuntimeDefault, no privileged, restricted volume types.",
        check_pod_security,
    ),
    ResourceRule(
        "tenant-workload-hardened",
        "The tenant charts the program deploys (Qdrant, vCluster) run every container with a liveness probe, "
        "a read-only root filesystem and a UID of 10000 or above, take no Secret as an environment "
        "variable, pull every image by digest and mount no service-account token (checkov CKV_K8S_8, 22, 40, "
        "35, 43, 38); Qdrant's pods are Guaranteed, its Istio sidecar included. Exempt, and only these: the "
        "vCluster syncer keeps its token (it is a client of the host API); the images with no public "
        f"digest run by tag: {', '.join(sorted(versions.ACCEPTED_WITHOUT_DIGEST))}.",
        check_tenant_workload_hardening,
    ),
    ResourceRule(
        "container-resources",
        "Every container sets requests and limits for cpu and memory.",
        check_container_resources,
    ),
    ResourceRule(
        "image-pinned",
        "Every image is pinned to a tag other than latest, or to a digest.",
        check_image_pinned,
    ),
    ResourceRule(
        "no-host-access",
        "No pod uses hostPath volumes, hostNetwork, hostPID, hostIPC or hostPort.",
        check_host_access,
    ),
    ResourceRule(
        "no-external-service",
        "No Service of type LoadBalancer or NodePort in a tenant namespace: tenants go through the gateway.",
        check_external_service,
    ),
    ResourceRule(
        "api-server-egress-by-address",
        f"No NetworkPolicy opens port {API_SERVER_ENDPOINT_PORT} (the Kubernetes API server's) to any "
        "address: workloads that call the API reach it at platform:kubernetesApiCidrs only.",
        check_api_server_egress,
    ),
    ResourceRule(
        "tenant-label",
        f"Every object a tenant owns (in its namespace, or declared by its stack) carries {LABEL_TENANT}.",
        check_tenant_label,
    ),
    ResourceRule(
        "helm-version-pinned",
        "Every Helm release names one exact chart version.",
        check_helm_version_pinned,
    ),
    ResourceRule(
        "tenant-chart-modelled",
        "Helm releases in tenant namespaces use a chart and version the policies model, so they are checked.",
        check_tenant_chart_modelled,
    ),
)

STACK_RULES: tuple[StackRule, ...] = (
    StackRule(
        "stateful-pdb",
        "Every replicated stateful workload (StatefulSet, stateful chart, CloudNativePG cluster) has a "
        "PodDisruptionBudget.",
        check_stateful_pdb,
    ),
    StackRule(
        "tenant-namespace-guardrails",
        f"Every tenant namespace ({NAMESPACE_PREFIX}<name>) has default-deny NetworkPolicies, "
        "a ResourceQuota and a LimitRange.",
        check_tenant_namespace_guardrails,
    ),
)


def check_object(obj: PolicyObject, rules: Iterable[ResourceRule] = RESOURCE_RULES) -> list[Violation]:
    if obj.patch:
        return []
    return _once([violation(rule.name, finding) for rule in rules for finding in rule.check(obj)])


def _once(violations: list[Violation]) -> list[Violation]:
    """One violation per rule, field and fix: a container only a switch removes is reported once."""
    seen: set[tuple[str, str, FieldPath, str]] = set()
    unique = []
    for found in violations:
        key = (found.rule, found.subject, found.path, found.fix)
        if key not in seen:
            seen.add(key)
            unique.append(found)
    return unique


def check_stack(
    objects: Sequence[PolicyObject],
    resource_rules: Iterable[ResourceRule] = RESOURCE_RULES,
    stack_rules: Iterable[StackRule] = STACK_RULES,
) -> list[Violation]:
    """Every rule over the objects of one stack."""
    whole = [o for o in objects if not o.patch]
    rules = tuple(resource_rules)
    found = [v for obj in whole for v in check_object(obj, rules)]
    found += [violation(rule.name, finding) for rule in stack_rules for finding in rule.check(whole)]
    return found


def check_stacks(objects: Iterable[PolicyObject]) -> list[Violation]:
    """Every rule, each stack's objects on their own (a tenant's namespace and its quota share a stack)."""
    stacks: dict[str | None, list[PolicyObject]] = defaultdict(list)
    for obj in objects:
        stacks[obj.stack].append(obj)
    return [v for stack in sorted(stacks, key=str) for v in check_stack(stacks[stack])]
