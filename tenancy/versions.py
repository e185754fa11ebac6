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
# The image index digest of each offered version (docker.io/qdrant/qdrant), the tag beside it. Read from
# public pins, each found identical in several unrelated public repositories (compose files, install
# scripts, upgrade notes; search "qdrant/qdrant:v1.19.0@sha256" and "qdrant/qdrant:v1.18.2@sha256"); not
# checked against the registry from here. Applied by the release's post-renderer
# (tenancy/builders/qdrant_postrender.py): chart 1.19.0, the newest, builds the image as
# "<repository>:<tag>" and passes image.tag to semverCompare for its readiness path, so a digest in the
# tag fails the render. A version offered without a digest here fails its install.
QDRANT_IMAGE = "docker.io/qdrant/qdrant"
QDRANT_IMAGE_DIGESTS: dict[str, str] = {
    "v1.18.2": "sha256:75eab8c4ba42096724fdcfde8b4de0b5713d529dde32f285a1f86fdcb2c9e50c",
    "v1.19.0": "sha256:057ee3a8da769fe7310dd3537b4dc7583bf87a95ce8ac43c0af5a46bc580d1fc",
}


@dataclass(frozen=True)
class ImagePin:
    """An image the program names itself: ``repository`` (with its registry, none for Docker Hub) and
    ``tag``, and the digest of that tag's content (its image index) where a public source names it.
    ``digest`` None: no digest could be read from here, so it runs by tag (ACCEPTED_WITHOUT_DIGEST) until
    one is recorded here, or the platform config gives one (``vclusterImages``, by digest only)."""

    repository: str
    tag: str
    digest: str | None = None

    @property
    def by_tag(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def reference(self) -> str:
        return f"{self.by_tag}@{self.digest}" if self.digest else self.by_tag


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
# Every image a tenant's vCluster runs, set by the program (tenancy/builders/vcluster.py), never left to
# the chart's or the syncer's defaults:
# - the syncer (controlPlane.statefulSet.image) and the Kubernetes distro (controlPlane.distro.k8s.image):
#   no digest pinned. None of vcluster-pro:0.36.1 or of the ghcr.io/loft-sh/kubernetes tags below could be
#   found in public material from here (searched: the image names with "@sha256:", loft-sh/vcluster's
#   tree at v0.36.1, lock and renovate files pinning them, in code and issues: tags only, never a
#   digest; searched again for vcluster-pro:0.36.1@sha256, loft-sh/kubernetes@sha256 and
#   loft-sh/kubernetes:v1.34.0@sha256), and a digest is never guessed. Read one with
#   `crane digest <image>` and record it here, or per environment in platform:vclusterImages;
# - CoreDNS inside the virtual cluster (controlPlane.coredns.deployment.image), the version the syncer
#   picks for the virtual cluster's minor (pkg/constants/coredns.go CoreDNSVersionMap at v0.36.1). Image
#   index digests of docker.io coredns/coredns (the same as registry.k8s.io's promoted copies), each found
#   identical in several unrelated public repositories (search "coredns/coredns:<tag>@sha256" and
#   "coredns:v<tag>@sha256"). 1.14.1 was found in one public file only, which is not enough here: it
#   runs by tag. Not checked against the registry from here;
# - the init container the syncer adds to StatefulSet pods synced from the virtual cluster to rewrite
#   their hosts file (sync.toHost.pods.rewriteHosts.initContainer.image, chart default
#   mirror.gcr.io/library/alpine:3.20, Docker Hub's library/alpine mirrored): its index digest as pinned
#   in several unrelated public Dockerfiles and build logs (search "alpine:3.20@sha256"; one dated
#   2026-08-17). The tag moves with alpine 3.20.x rebuilds; this is one build of it.
VCLUSTER_SYNCER_IMAGE = ImagePin("ghcr.io/loft-sh/vcluster-pro", VCLUSTER.version)
VCLUSTER_KUBERNETES_IMAGES: dict[str, ImagePin] = {
    minor: ImagePin("ghcr.io/loft-sh/kubernetes", tag) for minor, tag in VCLUSTER_KUBERNETES_VERSIONS.items()
}
VCLUSTER_COREDNS_IMAGES: dict[str, ImagePin] = {
    "1.32": ImagePin(
        "coredns/coredns", "1.11.3", "sha256:9caabbf6238b189a65d0d6e6ac138de60d6a1c419e5a341fbbb7c78382559c6e"
    ),
    "1.33": ImagePin(
        "coredns/coredns", "1.12.0", "sha256:40384aa1f5ea6bfdc77997d243aec73da05f27aed0c5e9d65bfa98933c519d97"
    ),
    "1.34": ImagePin(
        "coredns/coredns", "1.12.1", "sha256:e8c262566636e6bc340ece6473b0eed193cad045384401529721ddbe6463d31c"
    ),
    "1.35": ImagePin("coredns/coredns", "1.14.1"),
    "1.36": ImagePin(
        "coredns/coredns", "1.14.2", "sha256:e7e6440cfd1e919280958f5b5a6ab2b184d385bba774c12ad2a9e1e4183f90d9"
    ),
}
VCLUSTER_REWRITE_HOSTS_IMAGE = ImagePin(
    "mirror.gcr.io/library/alpine",
    "3.20",
    "sha256:d9e853e87e55526f6b2917df91a2115c36dd7c696a35be12163d44e6e2a4b6bc",
)
VCLUSTER_IMAGES: tuple[ImagePin, ...] = (
    VCLUSTER_SYNCER_IMAGE,
    *VCLUSTER_KUBERNETES_IMAGES.values(),
    *VCLUSTER_COREDNS_IMAGES.values(),
    VCLUSTER_REWRITE_HOSTS_IMAGE,
)
# Tenant-workload images that run by tag because no digest of them could be read from a citable public
# source (see above); the policy rule tenant-workload-hardened exempts exactly these.
ACCEPTED_WITHOUT_DIGEST: frozenset[str] = frozenset(
    pin.by_tag for pin in VCLUSTER_IMAGES if pin.digest is None
)

# --- platform services -----------------------------------------------------------------------
# istio/istio manifests/charts (base, istio-cni, istio-discovery, gateway) at tag 1.30.3, commit 56df41f.
ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
ISTIO_BASE = ChartPin(chart="base", version="1.30.3", repo=ISTIO_REPO)
ISTIO_CNI = ChartPin(chart="cni", version="1.30.3", repo=ISTIO_REPO)
ISTIOD = ChartPin(chart="istiod", version="1.30.3", repo=ISTIO_REPO)
ISTIO_GATEWAY = ChartPin(chart="gateway", version="1.30.3", repo=ISTIO_REPO)

# argoproj/argo-helm charts/argo-cd 10.1.1 (Argo CD v3.4.4), commit af0a931.
ARGO_CD = ChartPin(chart="argo-cd", version="10.1.1", repo="https://argoproj.github.io/argo-helm")

# cloudnative-pg/charts charts/cloudnative-pg 0.29.0 (operator 1.30.0), commit d1b5ad6.
CLOUDNATIVE_PG = ChartPin(
    chart="cloudnative-pg", version="0.29.0", repo="https://cloudnative-pg.github.io/charts"
)

# codecentric/helm-charts charts/keycloakx 7.1.11 (Keycloak 26.5.6).
KEYCLOAKX = ChartPin(chart="keycloakx", version="7.1.11", repo="https://codecentric.github.io/helm-charts")
# The Keycloak server that chart runs (its appVersion). Tenant stacks tell the Keycloak provider this
# version: the provisioning client may not read /admin/serverinfo, where the provider would look it up.
KEYCLOAK = "26.5.6"

# grafana-community/helm-charts: loki 18.11.0 (Loki 3.7.6), grafana 12.11.1 (Grafana 13.2.0); the charts
# moved there in 2026. grafana/alloy operations/helm/charts/alloy 1.11.1 (Alloy v1.18.1).
GRAFANA_COMMUNITY_REPO = "https://grafana-community.github.io/helm-charts"
LOKI = ChartPin(chart="loki", version="18.11.0", repo=GRAFANA_COMMUNITY_REPO)
GRAFANA = ChartPin(chart="grafana", version="12.11.1", repo=GRAFANA_COMMUNITY_REPO)
ALLOY = ChartPin(chart="alloy", version="1.11.1", repo="https://grafana.github.io/helm-charts")

# DandyDeveloper/charts charts/redis-ha 4.39.0 (Redis 8.8.0, official images), commit 6224454.
REDIS_HA = ChartPin(chart="redis-ha", version="4.39.0", repo="https://dandydeveloper.github.io/charts")

# PostgreSQL image of the identity database (CloudNativePG Cluster): the operator's own default for
# 1.30.0 (cloudnative-pg/cloudnative-pg pkg/versions/versions.go DefaultImageName at tag v1.30.0).
# PostgreSQL 18 is supported by Keycloak since 26.5.0 (keycloak/keycloak#44274, release/26.5.0).
# The "system" flavour carries barman-cli-cloud, which the in-tree barmanObjectStore backups need;
# moving to the barman-cloud plugin (before operator 1.31) allows the "minimal"/"standard" flavours.
# Pinned by digest: CloudNativePG rebuilds its tags (security updates), so the tag alone moves. The
# digest is one build of that tag, taken from public pins that name it identically in unrelated public
# repositories (CNPG Cluster manifests and their tests; search "postgresql:18.4-system-trixie@sha256");
# later rebuilds carry other digests. Not checked against the registry from here.
CNPG_POSTGRESQL_TAG = "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie"
CNPG_POSTGRESQL_IMAGE = (
    f"{CNPG_POSTGRESQL_TAG}@sha256:9287ce030c6f3ce822e383b019ae4aaf1e8370bff3b39f9c51dc10d69dc97219"
)

# --- the self-service image (Containerfile; tests/platform/test_selfservice_image.py keeps both equal) --
# python:3.11.14-slim-bookworm: its multi-architecture index digest, as pinned in several public
# Dockerfiles (one documents it as the index digest); re-check with
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm`. Also what the Deployments show
# (never started) until the deploy workflow has built the service image.
SELF_SERVICE_BASE_IMAGE = (
    "python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"
)
# The Pulumi CLI in the image: the pinned SDK's version (the CLI must be at least as new). Checked at
# build time against pulumi's published pulumi-<version>-checksums.txt; no public copy of that digest
# was found to pin here as well, so PULUMI_CLI_SHA256 stays None until one is read from the release.
PULUMI_CLI_VERSION = "3.272.0"
PULUMI_CLI_SHA256: str | None = None
# kubectl within one minor of KUBERNETES_VERSION, one digest per architecture the image is built for:
# dl.k8s.io/release/v1.34.1/bin/linux/<arch>/kubectl, as pinned alike in three public build files (an
# install script's KUBECTL_1_34_1_CHECKSUM_X86_64, a Dockerfile's KUBECTL_SUM_<arch>, a Bazel toolchain's
# linux_<arch>); the build checks it and dl.k8s.io's kubectl.sha256 both.
KUBECTL_VERSION = "1.34.1"
KUBECTL_SHA256 = {
    "amd64": "7721f265e18709862655affba5343e85e1980639395d5754473dafaadcaa69e3",
    "arm64": "420e6110e3ba7ee5a3927b5af868d18df17aae36b720529ffa4e9e945aa95450",
}
