"""Names inside a tenant's vCluster: its CoreDNS answers for the virtual cluster and hands every other
name to the host cluster's DNS, which the tenant namespace's NetworkPolicy admits.

The chart's sources at v0.36.1 (loft-sh/vcluster ``pkg/coredns``): the syncer deploys CoreDNS into the
virtual cluster with ``dnsPolicy: Default`` (template.go), and the pod translator keeps that policy on
the pod it syncs to the tenant namespace (pods/translate/translator.go), so that pod's resolv.conf is
the node's. The Corefile forwards what it does not serve to that resolv.conf unless
``networking.advanced.fallbackHostCluster`` is on; then it forwards to the first nameserver of the
syncer's own resolv.conf (coredns.go ``getNameserver``: the syncer runs with ClusterFirst, so that is
the cluster DNS Service) and lets ``cluster.local`` names the virtual cluster does not know fall
through to it. The node's resolvers are no cluster DNS pod: under the namespace's default-deny every
such query was dropped, so no external name (Vault's, a tenant's own API) resolved in a vCluster, and
the tenant's Qdrant at ``qdrant.tenant-<name>.svc.cluster.local`` answered NXDOMAIN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenancy.render.runtime import StackCapture
from tenancy.spec.platform import DnsConfig, read_platform_config_file
from tests.conftest import PROJECT_DIR
from tests.tenant.test_vault_path import named
from tests.tenant.test_vcluster_api import vcluster_values

Run = Callable[[str], StackCapture]


def _admits_dns(policy: dict[str, Any], dns: DnsConfig) -> bool:
    """Whether ``policy`` lets every pod of its namespace send UDP and TCP to the cluster DNS pods on
    each of their ports (the synced CoreDNS pod carries no label the platform chooses)."""
    spec = policy["spec"]
    if spec["podSelector"] != {} or "Egress" not in spec["policyTypes"]:
        return False
    for rule in spec.get("egress", []):
        peers = rule.get("to", [])
        to_dns = any(
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == dns.namespace
            and peer.get("podSelector", {}).get("matchLabels") == dict(dns.pod_labels)
            for peer in peers
        )
        ports = {(port["protocol"], port["port"]) for port in rule.get("ports", [])}
        if to_dns and all({("UDP", p), ("TCP", p)} <= ports for p in dns.ports):
            return True
    return False


def test_coredns_in_the_vcluster_forwards_to_the_cluster_dns_the_namespace_admits(run_stack: Run) -> None:
    for stack in ("prod.acme", "dev.acme"):
        capture = run_stack(stack)
        values = vcluster_values(capture)
        # The Corefile's forward target and cluster.local fallthrough (pkg/coredns/template.go).
        assert values["networking"]["advanced"]["fallbackHostCluster"] is True
        # Not overridden: a Corefile of our own would bypass the fallback.
        assert "overwriteConfig" not in values["controlPlane"].get("coredns", {})
        # That target is the cluster DNS Service, whose pods the namespace's egress admits.
        environment = stack.split(".")[0]
        dns = read_platform_config_file(PROJECT_DIR / f"Pulumi.{environment}.yaml").dns or DnsConfig()
        assert _admits_dns(named(capture, "NetworkPolicy", "allow-dns"), dns)
        # And nothing else on port 53 could have served the node's resolvers: default-deny stands.
        deny = named(capture, "NetworkPolicy", "default-deny")["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_a_vcluster_workload_reaches_the_tenants_qdrant_by_its_service_name(run_stack: Run) -> None:
    """The name resolves (above); the pod the syncer creates is in the tenant namespace, which may reach
    its own Qdrant (same namespace: NetworkPolicy, Sidecar ``./*``, AuthorizationPolicy)."""
    capture = run_stack("prod.acme")
    outputs = capture.outputs
    namespace = outputs["namespace"]
    same = named(capture, "NetworkPolicy", "allow-same-namespace")["spec"]
    assert {"podSelector": {}} in same["egress"][0]["to"]
    sidecar = named(capture, "Sidecar", "default")["spec"]
    assert "./*" in sidecar["egress"][0]["hosts"]
    assert any(
        r.inputs["metadata"]["name"] == "allow-same-namespace"
        and r.inputs["spec"]["rules"] == [{"from": [{"source": {"namespaces": [namespace]}}]}]
        for r in capture.of_type("kubernetes:security.istio.io/v1:AuthorizationPolicy")
    )
