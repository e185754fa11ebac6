"""Checks of a pod template: Pod Security "restricted", resources, image tags, host access.

A ``PodTemplate`` is a pod spec plus a way to say where each of its fields is set: in a manifest that is
``spec.template.spec...``; for a pod a chart renders (``tenancy.policy.charts``) it is the values key that
sets the field, so a finding names what to change in the program, not in generated YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenancy import versions
from tenancy.policy.model import FieldPath, Finding, PolicyObject, display_path, mapping_at, value_at

CONTAINER_GROUPS = ("initContainers", "containers", "ephemeralContainers")
# Where the pod spec sits in each built-in workload, by (apiVersion, kind).
POD_SPEC_PATHS: dict[tuple[str, str], FieldPath] = {
    ("v1", "Pod"): ("spec",),
    ("v1", "ReplicationController"): ("spec", "template", "spec"),
    ("apps/v1", "Deployment"): ("spec", "template", "spec"),
    ("apps/v1", "StatefulSet"): ("spec", "template", "spec"),
    ("apps/v1", "DaemonSet"): ("spec", "template", "spec"),
    ("apps/v1", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch/v1", "Job"): ("spec", "template", "spec"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Pod Security "restricted" allows only these volume types.
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
ALLOWED_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
REQUIRED_RESOURCES = (("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory"))
HOST_NAMESPACE_FIELDS = ("hostNetwork", "hostPID", "hostIPC")


@dataclass(frozen=True)
class PodTemplate:
    owner: PolicyObject
    spec: Mapping[str, Any]
    locate: Callable[[FieldPath], FieldPath]  # pod-spec path -> path in owner.body that sets it
    labels: Mapping[str, Any] | None = None  # the pods' labels, when they can be checked
    labels_path: FieldPath = ()
    workload: str = ""  # for pods a chart renders: "StatefulSet qdrant"; empty for a manifest's own pods
    # Pod-spec prefix -> the one fix for anything under it (a chart container only a switch removes).
    fixes: Mapping[FieldPath, str] = field(default_factory=dict)
    # False for pods a chart's software creates at run time (the vCluster's CoreDNS), which a render of
    # the chart does not contain: checks of the rendered chart (tenant-workload-hardened) skip them.
    rendered: bool = True
    # Pods meant to be Guaranteed (a stateful data path): requests equal limits in every container, the
    # injected Istio sidecar included, whose size these pod annotations set (None: not checked).
    guaranteed_annotations: Mapping[str, Any] | None = None
    annotations_path: FieldPath = ()
    # The pods call the Kubernetes API with their service account (the vCluster syncer): they keep the token.
    needs_api_token: bool = False

    def container(self, name: Any) -> str:
        return f"container {name!r}" + (f" of {self.workload}" if self.workload else "")

    @property
    def pods(self) -> str:
        return f"pods of {self.workload}" if self.workload else "its pods"

    def finding(self, path: FieldPath, problem: str, fix: str) -> Finding:
        """A finding at pod-spec ``path``; ``{field}`` in ``fix`` names where to change it."""
        located = self.locate(path)
        for length in range(len(path), -1, -1):
            if path[:length] in self.fixes:
                return Finding(self.owner, located, problem, self.fixes[path[:length]])
        return Finding(self.owner, located, problem, fix.format(field=display_path(located)))


def manifest_pod_templates(obj: PolicyObject) -> list[PodTemplate]:
    """The pod template of a built-in workload declared directly; [] for anything else."""
    base = POD_SPEC_PATHS.get((obj.api_version, obj.kind))
    if base is None or obj.patch:
        return []
    labels_path: FieldPath = (*base[:-1], "metadata", "labels")
    return [
        PodTemplate(
            owner=obj,
            spec=mapping_at(obj.body, base),
            locate=lambda path: (*base, *path),
            labels=mapping_at(obj.body, labels_path),
            labels_path=labels_path,
        )
    ]


def containers(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, Mapping[str, Any]]]:
    for group in CONTAINER_GROUPS:
        entries = spec.get(group)
        if isinstance(entries, Sequence) and not isinstance(entries, str):
            for index, container in enumerate(entries):
                if isinstance(container, Mapping):
                    yield (group, index), container


def _volumes(spec: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    volumes = spec.get("volumes")
    if isinstance(volumes, Sequence) and not isinstance(volumes, str):
        for index, volume in enumerate(volumes):
            if isinstance(volume, Mapping):
                yield index, volume


def _is_root(user: Any) -> bool:
    return type(user) is int and user == 0


def restricted_findings(template: PodTemplate) -> Iterator[Finding]:
    """Pod Security Standard "restricted" (Kubernetes 1.34): the checks that apply to Linux pods."""
    pod = template.spec
    inherits_root: list[str] = []
    inherits_root_user: list[str] = []
    inherits_seccomp: list[str] = []
    for where, container in containers(pod):
        name = container.get("name")
        context: FieldPath = (*where, "securityContext")

        def own(*path: str, _container: Mapping[str, Any] = container) -> Any:
            return value_at(_container, ("securityContext", *path))

        if own("privileged") is True:
            yield template.finding(
                (*context, "privileged"), f"{template.container(name)} is privileged", "set {field} to false"
            )
        if own("allowPrivilegeEscalation") is not False:
            yield template.finding(
                (*context, "allowPrivilegeEscalation"),
                f"{template.container(name)} may escalate privileges",
                "set {field} to false",
            )
        if own("runAsNonRoot") is None:
            if value_at(pod, ("securityContext", "runAsNonRoot")) is not True:
                inherits_root.append(str(name))
        elif own("runAsNonRoot") is not True:
            yield template.finding(
                (*context, "runAsNonRoot"),
                f"{template.container(name)} may run as root",
                "set {field} to true",
            )
        if _is_root(own("runAsUser")):
            yield template.finding(
                (*context, "runAsUser"),
                f"{template.container(name)} runs as user 0 (root)",
                "set {field} to a non-zero user ID",
            )
        elif own("runAsUser") is None and _is_root(value_at(pod, ("securityContext", "runAsUser"))):
            inherits_root_user.append(str(name))
        if "ALL" not in (own("capabilities", "drop") or []):
            yield template.finding(
                (*context, "capabilities", "drop"),
                f"{template.container(name)} does not drop all capabilities",
                "set {field} to [ALL]",
            )
        extra = sorted(
            str(c) for c in own("capabilities", "add") or [] if c not in ALLOWED_ADDED_CAPABILITIES
        )
        if extra:
            yield template.finding(
                (*context, "capabilities", "add"),
                f"{template.container(name)} adds capabilities {', '.join(extra)}",
                "remove them from {field} (only NET_BIND_SERVICE is allowed)",
            )
        seccomp = own("seccompProfile", "type")
        if seccomp is None:
            if value_at(pod, ("securityContext", "seccompProfile", "type")) not in ALLOWED_SECCOMP_TYPES:
                inherits_seccomp.append(str(name))
        elif seccomp not in ALLOWED_SECCOMP_TYPES:
            yield template.finding(
                (*context, "seccompProfile", "type"),
                f"{template.container(name)} uses seccomp profile {seccomp}",
                "set {field} to RuntimeDefault",
            )

    if inherits_root:
        yield template.finding(
            ("securityContext", "runAsNonRoot"),
            f"{template.pods} may run as root (containers {', '.join(inherits_root)} set no runAsNonRoot)",
            "set {field} to true",
        )
    if inherits_root_user:
        yield template.finding(
            ("securityContext", "runAsUser"),
            f"{template.pods} run as user 0 (containers {', '.join(inherits_root_user)})",
            "set {field} to a non-zero user ID",
        )
    if inherits_seccomp:
        yield template.finding(
            ("securityContext", "seccompProfile", "type"),
            f"{template.pods} have no seccomp profile (containers {', '.join(inherits_seccomp)})",
            "set {field} to RuntimeDefault",
        )
    for index, volume in _volumes(pod):
        # hostPath is forbidden everywhere, and reported once, by no-host-access.
        kinds = sorted(
            str(k) for k in volume if k not in RESTRICTED_VOLUME_TYPES and k not in ("name", "hostPath")
        )
        if kinds:
            yield template.finding(
                ("volumes", index),
                f"volume {volume.get('name')!r} of {template.pods} is of type {', '.join(kinds)}, "
                "which Pod Security restricted forbids",
                "use a configMap, secret, emptyDir, projected or persistentVolumeClaim volume at {field}",
            )


def resource_findings(template: PodTemplate) -> Iterator[Finding]:
    for where, container in containers(template.spec):
        if where[0] == "ephemeralContainers":
            continue  # the API forbids resources on ephemeral containers
        missing = [
            f"{section}.{resource}"
            for section, resource in REQUIRED_RESOURCES
            if value_at(container, ("resources", section, resource)) in (None, "")
        ]
        if missing:
            yield template.finding(
                (*where, "resources"),
                f"{template.container(container.get('name'))} has no {', '.join(missing)}",
                f"set {', '.join(missing)} under {{field}}",
            )


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None: a digest, or a tag other than ``latest``."""
    if "@" in image:
        return None if image.split("@", 1)[1] else "has an empty digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag, so it pulls latest"
    if last.split(":", 1)[1] in ("", "latest"):
        return "uses the latest tag"
    return None


def image_findings(template: PodTemplate) -> Iterator[Finding]:
    for where, container in containers(template.spec):
        image = container.get("image")
        if image is None:
            continue  # chosen by the software itself (see charts), or a schema error reported elsewhere
        problem = image_problem(str(image))
        if problem:
            yield template.finding(
                (*where, "image"),
                f"{template.container(container.get('name'))} image {image!r} {problem}",
                "pin a version tag or digest at {field}, kept in tenancy/versions.py",
            )


def host_access_findings(template: PodTemplate) -> Iterator[Finding]:
    pod = template.spec
    for name in HOST_NAMESPACE_FIELDS:
        if pod.get(name) is True:
            yield template.finding(
                (name,),
                f"{template.pods} share the node's {name.removeprefix('host')} namespace",
                "remove {field}",
            )
    for index, volume in _volumes(pod):
        if "hostPath" in volume:
            yield template.finding(
                ("volumes", index, "hostPath"),
                f"volume {volume.get('name')!r} of {template.pods} mounts a node directory (hostPath)",
                "replace {field} with a persistentVolumeClaim, emptyDir or configMap volume",
            )
    for where, container in containers(pod):
        ports = container.get("ports")
        if not isinstance(ports, Sequence) or isinstance(ports, str):
            continue
        for index, port in enumerate(ports):
            if isinstance(port, Mapping) and port.get("hostPort"):
                yield template.finding(
                    (*where, "ports", index, "hostPort"),
                    f"{template.container(container.get('name'))} binds node port {port.get('hostPort')}",
                    "remove {field} and reach the pod through a Service",
                )


# Beyond Pod Security "restricted": what checkov's Kubernetes checks ask of a tenant workload (CKV_K8S_8
# liveness probe, CKV_K8S_22 read-only root filesystem, CKV_K8S_35 secrets as files, CKV_K8S_40 high UID,
# CKV_K8S_43 image by digest, CKV_K8S_38 no service-account token unless the pods call the API).
MIN_NON_HOST_UID = 10000


def hardening_findings(template: PodTemplate) -> Iterator[Finding]:
    pod_user = value_at(template.spec, ("securityContext", "runAsUser"))
    if not template.needs_api_token and template.spec.get("automountServiceAccountToken") is not False:
        yield template.finding(
            ("automountServiceAccountToken",),
            f"{template.pods} mount a service-account token they never use",
            "set {field} to false",
        )
    for where, container in containers(template.spec):
        name = template.container(container.get("name"))
        image = container.get("image")
        by_tag = isinstance(image, str) and "@sha256:" not in image
        if by_tag and image not in versions.ACCEPTED_WITHOUT_DIGEST:
            yield template.finding(
                (*where, "image"),
                f"{name} runs {image} by tag, which the registry may move to other content",
                "pin it by digest at {field}, recorded in tenancy/versions.py",
            )
        if where[0] == "containers" and not isinstance(container.get("livenessProbe"), Mapping):
            yield template.finding(
                (*where, "livenessProbe"),
                f"{name} has no liveness probe: a hung process is never restarted",
                "enable a liveness probe at {field}",
            )
        if value_at(container, ("securityContext", "readOnlyRootFilesystem")) is not True:
            yield template.finding(
                (*where, "securityContext", "readOnlyRootFilesystem"),
                f"{name} may write to its root filesystem",
                "set {field} to true and mount an emptyDir where the process writes",
            )
        user = value_at(container, ("securityContext", "runAsUser"))
        user = pod_user if user is None else user
        if not isinstance(user, int) or user < MIN_NON_HOST_UID:
            yield template.finding(
                (*where, "securityContext", "runAsUser"),
                f"{name} runs as UID {user if user is not None else 'from its image'}, below "
                f"{MIN_NON_HOST_UID}, where it may share an ID with a user of the node",
                f"set {{field}} to {MIN_NON_HOST_UID} or above",
            )
        env = container.get("env")
        for index, variable in enumerate(
            env if isinstance(env, Sequence) and not isinstance(env, str) else []
        ):
            if (
                isinstance(variable, Mapping)
                and value_at(variable, ("valueFrom", "secretKeyRef")) is not None
            ):
                yield template.finding(
                    (*where, "env", index),
                    f"{name} takes the Secret value {variable.get('name')!r} as an environment variable, "
                    "which process listings, crash dumps and child processes expose",
                    "mount the Secret as a file instead of {field}",
                )


SIDECAR_SIZE_ANNOTATIONS = (
    ("sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyCPULimit"),
    ("sidecar.istio.io/proxyMemory", "sidecar.istio.io/proxyMemoryLimit"),
)


def guaranteed_findings(template: PodTemplate) -> Iterator[Finding]:
    """Guaranteed QoS where intended: every container's requests equal its limits, and the sidecar's too."""
    annotations = template.guaranteed_annotations
    if annotations is None:
        return
    for where, container in containers(template.spec):
        if where[0] == "ephemeralContainers":
            continue
        for resource in ("cpu", "memory"):
            request = value_at(container, ("resources", "requests", resource))
            limit = value_at(container, ("resources", "limits", resource))
            if request is None or request != limit:
                yield template.finding(
                    (*where, "resources"),
                    f"{template.container(container.get('name'))} requests {resource} {request} under a "
                    f"limit of {limit}, so {template.pods} are not Guaranteed",
                    f"set requests.{resource} equal to limits.{resource} under {{field}}",
                )
    for request_key, limit_key in SIDECAR_SIZE_ANNOTATIONS:
        request, limit = annotations.get(request_key), annotations.get(limit_key)
        if request is None or request != limit:
            path = (*template.annotations_path, request_key)
            yield Finding(
                template.owner,
                path,
                f"the Istio sidecar of {template.pods} gets {request_key}={request} and "
                f"{limit_key}={limit}, so the pods are not Guaranteed",
                f"set {display_path(path)} and {limit_key} to the same value",
            )
