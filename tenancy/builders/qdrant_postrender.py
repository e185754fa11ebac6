"""Helm post-renderer of the Qdrant release: the image by digest, and no service-account token.

The pinned chart (qdrant 1.19.0, the newest release) cannot do either through values: it builds the
image as ``<repository>:<tag>`` and passes the tag to ``semverCompare`` for the readiness probe's path,
so a tag carrying ``@sha256:...`` fails the render; and it has no value for
``automountServiceAccountToken`` (its ServiceAccount has no RBAC and Qdrant never calls the Kubernetes
API; the Istio sidecar uses its own projected ``istio-token``, not this one). Helm runs this program on
the rendered manifests of every install and upgrade (``helm.v3.Release(postrender=...)``), and
``tenancy.policy.charts`` models it, so the policies see what the cluster gets.

Only the Qdrant image and the two token fields change; every other document passes through as
rendered. A tag without a digest recorded in ``tenancy.versions`` stops the install with a message
instead of running by tag.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from tenancy import versions

# The console script (pyproject.toml [project.scripts]); Helm finds it on PATH.
POST_RENDERER = "tenancy-qdrant-postrender"
POD_SPEC_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "Job"})
_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


class PostRenderError(Exception):
    """The rendered manifests name a Qdrant image this program has no digest for."""


def pinned_image(image: str) -> str:
    """``docker.io/qdrant/qdrant:<tag>`` -> ``...:<tag>@<digest>``; any other image unchanged."""
    prefix = f"{versions.QDRANT_IMAGE}:"
    if not image.startswith(prefix) or "@" in image:
        return image
    tag = image.removeprefix(prefix)
    digest = versions.QDRANT_IMAGE_DIGESTS.get(tag)
    if digest is None:
        raise PostRenderError(
            f"no digest is recorded for {image} in tenancy/versions.py QDRANT_IMAGE_DIGESTS: "
            f"record it there (the tag beside it) before offering Qdrant {tag}"
        )
    return f"{image}@{digest}"


def _harden_pod_spec(spec: dict[str, Any]) -> None:
    spec["automountServiceAccountToken"] = False
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                container["image"] = pinned_image(container["image"])


def _harden(document: dict[str, Any]) -> bool:
    """Change ``document`` in place; True when it changed."""
    kind = document.get("kind")
    if kind == "ServiceAccount":
        document["automountServiceAccountToken"] = False
        return True
    if kind in POD_SPEC_KINDS:
        template = document.get("spec", {}).get("template", {})
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _harden_pod_spec(template["spec"])
            return True
    return False


def post_render(manifests: str) -> str:
    """The rendered stream with the Qdrant image pinned and the token off; other documents verbatim."""
    out = []
    for text in _DOCUMENT_SEPARATOR.split(manifests):
        document = yaml.safe_load(text) if text.strip() else None
        if isinstance(document, Mapping):
            changed = dict(document)
            if _harden(changed):
                text = "\n" + yaml.safe_dump(changed, sort_keys=False)
        out.append(text)
    return "---".join(out)


def main() -> int:
    try:
        sys.stdout.write(post_render(sys.stdin.read()))
    except (PostRenderError, yaml.YAMLError) as error:
        sys.stderr.write(f"{POST_RENDERER}: {error}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
