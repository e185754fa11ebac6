"""Find the files of a render directory (written by ``tenancy.render.write``) for checks that read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenancy.render.write import HELM_DIR, MANIFESTS_DIR, OUTPUTS_FILE
from tenancy.spec.yaml_loading import load_yaml


def is_stack_directory(path: Path) -> bool:
    return path.is_dir() and any((path / entry).exists() for entry in (OUTPUTS_FILE, MANIFESTS_DIR, HELM_DIR))


def stack_directories(root: Path) -> list[Path]:
    """``root`` itself when it is one stack's render, else every stack render directly below it."""
    if is_stack_directory(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(child for child in root.iterdir() if is_stack_directory(child))


def manifest_files(stack_directory: Path) -> list[Path]:
    return sorted((stack_directory / MANIFESTS_DIR).glob("*/*.yaml"))


def release_files(stack_directory: Path) -> list[Path]:
    return sorted((stack_directory / HELM_DIR).glob("*.yaml"))


def load_document(path: Path) -> Any:
    return load_yaml(path.read_text(encoding="utf-8"))


def is_patch_file(path: Path, kind: str) -> bool:
    """Patches (``NamespacePatch-x.yaml``) hold part of an object: not checked as whole objects."""
    return path.name.startswith(f"{kind}Patch-")
