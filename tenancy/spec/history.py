"""Tenant specs as they were at an earlier git revision (the base branch of a pull request)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import TenantSpec, parse_tenant
from tenancy.spec.tree import TenantTree


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)


def specs_at_revision(tree: TenantTree, revision: str) -> dict[tuple[str, str], TenantSpec]:
    """The spec each tenant of ``tree`` had at ``revision``; tenants new since then, or whose old file
    did not validate, are left out. Raises SpecError when ``revision`` cannot be read."""
    top = _git(tree.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise SpecError(
            [SpecIssue(str(tree.root), "", "is not inside a git repository; --against needs one")]
        )
    toplevel = Path(top.stdout.strip())
    if _git(toplevel, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
        raise SpecError([SpecIssue(f"revision {revision!r}", "", "is not a commit in this repository")])
    previous: dict[tuple[str, str], TenantSpec] = {}
    for tenant_file in tree.files:
        relative = tenant_file.path.resolve().relative_to(toplevel.resolve()).as_posix()
        shown = _git(toplevel, "show", f"{revision}:{relative}")
        if shown.returncode != 0:
            continue  # new tenant
        try:
            previous[(tenant_file.environment, tenant_file.spec.name)] = parse_tenant(
                yaml.safe_load(shown.stdout), file=f"{revision}:{relative}"
            )
        except (SpecError, yaml.YAMLError):
            continue  # the old file was already invalid: nothing was applied from it to protect
    return previous
