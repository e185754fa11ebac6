"""Hide secret values in a captured stack, so render output is safe to post in a pull request.

Three sources of secrets are masked: values the program marked secret (``DeclaredResource.secret_paths``,
``StackCapture.secret_outputs``), the data of Kubernetes Secrets, and values generated at deploy time
(passwords, keys, the vCluster kubeconfig). Under mocks a generated value is a known placeholder token
(``tenancy.render.runtime.GENERATED``); it is masked wherever it appears, even inside a longer string
such as a connection URL, or base64-encoded.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tenancy.render.runtime import GENERATED, PLACEHOLDER_KUBECONFIG, StackCapture

PLACEHOLDER = "<secret>"
SECRET_DATA_FIELDS = ("data", "stringData")


def mask_paths(value: Any, paths: Iterable[Sequence[str]]) -> Any:
    """``value`` with what each path (keys, and list indexes as strings) leads to masked.

    The shape stays: a masked mapping keeps its keys and a masked list its length, only the leaves
    become the placeholder, so a masked object still validates and a reviewer sees which keys exist.
    """
    result = value
    for path in paths:
        result = _mask_path(result, tuple(path))
    return result


def mask_leaves(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: mask_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_leaves(v) for v in value]
    return PLACEHOLDER


def _mask_path(value: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return mask_leaves(value)
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping) and head in value:
        return {k: (_mask_path(v, rest) if k == head else v) for k, v in value.items()}
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        index = int(head)
        return [_mask_path(v, rest) if i == index else v for i, v in enumerate(value)]
    return value


def mask_secret_data(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret with every value of ``data``/``stringData`` masked (keys stay: they are not secret)."""
    masked = dict(manifest)
    if manifest.get("kind") == "Secret" and str(manifest.get("apiVersion", "")) == "v1":
        for field in SECRET_DATA_FIELDS:
            entries = manifest.get(field)
            if isinstance(entries, Mapping):
                masked[field] = dict.fromkeys(entries, PLACEHOLDER)  # keys name what is stored; not secret
    return masked


class GeneratedValues:
    """Masks every value the deployment would generate: the tokens mocks return for random resources."""

    def __init__(self, tokens: Iterable[str]) -> None:
        plain = {token for token in tokens if token}
        encoded = {base64.b64encode(token.encode()).decode() for token in plain}
        # Longest first, so a token that extends another is replaced whole.
        self.tokens = sorted(plain | encoded, key=lambda t: (-len(t), t))

    @classmethod
    def of(cls, capture: StackCapture) -> GeneratedValues:
        tokens = [f"{GENERATED}-{r.name}" for r in capture.resources if r.type.startswith("random:")]
        return cls([*tokens, PLACEHOLDER_KUBECONFIG])

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrub_text(value)
        if isinstance(value, Mapping):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def _scrub_text(self, text: str) -> str:
        for token in self.tokens:
            if token in text:
                text = text.replace(token, PLACEHOLDER)
        # A generated value the capture did not name (a new kind of generator): hide the whole string.
        return PLACEHOLDER if GENERATED in text else text
