"""Each captured stack runs in a Pulumi runtime of its own: nothing one capture sets reaches the next.

``render --all`` captures every stack in one process. Before, each capture added its stack
transformation to one shared root resource, so every later resource ran all earlier captures'
transformations and their recorded state stayed alive (issue #11: quadratic time and memory).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import settings as pulumi_settings

from tenancy.render.runtime import capture_program, capture_stack
from tenancy.render.write import render_capture
from tests.conftest import PROJECT_DIR


def _runtime_report() -> Mapping[str, Any]:
    """A program that declares one object and reports the runtime it ran in."""
    k8s.core.v1.ConfigMap("probe", metadata={"name": "probe", "namespace": "team"}, data={"a": "b"})
    root = pulumi_settings.get_root_resource()
    assert root is not None
    return {
        "transformations": len(root._transformations or []),
        "root": root,  # the object, not its id: a collected root's id can be given to the next one
        "stack": pulumi.get_stack(),
        "config": pulumi.Config("platform").get("marker"),
    }


def _live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_a_stack_renders_the_same_bytes_after_another_stack_as_alone() -> None:
    alone = render_capture(capture_stack("dev.initech", project_dir=PROJECT_DIR)).files

    render_capture(capture_stack("prod.acme", project_dir=PROJECT_DIR))
    render_capture(capture_stack("dev", project_dir=PROJECT_DIR))
    after_others = render_capture(capture_stack("dev.initech", project_dir=PROJECT_DIR)).files

    assert after_others == alone


def test_every_capture_has_one_stack_transformation_and_a_new_root_resource() -> None:
    reports = [
        capture_program(
            _runtime_report, stack=f"dev.t{index}", config={"platform:marker": str(index)}
        ).outputs
        for index in range(4)
    ]

    assert [r["transformations"] for r in reports] == [1, 1, 1, 1]
    assert len({id(r["root"]) for r in reports}) == 4  # all four alive here, so ids are distinct
    assert [(r["stack"], r["config"]) for r in reports] == [(f"dev.t{i}", str(i)) for i in range(4)]


def test_config_of_one_capture_is_not_seen_by_the_next() -> None:
    capture_program(_runtime_report, stack="dev.a", config={"platform:marker": "a"})

    assert capture_program(_runtime_report, stack="dev.b").outputs["config"] is None


def test_a_capture_leaves_the_callers_runtime_as_it_found_it() -> None:
    root_before, stack_before = pulumi_settings.get_root_resource(), pulumi_settings.SETTINGS.stack
    config_before = dict(pulumi.runtime.config.CONFIG.get())

    capture_program(_runtime_report, stack="dev.elsewhere", config={"platform:marker": "x"})

    assert pulumi_settings.get_root_resource() is root_before
    assert pulumi_settings.SETTINGS.stack == stack_before
    assert dict(pulumi.runtime.config.CONFIG.get()) == config_before


def test_objects_alive_do_not_grow_with_the_number_of_captures() -> None:
    for _ in range(2):  # imports, caches and the thread pool warmed
        capture_stack("dev.initech", project_dir=PROJECT_DIR)
    baseline = _live_objects()

    for _ in range(5):
        capture_stack("dev.initech", project_dir=PROJECT_DIR)

    # A shared root resource kept about 160 objects per capture alive (800 here); what is left is
    # noise of a few dozen objects, whatever the number of captures.
    assert _live_objects() - baseline < 300


def test_a_capture_runs_on_a_thread_whose_event_loop_was_unset() -> None:
    # The self-service preview sets a private loop per capture and unsets it afterwards.
    asyncio.set_event_loop(None)

    assert capture_program(_runtime_report, stack="dev.after").outputs["transformations"] == 1
