"""What the pinned charts render, as far as the policies need it, computed from a release's values.

A Helm release's objects are not rendered here (no Helm, no cluster), so checks on them go through a
model per chart, written from the chart's templates at the pinned version: the pods it runs (containers,
security contexts, resources, images, volumes; values merged over the chart's defaults the way Helm
merges them), the Services it creates, where tenant labels go, and how it protects replicated state.
Each finding names the values key to change.

Coverage, honestly:

- ``qdrant`` 1.19.0 and ``vcluster`` 0.36.1 (the charts in tenant namespaces) are modelled fully for pod
  security, resources, images, host access, Service types, labels and PDBs. Not modelled: qdrant's
  ``helm test`` hook pod (Pulumi's Release does not run tests); pods a vCluster's tenants create (they
  run in the host namespace and meet its Pod Security admission and LimitRange at runtime).
- ``redis-ha`` 4.39.0, ``keycloakx`` 7.1.11 and ``argo-cd`` 10.1.1 (controller and its redis-ha
  subchart) are modelled for replicated state only: replicas > 1 needs the chart's PDB.
- Every chart: image references in values are checked for ``latest``; versions must be exact.
- Other charts (istio, loki, grafana, alloy, cloudnative-pg) are not modelled: their pods are outside
  tenant namespaces, and checking them would mean re-implementing their templates. The
  ``tenant-chart-modelled`` rule keeps unmodelled charts out of tenant namespaces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from tenancy import versions
from tenancy.builders.qdrant_postrender import POST_RENDERER, PostRenderError, pinned_image
from tenancy.policy.model import FieldPath, PolicyObject, display_path, mapping_at, value_at
from tenancy.policy.pods import PodTemplate


def helm_merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Values as Helm computes them: maps merge key by key, anything else replaces, null deletes."""
    merged: dict[str, Any] = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _prefix_locator(
    table: Mapping[FieldPath, FieldPath], fallback: FieldPath, whole: frozenset[FieldPath] = frozenset()
) -> Callable[[FieldPath], FieldPath]:
    """Map a pod-spec path to the values key that sets it: the longest matching prefix in ``table``.

    Prefixes in ``whole`` map everything below them to one key (a switch that renders a container).
    """

    def locate(path: FieldPath) -> FieldPath:
        for length in range(len(path), -1, -1):
            prefix = path[:length]
            if prefix in table:
                return table[prefix] if prefix in whole else (*table[prefix], *path[length:])
        return fallback

    return locate


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _replicas(values: Mapping[str, Any], path: FieldPath, default: int) -> int:
    found = value_at(values, path, default)
    try:
        return int(found)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class ServiceType:
    type: str
    path: FieldPath  # in the release body
    what: str


@dataclass(frozen=True)
class ReplicatedState:
    """A stateful workload a chart runs with more than one replica, and whether the chart adds its PDB."""

    workload: str
    replicas: int
    replicas_path: FieldPath
    protected: bool
    fix: str


@dataclass(frozen=True)
class ChartModel:
    chart: str
    version: str
    pods: Callable[[PolicyObject], list[PodTemplate]]
    services: Callable[[PolicyObject], list[ServiceType]]
    label_paths: tuple[FieldPath, ...]  # values maps that become labels of what the chart renders
    replicated_state: Callable[[PolicyObject], list[ReplicatedState]]


def _values_path(*keys: str | int) -> FieldPath:
    return ("values", *keys)


# --- qdrant 1.19.0 (templates/statefulset.yaml, service.yaml, pdb.yaml; values.yaml defaults) ---------------
QDRANT_DEFAULTS: dict[str, Any] = {
    "replicaCount": 1,
    "image": {"repository": "docker.io/qdrant/qdrant", "tag": "", "useUnprivilegedImage": False},
    "podSecurityContext": {"fsGroup": 3000, "fsGroupChangePolicy": "Always"},
    "containerSecurityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 2000,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
    },
    "resources": {},
    "updateVolumeFsOwnership": True,
    "sidecarContainers": [],
    "additionalVolumes": [],
    "service": {
        "type": "ClusterIP",
        "ports": [
            {"name": "http", "port": 6333, "targetPort": 6333, "checksEnabled": True},
            {"name": "grpc", "port": 6334, "targetPort": 6334, "checksEnabled": False},
            {"name": "p2p", "port": 6335, "targetPort": 6335, "checksEnabled": False},
        ],
    },
    "env": [],
    "livenessProbe": {"enabled": False},
    "podDisruptionBudget": {"enabled": False, "maxUnavailable": 1},
    "additionalLabels": {},
    "podAnnotations": {},
}
QDRANT_APP_VERSION = "v1.19.0"


def _qdrant_pods(release: PolicyObject) -> list[PodTemplate]:
    values = helm_merge(QDRANT_DEFAULTS, release.values)
    image = mapping_at(values, ("image",))
    tag = image.get("tag") or QDRANT_APP_VERSION
    unprivileged = bool(image.get("useUnprivilegedImage"))
    main_image = f"{image.get('repository')}:{tag}{'-unprivileged' if unprivileged else ''}"
    init_image = f"{image.get('repository')}:{tag}"
    # The program's post-renderer pins the image by digest and turns the token off (what the chart
    # cannot); without it, or for a tag with no recorded digest, the pods run by tag with a token.
    post_rendered = release.body.get("postrender") == POST_RENDERER
    if post_rendered:
        # A tag with no digest fails Helm's install; the image-by-digest check reports it.
        with suppress(PostRenderError):
            main_image, init_image = pinned_image(main_image), pinned_image(init_image)
    security = mapping_at(values, ("containerSecurityContext",))
    sidecars = [c for c in _list(values.get("sidecarContainers")) if isinstance(c, Mapping)]
    main: dict[str, Any] = {
        "name": "qdrant",
        "image": main_image,
        "resources": values.get("resources") or {},
        **({"securityContext": security} if security else {}),
    }
    # The chart renders env verbatim, and a liveness probe only when enabled and on a checksEnabled port.
    if _list(values.get("env")):
        main["env"] = _list(values.get("env"))
    ports = _list(value_at(values, ("service", "ports")))
    if value_at(values, ("livenessProbe", "enabled")) is True and any(
        isinstance(port, Mapping) and port.get("checksEnabled") for port in ports
    ):
        main["livenessProbe"] = dict(mapping_at(values, ("livenessProbe",)))
    init = []
    if values.get("updateVolumeFsOwnership") and not unprivileged and security.get("runAsUser"):
        # chown as root, with no securityContext and no resources: never restricted-compliant.
        init.append({"name": "ensure-dir-ownership", "image": init_image})
    pod_security = mapping_at(values, ("podSecurityContext",))
    spec: dict[str, Any] = {
        "initContainers": init,
        "containers": [*sidecars, main],
        "volumes": _list(values.get("additionalVolumes")),
        **({"securityContext": pod_security} if pod_security else {}),
        **({"automountServiceAccountToken": False} if post_rendered else {}),
    }
    main_index = len(sidecars)
    table: dict[FieldPath, FieldPath] = {
        ("securityContext",): _values_path("podSecurityContext"),
        ("containers", main_index, "securityContext"): _values_path("containerSecurityContext"),
        ("containers", main_index, "resources"): _values_path("resources"),
        ("containers", main_index, "image"): _values_path("image", "tag"),
        ("containers", main_index, "env"): _values_path("env"),
        ("containers", main_index, "livenessProbe"): _values_path("livenessProbe"),
        ("initContainers", 0): _values_path("updateVolumeFsOwnership"),
        ("volumes",): _values_path("additionalVolumes"),
    }
    for index in range(len(sidecars)):
        table[("containers", index)] = _values_path("sidecarContainers", index)
    return [
        PodTemplate(
            owner=release,
            spec=spec,
            locate=_prefix_locator(table, _values_path(), whole=frozenset({("initContainers", 0)})),
            labels=mapping_at(values, ("additionalLabels",)),
            labels_path=_values_path("additionalLabels"),
            workload=f"StatefulSet {release.name} (qdrant chart)",
            guaranteed_annotations=mapping_at(values, ("podAnnotations",)),
            annotations_path=_values_path("podAnnotations"),
            fixes={
                ("initContainers", 0): "set values.updateVolumeFsOwnership to false: the chart's chown init "
                "container runs as root, and fsGroup in values.podSecurityContext owns fresh volumes",
                ("automountServiceAccountToken",): f"give the release postrender={POST_RENDERER!r} "
                "(the chart has no value for it; components/tenant/qdrant.py)",
                ("containers", main_index, "image"): f"give the release postrender={POST_RENDERER!r} and "
                "record the tag's digest in tenancy/versions.py QDRANT_IMAGE_DIGESTS",
            },
        )
    ]


def _qdrant_services(release: PolicyObject) -> list[ServiceType]:
    values = helm_merge(QDRANT_DEFAULTS, release.values)
    kind = str(value_at(values, ("service", "type")) or "ClusterIP")
    return [ServiceType(kind, _values_path("service", "type"), f"Service {release.name} (qdrant chart)")]


def _qdrant_state(release: PolicyObject) -> list[ReplicatedState]:
    values = helm_merge(QDRANT_DEFAULTS, release.values)
    return [
        ReplicatedState(
            workload=f"StatefulSet {release.name} (qdrant chart)",
            replicas=_replicas(values, ("replicaCount",), 1),
            replicas_path=_values_path("replicaCount"),
            protected=value_at(values, ("podDisruptionBudget", "enabled")) is True,
            fix="set values.podDisruptionBudget.enabled to true (with maxUnavailable 1)",
        )
    ]


QDRANT = ChartModel(
    chart=versions.QDRANT.chart,
    version=versions.QDRANT.version,
    pods=_qdrant_pods,
    services=_qdrant_services,
    label_paths=(_values_path("additionalLabels"),),
    replicated_state=_qdrant_state,
)


# --- vcluster 0.36.1 (templates/statefulset.yaml, _init-containers.tpl, _helper.tpl, values.yaml) -----------
VCLUSTER_DEFAULTS: dict[str, Any] = {
    "controlPlane": {
        "statefulSet": {
            "image": {"registry": "ghcr.io", "repository": "loft-sh/vcluster-pro", "tag": ""},
            "resources": {
                "limits": {"ephemeral-storage": "10Gi", "memory": "4Gi"},
                "requests": {"ephemeral-storage": "1Gi", "cpu": "200m", "memory": "256Mi"},
            },
            "security": {
                "podSecurityContext": {},
                "containerSecurityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsUser": 0,
                    "runAsGroup": 0,
                },
            },
            "highAvailability": {"replicas": 1},
            "probes": {"livenessProbe": {"enabled": True}},
            "initContainers": [],
            "sidecarContainers": [],
            "labels": {},
            "pods": {"labels": {}},
            "persistence": {"addVolumes": []},
        },
        "distro": {
            "k8s": {
                "version": "",
                "image": {"registry": "ghcr.io", "repository": "loft-sh/kubernetes", "tag": "v1.36.0"},
                "resources": {
                    "limits": {"cpu": "100m", "memory": "256Mi"},
                    "requests": {"cpu": "40m", "memory": "64Mi"},
                },
                "securityContext": {},
            }
        },
        "coredns": {
            "enabled": True,
            "embedded": False,
            "security": {"podSecurityContext": {}, "containerSecurityContext": {}},
            "service": {"spec": {"type": "ClusterIP"}},
            "deployment": {
                "image": "",
                "resources": {
                    "limits": {"cpu": "1000m", "memory": "170Mi"},
                    "requests": {"cpu": "20m", "memory": "64Mi"},
                },
            },
        },
        "service": {"enabled": True, "spec": {"type": "ClusterIP"}},
        "advanced": {"defaultImageRegistry": "", "podDisruptionBudget": {"enabled": False}},
    },
    "policies": {},
}
# What the vcluster binary sets on CoreDNS when values leave it empty (pkg/coredns/template.go at v0.36.1).
VCLUSTER_COREDNS_CONTAINER_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
}


def _image(registry: Any, repository: Any, tag: Any, default_registry: Any) -> str:
    host = default_registry or registry
    return f"{host}/{repository}:{tag}" if host else f"{repository}:{tag}"


def _vcluster_pods(release: PolicyObject) -> list[PodTemplate]:
    values = helm_merge(VCLUSTER_DEFAULTS, release.values)
    control_plane = mapping_at(values, ("controlPlane",))
    stateful_set = mapping_at(control_plane, ("statefulSet",))
    k8s = mapping_at(control_plane, ("distro", "k8s"))
    default_registry = value_at(control_plane, ("advanced", "defaultImageRegistry"))
    cp = ("controlPlane", "statefulSet")

    syncer_image = mapping_at(stateful_set, ("image",))
    syncer: dict[str, Any] = {
        "name": "syncer",
        "image": _image(
            syncer_image.get("registry"),
            syncer_image.get("repository"),
            syncer_image.get("tag") or versions.VCLUSTER.version,
            default_registry,
        ),
        "resources": stateful_set.get("resources") or {},
    }
    container_security = mapping_at(stateful_set, ("security", "containerSecurityContext"))
    if container_security:
        syncer["securityContext"] = container_security
    if value_at(stateful_set, ("probes", "livenessProbe", "enabled")) is True:
        syncer["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}}
    k8s_image = mapping_at(k8s, ("image",))
    kubernetes = {
        "name": "kubernetes",
        "image": _image(
            k8s_image.get("registry"),
            k8s_image.get("repository"),
            k8s.get("version") or k8s_image.get("tag"),
            default_registry,
        ),
        "securityContext": mapping_at(k8s, ("securityContext",)),
        "resources": k8s.get("resources") or {},
    }
    extra_init = [c for c in _list(stateful_set.get("initContainers")) if isinstance(c, Mapping)]
    sidecars = [c for c in _list(stateful_set.get("sidecarContainers")) if isinstance(c, Mapping)]
    pod_security = mapping_at(stateful_set, ("security", "podSecurityContext"))
    spec: dict[str, Any] = {
        "initContainers": [kubernetes, *extra_init],
        "containers": [syncer, *sidecars],
        "volumes": _list(value_at(stateful_set, ("persistence", "addVolumes"))),
        **({"securityContext": pod_security} if pod_security else {}),
    }
    table: dict[FieldPath, FieldPath] = {
        ("securityContext",): _values_path(*cp, "security", "podSecurityContext"),
        ("containers", 0, "securityContext"): _values_path(*cp, "security", "containerSecurityContext"),
        ("containers", 0, "resources"): _values_path(*cp, "resources"),
        ("containers", 0, "image"): _values_path(*cp, "image", "tag"),
        ("initContainers", 0, "securityContext"): _values_path(
            "controlPlane", "distro", "k8s", "securityContext"
        ),
        ("initContainers", 0, "resources"): _values_path("controlPlane", "distro", "k8s", "resources"),
        # The chart takes the tag from "version" when set, else from image.tag (what the program sets).
        ("initContainers", 0, "image"): _values_path(
            "controlPlane", "distro", "k8s", *(("version",) if k8s.get("version") else ("image", "tag"))
        ),
        ("volumes",): _values_path(*cp, "persistence", "addVolumes"),
    }
    for index in range(len(extra_init)):
        table[("initContainers", index + 1)] = _values_path(*cp, "initContainers", index)
    for index in range(len(sidecars)):
        table[("containers", index + 1)] = _values_path(*cp, "sidecarContainers", index)
    templates = [
        PodTemplate(
            owner=release,
            spec=spec,
            locate=_prefix_locator(table, _values_path()),
            labels=mapping_at(stateful_set, ("pods", "labels")),
            labels_path=_values_path(*cp, "pods", "labels"),
            workload=f"StatefulSet {release.name} (vcluster chart)",
            # The syncer is a Kubernetes client of the host cluster (it syncs pods, services, ...).
            needs_api_token=True,
        )
    ]

    coredns = mapping_at(control_plane, ("coredns",))
    if coredns.get("enabled") and not coredns.get("embedded"):
        # The syncer deploys CoreDNS inside the virtual cluster; it runs as a pod in the host namespace.
        pod = dict(mapping_at(coredns, ("security", "podSecurityContext")))
        if not pod and value_at(values, ("policies", "podSecurityStandard")):
            pod = {"seccompProfile": {"type": "RuntimeDefault"}}
        container: dict[str, Any] = {
            "name": "coredns",
            "securityContext": mapping_at(coredns, ("security", "containerSecurityContext"))
            or VCLUSTER_COREDNS_CONTAINER_SECURITY,
            "resources": value_at(coredns, ("deployment", "resources")) or {},
        }
        if value_at(coredns, ("deployment", "image")):
            container["image"] = value_at(coredns, ("deployment", "image"))
        dns = ("controlPlane", "coredns")
        templates.append(
            PodTemplate(
                owner=release,
                spec={"containers": [container], **({"securityContext": pod} if pod else {})},
                locate=_prefix_locator(
                    {
                        ("securityContext",): _values_path(*dns, "security", "podSecurityContext"),
                        ("containers", 0, "securityContext"): _values_path(
                            *dns, "security", "containerSecurityContext"
                        ),
                        ("containers", 0, "resources"): _values_path(*dns, "deployment", "resources"),
                        ("containers", 0, "image"): _values_path(*dns, "deployment", "image"),
                    },
                    _values_path(*dns),
                ),
                workload=f"the CoreDNS Deployment of vCluster {release.name}",
                rendered=False,
            )
        )
    return templates


def _vcluster_services(release: PolicyObject) -> list[ServiceType]:
    values = helm_merge(VCLUSTER_DEFAULTS, release.values)
    found = []
    if value_at(values, ("controlPlane", "service", "enabled")):
        kind = str(value_at(values, ("controlPlane", "service", "spec", "type")) or "ClusterIP")
        found.append(
            ServiceType(
                kind,
                _values_path("controlPlane", "service", "spec", "type"),
                f"Service {release.name} (vcluster chart)",
            )
        )
    if value_at(values, ("controlPlane", "coredns", "enabled")):
        kind = str(value_at(values, ("controlPlane", "coredns", "service", "spec", "type")) or "ClusterIP")
        found.append(
            ServiceType(
                kind,
                _values_path("controlPlane", "coredns", "service", "spec", "type"),
                f"the CoreDNS Service of vCluster {release.name}",
            )
        )
    return found


def _vcluster_state(release: PolicyObject) -> list[ReplicatedState]:
    values = helm_merge(VCLUSTER_DEFAULTS, release.values)
    path = ("controlPlane", "statefulSet", "highAvailability", "replicas")
    return [
        ReplicatedState(
            workload=f"the control plane of vCluster {release.name}",
            replicas=_replicas(values, path, 1),
            replicas_path=_values_path(*path),
            protected=value_at(values, ("controlPlane", "advanced", "podDisruptionBudget", "enabled"))
            is True,
            fix="set values.controlPlane.advanced.podDisruptionBudget.enabled to true "
            "(with maxUnavailable 1)",
        )
    ]


VCLUSTER = ChartModel(
    chart=versions.VCLUSTER.chart,
    version=versions.VCLUSTER.version,
    pods=_vcluster_pods,
    services=_vcluster_services,
    label_paths=(
        _values_path("controlPlane", "statefulSet", "labels"),
        _values_path("controlPlane", "statefulSet", "pods", "labels"),
    ),
    replicated_state=_vcluster_state,
)

MODELS: dict[str, ChartModel] = {model.chart: model for model in (QDRANT, VCLUSTER)}


def model_of(release: PolicyObject) -> ChartModel | None:
    return MODELS.get(release.chart) if release.is_release else None


# --- replicated state of platform charts (PDB knobs read from each chart's templates) -----------------------
def _pdb_map_set(value: Any) -> bool:
    """redis-ha and keycloakx render their PDB when the ``podDisruptionBudget`` map is non-empty."""
    return isinstance(value, Mapping) and any(v not in (None, "") for v in value.values())


def _redis_ha_state(values: Mapping[str, Any], prefix: FieldPath, workload: str) -> ReplicatedState:
    # redis-ha 4.39.0: statefulset `replicas: {{ .Values.replicas }}` (default 3); redis-ha-pdb.yaml
    # `if .Values.podDisruptionBudget`.
    return ReplicatedState(
        workload=workload,
        replicas=_replicas(values, ("replicas",), 3),
        replicas_path=_values_path(*prefix, "replicas"),
        protected=_pdb_map_set(values.get("podDisruptionBudget")),
        fix=f"set {display_path(_values_path(*prefix, 'podDisruptionBudget'))} to {{maxUnavailable: 1}}",
    )


def _platform_state(release: PolicyObject) -> list[ReplicatedState]:
    values = release.values
    chart = release.chart
    if chart == versions.REDIS_HA.chart:
        return [_redis_ha_state(values, (), f"StatefulSet {release.name}-server (redis-ha chart)")]
    if chart == versions.KEYCLOAKX.chart:
        # keycloakx 7.1.11: `replicas` (default 1), or autoscaling.minReplicas (default 3) when autoscaling.
        autoscaling = value_at(values, ("autoscaling", "enabled")) is True
        path: FieldPath = ("autoscaling", "minReplicas") if autoscaling else ("replicas",)
        return [
            ReplicatedState(
                workload=f"StatefulSet {release.name} (keycloakx chart)",
                replicas=_replicas(values, path, 3 if autoscaling else 1),
                replicas_path=_values_path(*path),
                protected=_pdb_map_set(values.get("podDisruptionBudget")),
                fix="set values.podDisruptionBudget to {maxUnavailable: 1}",
            )
        ]
    if chart == versions.ARGO_CD.chart:
        # argo-cd 10.1.1: the application controller is a StatefulSet (controller.replicas, default 1);
        # its PDB needs controller.pdb.enabled plus minAvailable or maxUnavailable (minAvailable defaults
        # to 0, which protects nothing). HA Redis is the redis-ha subchart (redis-ha.enabled).
        pdb = mapping_at(values, ("controller", "pdb"))
        found = [
            ReplicatedState(
                workload=f"the application controller of Argo CD {release.name}",
                replicas=_replicas(values, ("controller", "replicas"), 1),
                replicas_path=_values_path("controller", "replicas"),
                protected=pdb.get("enabled") is True
                and any(pdb.get(k) not in (None, "", 0, "0") for k in ("minAvailable", "maxUnavailable")),
                fix="set values.controller.pdb.enabled to true and values.controller.pdb.maxUnavailable to 1",
            )
        ]
        if value_at(values, ("redis-ha", "enabled")) is True:
            found.append(
                _redis_ha_state(
                    mapping_at(values, ("redis-ha",)),
                    ("redis-ha",),
                    f"the HA Redis of Argo CD {release.name}",
                )
            )
        return found
    return []


def replicated_state(release: PolicyObject) -> list[ReplicatedState]:
    model = model_of(release)
    return model.replicated_state(release) if model else _platform_state(release)
