"""Istio: Helm values for base, cni, istiod and the ingress gateway; mesh-wide mTLS; the mesh-wide
Sidecar scope; the platform Gateway; and the AuthorizationPolicies and Sidecar of a tenant namespace.

Charts are istio/istio manifests/charts at the pinned version (tenancy.versions): user values sit at
the top level (the charts merge them over ``_internal_defaults_do_not_set``), maps merge with the
defaults and lists replace them.

Sidecars in tenant namespaces must pass Pod Security "restricted", which forbids the NET_ADMIN
``istio-init`` container. The Istio CNI node agent sets up the traffic redirection instead, and
istiod (``cni.enabled``) then injects only the unprivileged ``istio-validation`` init container.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tenancy.builders.contract import (
    GATEWAY_NAME,
    INGRESS_GATEWAY_LABELS,
    NAMESPACES,
    QDRANT_API_ZONE,
    SELF_SERVICE_WORKER_ACCOUNT,
    VCLUSTER_API_ZONE,
    PlatformRefs,
)
from tenancy.builders.namespace import Manifest, metadata
from tenancy.builders.network import (
    ISTIO_METRICS_PORT,
    ISTIO_XDS_PORT,
    QDRANT_GRPC_PORT,
    QDRANT_HTTP_PORT,
)
from tenancy.builders.observability import GRAFANA_HTTP_PORT, GRAFANA_POD_LABELS
from tenancy.builders.platform_namespace import (
    ISTIOD_METRICS_PORT,
    ISTIOD_POD_LABELS,
    PLATFORM_LABELS,
    SIDECAR_EGRESS_HOSTS,
    allow_egress,
    allow_egress_to_api_server,
    allow_ingress,
    allow_ingress_from_anywhere,
    network_policy,
    sidecar_egress_hosts,
)
from tenancy.builders.qdrant import P2P_PORT as QDRANT_P2P_PORT
from tenancy.builders.qdrant import SELECTOR_LABELS as QDRANT_SELECTOR_LABELS
from tenancy.builders.qdrant import SERVICE_ACCOUNT as QDRANT_SERVICE_ACCOUNT
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.builders.vcluster import API_PORT as VCLUSTER_API_PORT
from tenancy.builders.vcluster import CONTROL_PLANE_LABELS as VCLUSTER_CONTROL_PLANE_LABELS
from tenancy.spec.plans import SIDECAR
from tenancy.spec.platform import CniPlatform, PlatformConfig
from tenancy.spec.tenant import Tenant

BASE_RELEASE = "istio-base"
CNI_RELEASE = "istio-cni"
ISTIOD_RELEASE = "istiod"
# The release name drives the gateway's labels (istio: ingressgateway) and its service account, both
# part of the tenant contract (INGRESS_GATEWAY_LABELS, GATEWAY_SERVICE_ACCOUNT).
GATEWAY_RELEASE = "istio-ingressgateway"
GATEWAY_SERVICE_ACCOUNT = GATEWAY_RELEASE
GATEWAY_POD_LABELS = {"app": GATEWAY_RELEASE, **INGRESS_GATEWAY_LABELS}

# The CNI node agent is privileged by nature (host paths, NET_ADMIN/SYS_ADMIN, runs as root). It goes to
# kube-system, where node agents (kube-proxy, the cluster's CNI) already run: that namespace is always
# allowed the agent's system-node-critical priority class (GKE admits it nowhere else without a quota),
# and istio-system can then stay at Pod Security "restricted" like every other platform namespace.
CNI_NAMESPACE = "kube-system"


ISTIOD_WEBHOOK_PORT = 15017  # container port behind the istiod Service's 443 (injection, validation)
# Container ports of the gateway: the chart's Service maps 80->80 and 443->443 (the pod may bind them
# as non-root through the net.ipv4.ip_unprivileged_port_start sysctl), plus the status port for
# load-balancer health checks.
GATEWAY_HTTP_PORT = 80
GATEWAY_HTTPS_PORT = 443
GATEWAY_STATUS_PORT = 15021


def _restricted_container() -> dict[str, Any]:
    """Pod Security "restricted" for one container; the gateway chart replaces its default with this."""
    return restricted_container(privileged=False, readOnlyRootFilesystem=True)


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def _spread(labels: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas over nodes; soft, so a short node outage never blocks a rollout."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(labels)},
        }
    ]


# --- Helm values ----------------------------------------------------------------------------------


def base_values() -> dict[str, Any]:
    """The base chart (CRDs and the default validating webhook) needs nothing beyond its defaults."""
    return {}


# What each cluster flavour needs from the CNI chart, from istio/istio manifests/helm-profiles/
# platform-*.yaml at the pinned tag. Set as the chart's own keys rather than through its ``platform``
# value: that profile merges these under ``cni:``, a key the istio-cni chart does not read.
CNI_PLATFORM_VALUES: dict[CniPlatform, dict[str, Any]] = {
    "default": {},
    # The chart would guess /home/kubernetes/bin from a "-gke" API server version; stated instead.
    "gke": {"cniBinDir": "/home/kubernetes/bin"},
    "k3s": {
        "cniConfDir": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
        "cniBinDir": "/var/lib/rancher/k3s/data/cni",
    },
    # Multus runs the plugin as a standalone network (no chaining), under SELinux type spc_t.
    "openshift": {
        "cniBinDir": "/var/lib/cni/bin",
        "cniConfDir": "/etc/cni/multus/net.d",
        "chained": False,
        "cniConfFileName": "istio-cni.conf",
        "provider": "multus",
        "seLinuxOptions": {"type": "spc_t"},
    },
    # Istio chains into Cilium's configuration at the default paths; Cilium itself must be installed
    # with cni.exclusive=false, or it deletes the chained configuration (a cluster requirement, README).
    "cilium": {},
}


def cni_values(config: PlatformConfig) -> dict[str, Any]:
    cni = config.istio_cni
    values: dict[str, Any] = {
        **CNI_PLATFORM_VALUES[cni.platform],
        # The agent derives GOMAXPROCS/GOMEMLIMIT from its limits, so both are set.
        "resources": _resources("100m", "100Mi", "500m", "256Mi"),
        "seccompProfile": runtime_default_seccomp(),
        # Kubernetes >= 1.30 takes the AppArmor profile from securityContext; the annotation is deprecated.
        "useAppArmorAnnotation": False,
    }
    if cni.cni_bin_dir is not None:
        values["cniBinDir"] = cni.cni_bin_dir
    if cni.cni_conf_dir is not None:
        values["cniConfDir"] = cni.cni_conf_dir
    return values


# Native sidecars (Kubernetes >= 1.29): the proxy runs as a restartable init container, so it starts
# before init containers that need the network, and stops after the main containers, letting Jobs
# finish. Pinned, not left to the release's default, since those workloads depend on it.
ISTIOD_ENV = {"ENABLE_NATIVE_SIDECARS": "true"}
# Istio CNI's node readiness taint: a new node carries it (put there by the node pool or kubelet's
# --register-with-taints) until the CNI agent runs on it, and istiod's untaint controller removes it
# then. Without it a meshed pod scheduled before the agent is ready starts without traffic redirection.
CNI_READINESS_TAINT = "cni.istio.io/not-ready"


def istiod_values(config: PlatformConfig) -> dict[str, Any]:
    cni_provider = CNI_PLATFORM_VALUES[config.istio_cni.platform].get("provider", "default")
    values: dict[str, Any] = {
        # The injector adds the Multus network annotation for the "multus" provider (OpenShift).
        "cni": {"enabled": True, "provider": cni_provider},
        "env": dict(ISTIOD_ENV),
        # Paths are matched by AuthorizationPolicies (the admin surfaces): //admin must not slip past
        # a rule on /admin. Envoy resolves dot segments by default; Keycloak matches paths case-sensitively.
        "meshConfig": {"pathNormalization": {"normalization": "MERGE_SLASHES"}},
        # The agent runs in kube-system, not istiod's namespace: the controller must look there.
        "taint": {
            "enabled": config.istio_cni.readiness_taint,
            "namespace": CNI_NAMESPACE,
            "name": CNI_READINESS_TAINT,
        },
        # The discovery container is otherwise restricted already; the seccomp profile completes it.
        "seccompProfile": runtime_default_seccomp(),
        "global": {
            "proxy": {
                # Injected sidecars land in restricted namespaces: they need a seccomp profile too.
                "seccompProfile": runtime_default_seccomp(),
                # Every sidecar counts against its tenant's quota; the chart's 2-CPU limit would eat it.
                # Tenant plan checks count these per pod (tenancy.spec.plans.SIDECAR): one source.
                "resources": _resources(
                    SIDECAR.requests.cpu, SIDECAR.requests.memory, SIDECAR.limits.cpu, SIDECAR.limits.memory
                ),
            },
        },
    }
    if config.high_availability:
        # The chart's HPA owns the replica count (replicaCount is ignored while it is on); two at least,
        # which also makes the chart render its PodDisruptionBudget (minAvailable 1).
        values |= {
            "autoscaleEnabled": True,
            "autoscaleMin": 2,
            "autoscaleMax": 5,
            "resources": _resources("500m", "2Gi", "2", "4Gi"),
            "topologySpreadConstraints": _spread(ISTIOD_POD_LABELS),
        }
    else:
        # Autoscaling is on by default and would ignore replicaCount: one fixed replica, no HPA, no PDB.
        values |= {
            "autoscaleEnabled": False,
            "replicaCount": 1,
            "resources": _resources("100m", "512Mi", "1", "1Gi"),
        }
    return values


def gateway_values(config: PlatformConfig) -> dict[str, Any]:
    values: dict[str, Any] = {
        # Setting securityContext replaces the chart's default, so its port sysctl is repeated here.
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": runtime_default_seccomp(),
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "containerSecurityContext": _restricted_container(),
        # Local: a network load balancer's packets reach the gateway with the client's own source
        # address, which the admin-surface policy (builders.admin_access) checks. Only nodes running a
        # gateway pod pass the load balancer's health check, so traffic never takes a second hop.
        "service": {"externalTrafficPolicy": "Local"},
    }
    if config.high_availability:
        values |= {
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
            # Rendered only because minReplicas > 1.
            "podDisruptionBudget": {"minAvailable": 1},
            "resources": _resources("500m", "512Mi", "2", "1Gi"),
            "topologySpreadConstraints": _spread(GATEWAY_POD_LABELS),
        }
    else:
        values |= {
            "autoscaling": {"enabled": False},
            "replicaCount": 1,
            "resources": _resources("100m", "128Mi", "1", "512Mi"),
        }
    return values


# --- mesh-wide objects ------------------------------------------------------------------------------


def mesh_peer_authentication() -> Manifest:
    """Mutual TLS required between every pair of sidecars; no selector in the root namespace = mesh-wide."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NAMESPACES.mesh, "labels": dict(PLATFORM_LABELS)},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def vcluster_api_hosts(config: PlatformConfig) -> list[str]:
    return [f"*.{VCLUSTER_API_ZONE}.{config.domain}"]


def qdrant_api_hosts(config: PlatformConfig) -> list[str]:
    return [f"*.{QDRANT_API_ZONE}.{config.domain}"]


def gateway_manifest(config: PlatformConfig) -> Manifest:
    """HTTPS for every ``*.<domain>`` host with the certificate in ``config.gateway_tls_secret``, and
    TLS passed through untouched for the tenants' vCluster APIs at ``<tenant>.vc.<domain>``.

    Istio resolves ``credentialName`` in the namespace of the gateway pods, so the Secret lives there.
    Both 443 servers share one listener, told apart by SNI: Istio rejects only servers whose hosts are
    the same string, and Envoy picks the most specific server name, so ``<tenant>.vc.<domain>`` (the
    exact name each tenant's VirtualService matches) wins over ``*.<domain>``. A name under ``vc`` that
    no tenant routes falls to the HTTPS server, whose certificate does not cover it.
    """
    hosts = [f"*.{config.domain}"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY_NAME, "namespace": NAMESPACES.ingress, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "selector": dict(INGRESS_GATEWAY_LABELS),
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": hosts,
                    "tls": {
                        "mode": "SIMPLE",
                        "credentialName": config.gateway_tls_secret,
                        "minProtocolVersion": "TLSV1_2",
                    },
                },
                {
                    "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": hosts,
                    "tls": {"httpsRedirect": True},
                },
                {
                    "port": {"number": GATEWAY_HTTPS_PORT, "name": "tls-vcluster-api", "protocol": "TLS"},
                    "hosts": vcluster_api_hosts(config),
                    "tls": {"mode": "PASSTHROUGH"},
                },
                # Tenants' Qdrant APIs: a filter chain of their own (SNI *.qdrant.<domain>). No filter
                # buffers their bodies here: it would hold each one, up to its cap, in the shared gateway's
                # memory before Qdrant checks the key (a traffic review). Bodies stream to Qdrant, which
                # caps JSON itself. The certificate in the same Secret must also cover *.qdrant.<domain>.
                {
                    "port": {"number": GATEWAY_HTTPS_PORT, "name": "https-qdrant", "protocol": "HTTPS"},
                    "hosts": qdrant_api_hosts(config),
                    "tls": {
                        "mode": "SIMPLE",
                        "credentialName": config.gateway_tls_secret,
                        "minProtocolVersion": "TLSV1_2",
                    },
                },
            ],
        },
    }


# The scope every sidecar gets by default is SIDECAR_EGRESS_HOSTS (platform_namespace, beside the Reach of
# a Vault or object store in the cluster that widens it where a workload needs one).
def _sidecar_spec() -> dict[str, Any]:
    return {
        "egress": [{"hosts": list(SIDECAR_EGRESS_HOSTS)}],
        # The mesh default, stated because the scope above relies on it: a destination outside the
        # scope is passed through rather than refused.
        "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
    }


def mesh_default_sidecar() -> Manifest:
    """The Sidecar every namespace without its own gets: no selector, in the root namespace.

    Meshed platform workloads call only their own namespace through the mesh: Argo CD reaches Keycloak
    at its public URL and the API server outside the mesh; Keycloak reaches its database in iam. Those
    that need more have Sidecars of their own: the self-service workers (tenants' Qdrant) and, with a
    Vault or object store in the cluster, whatever reaches it (``sidecar_egress_hosts``: the iam
    database's backups, the self-service API and workers). The ingress gateway is no sidecar: Istio
    ignores Sidecar resources for gateways, which get every service their Gateway's routes name.
    """
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": NAMESPACES.mesh, "labels": dict(PLATFORM_LABELS)},
        "spec": _sidecar_spec(),
    }


# --- namespaces ----------------------------------------------------------------------------------------


def mesh_namespace_policies(config: PlatformConfig) -> list[Manifest]:
    """istio-system: what istiod serves and calls, beyond the baseline (deny, DNS, same namespace).

    istiod calls nothing but the API server: no RequestAuthentication in the platform names a jwksUri
    istiod would fetch."""
    namespace = NAMESPACES.mesh
    return [
        # Every sidecar and gateway, wherever it runs, fetches config and certificates from istiod.
        allow_ingress(
            namespace,
            "allow-xds-from-cluster",
            pods=ISTIOD_POD_LABELS,
            from_namespace=None,
            ports=[ISTIO_XDS_PORT],
        ),
        # Sidecar injection and config validation are webhooks the API server calls.
        allow_ingress_from_anywhere(
            namespace, "allow-webhooks-from-apiserver", pods=ISTIOD_POD_LABELS, ports=[ISTIOD_WEBHOOK_PORT]
        ),
        allow_ingress(
            namespace,
            "allow-metrics-scraping",
            pods=ISTIOD_POD_LABELS,
            from_namespace=NAMESPACES.observability,
            ports=[ISTIOD_METRICS_PORT],
        ),
        allow_egress_to_api_server(namespace, "allow-apiserver", pods=ISTIOD_POD_LABELS, config=config),
    ]


def ingress_namespace_policies() -> list[Manifest]:
    """istio-ingress: the world may reach the gateway; the gateway may reach meshed backends."""
    namespace = NAMESPACES.ingress
    return [
        allow_ingress_from_anywhere(
            namespace,
            "allow-traffic-from-anywhere",
            pods=GATEWAY_POD_LABELS,
            ports=[GATEWAY_HTTP_PORT, GATEWAY_HTTPS_PORT, GATEWAY_STATUS_PORT],
        ),
        # Backends behind the gateway are meshed (the gateway speaks mTLS to them); their own ingress
        # policies decide which ports the gateway may use.
        network_policy(
            namespace,
            "allow-egress-to-meshed-namespaces",
            {
                "podSelector": {"matchLabels": dict(GATEWAY_POD_LABELS)},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}]}],
            },
        ),
        # Grafana runs outside the mesh (observability is not meshed); the gateway reaches it in plain
        # HTTP on its container port only.
        allow_egress(
            namespace,
            "allow-egress-to-grafana",
            pods=GATEWAY_POD_LABELS,
            to_namespace=NAMESPACES.observability,
            to_pods=GRAFANA_POD_LABELS,
            ports=[GRAFANA_HTTP_PORT],
        ),
        allow_ingress(
            namespace,
            "allow-metrics-scraping",
            pods=GATEWAY_POD_LABELS,
            from_namespace=NAMESPACES.observability,
            ports=[ISTIO_METRICS_PORT],
        ),
    ]


# --- a tenant's AuthorizationPolicies -----------------------------------------------------------------


def _authorization_policy(tenant: Tenant, name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata(tenant, name),
        "spec": spec,
    }


def principal(namespace: str, service_account: str) -> str:
    """A workload's mTLS identity as AuthorizationPolicies name it (the mesh's trust domain is istiod's
    default, cluster.local)."""
    return f"cluster.local/ns/{namespace}/sa/{service_account}"


def _ports(*ports: int) -> list[str]:
    return [str(port) for port in ports]  # the CRD takes ports as strings


def tenant_authorization_policies(tenant: Tenant, platform: PlatformRefs) -> list[Manifest]:
    """Deny everything in the tenant namespace, then allow the namespace itself, the gateway and the
    platform's self-service workers to Qdrant, and metrics scraping. Identities come from mTLS, which
    the mesh-wide STRICT policy guarantees.
    """
    ingress_namespace: pulumi.Input[str] = platform.ingress_namespace
    policies = [
        # An ALLOW policy without rules matches nothing: with it, whatever no other policy allows is denied.
        _authorization_policy(tenant, "allow-nothing", {}),
        _authorization_policy(
            tenant,
            "allow-same-namespace",
            {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": [tenant.namespace]}}]}]},
        ),
    ]
    if tenant.qdrant is not None:
        policies.append(
            _authorization_policy(
                tenant,
                "qdrant-peers-only",
                {
                    # Found by a traffic review: Qdrant's peer port checks no API key, and the namespace's
                    # own policies admit every pod of it (a vCluster's workloads too) on every port. A
                    # DENY is evaluated before every ALLOW: on the peer port, anyone but a Qdrant node is
                    # refused, whatever else allows it.
                    "selector": {"matchLabels": dict(QDRANT_SELECTOR_LABELS)},
                    "action": "DENY",
                    "rules": [
                        {
                            "from": [
                                {
                                    "source": {
                                        "notPrincipals": [principal(tenant.namespace, QDRANT_SERVICE_ACCOUNT)]
                                    }
                                }
                            ],
                            "to": [{"operation": {"ports": _ports(QDRANT_P2P_PORT)}}],
                        }
                    ],
                },
            )
        )
        policies.append(
            _authorization_policy(
                tenant,
                "allow-ingress-gateway-to-qdrant",
                {
                    "selector": {"matchLabels": dict(QDRANT_SELECTOR_LABELS)},
                    "action": "ALLOW",
                    "rules": [
                        {
                            # Both must hold: the gateway's namespace (read from the platform stack) and
                            # its service account, i.e. cluster.local/ns/<ingress>/sa/istio-ingressgateway.
                            "from": [
                                {
                                    "source": {
                                        "namespaces": [ingress_namespace],
                                        "principals": [f"*/sa/{GATEWAY_SERVICE_ACCOUNT}"],
                                    }
                                }
                            ],
                            "to": [{"operation": {"ports": _ports(QDRANT_HTTP_PORT, QDRANT_GRPC_PORT)}}],
                        }
                    ],
                },
            )
        )
        policies.append(
            _authorization_policy(
                tenant,
                "allow-selfservice-workers-to-qdrant",
                {
                    "selector": {"matchLabels": dict(QDRANT_SELECTOR_LABELS)},
                    "action": "ALLOW",
                    "rules": [
                        {
                            # The workers' mTLS identity, cluster.local/ns/tenancy-system/sa/selfservice-
                            # worker: drains, rebalances, backups and restores, on the REST port only.
                            "from": [
                                {
                                    "source": {
                                        "namespaces": [NAMESPACES.self_service],
                                        "principals": [f"*/sa/{SELF_SERVICE_WORKER_ACCOUNT}"],
                                    }
                                }
                            ],
                            "to": [{"operation": {"ports": _ports(QDRANT_HTTP_PORT)}}],
                        }
                    ],
                },
            )
        )
    if tenant.vcluster is not None:
        policies.append(
            _authorization_policy(
                tenant,
                "allow-ingress-gateway-to-vcluster",
                {
                    "selector": {"matchLabels": dict(VCLUSTER_CONTROL_PLANE_LABELS)},
                    "action": "ALLOW",
                    "rules": [
                        {
                            # kubectl's TLS passes the gateway unopened, inside the gateway's mTLS: the
                            # identity checked here is the gateway's; the vCluster checks the user's.
                            "from": [
                                {
                                    "source": {
                                        "namespaces": [ingress_namespace],
                                        "principals": [f"*/sa/{GATEWAY_SERVICE_ACCOUNT}"],
                                    }
                                }
                            ],
                            "to": [{"operation": {"ports": _ports(VCLUSTER_API_PORT)}}],
                        }
                    ],
                },
            )
        )
    # The merged metrics endpoint sits outside the sidecar's traffic capture, so this rule only documents
    # the intent today; it keeps scraping (and only scraping) working should the port ever be captured.
    policies.append(
        _authorization_policy(
            tenant,
            "allow-metrics-scraping",
            {
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [{"source": {"namespaces": [platform.monitoring_namespace]}}],
                        "to": [{"operation": {"ports": _ports(ISTIO_METRICS_PORT)}}],
                    }
                ],
            },
        )
    )
    return policies


def tenant_sidecar(
    tenant: Tenant, *, vault_namespace: str | None = None, object_store_namespace: str | None = None
) -> Manifest:
    """The tenant namespace's own Sidecar (see SIDECAR_EGRESS_HOSTS): the same narrow scope as the mesh
    default, declared with the tenant so it holds whatever the mesh-wide default becomes. Tenant pods
    call only their own namespace through the mesh; the vCluster's calls to the API server leave it.

    ``vault_namespace``: a Vault in the cluster. Its services join the scope, so a sidecar sends calls to
    Vault as the mesh's (mTLS to a meshed Vault, which STRICT mode requires) rather than passing them
    through as unknown traffic. A Vault outside the cluster needs nothing here: it is passed through.

    ``object_store_namespace``: an object store in the cluster (``platform:objectStorage.namespace``), which
    the backup job uploads to; joins the scope for the same reason. One outside is passed through.
    """
    spec = _sidecar_spec()
    hosts = sidecar_egress_hosts(vault_namespace, object_store_namespace)
    if hosts != SIDECAR_EGRESS_HOSTS:
        spec["egress"] = [{"hosts": hosts}]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": metadata(tenant, "default"),
        "spec": spec,
    }
