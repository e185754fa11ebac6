"""``tenantctl policy OUT``: CI's check of a render directory, with messages naming object, rule and fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from typer.testing import CliRunner

from tenancy.cli import app, exit_codes
from tenancy.render.runtime import capture_program
from tenancy.render.write import render_capture, render_stack, write_rendered
from tests.conftest import PROJECT_DIR

runner = CliRunner()


def _exposed_service() -> dict[str, Any]:
    k8s.core.v1.Service(
        "public",
        metadata={
            "name": "public",
            "namespace": "tenant-team",
            "labels": {"tenancy.platform/tenant": "team"},
        },
        spec={"type": "LoadBalancer", "ports": [{"port": 80}]},
    )
    return {}


def test_a_violation_fails_naming_file_object_rule_and_fix(tmp_path: Path) -> None:
    write_rendered(render_capture(capture_program(_exposed_service, stack="dev.team")), tmp_path)
    result = runner.invoke(app, ["policy", str(tmp_path)])
    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert (
        "dev.team/manifests/tenant-team/Service-public.yaml: Service tenant-team/public: "
        "[no-external-service] Service is of type LoadBalancer (spec.type). Fix: tenants are reached "
        "through the platform gateway"
    ) in result.output
    assert "1 violation(s) of 1 of 12 policies" in result.output


def test_json_output_lists_each_violation(tmp_path: Path) -> None:
    write_rendered(render_capture(capture_program(_exposed_service, stack="dev.team")), tmp_path)
    result = runner.invoke(app, ["policy", str(tmp_path), "--json"])
    assert result.exit_code == exit_codes.OPERATION_FAILED
    document = json.loads(result.output)
    assert document["passed"] is False
    assert [(v["rule"], v["object"], v["field"]) for v in document["violations"]] == [
        ("no-external-service", "Service tenant-team/public", "spec.type")
    ]


def test_a_compliant_tenant_render_passes(tmp_path: Path) -> None:
    render_stack("prod.acme", project_dir=PROJECT_DIR, out=tmp_path)
    result = runner.invoke(app, ["policy", str(tmp_path / "prod.acme")])
    assert result.exit_code == 0, result.output
    assert "pass all 12 policies" in result.output


def test_a_directory_without_a_render_is_an_input_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", str(tmp_path)])
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "tenantctl render --all" in result.output


def test_a_broken_tenant_component_fails_the_policy_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A change that forgets to drop capabilities in Qdrant's container must not reach a cluster.
    monkeypatch.setattr(
        "tenancy.builders.qdrant.restricted_container",
        lambda **_: {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    )
    render_stack("prod.acme", project_dir=PROJECT_DIR, out=tmp_path)
    result = runner.invoke(app, ["policy", str(tmp_path)])
    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert (
        "prod.acme/helm/qdrant.yaml: HelmRelease tenant-acme/qdrant: [pod-security-restricted] "
        "container 'qdrant' of StatefulSet qdrant (qdrant chart) does not drop all capabilities "
        "(values.containerSecurityContext.capabilities.drop)"
    ) in result.output


def _secret_in_values() -> dict[str, Any]:
    k8s.helm.v3.Release(
        "cache",
        name="cache",
        namespace="redis",
        chart="redis-ha",
        version="4.39.0",
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo="https://dandydeveloper.github.io/charts"),
        values={"replicas": 3, "redisPassword": pulumi.Output.secret("hunter2")},
    )
    return {}


def test_findings_about_masked_secret_values_warn_instead_of_failing(tmp_path: Path) -> None:
    write_rendered(render_capture(capture_program(_secret_in_values, stack="dev")), tmp_path)
    result = runner.invoke(app, ["policy", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: dev/helm/cache.yaml: cannot check a masked secret value" in result.output
    assert "[stateful-pdb]" in result.output


def test_a_rendered_file_that_is_not_yaml_is_named_without_a_traceback(tmp_path: Path) -> None:
    """Found following the README: a broken file in the render directory ended the check with a
    Python traceback instead of naming the file."""
    write_rendered(render_capture(capture_program(_exposed_service, stack="dev.team")), tmp_path)
    (tmp_path / "dev.team" / "manifests" / "tenant-team" / "Broken-x.yaml").write_text("garbage: [\n")
    result = runner.invoke(app, ["policy", str(tmp_path)])
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "dev.team/manifests/tenant-team/Broken-x.yaml: not valid YAML: line 2" in result.output
    as_json = runner.invoke(app, ["policy", str(tmp_path), "--json"])
    assert as_json.exit_code == exit_codes.INVALID_INPUT
    assert json.loads(as_json.stdout)["error"]["code"] == "invalid_input"
