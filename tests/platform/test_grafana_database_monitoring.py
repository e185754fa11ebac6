"""Grafana's database announces its exporter to a Prometheus in its own (unmeshed) namespace."""

from __future__ import annotations

from typing import Any

from tenancy.builders.observability import NAMESPACE, grafana_database_manifest, observability_policies
from tenancy.builders.platform_namespace import baseline_policies
from tenancy.spec.platform import parse_platform_config
from tests.platform.support import API_SERVER_CIDRS

PROD = parse_platform_config(
    {
        "domain": "data.example.com",
        "kubernetesApiCidrs": API_SERVER_CIDRS,
        "highAvailability": True,
        "vault": {"enabled": True, "address": "https://vault.example.com"},
        "objectStorage": {
            "endpoint": "https://s3.eu-central-1.amazonaws.com",
            "region": "eu-central-1",
            "lokiBucket": "prod-loki",
            "backupBucket": "prod-backups",
        },
    },
    environment="prod",
    file="Pulumi.prod.yaml",
)


def admits_from_own_namespace(policy: dict[str, Any], port: int) -> bool:
    """Whether ``policy`` lets any pod of its namespace reach ``port`` on every pod."""
    spec = policy["spec"]
    if spec["podSelector"] != {} or "Ingress" not in spec["policyTypes"]:
        return False
    return any(
        {"podSelector": {}} in rule.get("from", [])
        and all(p.get("port") == port for p in rule.get("ports", [{"port": port}]))
        for rule in spec.get("ingress", [])
    )


def test_grafana_database_pods_carry_the_scrape_annotations_for_the_exporter() -> None:
    spec = grafana_database_manifest(PROD)["spec"]
    assert spec["inheritedMetadata"] == {
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9187",
            "prometheus.io/path": "/metrics",
        }
    }


def test_a_scraper_in_observability_reaches_the_exporter_directly() -> None:
    # Not meshed: no sidecar, no mTLS, so 9187 itself is the endpoint; the baseline's
    # same-namespace rule is the allow, and no extra policy is needed.
    policies = baseline_policies(NAMESPACE, mesh=False) + observability_policies(PROD)
    assert any(admits_from_own_namespace(policy, 9187) for policy in policies)
