"""Every chart and image version the platform deploys, in one place.

Each pin names where it was read. Bump a pin in its own commit, after reading the chart's
values.yaml for the new version: builders rely on its keys, and tests/chart_keys.py records them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChartPin:
    chart: str
    version: str
    repo: str


# Kubernetes version of the host clusters; rendered manifests are validated against its schema.
KUBERNETES_VERSION = "1.34.0"

# qdrant/qdrant-helm charts/qdrant, tag qdrant-1.19.0 (appVersion v1.19.0).
QDRANT = ChartPin(chart="qdrant", version="1.19.0", repo="https://qdrant.github.io/qdrant-helm")
QDRANT_DEFAULT_VERSION = "v1.19.0"
# Server versions a tenant may choose; the chart renders them unchanged (image.tag must be semver).
QDRANT_VERSIONS = ("v1.18.2", "v1.19.0")

# loft-sh/vcluster tag v0.36.1 (chart/ published as 0.36.1; image ghcr.io/loft-sh/vcluster-pro:0.36.1,
# Pro modules off without a licence).
VCLUSTER = ChartPin(chart="vcluster", version="0.36.1", repo="https://charts.loft.sh")
# Kubernetes images the chart knows as good (config/default_extra_values.go K8SVersionMap at v0.36.1).
VCLUSTER_KUBERNETES_VERSIONS: dict[str, str] = {
    "1.32": "v1.32.1",
    "1.33": "v1.33.4",
    "1.34": "v1.34.0",
    "1.35": "v1.35.0",
    "1.36": "v1.36.0",
}
VCLUSTER_DEFAULT_KUBERNETES_VERSION = "1.34"
