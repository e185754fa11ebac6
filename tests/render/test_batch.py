"""``render --all`` across worker processes: the same files, reports, logs and errors as one after another."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import pytest

from tenancy.render import batch
from tenancy.render.batch import StackRender, render_stacks
from tenancy.render.runtime import capture_program
from tenancy.render.write import RenderedStack, RenderError, render_capture, write_rendered
from tenancy.spec.errors import SpecError
from tests.conftest import PROJECT_DIR

TENANT_STACKS = ["dev.acme", "dev.initech", "prod.globex"]  # three: the first here, two in workers


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def _report(render: StackRender, out: Path) -> tuple[object, ...]:
    return (
        render.stack,
        render.manifest_count,
        render.release_count,
        render.warnings,
        render.directory.relative_to(out),
    )


def test_workers_write_the_same_bytes_and_report_the_same_as_one_after_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reports, files, logged = {}, {}, {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs-{jobs}"
        caplog.clear()
        reports[jobs] = [
            _report(r, out) for r in render_stacks(TENANT_STACKS, project_dir=PROJECT_DIR, out=out, jobs=jobs)
        ]
        files[jobs] = _files(out)
        logged[jobs] = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]

    assert [r[0] for r in reports[2]] == TENANT_STACKS
    assert reports[2] == reports[1]
    assert files[2] == files[1]
    # What the programs log in a worker is logged here, as when rendered in this process.
    assert logged[2] == logged[1]
    assert any("qdrant.snapshots is on" in message for _, _, message in logged[1])


def test_a_failing_stack_is_reported_at_its_place_after_the_stacks_before_it(tmp_path: Path) -> None:
    stacks = ["dev.initech", "prod.globex", "prod.nobody", "dev.acme"]
    seen: dict[int, tuple[list[str], list[str]]] = {}
    for jobs in (1, 2):
        rendered = []
        with pytest.raises(SpecError) as error:
            for render in render_stacks(
                stacks, project_dir=PROJECT_DIR, out=tmp_path / f"jobs-{jobs}", jobs=jobs
            ):
                rendered.append(render.stack)
        seen[jobs] = (rendered, [str(issue) for issue in error.value.issues])

    assert seen[1][0] == ["dev.initech", "prod.globex"]
    assert "nobody.yaml" in "".join(seen[1][1])
    assert seen[2] == seen[1]


def _fake_render(fail: dict[str, Exception]):  # type: ignore[no-untyped-def]
    """A render_stack that writes nothing and fails as told; fast, for the error paths."""

    def render_stack(stack: str, *, project_dir: Path, out: Path) -> tuple[RenderedStack, Path]:
        if stack in fail:
            raise fail[stack]
        return RenderedStack(stack=stack, files={"outputs.yaml": "{}\n"}), out / stack

    return render_stack


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("held a lock")
        self.lock = threading.Lock()


@pytest.mark.parametrize(
    ("error", "raised", "text"),
    [
        (
            RenderError("refusing to replace OUT/c: it holds notes.txt"),
            RenderError,
            "refusing to replace OUT/c",
        ),
        (ValueError("a bug in a program"), ValueError, "a bug in a program"),
        (_Unpicklable(), RuntimeError, "held a lock"),
    ],
)
def test_an_error_in_a_worker_reaches_the_caller_at_its_stack(
    error: Exception, raised: type[Exception], text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "render_stack", _fake_render({"c": error}))  # workers fork with it

    rendered = []
    with pytest.raises(raised) as caught:
        for render in render_stacks(["a", "b", "c", "d", "e"], project_dir=tmp_path, out=tmp_path, jobs=2):
            rendered.append(render.stack)

    assert rendered == ["a", "b"]
    assert text in str(caught.value)
    if raised is ValueError:
        assert "render worker process" in "".join(getattr(caught.value, "__notes__", []))


def test_few_stacks_or_one_job_render_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*args: object, **kwargs: object) -> None:
        raise AssertionError("no worker process expected")

    monkeypatch.setattr(batch, "_render_in_workers", no_workers)
    monkeypatch.setattr(batch, "render_stack", _fake_render({}))

    assert [r.stack for r in render_stacks(["a", "b"], project_dir=tmp_path, out=tmp_path, jobs=2)] == [
        "a",
        "b",
    ]
    assert [r.stack for r in render_stacks(["a", "b", "c"], project_dir=tmp_path, out=tmp_path, jobs=1)] == [
        "a",
        "b",
        "c",
    ]


def test_validate_checks_each_stack_where_it_was_rendered_with_the_same_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pulumi_kubernetes as k8s

    def program() -> dict[str, object]:
        k8s.networking.v1.NetworkPolicy(  # type: ignore[call-overload]  # the typo is what is checked
            "typo", metadata={"name": "deny", "namespace": "team"}, spec={"podSelectr": {}}
        )
        return {}

    broken = render_capture(capture_program(program, stack="dev.team"))

    def render_stack(stack: str, *, project_dir: Path, out: Path) -> tuple[RenderedStack, Path]:
        return broken, write_rendered(broken, out / stack)

    monkeypatch.setattr(batch, "render_stack", render_stack)
    found = {
        jobs: [
            (r.stack, r.problems)
            for r in render_stacks(
                ["a", "b", "c"], project_dir=tmp_path, out=tmp_path / str(jobs), jobs=jobs, validate=True
            )
        ]
        for jobs in (1, 2)
    }

    assert found[2] == found[1]
    assert [len(problems) for _, problems in found[1]] == [1, 1, 1]
    assert "podSelectr" in found[1][0][1][0].error


def test_a_batch_leaves_the_garbage_collector_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "render_stack", _fake_render({"c": ValueError("stop")}))
    frozen_before = gc.get_freeze_count()

    for jobs in (1, 2):
        with pytest.raises(ValueError):
            for _ in render_stacks(["a", "b", "c", "d"], project_dir=tmp_path, out=tmp_path, jobs=jobs):
                assert gc.get_freeze_count() >= frozen_before

    assert gc.get_freeze_count() == frozen_before


def test_the_default_is_one_worker_per_cpu_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda _: set(range(2)))
    assert batch.default_jobs() == 2
    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda _: set(range(64)))
    assert batch.default_jobs() == batch.MAX_DEFAULT_JOBS
