"""The one view every policy rule reads, whichever way it runs.

Rules are pure functions over ``PolicyObject``s: a Kubernetes object as it would be applied, or a Helm
release (chart, version, repo, values). Render output and CrossGuard's resource arguments are both
turned into this view (``tenancy.policy.sources``, ``tenancy.policy.crossguard``), so a rule is written
once and gives the same answer in CI without the Pulumi CLI and in ``pulumi preview --policy-pack``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenancy.spec.tenant import LABEL_TENANT, NAMESPACE_PREFIX

HELM_RELEASE_KIND = "HelmRelease"
HELM_RELEASE_API_VERSION = "helm.sh/v3"

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyObject:
    kind: str  # the Kubernetes kind, or HELM_RELEASE_KIND
    api_version: str
    name: str
    namespace: str | None
    body: Mapping[str, Any]  # the manifest; for a release {name, namespace, chart, version, repo, values}
    stack: str | None = None  # the stack that declares it, when known
    origin: str = ""  # where a reader finds it: a render file, or a Pulumi URN
    patch: bool = False  # a Server-Side Apply patch: part of an object, not checked as a whole
    # Paths in body whose values the check cannot see: masked secrets in render output, values
    # unknown during a preview. A finding about them is undecided, not a violation.
    hidden: tuple[FieldPath, ...] = ()

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def is_release(self) -> bool:
        return self.kind == HELM_RELEASE_KIND and self.api_version == HELM_RELEASE_API_VERSION

    @property
    def labels(self) -> Mapping[str, Any]:
        return mapping_at(self.body, ("metadata", "labels"))

    @property
    def chart(self) -> str:
        return str(self.body.get("chart") or "") if self.is_release else ""

    @property
    def values(self) -> Mapping[str, Any]:
        return mapping_at(self.body, ("values",)) if self.is_release else {}


def manifest_object(
    manifest: Mapping[str, Any],
    *,
    stack: str | None,
    origin: str,
    default_name: str = "",
    patch: bool = False,
    hidden: Sequence[FieldPath] = (),
) -> PolicyObject:
    metadata = mapping_at(manifest, ("metadata",))
    return PolicyObject(
        kind=str(manifest.get("kind") or ""),
        api_version=str(manifest.get("apiVersion") or ""),
        name=str(metadata.get("name") or default_name),
        namespace=str(metadata["namespace"]) if metadata.get("namespace") else None,
        body=manifest,
        stack=stack,
        origin=origin,
        patch=patch,
        hidden=tuple(hidden),
    )


def release_object(
    release: Mapping[str, Any], *, stack: str | None, origin: str, hidden: Sequence[FieldPath] = ()
) -> PolicyObject:
    """``release`` has the fields of a render's helm/<release>.yaml."""
    return PolicyObject(
        kind=HELM_RELEASE_KIND,
        api_version=HELM_RELEASE_API_VERSION,
        name=str(release.get("name") or ""),
        namespace=str(release.get("namespace") or "default"),
        body=release,
        stack=stack,
        origin=origin,
        hidden=tuple(hidden),
    )


def tenant_of_namespace(namespace: str | None) -> str | None:
    if namespace and namespace.startswith(NAMESPACE_PREFIX) and len(namespace) > len(NAMESPACE_PREFIX):
        return namespace[len(NAMESPACE_PREFIX) :]
    return None


def tenant_of_stack(stack: str | None) -> str | None:
    """``prod.acme`` -> ``acme``; platform stacks (``prod``) and unknown stacks -> None."""
    if not stack:
        return None
    _, _, tenant = stack.rsplit("/", 1)[-1].partition(".")
    return tenant or None


def tenant_namespace_of(obj: PolicyObject) -> str | None:
    """The tenant namespace ``obj`` lives in, or is (the Namespace object itself)."""
    if obj.kind == "Namespace" and obj.api_version == "v1":
        return obj.name if tenant_of_namespace(obj.name) else None
    return obj.namespace if tenant_of_namespace(obj.namespace) else None


def owning_tenant(obj: PolicyObject) -> str | None:
    """The tenant an object belongs to: by its (tenant) namespace, else by the tenant stack declaring it."""
    namespace = tenant_namespace_of(obj)
    return tenant_of_namespace(namespace) if namespace else tenant_of_stack(obj.stack)


def mapping_at(value: Any, path: Sequence[str | int]) -> Mapping[str, Any]:
    found = value_at(value, path)
    return found if isinstance(found, Mapping) else {}


def value_at(value: Any, path: Sequence[str | int], default: Any = None) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(value, Sequence) and not isinstance(value, str):
            if part >= len(value):
                return default
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return default
    return value


def display_path(path: FieldPath) -> str:
    """``("spec", "containers", 0, "image")`` -> ``spec.containers[0].image``."""
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        elif "." in part or "/" in part:
            shown += f"[{part!r}]"
        else:
            shown += f".{part}" if shown else part
    return shown


@dataclass(frozen=True)
class Finding:
    """What a rule found wrong with one object: where, what, and how to fix it."""

    subject: PolicyObject
    path: FieldPath  # into subject.body; () when the object as a whole is wrong
    problem: str
    fix: str


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str  # PolicyObject.ref
    origin: str
    path: FieldPath
    problem: str
    fix: str
    undecided: bool = False  # about a value hidden from the check (see PolicyObject.hidden)

    @property
    def field(self) -> str:
        return display_path(self.path)

    @property
    def message(self) -> str:
        where = f" ({self.field})" if self.path else ""
        return f"{self.subject}: [{self.rule}] {self.problem}{where}. Fix: {self.fix}"


@dataclass(frozen=True)
class ResourceRule:
    """A rule over one object at a time."""

    name: str
    description: str
    check: Callable[[PolicyObject], Iterator[Finding]]


@dataclass(frozen=True)
class StackRule:
    """A rule over all objects of one stack (e.g. "every tenant namespace has a quota")."""

    name: str
    description: str
    check: Callable[[Sequence[PolicyObject]], Iterator[Finding]]


def touches(path: FieldPath, hidden: Sequence[FieldPath]) -> bool:
    """Whether a finding at ``path`` is about (part of) a hidden value; never for the object as a whole."""
    return bool(path) and any(h[: len(path)] == path or path[: len(h)] == h for h in hidden)


def violation(rule: str, finding: Finding) -> Violation:
    return Violation(
        rule=rule,
        subject=finding.subject.ref,
        origin=finding.subject.origin,
        path=finding.path,
        problem=finding.problem,
        fix=finding.fix,
        undecided=touches(finding.path, finding.subject.hidden),
    )


__all__ = [
    "HELM_RELEASE_API_VERSION",
    "HELM_RELEASE_KIND",
    "LABEL_TENANT",
    "FieldPath",
    "Finding",
    "PolicyObject",
    "ResourceRule",
    "StackRule",
    "Violation",
]
