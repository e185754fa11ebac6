"""Every Helm release may take as long as its chart needs on a real cluster, and says why."""

from __future__ import annotations

from components.kubernetes import (
    HELM_DEFAULT_TIMEOUT_SECONDS,
    RELEASE_TIMEOUTS,
    qdrant_release_timeout,
)
from tenancy import versions

GIB = 2**30


def test_every_pinned_chart_has_a_timeout_with_a_reason() -> None:
    pins = {pin.chart for pin in vars(versions).values() if isinstance(pin, versions.ChartPin)}
    assert set(RELEASE_TIMEOUTS) == pins - {versions.QDRANT.chart}
    for chart, timeout in RELEASE_TIMEOUTS.items():
        assert timeout.seconds >= HELM_DEFAULT_TIMEOUT_SECONDS, chart
        assert len(timeout.reason) > 20, chart


def test_slow_releases_wait_longer_than_helms_default() -> None:
    # Keycloak migrates and imports its realm, Argo CD runs hooks and anti-affine Redis, the gateway
    # waits for a load balancer's address: five minutes fail them half-way.
    for pin in (versions.KEYCLOAKX, versions.ARGO_CD, versions.ISTIO_GATEWAY):
        assert RELEASE_TIMEOUTS[pin.chart].seconds > HELM_DEFAULT_TIMEOUT_SECONDS
    assert RELEASE_TIMEOUTS[versions.KEYCLOAKX.chart].seconds >= 1200


def test_qdrant_waits_longer_with_more_pods_and_more_data() -> None:
    small = qdrant_release_timeout(replicas=1, storage_bytes=10 * GIB).seconds
    more_pods = qdrant_release_timeout(replicas=5, storage_bytes=10 * GIB).seconds
    more_data = qdrant_release_timeout(replicas=1, storage_bytes=500 * GIB).seconds
    assert HELM_DEFAULT_TIMEOUT_SECONDS < small < more_pods
    assert small < more_data
    # Bounded: a stuck upgrade still fails (and rolls back) the same day.
    assert qdrant_release_timeout(replicas=50, storage_bytes=10_000 * GIB).seconds <= 4 * 3600
