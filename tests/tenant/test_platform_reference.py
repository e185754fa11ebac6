"""Tenant stacks find their platform stack on any backend: the organisation is the stack's own."""

from __future__ import annotations

from pathlib import Path

from tenancy.render.runtime import StackCapture, capture_program, config_values, platform_outputs_for
from tenancy.spec.platform import read_platform_config_file
from tenancy.stacks import stack_outputs

REFERENCE = "pulumi:pulumi:StackReference"


def run_tenant(project_dir: Path, *, organization: str, extra: dict[str, str] | None = None) -> StackCapture:
    config = read_platform_config_file(project_dir / "Pulumi.prod.yaml")
    return capture_program(
        lambda: stack_outputs("prod.acme", project_dir=project_dir),
        stack="prod.acme",
        project="platform",
        config={**config_values(config), **(extra or {})},
        stack_outputs=platform_outputs_for(config),
        organization=organization,
    )


def test_platform_reference_names_the_organisation_of_a_pulumi_cloud_stack(project_dir: Path) -> None:
    [reference] = run_tenant(project_dir, organization="acme-corp").of_type(REFERENCE)
    assert reference.inputs["name"] == "acme-corp/platform/prod"


def test_platform_reference_still_works_on_the_diy_backend(project_dir: Path) -> None:
    [reference] = run_tenant(project_dir, organization="organization").of_type(REFERENCE)
    assert reference.inputs["name"] == "organization/platform/prod"


def test_an_explicit_platform_stack_wins(project_dir: Path) -> None:
    capture = run_tenant(
        project_dir, organization="acme-corp", extra={"platform:platformStack": "infra/platform/prod"}
    )
    [reference] = capture.of_type(REFERENCE)
    assert reference.inputs["name"] == "infra/platform/prod"
