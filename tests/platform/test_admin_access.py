"""Keycloak's admin console, Grafana and Argo CD answer at the gateway only to adminSourceCidrs."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from components.platform.istio import Istio
from tenancy.builders.admin_access import admin_access_policy
from tenancy.builders.contract import INGRESS_GATEWAY_LABELS, NAMESPACES
from tenancy.builders.istio import gateway_values, istiod_values
from tenancy.render.runtime import capture_program
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import PlatformConfig, parse_platform_config
from tests.platform.support import API_SERVER_CIDRS

DOMAIN = "data.example.com"
OFFICE = "203.0.113.0/24"


def _config(**values: Any) -> PlatformConfig:
    return parse_platform_config(
        {"domain": DOMAIN, "kubernetesApiCidrs": API_SERVER_CIDRS, **values},
        environment="dev",
        file="Pulumi.dev.yaml",
    )


def _matches(patterns: list[str], value: str) -> bool:
    """Istio's string match: exact, "prefix*" or "*suffix"."""
    return any(
        value == p
        or (p.endswith("*") and value.startswith(p[:-1]))
        or (p.startswith("*") and value.endswith(p[1:]))
        for p in patterns
    )


def _in_blocks(blocks: list[str], address: str) -> bool:
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(block) for block in blocks)


def denied(
    policy: dict[str, Any], *, host: str, path: str, client: str, sni: str | None = None, tcp: bool = False
) -> bool:
    """Whether the gateway's DENY policy refuses a request (every field of a rule must match).

    ``sni``: the TLS server name (default the host without port); ``tcp``: the connection is on a TCP
    filter chain (TLS passthrough), where Istio drops a DENY rule's HTTP-only fields (hosts, paths)
    instead of the rule: pilot/pkg/security/authz/model/model.go checkError at the pinned tag.
    """
    assert policy["spec"]["action"] == "DENY"
    sni = host.split(":")[0] if sni is None else sni
    for rule in policy["spec"]["rules"]:
        conditions = rule.get("when", [])
        assert {c["key"] for c in conditions} <= {"connection.sni"}, "evaluator knows connection.sni only"
        when_ok = all(
            ("values" not in c or _matches(c["values"], sni))
            and ("notValues" not in c or not _matches(c["notValues"], sni))
            for c in conditions
        )
        sources = [f["source"] for f in rule.get("from", [])]
        source_ok = not sources or any(
            ("notRemoteIpBlocks" not in s or not _in_blocks(s["notRemoteIpBlocks"], client))
            and ("remoteIpBlocks" not in s or _in_blocks(s["remoteIpBlocks"], client))
            for s in sources
        )
        operations = [t["operation"] for t in rule.get("to", [])]
        operation_ok = not operations or any(
            ("hosts" not in o or tcp or _matches(o["hosts"], host))
            and ("paths" not in o or tcp or _matches(o["paths"], path))
            for o in operations
        )
        if source_ok and operation_ok and when_ok:
            return True
    return False


ADMIN_REQUESTS = [
    (f"auth.{DOMAIN}", "/admin/master/console/"),
    (f"auth.{DOMAIN}", "/admin"),
    (f"auth.{DOMAIN}", "/realms/master/protocol/openid-connect/token"),
    (f"grafana.{DOMAIN}", "/login"),
    (f"grafana.{DOMAIN}", "/api/dashboards/uid/x"),  # basic auth works on every API path
    (f"argocd.{DOMAIN}", "/auth/login"),
    (f"argocd.{DOMAIN}", "/api/v1/session"),
    (f"argocd.{DOMAIN}:443", "/api/v1/session"),  # a Host header with the port
    (f"auth.{DOMAIN}:443", "/admin/master/console/"),
]
PUBLIC_REQUESTS = [
    (f"auth.{DOMAIN}", "/realms/platform/protocol/openid-connect/token"),
    (f"auth.{DOMAIN}", "/realms/platform/.well-known/openid-configuration"),
    (f"acme.qdrant.{DOMAIN}", "/collections"),
]


@pytest.mark.parametrize(("host", "path"), ADMIN_REQUESTS)
def test_admin_surfaces_answer_only_to_the_listed_sources(host: str, path: str) -> None:
    policy = admin_access_policy(_config(adminSourceCidrs=[OFFICE]))
    assert denied(policy, host=host, path=path, client="198.51.100.7")
    assert not denied(policy, host=host, path=path, client="203.0.113.9")


@pytest.mark.parametrize(("host", "path"), ADMIN_REQUESTS)
def test_without_admin_sources_no_one_reaches_them_from_outside(host: str, path: str) -> None:
    policy = admin_access_policy(_config())
    assert denied(policy, host=host, path=path, client="203.0.113.9")


@pytest.mark.parametrize(("host", "path"), PUBLIC_REQUESTS)
def test_sign_in_to_the_platform_realm_and_tenant_endpoints_stay_open(host: str, path: str) -> None:
    for config in (_config(), _config(adminSourceCidrs=[OFFICE])):
        assert not denied(admin_access_policy(config), host=host, path=path, client="198.51.100.7")


@pytest.mark.parametrize("cidrs", [[], [OFFICE]])
def test_tenants_still_reach_their_vcluster_through_the_passthrough_chain(cidrs: list[str]) -> None:
    policy = admin_access_policy(_config(adminSourceCidrs=cidrs))
    # kubectl's TLS to <tenant>.vc.<domain> passes the gateway on a TCP chain: no host, no path.
    assert not denied(policy, host="", path="", sni=f"acme.vc.{DOMAIN}", client="198.51.100.7", tcp=True)


def test_an_admin_host_without_sni_or_behind_another_name_is_still_refused() -> None:
    policy = admin_access_policy(_config(adminSourceCidrs=[OFFICE]))
    for sni in ("", f"acme.qdrant.{DOMAIN}", f"www.{DOMAIN}"):
        assert denied(policy, host=f"grafana.{DOMAIN}", path="/login", sni=sni, client="198.51.100.7")


def test_the_policy_applies_to_the_gateway_pods_and_the_gateway_sees_client_addresses() -> None:
    def program() -> dict[str, Any]:
        Istio("istio", config=_config(adminSourceCidrs=[OFFICE]))
        return {}

    capture = capture_program(program, stack="dev")
    [policy] = [
        r.inputs
        for r in capture.of_type("kubernetes:security.istio.io/v1:AuthorizationPolicy")
        if r.inputs["metadata"]["namespace"] == NAMESPACES.ingress
    ]
    assert INGRESS_GATEWAY_LABELS.items() <= policy["spec"]["selector"]["matchLabels"].items()
    # Cluster (the default) would replace the client's address with a node's on the way in.
    assert gateway_values(_config())["service"]["externalTrafficPolicy"] == "Local"


def test_a_bad_admin_source_names_the_key() -> None:
    with pytest.raises(SpecError) as caught:
        _config(adminSourceCidrs=["203.0.113.1/24"])
    [issue] = caught.value.issues
    assert issue.field == "platform:adminSourceCidrs.0" and "not a CIDR: it has host bits set" in issue.reason


def test_doubled_slashes_cannot_slip_past_a_path_rule() -> None:
    istiod = istiod_values(_config())
    assert istiod["meshConfig"]["pathNormalization"] == {"normalization": "MERGE_SLASHES"}
