"""Policy objects from render output: a render directory on disk, or a render still in memory.

Masked secrets are hidden values (``PolicyObject.hidden``): a finding about one is undecided, since the
render does not show what the program passes there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tenancy.policy.model import FieldPath, PolicyObject, manifest_object, release_object
from tenancy.render.read import (
    is_patch_file,
    load_document,
    manifest_files,
    release_files,
    stack_directories,
)
from tenancy.render.redact import PLACEHOLDER
from tenancy.render.write import HELM_DIR, MANIFESTS_DIR, RenderedStack
from tenancy.spec.yaml_loading import load_yaml, yaml_problem


def masked_paths(value: Any, path: FieldPath = ()) -> list[FieldPath]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in masked_paths(item, (*path, str(key)))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in masked_paths(item, (*path, index))]
    return [path] if value == PLACEHOLDER else []


def _manifest(document: Any, *, stack: str, origin: str, file_name: str) -> PolicyObject | None:
    if not isinstance(document, dict):
        return None
    patch = is_patch_file(Path(file_name), str(document.get("kind")))
    return manifest_object(document, stack=stack, origin=origin, patch=patch, hidden=masked_paths(document))


def _release(document: Any, *, stack: str, origin: str) -> PolicyObject | None:
    if not isinstance(document, dict):
        return None
    return release_object(document, stack=stack, origin=origin, hidden=masked_paths(document))


class UnreadableRender(ValueError):
    """A file of the render directory that is not YAML text (edited by hand, cut short): its path and
    why, as a person reads it."""


def _load(path: Path, origin: str) -> Any:
    try:
        return load_document(path)
    except yaml.YAMLError as error:
        raise UnreadableRender(f"{origin}: not valid YAML: {yaml_problem(error)}") from None
    except UnicodeDecodeError as error:
        raise UnreadableRender(f"{origin}: not UTF-8 text (byte {error.start})") from None


def objects_from_directory(root: Path) -> list[PolicyObject]:
    """Every object of every stack rendered below ``root`` (or of the one stack ``root`` is); raises
    ``UnreadableRender`` naming a file that cannot be read."""
    objects: list[PolicyObject] = []
    for directory in stack_directories(root):
        stack = directory.name
        for path in manifest_files(directory):
            origin = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
            found = _manifest(_load(path, origin), stack=stack, origin=origin, file_name=path.name)
            if found is not None:
                objects.append(found)
        for path in release_files(directory):
            origin = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
            release = _release(_load(path, origin), stack=stack, origin=origin)
            if release is not None:
                objects.append(release)
    return objects


def objects_from_render(rendered: RenderedStack) -> list[PolicyObject]:
    """The objects of a render that was not written to disk."""
    objects: list[PolicyObject] = []
    for relative, text in rendered.files.items():
        origin = f"{rendered.stack}/{relative}"
        document = load_yaml(text)
        found = None
        if relative.startswith(f"{MANIFESTS_DIR}/"):
            found = _manifest(
                document, stack=rendered.stack, origin=origin, file_name=relative.rsplit("/", 1)[-1]
            )
        elif relative.startswith(f"{HELM_DIR}/"):
            found = _release(document, stack=rendered.stack, origin=origin)
        if found is not None:
            objects.append(found)
    return objects
