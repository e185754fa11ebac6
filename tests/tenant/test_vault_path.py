"""A prod tenant workload reads its Qdrant keys from Vault: the README's pod, checked hop by hop against
what the real tenant program declares (egress, Sidecar scope, the login role) and what Kubernetes and
the policies accept."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from tenancy.builders import vault as vault_build
from tenancy.builders.istio import SIDECAR_EGRESS_HOSTS, tenant_sidecar
from tenancy.builders.network import network_policy_manifests
from tenancy.policy.rules import check_object
from tenancy.policy.sources import manifest_object
from tenancy.render.runtime import StackCapture
from tenancy.render.schema import schema_errors
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import VaultConfig, read_platform_config_file
from tenancy.spec.tenant import parse_tenant, resolve
from tests.conftest import PROJECT_DIR

Run = Callable[[str], StackCapture]
PROD = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")


def readme_pod() -> dict[str, Any]:
    text = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("### Reading keys from Vault", 1)[1]
    [block] = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], flags=re.DOTALL)
    pod: dict[str, Any] = yaml.safe_load(block)
    return pod


def named(capture: StackCapture, kind: str, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == kind and r.inputs["metadata"]["name"] == name
    ]
    return found


def test_the_readme_pod_is_valid_restricted_and_logs_in_with_a_vault_audience_token(run_stack: Run) -> None:
    pod = readme_pod()
    assert schema_errors(pod) == []
    violations = check_object(manifest_object(pod, stack="prod.acme", origin="README.md"))
    assert [v.message for v in violations if v.rule == "pod-security-restricted"] == []
    assert pod["spec"]["volumes"] == [vault_build.token_volume()]
    [container] = pod["spec"]["containers"]
    assert vault_build.token_mount() in container["volumeMounts"]
    # The names the pod uses are the ones the tenant stack declares and exports.
    capture = run_stack("prod.acme")
    outputs = capture.outputs
    script = container["args"][0]
    assert f"role={outputs['vaultRole']}" in script
    assert f"auth/{outputs['vaultAuthPath']}/login" in script
    assert f"jwt=@{vault_build.TOKEN_DIRECTORY}/{vault_build.TOKEN_FILE}" in script
    mount, _, path = outputs["vaultSecretPath"].partition("/data/")
    assert f"vault kv get -mount={mount} {path}" in script
    assert {"name": "VAULT_ADDR", "value": outputs["vaultAddress"]} in container["env"]
    assert pod["metadata"]["namespace"] == outputs["namespace"]
    [role] = [
        r
        for r in capture.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
        if r.inputs["roleName"] == outputs["vaultRole"]
    ]
    assert role.inputs["audience"] == "vault"
    assert role.inputs["boundServiceAccountNamespaces"] == [outputs["namespace"]]


def test_prod_tenants_may_reach_vault_on_its_port_and_nothing_else_there(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    policy = named(capture, "NetworkPolicy", "allow-vault")["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Egress"]
    assert policy["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.30.0.10/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    # Outside the cluster: passed through by the sidecar with the client's own TLS; no host needed.
    sidecar = named(capture, "Sidecar", "default")["spec"]
    assert sidecar["egress"] == [{"hosts": SIDECAR_EGRESS_HOSTS}]
    assert sidecar["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"}
    dev = run_stack("dev.acme")  # no Vault in dev: no egress towards it
    assert [r for r in dev.kubernetes_objects() if r.inputs["metadata"]["name"] == "allow-vault"] == []


def test_a_vault_in_the_cluster_is_reached_on_its_pod_port_through_the_mesh() -> None:
    tenant = resolve(
        parse_tenant({"name": "acme", "owners": ["a@acme.example"], "plan": "small"}, file="a"), "prod"
    )
    config = VaultConfig(enabled=True, address="https://vault.vault.svc:8200", namespace="vault")
    reach = vault_build.vault_reach(config, environment="prod")
    assert reach is not None and reach.port == 8200
    from tenancy.builders.contract import PlatformRefs

    refs = PlatformRefs.from_mapping({name: name for name in PlatformRefs.field_names()})
    [policy] = [
        p
        for p in network_policy_manifests(tenant, refs, kubernetes_api_cidrs=[], vault=reach)
        if p["metadata"]["name"] == "allow-vault"
    ]
    assert policy["spec"]["egress"] == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
            "ports": [{"protocol": "TCP", "port": 8200}],
        }
    ]
    # Vault's services join the Sidecar's scope: calls to a meshed Vault go out with mTLS.
    hosts = tenant_sidecar(tenant, vault_namespace="vault")["spec"]["egress"][0]["hosts"]
    assert hosts == [*SIDECAR_EGRESS_HOSTS, "vault/*"]


def test_vault_on_without_a_way_to_reach_it_fails_naming_the_key() -> None:
    config = VaultConfig(enabled=True, address="https://vault.example.com")
    try:
        vault_build.vault_reach(config, environment="prod")
    except SpecError as error:
        [issue] = error.issues
        assert (issue.file, issue.field) == ("Pulumi.prod.yaml", "platform:vault")
        assert "cidrs" in issue.reason and "namespace" in issue.reason
    else:
        raise AssertionError("expected a SpecError")
    assert vault_build.vault_reach(VaultConfig(), environment="dev") is None
