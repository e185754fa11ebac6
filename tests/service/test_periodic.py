"""The service's periodic jobs (deleted tenants' backup sweep, key grace timer) share one runner."""

from __future__ import annotations

import logging
import threading

import pytest

from tenancy.service.core.periodic import Periodic


def test_a_job_runs_at_start_again_after_a_failure_and_stops_when_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    third = threading.Event()

    def job() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("https://user:secret@example.invalid")  # its text is never logged
        if len(runs) == 3:
            third.set()

    periodic = Periodic(job, interval=0.01, name="test-job", what="the test job")
    with caplog.at_level(logging.ERROR, logger="tenancy.service"):
        periodic.start()
        periodic.start()  # a second start does not add a thread
        assert third.wait(10)
        periodic.stop()
    after_stop = len(runs)
    assert not any(t.name == "test-job" for t in threading.enumerate())
    assert len(runs) == after_stop
    assert [r.getMessage() for r in caplog.records] == ["the test job failed: RuntimeError"]
    assert "secret" not in caplog.text
