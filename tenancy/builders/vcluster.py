"""Helm values for a tenant's vCluster (loft-sh/vcluster chart, version pinned in tenancy.versions),
and the route that makes its API reachable from outside the cluster.

The chart's values.schema.json forbids unknown keys at every level, so a typo here fails the install
rather than being ignored. The control plane runs as a non-root user: vCluster cannot move from
root to non-root after install, so this is set from the first release.

Kubeconfigs: the running vCluster writes two Secrets in the tenant namespace (Helm renders neither).
``KUBECONFIG_SECRET`` points at ``https://<tenant>.vc.<domain>``, the platform gateway, and works from a
laptop or CI; it is what the tenant stack's ``vclusterKubeconfig`` output reads.
``IN_CLUSTER_KUBECONFIG_SECRET`` points at the vCluster's Service, for pods in the tenant's own
namespace (their egress policy keeps them off the gateway's public address).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from tenancy import versions
from tenancy.builders.contract import GATEWAY_NAME, VCLUSTER_API_ZONE, PlatformRefs
from tenancy.builders.namespace import Manifest, chart_labels, metadata
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.spec.tenant import Tenant

RELEASE_NAME = "vcluster"
KUBECONFIG_SECRET = f"vc-{RELEASE_NAME}"  # written by the running vCluster, not by Helm
IN_CLUSTER_KUBECONFIG_SECRET = f"vc-{RELEASE_NAME}-in-cluster"  # likewise
KUBECONFIG_KEY = "config"
CONTEXT_NAME = "vcluster"
# The Role the pinned chart renders for the control plane in the release namespace, and binds to the
# chart's ServiceAccount of the same name (loft-sh/vcluster v0.36.1 chart/templates/role.yaml and
# rolebinding.yaml, namespaced sync, no ClusterRole): the workers' Helm release writes both, so the
# workers may bind this Role and grant these rules, which they do not hold themselves
# (tenancy.builders.selfservice, tests/platform/test_worker_rbac.py).
CHART_ROLE = f"vc-{RELEASE_NAME}"
CHART_ROLE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "pods", "pods/attach", "pods/portforward",
                      "pods/exec", "persistentvolumeclaims"],
        "verbs": ["create", "delete", "patch", "update", "get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods/status", "pods/ephemeralcontainers"],
     "verbs": ["patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets", "replicasets", "deployments"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": [""], "resources": ["endpoints", "pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
     "verbs": ["create", "get", "list", "watch"]},
]  # fmt: skip
# The chart's labels on the control-plane pods (its Service selects them by both).
CONTROL_PLANE_LABELS = {"app": "vcluster", "release": RELEASE_NAME}
API_PORT = 8443  # the control plane's API proxy; the chart's Service maps 443 to it
SERVICE_PORT = 443
NON_ROOT_ID = 12345


def in_cluster_server(tenant: Tenant) -> str:
    # The serving certificate covers "<release>.<namespace>", not the ".svc" forms.
    return f"https://{RELEASE_NAME}.{tenant.namespace}:{SERVICE_PORT}"


def api_host(tenant: Tenant, domain: pulumi.Input[str]) -> pulumi.Output[str]:
    """``<tenant>.vc.<domain>``: the name kubectl uses from outside, and SNI the gateway routes on."""
    return pulumi.Output.concat(tenant.name, f".{VCLUSTER_API_ZONE}.", domain)


def external_server(tenant: Tenant, domain: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat("https://", api_host(tenant, domain))


@dataclass(frozen=True)
class VClusterImages:
    """The references a tenant's vCluster runs: tenancy/versions.py's pins (by digest where one is
    recorded), or the platform config's ``vclusterImages`` override of a pin (always by digest)."""

    syncer: str
    kubernetes: str
    coredns: str
    rewrite_hosts: str


def vcluster_images(kubernetes_version: str, overrides: Mapping[str, str] | None = None) -> VClusterImages:
    """The images of a vCluster of Kubernetes minor ``kubernetes_version``; ``overrides`` is the
    platform config's ``vclusterImages`` (validated there: known images, by tag and digest)."""
    chosen = dict(overrides or {})

    def resolve(pin: versions.ImagePin) -> str:
        return chosen.get(pin.by_tag, pin.reference)

    return VClusterImages(
        syncer=resolve(versions.VCLUSTER_SYNCER_IMAGE),
        kubernetes=resolve(versions.VCLUSTER_KUBERNETES_IMAGES[kubernetes_version]),
        coredns=resolve(versions.VCLUSTER_COREDNS_IMAGES[kubernetes_version]),
        rewrite_hosts=resolve(versions.VCLUSTER_REWRITE_HOSTS_IMAGE),
    )


def chart_image(reference: str) -> dict[str, str]:
    """``reference`` as the chart's image object: it builds ``<registry>/<repository>:<tag>``, so a
    digest rides in the tag (``<tag>@sha256:...``). No registry: Docker Hub."""
    name, at, digest = reference.partition("@")
    repository, _, tag = name.rpartition(":")
    first, _, rest = repository.partition("/")
    registry = first if rest and ("." in first or ":" in first or first == "localhost") else ""
    return {
        "registry": registry,
        "repository": rest if registry else repository,
        "tag": f"{tag}{at}{digest}",
    }


def render_vcluster_values(
    tenant: Tenant,
    *,
    storage_class: pulumi.Input[str],
    domain: pulumi.Input[str],
    image_overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``image_overrides``: the platform config's ``vclusterImages``."""
    v = tenant.vcluster
    if v is None:
        raise ValueError(f"tenant {tenant.name} has no vCluster")
    images = vcluster_images(v.kubernetes_version, image_overrides)
    size = {"cpu": v.cpu, "memory": v.memory}
    labels = chart_labels(tenant)
    return {
        "controlPlane": {
            "distro": {
                "k8s": {
                    "enabled": True,
                    # The image, with its digest where tenancy/versions.py records one (the chart reads
                    # the tag from here when "version" is empty).
                    "image": chart_image(images.kubernetes),
                    # The init container only copies binaries into the chart's "binaries" emptyDir.
                    "securityContext": restricted_container(readOnlyRootFilesystem=True),
                }
            },
            "statefulSet": {
                "image": chart_image(images.syncer),
                "resources": {
                    "requests": {**size, "ephemeral-storage": "1Gi"},
                    "limits": {**size, "ephemeral-storage": "10Gi"},
                },
                "persistence": {
                    "volumeClaim": {"size": v.storage_size, "storageClass": v.storage_class or storage_class}
                },
                "labels": labels,
                "pods": {"labels": labels},
                "security": {
                    "podSecurityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_ID,
                        "runAsGroup": NON_ROOT_ID,
                        "fsGroup": NON_ROOT_ID,
                        "seccompProfile": runtime_default_seccomp(),
                    },
                    # Maps merge in Helm: the chart's runAsUser/runAsGroup 0 must be overridden, not omitted.
                    # Read-only root: the chart mounts an emptyDir or the data volume at every path the
                    # syncer writes (/data, /tmp, /binaries, /pki certs, the Helm cache).
                    "containerSecurityContext": restricted_container(
                        runAsUser=NON_ROOT_ID, runAsGroup=NON_ROOT_ID, readOnlyRootFilesystem=True
                    ),
                },
            },
            "coredns": {
                "security": {"podSecurityContext": {"seccompProfile": runtime_default_seccomp()}},
                # Else the syncer picks coredns/coredns:<tag> for the virtual cluster's minor, by tag.
                "deployment": {"image": images.coredns},
            },
            # The gateway passes TLS through, so kubectl checks the vCluster's own certificate against
            # the external name: the certificate must carry it.
            "proxy": {"extraSANs": [api_host(tenant, domain)]},
            # Tenant-owned objects carry the tenant label. The chart has no key for the labels of its
            # Role, RoleBinding, config Secret or the PVC of its generated volumeClaimTemplate.
            "service": {"labels": dict(labels)},
            "advanced": {
                "headlessService": {"labels": dict(labels)},
                "serviceAccount": {"labels": dict(labels)},
                "workloadServiceAccount": {"labels": dict(labels)},
            },
        },
        "exportKubeConfig": {
            "server": external_server(tenant, domain),
            "context": CONTEXT_NAME,
            "additionalSecrets": [
                {
                    "name": IN_CLUSTER_KUBECONFIG_SECRET,
                    "server": in_cluster_server(tenant),
                    "context": CONTEXT_NAME,
                }
            ],
        },
        # The vCluster's CoreDNS runs as a pod of the tenant namespace with dnsPolicy Default (the
        # node's resolvers), which the namespace's allow-dns NetworkPolicy does not admit: by default
        # it forwards every name it does not serve there, so no external name resolved inside the
        # vCluster, and a host name under cluster.local (the tenant's own Qdrant) was NXDOMAIN. With the
        # fallback it forwards to the host cluster's DNS (the syncer's own nameserver, the cluster DNS
        # Service, which allow-dns admits) and lets host names fall through to it: pods in the vCluster
        # resolve what pods of the tenant namespace resolve (loft-sh/vcluster v0.36.1 pkg/coredns).
        "networking": {"advanced": {"fallbackHostCluster": True}},
        # Quota, limits and network isolation belong to the platform and are declared in the namespace.
        "policies": {
            "podSecurityStandard": "restricted",
            "resourceQuota": {"enabled": False},
            "limitRange": {"enabled": False},
            "networkPolicy": {"enabled": False},
        },
        "sync": {
            "toHost": {
                "pods": {
                    # The syncer mints each synced pod's service-account tokens in the virtual cluster
                    # (10-year tokens) and, by default, writes them into an annotation of the pod in the
                    # tenant namespace, where anyone who may read pods (the tenant-viewer Role) could take
                    # them and act as those workloads in the vCluster. In a Secret per pod instead, they
                    # are readable only by who may read Secrets there (tenant-admins, who hold the
                    # vCluster's kubeconfig anyway); the namespace's quota counts them
                    # (tenancy.builders.namespace.resource_quota_manifest).
                    "useSecretsForSATokens": True,
                    # StatefulSet pods get an init container rewriting their hosts file.
                    "rewriteHosts": {"initContainer": {"image": chart_image(images.rewrite_hosts)}},
                }
            }
        },
        "rbac": {"clusterRole": {"enabled": False}},
        "telemetry": {"enabled": False},
    }


def api_virtual_service(tenant: Tenant, platform: PlatformRefs) -> Manifest:
    """Route ``<tenant>.vc.<domain>`` from the platform gateway's passthrough server to the vCluster.

    TLS is not terminated on the way (the route matches on SNI only), so the vCluster sees kubectl's client
    certificate. Exported to the gateway's namespace only: no sidecar anywhere needs this route.
    """
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(tenant, f"{RELEASE_NAME}-api"),
        "spec": {
            "hosts": [api_host(tenant, platform.domain)],
            "gateways": [pulumi.Output.concat(platform.ingress_namespace, "/", GATEWAY_NAME)],
            "exportTo": [platform.ingress_namespace],
            "tls": [
                {
                    # 443 here is the platform gateway's port (its passthrough server), not the Service's.
                    "match": [{"port": 443, "sniHosts": [api_host(tenant, platform.domain)]}],
                    "route": [
                        {
                            "destination": {
                                "host": f"{RELEASE_NAME}.{tenant.namespace}.svc.cluster.local",
                                "port": {"number": SERVICE_PORT},
                            }
                        }
                    ],
                }
            ],
        },
    }


# kubectl 1.31 added --for=create; older clients cannot wait for an object to appear.
KUBECTL_WAIT_TIMEOUT = "300s"


def wait_for_secret_command(namespace: str, secret: str, *, context: str | None) -> str:
    """A shell command that returns once ``secret`` exists in ``namespace`` (kubectl 1.31 or newer)."""
    parts = ["kubectl"]
    if context:
        parts += ["--context", shlex.quote(context)]
    parts += [
        "wait",
        "--for=create",
        f"secret/{shlex.quote(secret)}",
        "--namespace",
        shlex.quote(namespace),
        f"--timeout={KUBECTL_WAIT_TIMEOUT}",
    ]
    return " ".join(parts)
