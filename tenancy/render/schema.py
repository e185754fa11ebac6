"""Validate Kubernetes objects against the OpenAPI schema of the version the platform targets.

The schemas are kubernetes-validate's (strict: unknown fields are errors). Its ``validate`` decodes the
1.5 MB definitions file again for every object, which made ``render --validate`` cost 270 ms per
tenant (issue #11). Here the definitions are decoded once per process and each kind's validator is
built once. jsonschema-rs answers "valid or not" for every object, and only an invalid object goes
through python-jsonschema, which names the same first error kubernetes-validate would. jsonschema-rs
is pinned with the development tools (CI and people rendering have it); the service image does not
validate schemas and ships without it, and where it is missing python-jsonschema does both jobs, at
about half the speed, with the same results.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

from tenancy import versions

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - the image has no schema checks to run
    jsonschema_rs = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from tenancy.render.runtime import DeclaredResource

_DEFINITIONS_FILE = "_definitions.json"
_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"


class NotBuiltIn(Exception):
    """The object's kind is not part of Kubernetes (a custom resource): no schema to check here."""


@functools.lru_cache(maxsize=8)
def _schema_directory(version: str) -> str:
    """The strict schema directory of the newest schema version not newer than ``version``."""
    wanted = kubernetes_validate.utils.major_minor(version.removeprefix("v"))
    if wanted > kubernetes_validate.utils.latest_version():
        raise kubernetes_validate.VersionNotSupportedError(version=wanted)
    found = [
        v
        for v in kubernetes_validate.utils.all_versions()
        if kubernetes_validate.utils.major_minor(v) <= wanted
    ]
    return f"v{found[-1]}-local-strict"


def _schema_text(directory: str, name: str) -> str | None:
    path = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", directory, name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


@functools.lru_cache(maxsize=8)
def _definitions(directory: str) -> dict[str, Any]:
    text = _schema_text(directory, _DEFINITIONS_FILE)
    if text is None:
        raise kubernetes_validate.VersionNotSupportedError(version=directory)
    document: dict[str, Any] = json.loads(text)
    return document


@functools.lru_cache(maxsize=8)
def _python_registry(directory: str) -> Registry[Any]:
    registry: Registry[Any] = Resource.from_contents(_definitions(directory)) @ Registry()
    return registry


@functools.lru_cache(maxsize=8)
def _rust_registry(directory: str) -> Any:
    return jsonschema_rs.Registry([(_DEFINITIONS_ID, _definitions(directory))])


class _KindValidator:
    """One kind's schema, compiled once: a fast yes/no, and python-jsonschema for the error."""

    def __init__(self, schema: dict[str, Any], directory: str) -> None:
        self._schema = schema
        self._directory = directory
        self._fast = (
            None
            if jsonschema_rs is None
            else jsonschema_rs.Draft202012Validator(
                schema, registry=_rust_registry(directory), validate_formats=False, offline=True
            )
        )

    @functools.cached_property
    def _reference(self) -> jsonschema.protocols.Validator:
        registry = Resource.from_contents(self._schema) @ _python_registry(self._directory)
        return jsonschema.validators.Draft202012Validator(self._schema, registry=registry)

    def first_error(self, manifest: dict[str, Any]) -> jsonschema.ValidationError | None:
        if self._fast is not None and self._fast.is_valid(manifest):
            return None
        # The error kubernetes-validate reports: the first python-jsonschema finds.
        return next(iter(self._reference.iter_errors(manifest)), None)


@functools.lru_cache(maxsize=1024)
def _kind_validator(directory: str, kind: str, api_version: str) -> _KindValidator | None:
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    text = _schema_text(directory, f"{kind.lower()}-{group_version}.json")
    return None if text is None else _KindValidator(json.loads(text), directory)


def schema_errors(manifest: dict[str, Any], *, version: str = versions.KUBERNETES_VERSION) -> list[str]:
    """Problems with ``manifest`` under the strict schema (unknown fields are errors); [] when valid.

    Raises NotBuiltIn for custom resources.
    """
    validator = _kind_validator(_schema_directory(version), manifest["kind"], manifest["apiVersion"])
    if validator is None:
        raise NotBuiltIn(f"{manifest.get('apiVersion')}/{manifest.get('kind')}")
    error = validator.first_error(manifest)
    if error is None:
        return []
    where = ".".join(str(part) for part in error.path) or "(object)"
    return [f"{where}: {error.message}"]


def declared_schema_problems(resources: Iterable[DeclaredResource]) -> list[str]:
    """Schema problems of every built-in object among ``resources``, as ``Kind/name: field: reason``."""
    problems = []
    for resource in resources:
        try:
            errors = schema_errors(resource.inputs)
        except NotBuiltIn:
            continue
        problems += [f"{resource.kind}/{resource.name}: {error}" for error in errors]
    return problems
