"""Every image a tenant's vCluster runs comes from tenancy/versions.py, by digest wherever a digest is
recorded there (or given per environment in ``platform:vclusterImages``, by digest only): the syncer,
the Kubernetes distro, CoreDNS in the virtual cluster and the init container the syncer adds to synced
StatefulSet pods. Traced through the real tenant program under mocks, as the workers run it (the
engine's stack config), and through the pinned chart's model of what it renders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy import versions
from tenancy.automation.contract import EngineRequest, OperationKind, StackRef
from tenancy.automation.errors import ProgramError
from tenancy.automation.fake_engine import TenantProgram
from tenancy.builders.vcluster import chart_image
from tenancy.policy import charts
from tenancy.policy.pods import containers
from tenancy.policy.rules import check_stack
from tenancy.policy.sources import objects_from_render
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_stack
from tenancy.render.write import render_capture
from tenancy.spec.errors import SpecError
from tenancy.spec.tree import read_tenant_file
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MIRROR_DIGEST = "sha256:" + "ab" * 32  # a digest as a platform team would read it from its mirror


def run_as_workers(project: Path, scratch: Path, tenant: str = "acme") -> list[DeclaredResource]:
    spec = load_yaml((PROJECT_DIR / "tenants" / "prod" / f"{tenant}.yaml").read_text())
    program = TenantProgram(project, scratch_dir=scratch, environ={"VAULT_TOKEN": "s.images"})
    run = program.run(EngineRequest("op", StackRef("prod", tenant), OperationKind.up, spec))
    return list(run.declared)


def vcluster_values(resources: list[DeclaredResource]) -> dict[str, Any]:
    [release] = [
        r.inputs
        for r in resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "vcluster"
    ]
    assert release["version"] == versions.VCLUSTER.version
    values: dict[str, Any] = release["values"]
    return values


def images_of(values: dict[str, Any]) -> dict[str, str]:
    """Each image as the chart (statefulset.yaml, _init-containers.tpl) and the syncer (config.Image,
    pkg/coredns) build it from these values."""

    def built(image: dict[str, str]) -> str:
        prefix = f"{image['registry']}/" if image["registry"] else ""
        return f"{prefix}{image['repository']}:{image['tag']}"

    control_plane = values["controlPlane"]
    assert "version" not in control_plane["distro"]["k8s"]  # else the chart takes the tag from there
    return {
        "syncer": built(control_plane["statefulSet"]["image"]),
        "kubernetes": built(control_plane["distro"]["k8s"]["image"]),
        "coredns": control_plane["coredns"]["deployment"]["image"],
        "rewrite-hosts": built(values["sync"]["toHost"]["pods"]["rewriteHosts"]["initContainer"]["image"]),
    }


def test_every_pin_is_a_digest_or_listed_as_running_by_tag() -> None:
    for pin in versions.VCLUSTER_IMAGES:
        assert pin.digest is None or DIGEST.fullmatch(pin.digest), pin
    assert {
        p.by_tag for p in versions.VCLUSTER_IMAGES if p.digest is None
    } == versions.ACCEPTED_WITHOUT_DIGEST
    # One CoreDNS and one Kubernetes image per minor a tenant may choose (the syncer's CoreDNSVersionMap).
    assert set(versions.VCLUSTER_COREDNS_IMAGES) == set(versions.VCLUSTER_KUBERNETES_VERSIONS)
    assert set(versions.VCLUSTER_KUBERNETES_IMAGES) == set(versions.VCLUSTER_KUBERNETES_VERSIONS)


def test_the_tenant_program_sets_every_vcluster_image_from_versions(tmp_path: Path) -> None:
    values = vcluster_values(run_as_workers(PROJECT_DIR, tmp_path))
    minor = "1.34"  # tenants/prod/acme.yaml
    assert images_of(values) == {
        "syncer": versions.VCLUSTER_SYNCER_IMAGE.reference,
        "kubernetes": versions.VCLUSTER_KUBERNETES_IMAGES[minor].reference,
        "coredns": versions.VCLUSTER_COREDNS_IMAGES[minor].reference,
        "rewrite-hosts": versions.VCLUSTER_REWRITE_HOSTS_IMAGE.reference,
    }
    for name, image in images_of(values).items():
        assert "@sha256:" in image or image in versions.ACCEPTED_WITHOUT_DIGEST, name
    # CoreDNS and the init container: by digest.
    assert images_of(values)["coredns"].endswith("@" + str(versions.VCLUSTER_COREDNS_IMAGES[minor].digest))
    assert "@sha256:" in images_of(values)["rewrite-hosts"]


@pytest.mark.parametrize("minor", sorted(versions.VCLUSTER_KUBERNETES_VERSIONS))
def test_each_kubernetes_minor_gets_its_own_coredns(minor: str) -> None:
    from tenancy.builders.vcluster import vcluster_images

    images = vcluster_images(minor)
    assert images.kubernetes == versions.VCLUSTER_KUBERNETES_IMAGES[minor].reference
    assert images.coredns == versions.VCLUSTER_COREDNS_IMAGES[minor].reference


@pytest.fixture
def project_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(images: dict[str, str]) -> Path:
        project = tmp_path / "project"
        project.mkdir(exist_ok=True)
        shutil.copy(PROJECT_DIR / "Pulumi.yaml", project / "Pulumi.yaml")
        shutil.copy(PROJECT_DIR / "Pulumi.dev.yaml", project / "Pulumi.dev.yaml")
        document = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
        document["config"]["platform:vclusterImages"] = images
        (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(document))
        monkeypatch.setenv("TENANCY_TENANTS_DIR", str(PROJECT_DIR / "tenants"))
        return project

    return make


def test_a_digest_given_per_environment_reaches_the_release_and_passes_the_policy(
    project_with: Any, tmp_path: Path
) -> None:
    mirror = f"registry.example.com/loft-sh/vcluster-pro:0.36.1@{MIRROR_DIGEST}"
    kubernetes = f"ghcr.io/loft-sh/kubernetes:v1.34.0@{MIRROR_DIGEST}"
    project = project_with(
        {
            versions.VCLUSTER_SYNCER_IMAGE.by_tag: mirror,
            versions.VCLUSTER_KUBERNETES_IMAGES["1.34"].by_tag: kubernetes,
        }
    )
    values = vcluster_values(run_as_workers(project, tmp_path / "scratch"))
    assert values["controlPlane"]["statefulSet"]["image"] == {
        "registry": "registry.example.com",
        "repository": "loft-sh/vcluster-pro",
        "tag": f"0.36.1@{MIRROR_DIGEST}",
    }
    assert images_of(values)["syncer"] == mirror and images_of(values)["kubernetes"] == kubernetes
    # The same stack through render and the policy: the chart model builds exactly these images (both by
    # digest now), and no rule finds anything.
    capture: StackCapture = capture_stack("prod.acme", project_dir=project)
    objects = objects_from_render(render_capture(capture))
    [release] = [o for o in objects if o.chart == "vcluster"]
    built = {c["image"] for t in charts.VCLUSTER.pods(release) if t.rendered for _, c in containers(t.spec)}
    assert built == {mirror, kubernetes}
    assert [v.message for v in check_stack(objects)] == []


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        (
            {"ghcr.io/loft-sh/vcluster-pro:0.36.1": "registry.example.com/loft-sh/vcluster-pro:0.36.1"},
            "not an image by tag and digest",
        ),
        (
            {
                "ghcr.io/loft-sh/vcluster-pro:0.36.1": (
                    f"registry.example.com/loft-sh/vcluster-pro@{MIRROR_DIGEST}"  # no tag
                )
            },
            "not an image by tag and digest",
        ),
        (
            {"ghcr.io/loft-sh/vcluster-pro:0.35.0": f"ghcr.io/loft-sh/vcluster-pro:0.35.0@{MIRROR_DIGEST}"},
            "is not an image tenants' vClusters run",
        ),
    ],
)
def test_an_image_override_without_a_digest_stops_the_tenant_and_platform_stacks(
    project_with: Any, tmp_path: Path, images: dict[str, str], reason: str
) -> None:
    project = project_with(images)
    with pytest.raises(ProgramError) as error:
        run_as_workers(project, tmp_path / "scratch")
    assert "Pulumi.prod.yaml" in str(error.value) and "platform:vclusterImages" in str(error.value)
    assert reason in str(error.value)
    with pytest.raises(SpecError) as platform_error:  # the platform stack refuses it too, before anything
        capture_stack("prod", project_dir=project)
    assert reason in str(platform_error.value) and "platform:vclusterImages" in str(platform_error.value)


def test_a_tenant_file_names_no_image(tmp_path: Path) -> None:
    document = yaml.safe_load((PROJECT_DIR / "tenants/prod/acme.yaml").read_text())
    document["vcluster"]["image"] = "ghcr.io/loft-sh/vcluster-pro:0.36.0"
    path = tmp_path / "tenants" / "prod" / "acme.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as error:
        read_tenant_file(path, environment="prod")
    assert str(path) in str(error.value) and "vcluster.image" in str(error.value)


def test_chart_image_keeps_the_digest_in_the_tag_the_chart_appends() -> None:
    assert chart_image(f"ghcr.io/loft-sh/kubernetes:v1.34.0@{MIRROR_DIGEST}") == {
        "registry": "ghcr.io",
        "repository": "loft-sh/kubernetes",
        "tag": f"v1.34.0@{MIRROR_DIGEST}",
    }
    assert chart_image("localhost:5000/alpine:3.20") == {
        "registry": "localhost:5000",
        "repository": "alpine",
        "tag": "3.20",
    }
    assert chart_image("coredns/coredns:1.12.1")["registry"] == ""
