"""Every example stack (both platform stacks, each tenants/<env>/<name>.yaml) renders, validates, passes.

These run over the real stacks, whatever components they declare today: they check that rendering works
and that its FILES hold up (schema, secrets, policies), not what a stack contains.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tenancy.policy.rules import check_stacks
from tenancy.policy.sources import objects_from_directory
from tenancy.render.batch import default_jobs, render_stacks
from tenancy.render.read import stack_directories
from tenancy.render.runtime import GENERATED, PLACEHOLDER_KUBECONFIG
from tenancy.render.validate import schema_problems
from tenancy.render.write import example_stacks
from tests.conftest import PROJECT_DIR

STACKS = example_stacks(PROJECT_DIR)


def _render_all(out: Path, *, jobs: int) -> Path:
    for _ in render_stacks(STACKS, project_dir=PROJECT_DIR, out=out, jobs=jobs):
        pass
    return out


@pytest.fixture(scope="module")
def render_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``render --all`` writes: in worker processes where there are CPUs for them."""
    return _render_all(tmp_path_factory.mktemp("render"), jobs=max(2, default_jobs()))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_example_stack_renders_into_its_own_directory(render_dir: Path) -> None:
    assert [d.name for d in stack_directories(render_dir)] == sorted(STACKS)


def test_every_rendered_builtin_object_matches_the_kubernetes_schema(render_dir: Path) -> None:
    assert [str(p) for p in schema_problems(render_dir)] == []


def test_no_generated_secret_or_kubeconfig_appears_in_any_rendered_file(render_dir: Path) -> None:
    for path, content in _tree(render_dir).items():
        text = content.decode()
        assert GENERATED not in text, path
        assert PLACEHOLDER_KUBECONFIG.strip() not in text, path


def test_every_example_stack_passes_every_policy(render_dir: Path) -> None:
    decided = [
        f"{v.origin}: {v.message}"
        for v in check_stacks(objects_from_directory(render_dir))
        if not v.undecided
    ]
    assert decided == []


def test_rendering_twice_gives_the_same_bytes_in_workers_or_one_after_another(
    render_dir: Path, tmp_path: Path
) -> None:
    assert _tree(_render_all(tmp_path, jobs=1)) == _tree(render_dir)
