"""How every component declares a pinned Helm release and a custom resource, so all releases get the
same pinning, history and failure handling, and every custom resource is declared from a manifest."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.namespace import Manifest
from tenancy.versions import ChartPin


def helm_release(
    resource_name: str,
    *,
    release: str,
    namespace: pulumi.Input[str],
    pin: ChartPin,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    timeout_seconds: int | None = None,
) -> k8s.helm.v3.Release:
    """Release ``release`` of the pinned chart ``pin``; a failed install or upgrade is rolled back."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release,
        namespace=namespace,
        chart=pin.chart,
        version=pin.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo),
        values=values,
        max_history=10,
        cleanup_on_fail=True,
        timeout=timeout_seconds,
        opts=opts,
    )


def custom_resource(
    resource_name: str, manifest: Manifest, opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=manifest["metadata"],
        spec=manifest["spec"],
        opts=opts,
    )
