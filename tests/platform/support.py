"""What the platform component tests share: the dev and prod configs they run with, and readers."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

from tenancy.builders.contract import NAMESPACES
from tenancy.render.runtime import DeclaredResource
from tenancy.spec.platform import PlatformConfig, parse_platform_config

S3_ENDPOINT = "https://s3.eu-central-1.amazonaws.com"
# The API server's endpoint addresses; the platform stack requires them (every platform namespace that
# calls the API reaches it there only).
API_SERVER_CIDRS = ["10.20.0.0/28"]


def dev_config() -> PlatformConfig:
    return parse_platform_config(
        {"domain": "dev.data.example.com", "kubernetesApiCidrs": API_SERVER_CIDRS},
        environment="dev",
        file="Pulumi.dev.yaml",
    )


def prod_config(*, endpoint: str = S3_ENDPOINT) -> PlatformConfig:
    """The prod shape: highly available, Vault on, object storage in eu-central-1."""
    return parse_platform_config(
        {
            "domain": "data.example.com",
            "storageClass": "fast-ssd",
            "highAvailability": True,
            "kubernetesApiCidrs": API_SERVER_CIDRS,
            "vault": {"enabled": True, "address": "https://vault.example.com"},
            "objectStorage": {
                "endpoint": endpoint,
                "region": "eu-central-1",
                "lokiBucket": "prod-loki",
                "backupBucket": "prod-backups",
                "forcePathStyle": False,
            },
        },
        environment="prod",
        file="Pulumi.prod.yaml",
    )


def is_secret(resource: DeclaredResource, *path: str) -> bool:
    """Whether the value at ``path`` (or a map holding it) was marked secret."""
    return any(path[: len(secret)] == secret for secret in resource.secret_paths)


def strings(value: Any) -> Iterator[str]:
    """Every key and string value in ``value``, depth first (to look for a secret anywhere)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


# --- tracing a connection through NetworkPolicies -------------------------------------------------


def _expression_holds(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values  # a pod without the key is selected
    if operator == "Exists":
        return key in labels
    assert operator == "DoesNotExist", f"unknown selector operator {operator}"
    return key not in labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}, f"unknown selector fields: {selector}"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()) and all(
        _expression_holds(expression, labels) for expression in selector.get("matchExpressions", [])
    )


def egress_to_address_allowed(
    policies: list[dict[str, Any]], *, namespace: str, pod: dict[str, str], address: str, port: int
) -> bool:
    """Whether TCP ``port`` from pod (namespace, labels) to ``address`` outside the cluster passes the
    namespace's egress policies (only ipBlock peers name such addresses)."""
    import ipaddress

    applying = [
        p
        for p in policies
        if p["metadata"]["namespace"] == namespace
        and "Egress" in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], pod)
    ]
    if not applying:
        return True
    target = ipaddress.ip_address(address)
    for policy in applying:
        for rule in policy["spec"].get("egress", []):
            ports = rule.get("ports")
            port_ok = ports is None or any(
                p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports
            )
            peer_ok = "to" not in rule or any(
                "ipBlock" in peer
                and target in ipaddress.ip_network(peer["ipBlock"]["cidr"])
                and not any(target in ipaddress.ip_network(c) for c in peer["ipBlock"].get("except", []))
                for peer in rule["to"]
            )
            if port_ok and peer_ok:
                return True
    return False


def _peer_matches(
    peer: dict[str, Any], own_namespace: str, namespace: dict[str, Any], pod: dict[str, str]
) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic in these traces; ipBlocks name addresses outside the cluster
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], namespace["labels"])
    else:
        in_namespace = namespace["name"] == own_namespace
    return in_namespace and _selects(peer.get("podSelector", {}), pod)


def _direction_allows(
    policies: list[dict[str, Any]],
    direction: str,
    *,
    namespace: str,
    pod: dict[str, str],
    peer_namespace: dict[str, Any],
    peer_pod: dict[str, str],
    port: int,
) -> bool:
    kind, peers = ("Egress", "to") if direction == "egress" else ("Ingress", "from")
    applying = [
        p
        for p in policies
        if p["metadata"]["namespace"] == namespace
        and kind in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], pod)
    ]
    if not applying:
        return True  # not isolated in this direction
    for policy in applying:
        for rule in policy["spec"].get(direction, []):
            ports = rule.get("ports")
            port_ok = ports is None or any(
                p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports
            )
            peer_ok = peers not in rule or any(
                _peer_matches(peer, namespace, peer_namespace, peer_pod) for peer in rule[peers]
            )
            if port_ok and peer_ok:
                return True
    return False


def namespace_of(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A namespace as a namespaceSelector sees it (the API server adds the name label)."""
    return {"name": name, "labels": {**labels, "kubernetes.io/metadata.name": name}}


def connection_allowed(
    policies: list[dict[str, Any]],
    *,
    source: tuple[dict[str, Any], dict[str, str]],
    destination: tuple[dict[str, Any], dict[str, str]],
    port: int,
) -> bool:
    """Whether TCP ``port`` from pod (namespace, labels) ``source`` to ``destination`` passes both the
    source namespace's egress and the destination namespace's ingress policies."""
    (source_ns, source_pod), (dest_ns, dest_pod) = source, destination
    return _direction_allows(
        policies, "egress", namespace=source_ns["name"], pod=source_pod,
        peer_namespace=dest_ns, peer_pod=dest_pod, port=port,
    ) and _direction_allows(
        policies, "ingress", namespace=dest_ns["name"], pod=dest_pod,
        peer_namespace=source_ns, peer_pod=source_pod, port=port,
    )  # fmt: skip


# --- what a sidecar knows --------------------------------------------------------------------------


def _labels_match(selector: dict[str, str] | None, pod: dict[str, str]) -> bool:
    return all(pod.get(key) == value for key, value in (selector or {}).items())


def sidecar_knows(
    sidecars: list[dict[str, Any]], *, namespace: str, pod: dict[str, str], host: str, port: int
) -> bool:
    """Whether the Sidecar that applies to the pod puts ``host:port`` (a Service in its namespace,
    ``<name>.<namespace>.svc.cluster.local``) in the proxy's scope; outside it, calls leave as plain
    passthrough traffic, which a STRICT-mTLS destination refuses."""
    in_namespace = [s for s in sidecars if s["metadata"]["namespace"] == namespace]
    selected = [s for s in in_namespace if "workloadSelector" in s["spec"]]
    chosen = [s for s in selected if _labels_match(s["spec"]["workloadSelector"]["labels"], pod)]
    chosen = chosen or [s for s in in_namespace if "workloadSelector" not in s["spec"]]
    chosen = chosen or [
        s
        for s in sidecars
        if s["metadata"]["namespace"] == NAMESPACES.mesh and "workloadSelector" not in s["spec"]
    ]
    assert len(chosen) == 1, f"exactly one Sidecar applies, not {len(chosen)}"
    service_namespace = host.split(".")[1]
    for listener in chosen[0]["spec"]["egress"]:
        if "port" in listener and listener["port"]["number"] != port:
            continue
        for entry in listener["hosts"]:
            scope, name = entry.split("/", 1)
            scope = namespace if scope == "." else scope
            if scope in ("*", service_namespace) and fnmatch.fnmatchcase(host, name):
                return True
    return False


# --- what Istio's AuthorizationPolicies and PeerAuthentications let through ---------------------------


def _istio_match(pattern: str, value: str) -> bool:
    """Istio's string match: exact, ``*`` (any non-empty), a ``*`` prefix (suffix match) or suffix."""
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _source_holds(source: dict[str, Any], *, namespace: str | None, principal: str | None) -> bool:
    """Every field of ``source`` holds. A caller without mTLS (``principal`` None) has no principal and
    no namespace: positive fields never match it, negative ones always do."""

    def any_of(patterns: list[str], value: str | None) -> bool:
        return value is not None and any(_istio_match(p, value) for p in patterns)

    assert set(source) <= {"principals", "notPrincipals", "namespaces", "notNamespaces"}, source
    return (
        ("principals" not in source or any_of(source["principals"], principal))
        and ("notPrincipals" not in source or not any_of(source["notPrincipals"], principal))
        and ("namespaces" not in source or any_of(source["namespaces"], namespace))
        and ("notNamespaces" not in source or not any_of(source["notNamespaces"], namespace))
    )


def _operation_holds(operation: dict[str, Any], *, port: int, path: str | None) -> bool:
    """Every field of ``operation`` holds. ``path`` None: a TCP connection, where Istio drops an ALLOW
    rule naming HTTP fields (paths), so that rule admits nothing."""
    assert set(operation) <= {"ports", "notPorts", "paths", "notPaths"}, operation
    if path is None and ("paths" in operation or "notPaths" in operation):
        return False
    return (
        ("ports" not in operation or str(port) in operation["ports"])
        and ("notPorts" not in operation or str(port) not in operation["notPorts"])
        and ("paths" not in operation or any(_istio_match(p, path or "") for p in operation["paths"]))
        and (
            "notPaths" not in operation or not any(_istio_match(p, path or "") for p in operation["notPaths"])
        )
    )


def _rule_holds(
    rule: dict[str, Any], *, namespace: str | None, principal: str | None, port: int, path: str | None
) -> bool:
    assert "when" not in rule, "conditions are not modelled here"
    froms, tos = rule.get("from"), rule.get("to")
    return (
        froms is None
        or any(_source_holds(f["source"], namespace=namespace, principal=principal) for f in froms)
    ) and (tos is None or any(_operation_holds(t["operation"], port=port, path=path) for t in tos))


def authorization_allows(
    policies: list[dict[str, Any]],
    *,
    namespace: str,
    pod: dict[str, str],
    source_namespace: str | None,
    principal: str | None,
    port: int,
    path: str | None = None,
) -> bool:
    """Whether the AuthorizationPolicies of ``namespace`` (and the root namespace's, which apply mesh-wide)
    admit a request to ``pod`` on ``port`` (``path`` for HTTP): no DENY matches, and an ALLOW matches when
    any ALLOW policy applies to the pod (an ALLOW policy without rules applies and matches nothing)."""
    applying = [
        p
        for p in policies
        if p["metadata"]["namespace"] in (namespace, NAMESPACES.mesh)
        and _labels_match(p["spec"].get("selector", {}).get("matchLabels"), pod)
    ]
    caller = {"namespace": source_namespace, "principal": principal, "port": port, "path": path}
    for policy in applying:
        assert policy["spec"].get("action", "ALLOW") in ("ALLOW", "DENY"), policy["metadata"]["name"]
    if any(
        _rule_holds(rule, **caller)
        for p in applying
        if p["spec"].get("action") == "DENY"
        for rule in p["spec"].get("rules", [])
    ):
        return False
    allows = [p for p in applying if p["spec"].get("action", "ALLOW") == "ALLOW"]
    return not allows or any(
        _rule_holds(rule, **caller) for p in allows for rule in p["spec"].get("rules", [])
    )


def accepts_plaintext(
    peer_authentications: list[dict[str, Any]], *, namespace: str, pod: dict[str, str], port: int
) -> bool:
    """Whether a sidecar on ``pod`` takes a connection without Istio mTLS on ``port``: the most specific
    PeerAuthentication decides (the workload's, else the namespace's, else the root namespace's), a
    port-level mode over the workload's own."""

    def mode_of(found: list[dict[str, Any]]) -> str | None:
        assert len(found) <= 1, [p["metadata"]["name"] for p in found]
        if not found:
            return None
        spec = found[0]["spec"]
        level = spec.get("portLevelMtls", {}).get(str(port), {}).get("mode")
        return level or spec.get("mtls", {}).get("mode")

    own = [p for p in peer_authentications if p["metadata"]["namespace"] == namespace]
    workload = [
        p for p in own if "selector" in p["spec"] and _labels_match(p["spec"]["selector"]["matchLabels"], pod)
    ]
    namespace_wide = [p for p in own if "selector" not in p["spec"]]
    root = [
        p
        for p in peer_authentications
        if p["metadata"]["namespace"] == NAMESPACES.mesh and "selector" not in p["spec"]
    ]
    for found in (workload, namespace_wide, root):
        mode = mode_of(found)
        if mode not in (None, "UNSET"):
            return mode in ("PERMISSIVE", "DISABLE")
    return True  # Istio's default is PERMISSIVE
