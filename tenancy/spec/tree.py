"""The ``tenants/`` tree: ``tenants/<env>/<name>.yaml``, one tenant per file.

One directory per environment keeps a pull request's blast radius visible in its paths and lets CI
pick the stacks a change touches from the file names alone.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import Tenant, TenantSpec, parse_tenant, resolve
from tenancy.spec.yaml_loading import load_tenant_yaml, yaml_problem

ENVIRONMENTS = ("dev", "prod")
_IGNORED_SUFFIXES = (".md",)


class TenantFile:
    """One valid tenant file: its environment, path, tenant name and ``spec``.

    A file of a tree checked with forked workers (big trees, ``_check_files``) arrives with its text
    and name instead of a spec: the spec is that text parsed and validated again here, on first use
    (the same text gives the same spec). ``tenantctl validate`` needs only names, so it never pays
    for a file's check twice; a command that reads every spec of a big tree pays for it twice (about
    0.1 ms a file, far below what it does with the spec).
    ``load_tenants`` also builds a file's ``path`` on first use: a Path per file was a tenth of what
    this process did outside the checks of a 10,000-file tree.
    """

    __slots__ = ("_path", "_spec", "_text", "_where", "environment", "name")

    def __init__(
        self,
        environment: str,
        path: Path,
        spec: TenantSpec | None = None,
        *,
        name: str | None = None,
        text: str | None = None,
    ) -> None:
        if spec is None and name is None:
            raise ValueError("a TenantFile needs its spec, or a checked file's text and its name")
        self.environment = environment
        self._path: Path | None = path
        self._where: tuple[Path, str] | None = None
        self.name: str = spec.name if spec is not None else name  # type: ignore[assignment]
        self._spec = spec
        self._text = text

    @classmethod
    def _found(
        cls,
        environment: str,
        directory: Path,
        file_name: str,
        spec: TenantSpec | None,
        name: str,
        text: str | None,
    ) -> TenantFile:
        """A file of ``load_tenants``: its path is ``directory / file_name``, built when first read."""
        found = cls.__new__(cls)
        found.environment = environment
        found._path = None
        found._where = (directory, file_name)
        found.name = name
        found._spec = spec
        found._text = text
        return found

    @property
    def path(self) -> Path:
        if self._path is None:
            assert self._where is not None  # _found gives one or the other
            self._path = self._where[0] / self._where[1]
        return self._path

    @property
    def spec(self) -> TenantSpec:
        if self._spec is None:
            # The text is kept: a thread reading the spec at the same time builds the same one.
            assert self._text is not None  # __init__ is given one of the two
            self._spec = TenantSpec.model_validate(load_tenant_yaml(self._text)[0])
        return self._spec

    @property
    def tenant(self) -> Tenant:
        return resolve(self.spec, self.environment)

    def __repr__(self) -> str:
        return f"TenantFile(environment={self.environment!r}, path={self.path!r}, name={self.name!r})"


@dataclass
class TenantTree:
    root: Path
    files: list[TenantFile] = field(default_factory=list)

    def environment(self, environment: str) -> list[TenantFile]:
        return [f for f in self.files if f.environment == environment]

    def get(self, environment: str, name: str) -> TenantFile:
        for tenant_file in self.files:
            if tenant_file.environment == environment and tenant_file.name == name:
                return tenant_file
        raise KeyError(f"no tenant {name!r} in {self.root / environment}")


def _display(path: Path, root: Path) -> str:
    try:
        return str(Path(root.name) / path.relative_to(root))
    except ValueError:
        return str(path)


def read_tenant_file(path: Path, *, environment: str, display: str | None = None) -> TenantSpec:
    """Parse and validate one tenant file; SpecError names the file, field and reason."""
    return _check_file(path, display or str(path))[1]


# A tenant file is a page of YAML; one of megabytes is a mistake (or an attack on the check and the
# render), refused before it is parsed.
MAX_TENANT_FILE_BYTES = 64 * 1024


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _read_text(path: Path | str) -> str:
    """What ``Path.read_text(encoding="utf-8")`` gives (strict UTF-8, universal newlines), with the
    same errors, from plain system calls: a text file object was a tenth of a small file's check.
    ``_TooLarge`` past ``MAX_TENANT_FILE_BYTES``, read no further."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # not inherited (PEP 446)
    try:
        chunks = []
        size = 0
        while chunk := os.read(descriptor, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_TENANT_FILE_BYTES:
                raise _TooLarge(size + os.fstat(descriptor).st_size - os.lseek(descriptor, 0, os.SEEK_CUR))
    finally:
        os.close(descriptor)
    text = b"".join(chunks).decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _check_file(path: Path | str, shown: str) -> tuple[str, TenantSpec]:
    """The file's text and its spec; SpecError names the file, field and reason."""
    text = None
    try:
        text = _read_text(path)
        data, strings = load_tenant_yaml(text)
    except yaml.YAMLError as error:
        raise SpecError([SpecIssue(shown, "", yaml_problem(error, text))]) from None
    except UnicodeDecodeError as error:
        raise SpecError([SpecIssue(shown, "", _not_utf8(error))]) from None
    except OSError as error:
        raise SpecError([SpecIssue(shown, "", f"cannot be read: {error.__class__.__name__}")]) from None
    except _TooLarge as large:
        reason = f"is {large.size:,} bytes; a tenant file is at most {MAX_TENANT_FILE_BYTES // 1024} KiB"
        raise SpecError([SpecIssue(shown, "", reason)]) from None
    return text, parse_tenant(data, file=shown, strings=strings)


def _not_utf8(error: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, for its author's editor (a Latin-1 "é" is the usual one)."""
    data = bytes(error.object)
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (
        f"line {line}, column {column}: byte 0x{data[error.start]:02x} is not UTF-8 text "
        "(tenant files are UTF-8); save the file as UTF-8"
    )


def _check_chunk(chunk: list[tuple[str, str]]) -> list[tuple[bool, Any]]:
    """In a worker: (True, (name, text)) for each valid file, (False, its issues) for the others. The
    text, not the spec or the document, goes back: pickling a spec costs more than parsing and
    validating it again, which only a command that reads the spec does (``TenantFile.spec``), and a
    string pickles in one copy where a document's nested values are pickled one by one."""
    checked: list[tuple[bool, Any]] = []
    for path, shown in chunk:
        try:
            text, spec = _check_file(path, shown)
            checked.append((True, (spec.name, text)))
        except SpecError as error:
            checked.append((False, error.issues))
    return checked


WORKERS_VARIABLE = "TENANCY_VALIDATE_WORKERS"
_PARALLEL_MIN_FILES = 500  # below this, starting workers costs about what they save


def _worker_count(files: int) -> int:
    """Processes to check ``files`` tenant files with: the CPUs this process may use (or
    TENANCY_VALIDATE_WORKERS); one for small trees, when other threads run (fork copies only the
    calling thread, and a lock another thread holds would stay held in the child) or when gRPC is
    loaded (the Pulumi SDK's: its own threads and fork handlers)."""
    configured = _configured_workers()
    if files < _PARALLEL_MIN_FILES or threading.active_count() > 1 or "grpc" in sys.modules:
        return 1
    if configured is not None:
        return configured
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _configured_workers() -> int | None:
    """TENANCY_VALIDATE_WORKERS, if set: a whole number of processes, 1 or more; SpecError otherwise
    (checked whatever the tree's size, so a typo shows at once rather than on the first big tree)."""
    value = os.environ.get(WORKERS_VARIABLE)
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise SpecError(
            [
                SpecIssue(
                    "environment",
                    WORKERS_VARIABLE,
                    f"is {value!r}: set it to the number of processes that check tenant files, "
                    "1 or more (1 checks them in this process only), or unset it for one per CPU",
                )
            ]
        )
    return count


# What a file a worker checked costs this process, as a fraction of a check: its text
# unpickled and its entry built. Since this process keeps text rather than specs for its own files
# too (and a worker pickles what it sends), it came out at nothing or less: at 10,000 files, with
# 0.12 this process's share of the parallel part took 0.83-0.86 of a worker's CPU, with 0 about
# 0.85-0.9 (bench_validate's and balance runs at load 9-11), so the shares are now equal.
_SHIPPED_COST = 0.0


def _check_files(files: list[tuple[str, str]], workers: int) -> list[_Checked]:
    """Each file's spec or issues, in order. With several workers this process checks the first
    files while forked processes check the others (the imports are done, so a fork starts in
    milliseconds) and send back each valid file's name and text, from which ``TenantFile``
    builds its spec again only if a command reads it (same text, same spec; pickling a spec
    costs more than that). This process keeps name and text for its own valid files too: the
    specs it kept (a dozen tracked objects each) were what the garbage collector went through when
    it resumed and again at exit, a tenth of a second of this process's serial tail at 10,000
    files, and ``tenantctl validate`` reads names only. The garbage
    collector is paused meanwhile: each file leaves its spec alive, so every collection went through
    all the earlier ones for nothing (a tenth of the time); the few cycles left behind are collected
    when it resumes."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        if workers <= 1:
            return [_checked(path, shown) for path, shown in files]
        import multiprocessing  # only big trees need it
        from concurrent.futures import ProcessPoolExecutor

        # This process's share: what leaves it as busy as each worker, counting what a shipped file
        # costs it (_SHIPPED_COST; measured here: bench_validate gives the CPU of this process and
        # of the workers apart).
        per_worker = 1 / (workers - 1)
        own = max(0, int(len(files) * (per_worker - _SHIPPED_COST) / (per_worker + 1 - _SHIPPED_COST)))
        rest = files[own:]
        size = max(50, -(-len(rest) // ((workers - 1) * 4)))  # a few chunks per worker: they end together
        chunks = [rest[start : start + size] for start in range(0, len(rest), size)]
        # Not multiprocessing.Pool: it waits forever for the chunk of a worker that died (the OOM
        # killer, a crash in a C extension); the executor raises BrokenProcessPool instead.
        pool = ProcessPoolExecutor(
            max(1, min(workers - 1, len(chunks))), mp_context=multiprocessing.get_context("fork")
        )
        try:
            pending = [pool.submit(_check_chunk, chunk) for chunk in chunks]
            results: list[_Checked] = [
                _Shipped._make(payload) if valid else payload for valid, payload in _check_chunk(files[:own])
            ]
            for future in pending:
                for valid, payload in future.result():
                    results.append(_Shipped._make(payload) if valid else payload)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results
    finally:
        if collecting:
            gc.enable()


class _Shipped(NamedTuple):
    """A file found valid in a check with workers: its tenant name and text (its spec is built again
    when a command reads it)."""

    name: str
    text: str


_Checked = TenantSpec | _Shipped | list[SpecIssue]


def _checked(path: str, shown: str) -> TenantSpec | list[SpecIssue]:
    try:
        return _check_file(path, shown)[1]
    except SpecError as error:
        return error.issues


def _file_name_issue(name: str, path: Path, shown: str) -> SpecIssue:
    return SpecIssue(
        shown,
        "name",
        f"is {name!r} but the file is named {path.name}; rename the file to {name}.yaml or fix the name",
    )


# One entry of the walk: its parts relative to the root, its path as scandir gives it, and whether
# it is a directory (a tuple: the walk makes one per file of the tree).
_Entry = tuple[tuple[str, ...], str, bool, bool]  # parts, path, is a directory, is a symbolic link


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
            name = entry.name
            if name.startswith("."):
                continue
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            link = entry.is_symlink()
            is_dir = Path(entry.path).is_dir() if not real_dir and link else real_dir
            found.append(((*parts, name), entry.path, is_dir, link))
            if real_dir:
                visit(entry.path, (*parts, name))

    visit(str(root), ())
    return found


def _found_above(root: Path) -> str:
    """For a relative tenants directory that is missing: the nearest folder above the current one that
    has it (someone running from inside the project), as a hint; else nothing."""
    if root.is_absolute():
        return ""
    here = Path.cwd()
    for folder in here.parents:
        if (folder / root).is_dir():
            return f"; {folder / root} does: run from {folder}, or pass --project {folder}"
    return ""


def load_tenants(root: Path, environments: Iterable[str] = ENVIRONMENTS) -> TenantTree:
    """Load and validate every tenant file under ``root``; raise SpecError listing every problem found."""
    environments = tuple(environments)
    tree = TenantTree(root=root)
    issues: list[SpecIssue] = []
    if not root.is_dir():
        reason = "the tenants directory does not exist" + _found_above(root)
        raise SpecError([SpecIssue(str(root), "", reason, subject="directory")])

    prefix = f"{root.name}/" if root.name else ""  # what _display gives, without a Path per file
    # First the walk, keeping its issues and the files to check in path order; then the checks
    # (in parallel for big trees); then everything in the walk's order. Strings only until the
    # checks start: the workers fork after this loop, so what it costs is this process's alone.
    found: list[SpecIssue | int] = []  # an issue, or the index of a file in ``to_check``
    to_check: list[tuple[str, str]] = []  # (path, display name)
    located: list[tuple[str, str]] = []  # (environment, file name) of each file in ``to_check``
    for parts, path, is_dir, link in _entries(root):
        if parts[-1].endswith(_IGNORED_SUFFIXES):
            continue
        shown = prefix + "/".join(parts)
        if is_dir:
            if link:  # never entered: an environment linked elsewhere would read as one with no tenants
                found.append(
                    SpecIssue(
                        shown,
                        "",
                        f"is a symbolic link (to {os.readlink(path)}); an environment's tenants are files "
                        "in a directory of the repository (a link would read as an environment without "
                        "tenants, and sync --prune would destroy them)",
                        subject="directory",
                    )
                )
                continue
            if len(parts) == 1 and parts[0] not in environments:
                found.append(
                    SpecIssue(
                        shown,
                        "",
                        f"{parts[0]!r} is not an environment; tenant files live in {', '.join(environments)}",
                        subject="directory",
                    )
                )
            continue
        if len(parts) != 2 or parts[0] not in environments:
            found.append(
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
            found.append(SpecIssue(shown, "", "tenant files end in .yaml (not .yml or anything else)"))
            continue
        if link:
            found.append(
                SpecIssue(
                    shown,
                    "",
                    f"is a symbolic link (to {os.readlink(path)}); a tenant file is a regular file: git "
                    "keeps and a pull request shows only a link's target path, never what it points at",
                )
            )
            continue
        found.append(len(to_check))
        to_check.append((path, shown))
        located.append((parts[0], parts[1]))

    checked = _check_files(to_check, _worker_count(len(to_check)))
    environment_dirs = {environment: root / environment for environment in environments}
    shown_of: list[str] = []  # tree.files' display names
    stems: list[str] = []  # their file names less ".yaml"
    files = tree.files
    found_file = TenantFile._found
    for item in found:
        if isinstance(item, SpecIssue):
            issues.append(item)
            continue
        result = checked[item]
        if isinstance(result, list):
            issues.extend(result)
            continue
        environment, file_name = located[item]
        directory = environment_dirs[environment]
        if isinstance(result, _Shipped):
            files.append(found_file(environment, directory, file_name, None, result.name, result.text))
        else:
            files.append(found_file(environment, directory, file_name, result, result.name, None))
        shown_of.append(to_check[item][1])
        stems.append(file_name[: -len(".yaml")])

    duplicates = _duplicates(tree, root)
    issues.extend(duplicates)
    duplicated = {issue.file for issue in duplicates}
    for tenant_file, shown, stem in zip(files, shown_of, stems, strict=True):
        if tenant_file.name != stem and shown not in duplicated:
            issues.append(_file_name_issue(tenant_file.name, tenant_file.path, shown))
    if issues:
        raise SpecError(issues)
    return tree


def _duplicates(tree: TenantTree, root: Path) -> list[SpecIssue]:
    """Each file naming a tenant another file of its environment names too. The one the others are
    told about is the file named after the tenant (``<name>.yaml``) when there is one, else the first
    in path order: a stray copy (``aaa.yaml`` with ``name: acme``) is the one blamed, not ``acme.yaml``."""
    groups: dict[tuple[str, str], list[TenantFile]] = {}
    for tenant_file in tree.files:
        groups.setdefault((tenant_file.environment, tenant_file.name), []).append(tenant_file)
    issues = []
    for tenant_file in tree.files:
        group = groups[(tenant_file.environment, tenant_file.name)]
        if len(group) < 2:
            continue
        owner = next((f for f in group if f.path.stem == f.name), group[0])
        if tenant_file is owner:
            continue
        issues.append(
            SpecIssue(
                _display(tenant_file.path, root),
                "name",
                f"tenant {tenant_file.name!r} is already defined in {_display(owner.path, root)}",
            )
        )
    return issues
