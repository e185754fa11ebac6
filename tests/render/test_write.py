"""Render layout, masking and stability, on a synthetic program and on a real tenant stack."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pytest
import yaml

from tenancy.render.redact import PLACEHOLDER
from tenancy.render.runtime import GENERATED, StackCapture, capture_program
from tenancy.render.write import (
    RenderedStack,
    RenderError,
    example_stacks,
    render_capture,
    render_stack,
    write_rendered,
)
from tests.conftest import PROJECT_DIR


def _program() -> Mapping[str, Any]:
    password = random.RandomPassword("db-password", length=24, special=False)
    dsn = pulumi.Output.concat("postgres://app:", password.result, "@db.team:5432/app")
    k8s.core.v1.Namespace("team", metadata={"name": "team"})
    k8s.core.v1.Secret(
        "db-credentials",
        metadata={"name": "db-credentials", "namespace": "team"},
        data={"password": password.result.apply(lambda p: base64.b64encode(p.encode()).decode())},
        string_data={"dsn": dsn},
    )
    # A connection string nobody marked secret still must not leak the generated password.
    k8s.core.v1.ConfigMap(
        "app-config",
        metadata={"name": "app-config", "namespace": "team"},
        data={"dsn": dsn, "mode": "a\nb\n"},
    )
    k8s.rbac.v1.ClusterRole("reader", metadata={"name": "system:reader"}, rules=[])
    k8s.apiextensions.CustomResource(
        "db",
        api_version="postgresql.cnpg.io/v1",
        kind="Cluster",
        metadata={"name": "db", "namespace": "team"},
        spec={"instances": 1},
    )
    # Two kinds named Gateway, from two API groups, with one name.
    k8s.apiextensions.CustomResource(
        "istio-gateway",
        api_version="networking.istio.io/v1",
        kind="Gateway",
        metadata={"name": "public", "namespace": "team"},
        spec={},
    )
    k8s.apiextensions.CustomResource(
        "gateway-api-gateway",
        api_version="gateway.networking.k8s.io/v1",
        kind="Gateway",
        metadata={"name": "public", "namespace": "team"},
        spec={},
    )
    k8s.helm.v3.Release(
        "cache-release",
        name="cache",
        namespace="team",
        chart="redis-ha",
        version="4.39.0",
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo="https://dandydeveloper.github.io/charts"),
        values={"auth": True, "redisPassword": pulumi.Output.secret("hunter2"), "replicas": 1},
    )
    k8s.core.v1.Secret.get("existing", "team/existing")
    return {
        "password": pulumi.Output.secret(password.result),
        "dsn": dsn,
        "endpoint": "db.team:5432",
    }


@pytest.fixture(scope="module")
def capture() -> StackCapture:
    return capture_program(_program, stack="dev.team")


@pytest.fixture(scope="module")
def rendered(capture: StackCapture) -> RenderedStack:
    return render_capture(capture)


def _load(rendered: RenderedStack, path: str) -> Any:
    return yaml.safe_load(rendered.files[path])


def test_every_declared_object_gets_one_file_in_its_namespace_or_cluster_directory(
    rendered: RenderedStack,
) -> None:
    assert sorted(rendered.files) == [
        "helm/cache.yaml",
        "manifests/_cluster/ClusterRole-system_reader.yaml",
        "manifests/_cluster/Namespace-team.yaml",
        "manifests/team/Cluster-db.yaml",
        "manifests/team/ConfigMap-app-config.yaml",
        "manifests/team/Gateway.gateway.networking.k8s.io-public.yaml",
        "manifests/team/Gateway.networking.istio.io-public.yaml",
        "manifests/team/Secret-db-credentials.yaml",
        "outputs.yaml",
        "resources.yaml",
    ]


def test_manifest_files_hold_the_object_as_applied(rendered: RenderedStack) -> None:
    assert _load(rendered, "manifests/team/Cluster-db.yaml") == {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "db", "namespace": "team"},
        "spec": {"instances": 1},
    }


def test_secret_data_is_masked_and_its_keys_kept(rendered: RenderedStack) -> None:
    secret = _load(rendered, "manifests/team/Secret-db-credentials.yaml")
    assert secret["data"] == {"password": PLACEHOLDER}
    assert secret["stringData"] == {"dsn": PLACEHOLDER}


def test_a_generated_password_inside_an_unmarked_string_is_masked(rendered: RenderedStack) -> None:
    assert _load(rendered, "manifests/team/ConfigMap-app-config.yaml")["data"]["dsn"] == (
        f"postgres://app:{PLACEHOLDER}@db.team:5432/app"
    )
    assert _load(rendered, "outputs.yaml")["dsn"] == f"postgres://app:{PLACEHOLDER}@db.team:5432/app"


def test_multi_line_strings_read_as_literal_blocks(rendered: RenderedStack) -> None:
    assert "mode: |\n    a\n    b\n" in rendered.files["manifests/team/ConfigMap-app-config.yaml"]


def test_helm_release_file_has_name_namespace_chart_version_repo_and_values(rendered: RenderedStack) -> None:
    release = _load(rendered, "helm/cache.yaml")
    assert {k: v for k, v in release.items() if k != "values"} == {
        "name": "cache",
        "namespace": "team",
        "chart": "redis-ha",
        "version": "4.39.0",
        "repo": "https://dandydeveloper.github.io/charts",
    }


def test_a_secret_inside_helm_values_masks_all_of_them_and_says_why(rendered: RenderedStack) -> None:
    # Pulumi marks the whole values input secret when any value in it is: the render cannot tell which.
    assert _load(rendered, "helm/cache.yaml")["values"] == {
        "auth": PLACEHOLDER,
        "redisPassword": PLACEHOLDER,
        "replicas": PLACEHOLDER,
    }
    assert len(rendered.warnings) == 1
    assert rendered.warnings[0].startswith("helm/cache.yaml: every value of release cache is masked")


def test_secret_outputs_are_masked(rendered: RenderedStack) -> None:
    assert _load(rendered, "outputs.yaml") == {
        "password": PLACEHOLDER,
        "dsn": f"postgres://app:{PLACEHOLDER}@db.team:5432/app",
        "endpoint": "db.team:5432",
    }


def test_no_secret_value_appears_anywhere(rendered: RenderedStack) -> None:
    for path, text in rendered.files.items():
        assert GENERATED not in text, path
        assert "hunter2" not in text, path


def test_resources_summary_lists_reads_and_non_kubernetes_resources(rendered: RenderedStack) -> None:
    summary = {entry["name"]: entry for entry in _load(rendered, "resources.yaml")}
    assert summary["existing"] == {"name": "existing", "type": "kubernetes:core/v1:Secret", "read": True}
    assert summary["db-password"]["inputs"] == {"length": 24, "special": False}
    assert summary["cache-release"]["file"] == "helm/cache.yaml"
    assert summary["istio-gateway"]["file"] == "manifests/team/Gateway.networking.istio.io-public.yaml"


def test_rendering_the_same_capture_twice_gives_the_same_bytes(capture: StackCapture) -> None:
    assert render_capture(capture) == render_capture(capture)


def test_keys_are_sorted_so_diffs_are_stable(rendered: RenderedStack) -> None:
    assert rendered.files["manifests/_cluster/Namespace-team.yaml"] == (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n"
    )


def test_two_resources_declaring_one_object_are_an_error_naming_both() -> None:
    def program() -> Mapping[str, Any]:
        k8s.core.v1.ConfigMap("first", metadata={"name": "settings", "namespace": "team"}, data={})
        k8s.core.v1.ConfigMap("second", metadata={"name": "settings", "namespace": "team"}, data={})
        return {}

    with pytest.raises(RenderError, match="ConfigMap team/settings by first, second"):
        render_capture(capture_program(program, stack="dev.team"))


def test_writing_replaces_the_stack_directory_so_stale_files_go(
    rendered: RenderedStack, tmp_path: Path
) -> None:
    stale = tmp_path / "dev.team" / "manifests" / "team" / "ConfigMap-removed.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("kind: ConfigMap\n")
    directory = write_rendered(rendered, tmp_path)
    assert not stale.exists()
    written = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    assert written == sorted(rendered.files)


def test_writing_refuses_to_replace_a_directory_render_did_not_write(
    rendered: RenderedStack, tmp_path: Path
) -> None:
    (tmp_path / "dev.team").mkdir()
    (tmp_path / "dev.team" / "notes.txt").write_text("mine")
    with pytest.raises(RenderError, match=r"notes\.txt"):
        write_rendered(rendered, tmp_path)
    assert (tmp_path / "dev.team" / "notes.txt").read_text() == "mine"


def test_tenant_stack_renders_its_namespace_guard_rails_and_releases(tmp_path: Path) -> None:
    rendered, directory = render_stack("prod.acme", project_dir=PROJECT_DIR, out=tmp_path)
    assert directory == tmp_path / "prod.acme"
    files = set(rendered.files)
    assert {
        "manifests/_cluster/Namespace-tenant-acme.yaml",
        "manifests/tenant-acme/ResourceQuota-tenant-quota.yaml",
        "manifests/tenant-acme/LimitRange-tenant-limits.yaml",
        "manifests/tenant-acme/NetworkPolicy-default-deny.yaml",
        "manifests/tenant-acme/Secret-qdrant-api-keys.yaml",
        "helm/qdrant.yaml",
        "helm/vcluster.yaml",
    } <= files
    qdrant = yaml.safe_load(rendered.files["helm/qdrant.yaml"])
    # The post-renderer is part of what the cluster gets, so the reviewer and the policies see it.
    assert set(qdrant) == {"name", "namespace", "chart", "version", "repo", "postrender", "values"}
    assert qdrant["postrender"] == "tenancy-qdrant-postrender"
    assert (qdrant["namespace"], qdrant["chart"], qdrant["version"]) == ("tenant-acme", "qdrant", "1.19.0")


def test_tenant_stack_keys_and_kubeconfig_are_masked(tmp_path: Path) -> None:
    rendered, _ = render_stack("prod.acme", project_dir=PROJECT_DIR, out=tmp_path)
    outputs = yaml.safe_load(rendered.files["outputs.yaml"])
    assert outputs["qdrantApiKey"] == PLACEHOLDER
    assert outputs["qdrantReadOnlyApiKey"] == PLACEHOLDER
    assert outputs["vclusterKubeconfig"] == PLACEHOLDER
    secret = yaml.safe_load(rendered.files["manifests/tenant-acme/Secret-qdrant-api-keys.yaml"])
    assert secret["stringData"] == {"api-key": PLACEHOLDER, "read-only-api-key": PLACEHOLDER}
    server = yaml.safe_load(rendered.files["manifests/tenant-acme/Secret-qdrant-server-keys.yaml"])
    assert server["stringData"] == {"local.yaml": PLACEHOLDER}  # Qdrant's config file: the keys again


def test_all_means_both_platform_stacks_then_every_tenant_file() -> None:
    stacks = example_stacks(PROJECT_DIR)
    assert stacks[:2] == ["dev", "prod"]
    assert {"prod.acme", "prod.globex", "dev.acme", "dev.initech"} <= set(stacks[2:])


def test_resources_of_different_types_may_share_a_name() -> None:
    def program() -> Mapping[str, Any]:
        k8s.core.v1.Namespace("shared", metadata={"name": "team"})
        k8s.core.v1.ConfigMap("shared", metadata={"name": "settings", "namespace": "team"}, data={})
        return {}

    files = render_capture(capture_program(program, stack="dev.team")).files
    assert {"manifests/_cluster/Namespace-team.yaml", "manifests/team/ConfigMap-settings.yaml"} <= set(files)
