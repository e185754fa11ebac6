"""Validate Kubernetes objects against the OpenAPI schema of the version the platform targets."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from tenancy import versions


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
