"""Qdrant's Helm values stay readable in a preview diff; its API keys stay secret."""

from __future__ import annotations

from pathlib import Path

from tenancy.render.runtime import StackCapture, capture_program, config_values, platform_outputs_for
from tenancy.spec.platform import read_platform_config_file
from tenancy.stacks import stack_outputs


def run_as_the_engine_would(project_dir: Path, stack: str) -> StackCapture:
    """The tenant program, with generated keys marked secret the way the engine marks them."""
    config = read_platform_config_file(project_dir / f"Pulumi.{stack.split('.')[0]}.yaml")
    return capture_program(
        lambda: stack_outputs(stack, project_dir=project_dir),
        stack=stack,
        config=config_values(config),
        stack_outputs=platform_outputs_for(config),
        engine_secrets=True,
    )


def test_qdrant_values_are_not_secret_while_the_api_keys_are(project_dir: Path) -> None:
    capture = run_as_the_engine_would(project_dir, "prod.acme")
    release = capture.named("acme-qdrant-release")
    assert not [path for path in release.secret_paths if path[:1] == ("values",)]
    annotations = release.inputs["values"]["podAnnotations"]
    [checksum] = [value for key, value in annotations.items() if "checksum" in key]
    assert len(checksum) == 16  # a truncated digest, never a key
    keys = capture.named("acme-qdrant-api-keys")
    assert ("stringData",) in keys.secret_paths
    assert checksum not in keys.inputs["stringData"].values()
    assert {"qdrantApiKey", "qdrantReadOnlyApiKey"} <= capture.secret_outputs
