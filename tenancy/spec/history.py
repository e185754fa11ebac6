"""Tenant specs as they were at an earlier git revision (the base branch of a pull request)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import CONFIG_NAMESPACE, PlatformConfig
from tenancy.spec.tenant import TenantSpec, parse_tenant
from tenancy.spec.tree import TenantTree
from tenancy.spec.yaml_loading import load_yaml


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)


def specs_at_revision(tree: TenantTree, revision: str) -> dict[tuple[str, str], TenantSpec]:
    """The spec each tenant of ``tree`` had at ``revision``; tenants new since then, or whose old file
    did not validate, are left out. Raises SpecError when ``revision`` cannot be read."""
    top = _git(tree.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise SpecError(
            [
                SpecIssue(
                    str(tree.root),
                    "",
                    "is not inside a git repository; --against needs one",
                    subject="directory",
                )
            ]
        )
    toplevel = Path(top.stdout.strip())
    if _git(toplevel, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
        raise SpecError(
            [
                SpecIssue(
                    f"revision {revision!r}", "", "is not a commit in this repository", subject="revision"
                )
            ]
        )
    previous: dict[tuple[str, str], TenantSpec] = {}
    for tenant_file in tree.files:
        relative = tenant_file.path.resolve().relative_to(toplevel.resolve()).as_posix()
        shown = _git(toplevel, "show", f"{revision}:{relative}")
        if shown.returncode != 0:
            continue  # new tenant
        try:
            previous[(tenant_file.environment, tenant_file.spec.name)] = parse_tenant(
                load_yaml(shown.stdout), file=f"{revision}:{relative}"
            )
        except (SpecError, yaml.YAMLError):
            continue  # the old file was already invalid: nothing was applied from it to protect
    return previous


def platform_storage_classes(tree: TenantTree, revision: str) -> dict[str, tuple[str, str]]:
    """Per environment, ``platform:storageClass`` at ``revision`` and in the working tree.

    The platform files are ``Pulumi.<env>.yaml`` beside the tenants directory (the project layout). An
    environment is left out when either file is missing: nothing is known about its volumes' default.
    The class at ``revision`` is the one volumes relying on the default were created with.
    """
    project = tree.root.resolve().parent
    top = _git(project, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return {}
    toplevel = Path(top.stdout.strip()).resolve()
    classes: dict[str, tuple[str, str]] = {}
    for environment in sorted({tenant_file.environment for tenant_file in tree.files}):
        path = project / f"Pulumi.{environment}.yaml"
        if not path.is_file():
            continue
        shown = _git(toplevel, "show", f"{revision}:{path.relative_to(toplevel).as_posix()}")
        if shown.returncode != 0:
            continue
        try:
            then = _storage_class(load_yaml(shown.stdout))
            now = _storage_class(load_yaml(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError):
            continue
        if then is not None and now is not None:
            classes[environment] = (then, now)
    return classes


def _storage_class(document: object) -> str | None:
    """``platform:storageClass`` of a stack config document, its default when unset; None if unreadable."""
    if not isinstance(document, dict):
        return None
    config = document.get("config") or {}
    if not isinstance(config, dict):
        return None
    value = config.get(f"{CONFIG_NAMESPACE}:storageClass")
    if value is None:
        return str(PlatformConfig.model_fields["storage_class"].default)
    return value if isinstance(value, str) else None


def expandable_storage_classes(tree: TenantTree) -> dict[str, frozenset[str]]:
    """Per environment, ``platform:expandableStorageClasses`` in the working tree's ``Pulumi.<env>.yaml``
    (the classes whose volumes may grow now); an environment without a readable file lists none."""
    project = tree.root.resolve().parent
    classes: dict[str, frozenset[str]] = {}
    for environment in sorted({tenant_file.environment for tenant_file in tree.files}):
        try:
            document = load_yaml((project / f"Pulumi.{environment}.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        config = document.get("config") if isinstance(document, dict) else None
        listed = (
            config.get(f"{CONFIG_NAMESPACE}:expandableStorageClasses") if isinstance(config, dict) else None
        )
        if isinstance(listed, list):
            classes[environment] = frozenset(name for name in listed if isinstance(name, str))
    return classes
