"""The ``tenants/`` tree: ``tenants/<env>/<name>.yaml``, one tenant per file.

One directory per environment keeps a pull request's blast radius visible in its paths and lets CI
pick the stacks a change touches from the file names alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import Tenant, TenantSpec, parse_tenant, resolve
from tenancy.spec.yaml_loading import load_yaml

ENVIRONMENTS = ("dev", "prod")
_IGNORED_SUFFIXES = (".md",)


@dataclass(frozen=True)
class TenantFile:
    environment: str
    path: Path
    spec: TenantSpec

    @property
    def tenant(self) -> Tenant:
        return resolve(self.spec, self.environment)


@dataclass
class TenantTree:
    root: Path
    files: list[TenantFile] = field(default_factory=list)

    def environment(self, environment: str) -> list[TenantFile]:
        return [f for f in self.files if f.environment == environment]

    def get(self, environment: str, name: str) -> TenantFile:
        for tenant_file in self.files:
            if tenant_file.environment == environment and tenant_file.spec.name == name:
                return tenant_file
        raise KeyError(f"no tenant {name!r} in {self.root / environment}")


def _display(path: Path, root: Path) -> str:
    try:
        return str(Path(root.name) / path.relative_to(root))
    except ValueError:
        return str(path)


def read_tenant_file(path: Path, *, environment: str, display: str | None = None) -> TenantSpec:
    """Parse and validate one tenant file; SpecError names the file, field and reason."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([SpecIssue(shown, "", f"cannot be read: {error.__class__.__name__}")]) from None
    return _parse_tenant_text(text, shown)


def _parse_tenant_text(text: str, shown: str) -> TenantSpec:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SpecError([SpecIssue(shown, "", f"{where}{problem}")]) from None
    return parse_tenant(data, file=shown)


def _file_name_issue(spec: TenantSpec, path: Path, shown: str) -> SpecIssue | None:
    if spec.name == path.stem:
        return None
    return SpecIssue(
        shown,
        "name",
        f"is {spec.name!r} but the file is named {path.name}; "
        f"rename the file to {spec.name}.yaml or fix the name",
    )


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]  # relative to the root
    path: str
    is_dir: bool


def _entries(root: Path) -> list[_Entry]:
    """What ``sorted(root.rglob("*"))`` lists, in that order (each directory's entries sorted by name,
    depth first), less hidden entries and everything under them; without a Path per entry, which
    cost a tenth of ``tenantctl validate``. Like rglob, symlinked directories are listed but not
    entered, and an unreadable directory is listed with nothing under it."""
    found: list[_Entry] = []

    def visit(directory: str, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except PermissionError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            is_dir = Path(entry.path).is_dir() if entry.is_symlink() else real_dir
            found.append(_Entry((*parts, entry.name), entry.path, is_dir))
            if real_dir:
                visit(entry.path, (*parts, entry.name))

    visit(str(root), ())
    return found


def load_tenants(root: Path, environments: Iterable[str] = ENVIRONMENTS) -> TenantTree:
    """Load and validate every tenant file under ``root``; raise SpecError listing every problem found."""
    environments = tuple(environments)
    tree = TenantTree(root=root)
    issues: list[SpecIssue] = []
    if not root.is_dir():
        raise SpecError([SpecIssue(str(root), "", "the tenants directory does not exist")])

    prefix = f"{root.name}/" if root.name else ""  # what _display gives, without a Path per file
    shown_of: list[str] = []  # tree.files' display names
    environment_dirs: dict[str, Path] = {}
    for entry in _entries(root):
        parts = entry.parts
        if parts[-1].endswith(_IGNORED_SUFFIXES):
            continue
        shown = prefix + "/".join(parts)
        if entry.is_dir:
            if len(parts) == 1 and parts[0] not in environments:
                issues.append(
                    SpecIssue(
                        shown,
                        "",
                        f"{parts[0]!r} is not an environment; tenant files live in {', '.join(environments)}",
                    )
                )
            continue
        if len(parts) != 2 or parts[0] not in environments:
            issues.append(
                SpecIssue(
                    shown,
                    "",
                    "in the wrong place: a tenant file lives at "
                    f"{root.name}/<environment>/<name>.yaml, environment one of "
                    f"{', '.join(environments)}",
                )
            )
            continue
        if not parts[1].endswith(".yaml"):
            issues.append(SpecIssue(shown, "", "tenant files end in .yaml (not .yml or anything else)"))
            continue
        environment = parts[0]
        if environment not in environment_dirs:
            environment_dirs[environment] = root / environment
        path = environment_dirs[environment] / parts[1]
        try:
            spec = read_tenant_file(path, environment=environment, display=shown)
        except SpecError as error:
            issues.extend(error.issues)
            continue
        tree.files.append(TenantFile(environment=environment, path=path, spec=spec))
        shown_of.append(shown)

    duplicates = _duplicates(tree, root)
    issues.extend(duplicates)
    duplicated = {issue.file for issue in duplicates}
    for tenant_file, shown in zip(tree.files, shown_of, strict=True):
        if shown not in duplicated and (issue := _file_name_issue(tenant_file.spec, tenant_file.path, shown)):
            issues.append(issue)
    if issues:
        raise SpecError(issues)
    return tree


def _duplicates(tree: TenantTree, root: Path) -> list[SpecIssue]:
    seen: dict[tuple[str, str], TenantFile] = {}
    issues = []
    for tenant_file in tree.files:
        key = (tenant_file.environment, tenant_file.spec.name)
        if key in seen:
            first = _display(seen[key].path, root)
            issues.append(
                SpecIssue(
                    _display(tenant_file.path, root),
                    "name",
                    f"tenant {tenant_file.spec.name!r} is already defined in {first}",
                )
            )
        else:
            seen[key] = tenant_file
    return issues
