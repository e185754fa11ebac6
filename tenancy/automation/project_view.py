"""A writable view of a read-only project: where the Pulumi CLI may write a stack's settings file.

``pulumi stack init`` and ``pulumi config set-all`` write ``Pulumi.<stack>.yaml`` (the stack's config
and its secrets provider's ``encryptionsalt``/``encryptedkey``) beside the project's ``Pulumi.yaml``: the
directory the CLI finds it in, walking up from its working directory. In the self-service pods the project
(``/app``) is root-owned on a read-only root filesystem, so the engine works in a writable directory
(``TENANCY_WORKSPACE_DIR``) holding one symbolic link per entry of the project (``Pulumi.yaml``,
``__main__.py``, the program's packages, ``.venv``, the platform stacks' files): the CLI finds the project
there, ``virtualenv: .venv`` and the program resolve through the links, and every stack settings file it
writes lands in the view, beside the links. Tenant stacks' settings files of the project itself
(``Pulumi.<env>.<tenant>.yaml``, a laptop's leftovers) are not linked: the CLI would write through them.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

# Pulumi.<env>.<tenant>.yaml (or .yml/.json): a tenant stack's settings file, written by the CLI.
_TENANT_STACK_FILE = re.compile(r"^Pulumi\.[^.]+\.[^.]+\.(ya?ml|json)$")
_PREPARED: set[tuple[Path, Path]] = set()
_LOCK = threading.Lock()


def linked_entries(project_dir: Path) -> list[str]:
    """The project's entries the view links (everything but tenant stacks' settings files)."""
    return sorted(entry.name for entry in project_dir.iterdir() if not _TENANT_STACK_FILE.match(entry.name))


def prepare_project_view(project_dir: Path, view_dir: Path) -> Path:
    """Make ``view_dir`` a view of ``project_dir`` (idempotent: once per process, and safe while other
    threads or processes build the same view: each link is created under a unique name and renamed into
    place, which is atomic). Files the CLI wrote there (stack settings files) are kept."""
    key = (project_dir, view_dir)
    with _LOCK:
        if key in _PREPARED:
            return view_dir
        if not (project_dir / "Pulumi.yaml").is_file():
            raise FileNotFoundError(f"{project_dir}/Pulumi.yaml: no Pulumi project in TENANCY_PROJECT_DIR")
        if view_dir == project_dir:
            _PREPARED.add(key)
            return view_dir
        view_dir.mkdir(parents=True, exist_ok=True)
        for name in linked_entries(project_dir):
            _link(project_dir / name, view_dir / name)
        _PREPARED.add(key)
        return view_dir


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.is_dir() and not link.is_symlink():
        raise FileExistsError(f"{link}: a directory where the project view links {target}")
    # A stale link, or a file under a project entry's name: replaced, the project's entry wins.
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    temporary.symlink_to(target)
    os.replace(temporary, link)


def forget_prepared_views() -> None:
    """Tests: build views again."""
    with _LOCK:
        _PREPARED.clear()
