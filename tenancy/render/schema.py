"""Validate Kubernetes objects against the OpenAPI schema of the version the platform targets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import kubernetes_validate

from tenancy import versions

if TYPE_CHECKING:
    from tenancy.render.runtime import DeclaredResource


class NotBuiltIn(Exception):
    """The object's kind is not part of Kubernetes (a custom resource): no schema to check here."""


def schema_errors(manifest: dict[str, Any], *, version: str = versions.KUBERNETES_VERSION) -> list[str]:
    """Problems with ``manifest`` under the strict schema (unknown fields are errors); [] when valid.

    Raises NotBuiltIn for custom resources.
    """
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise NotBuiltIn(f"{manifest.get('apiVersion')}/{manifest.get('kind')}") from None
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(object)"
        return [f"{where}: {error.message}"]
    return []


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
