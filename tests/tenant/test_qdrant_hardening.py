"""Qdrant as the real tenant program declares it: Guaranteed QoS with its sidecar, probes, a high UID, keys
in a file, and the Service ports Istio reads as HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenancy.render.runtime import StackCapture

Run = Callable[[str], StackCapture]


def qdrant_values(capture: StackCapture) -> dict[str, Any]:
    [values] = [
        r.inputs["values"]
        for r in capture.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "qdrant"
    ]
    return values


def test_qdrant_pods_are_guaranteed_and_the_sidecar_is_not_capped_at_500m(run_stack: Run) -> None:
    values = qdrant_values(run_stack("prod.globex"))  # 4 CPU per node
    assert values["resources"]["requests"] == values["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    annotations = values["podAnnotations"]
    assert (
        annotations["sidecar.istio.io/proxyCPU"] == annotations["sidecar.istio.io/proxyCPULimit"] == "1000m"
    )
    assert annotations["sidecar.istio.io/proxyMemory"] == annotations["sidecar.istio.io/proxyMemoryLimit"]
    small = qdrant_values(run_stack("dev.acme"))["podAnnotations"]  # 500m per node: the floor
    assert small["sidecar.istio.io/proxyCPU"] == small["sidecar.istio.io/proxyCPULimit"] == "500m"


def test_qdrant_has_liveness_and_startup_probes_on_the_http_port(run_stack: Run) -> None:
    values = qdrant_values(run_stack("prod.acme"))
    assert values["livenessProbe"]["enabled"] is True and values["startupProbe"]["enabled"] is True
    # Liveness takes over only after the startup probe allows ten minutes to load collections.
    startup = values["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    checked = [port["name"] for port in values["service"]["ports"] if port["checksEnabled"]]
    assert checked == ["http"]  # "/" and "/readyz" answer without an API key


def test_qdrant_service_ports_tell_istio_http_and_grpc(run_stack: Run) -> None:
    ports = {p["name"]: p for p in qdrant_values(run_stack("prod.acme"))["service"]["ports"]}
    assert (ports["http"]["port"], ports["http"]["appProtocol"]) == (6333, "http")
    assert (ports["grpc"]["port"], ports["grpc"]["appProtocol"]) == (6334, "grpc")
    assert ports["p2p"]["port"] == 6335 and "appProtocol" not in ports["p2p"]


def test_qdrant_runs_with_ids_above_10000_and_a_read_only_root(run_stack: Run) -> None:
    values = qdrant_values(run_stack("prod.acme"))
    container, pod = values["containerSecurityContext"], values["podSecurityContext"]
    assert container["runAsUser"] >= 10000 and container["runAsGroup"] >= 10000 and pod["fsGroup"] >= 10000
    assert container["readOnlyRootFilesystem"] is True
    # A new fsGroup makes the kubelet re-own existing volumes once, so the new UID can write old files.
    assert pod["fsGroupChangePolicy"] == "OnRootMismatch" and pod["fsGroup"] != 3000
    assert values["config"]["service"]["max_request_size_mb"] == 32


def test_every_offered_qdrant_version_has_a_recorded_digest() -> None:
    from tenancy import versions

    assert set(versions.QDRANT_IMAGE_DIGESTS) == set(versions.QDRANT_VERSIONS)
    assert all(
        digest.startswith("sha256:") and len(digest) == 71
        for digest in versions.QDRANT_IMAGE_DIGESTS.values()
    )


def test_the_database_image_the_builders_name_is_pinned_by_digest_with_its_tag() -> None:
    from tenancy import versions

    tag, _, digest = versions.CNPG_POSTGRESQL_IMAGE.partition("@")
    assert tag == versions.CNPG_POSTGRESQL_TAG and tag.rsplit(":", 1)[1] == "18.4-system-trixie"
    assert digest.startswith("sha256:") and len(digest) == 71
