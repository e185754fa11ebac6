"""Checks that hold for every stack the repository declares: platform stacks and every tenant stack."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tenancy import versions
from tenancy.render.runtime import StackCapture
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.tree import load_tenants
from tests.chart_keys import load_all
from tests.conftest import PROJECT_DIR, captured_stack

STACKS = ["dev", "prod"] + [
    f"{f.environment}.{f.spec.name}" for f in load_tenants(PROJECT_DIR / "tenants").files
]
PINS = {pin.chart: pin for pin in vars(versions).values() if isinstance(pin, versions.ChartPin)}


@pytest.fixture(scope="module", params=STACKS)
def captured(request: pytest.FixtureRequest) -> StackCapture:

    return captured_stack(request.param)


def test_every_kubernetes_object_matches_the_schema(captured: StackCapture) -> None:
    assert declared_schema_problems(captured.kubernetes_objects()) == []


def test_every_helm_release_is_pinned_to_the_versions_module(captured: StackCapture) -> None:
    for release in captured.of_type("kubernetes:helm.sh/v3:Release"):
        chart = release.inputs["chart"]
        assert chart in PINS, f"{release.name}: chart {chart} has no pin in tenancy/versions.py"
        assert release.inputs["version"] == PINS[chart].version
        assert release.inputs["repositoryOpts"]["repo"] == PINS[chart].repo


def test_every_helm_release_waits_as_long_as_its_chart_needs(captured: StackCapture) -> None:
    from components.kubernetes import HELM_DEFAULT_TIMEOUT_SECONDS, RELEASE_TIMEOUTS

    for release in captured.of_type("kubernetes:helm.sh/v3:Release"):
        chart, timeout = release.inputs["chart"], release.inputs.get("timeout")
        assert isinstance(timeout, int), f"{release.name}: no timeout; Helm would wait its default 300 s"
        if chart == versions.QDRANT.chart:  # sized per tenant (tests/tenant/test_release_timeouts.py)
            assert timeout > HELM_DEFAULT_TIMEOUT_SECONDS
        else:
            assert timeout == RELEASE_TIMEOUTS[chart].seconds, release.name


def test_every_helm_value_is_a_key_the_pinned_chart_reads(captured: StackCapture) -> None:
    charts = load_all()
    for release in captured.of_type("kubernetes:helm.sh/v3:Release"):
        chart = release.inputs["chart"]
        assert chart in charts, f"tests/chart_keys has no {chart}.yaml recording the keys the chart reads"
        assert charts[chart].version == release.inputs["version"], (
            f"{chart}.yaml was read for another version"
        )
        unknown = charts[chart].unknown(release.inputs.get("values", {}))
        assert unknown == [], f"{release.name}: values the {chart} chart does not read: {unknown}"


def test_stacks_capture_without_errors(run_stack: Callable[[str], StackCapture]) -> None:
    assert run_stack("dev").outputs["tenantContract"]["storageClass"] == "standard"
