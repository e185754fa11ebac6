"""Check every rendered built-in object against the Kubernetes schema the platform targets (strict)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tenancy.render.read import is_patch_file, load_document, manifest_files, stack_directories
from tenancy.render.schema import NotBuiltIn, schema_errors


@dataclass(frozen=True)
class SchemaProblem:
    file: str  # relative to the directory that was checked
    subject: str  # "Kind namespace/name"
    error: str  # "field.path: what is wrong"

    def __str__(self) -> str:
        return f"{self.file}: {self.subject}: {self.error}"


def _subject(manifest: Mapping[str, object]) -> str:
    metadata = manifest.get("metadata")
    name = namespace = None
    if isinstance(metadata, Mapping):
        name, namespace = metadata.get("name"), metadata.get("namespace")
    where = f"{namespace}/{name}" if namespace else str(name)
    return f"{manifest.get('kind')} {where}"


def schema_problems(root: Path) -> list[SchemaProblem]:
    """Problems of every built-in object rendered below ``root`` (custom resources and patches skipped)."""
    problems = []
    for stack_directory in stack_directories(root):
        for path in manifest_files(stack_directory):
            shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
            manifest = load_document(path)
            if not isinstance(manifest, dict):
                problems.append(SchemaProblem(shown, "(not an object)", "the file does not hold one object"))
                continue
            if is_patch_file(path, str(manifest.get("kind"))):
                continue
            try:
                errors = schema_errors(manifest)
            except NotBuiltIn:
                continue
            problems += [SchemaProblem(shown, _subject(manifest), error) for error in errors]
    return problems
