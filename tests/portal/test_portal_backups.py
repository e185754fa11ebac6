"""The Backups page in a real headless Chromium: a tenant-admin backs up now, sees the backup listed
(time, size, collections, checksum), restores one named collection with its progress followed to the
end; the data is checked in the Qdrant stand-in, backups in moto's S3 server. No console errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tenancy.automation.contract import StackRef
from tenancy.service.app import create_app
from tenancy.service.core.config import ServiceSettings
from tests.conftest import PROJECT_DIR
from tests.dataops.conftest import StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster
from tests.portal.test_portal_browser import Session, browser  # noqa: F401 (fixture)
from tests.service.conftest import LiveServer, TenantEngine

ACME = StackRef("dev", "acme")


@pytest.fixture
def portal_with_data(
    tmp_path_factory: pytest.TempPathFactory,
    s3: Any,  # noqa: F811
) -> Iterator[tuple[LiveServer, ClusterState]]:
    with qdrant_cluster(2) as (acme, urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=10)
        acme.add_collection("faq", shards=1, replication_factor=1, points=3)
        settings = ServiceSettings(
            state_dir=tmp_path_factory.mktemp("portal-backups"),
            project_dir=PROJECT_DIR,
            workers=2,
            sse_poll_seconds=0.05,
            pulumi_preview=False,
        )
        data = StandinData({ACME: next(iter(urls.values()))}, s3)
        app = create_app(settings, engine=TenantEngine(), seed_tenants=PROJECT_DIR / "tenants", data=data)
        with LiveServer(app) as server:
            yield server, acme


def test_a_tenant_admin_backs_up_and_restores_a_named_collection(
    browser: Any,  # noqa: F811
    portal_with_data: tuple[LiveServer, ClusterState],
) -> None:
    portal, acme = portal_with_data
    alice = Session(browser, portal)
    page = alice.page
    alice.sign_in(name="alice", kind="admin", tenants="acme")
    page.goto(portal.url + "/#/t/dev/acme")
    page.get_by_role("link", name="Backups").click()
    page.get_by_role("heading", name="Backups of dev.acme").wait_for()
    page.locator("#no-backups").wait_for()

    page.get_by_role("button", name="Back up now").click()
    page.locator('#op-status[data-final="succeeded"]').wait_for()
    row = page.locator("#backup-list tbody tr")
    row.first.wait_for()
    assert row.count() == 1
    assert "docs, faq" in row.first.inner_text()
    backup_id = row.first.get_attribute("data-backup")
    assert backup_id and backup_id in row.first.inner_text()
    alice.shot("backups")

    before = acme.all_points("docs")
    acme.collections["docs"].shards[0].points.clear()  # lose data, then restore it
    page.get_by_label("Only these:").check()
    page.locator('#restore-collections input[value="docs"]').check()
    assert page.get_by_label("Restore into tenant").input_value() == "acme"
    page.get_by_role("button", name="Restore", exact=True).click()
    page.locator("dialog").get_by_role("button", name="Restore").click()
    page.locator("#op-events", has_text="restored collection docs").wait_for()  # the restore's progress
    page.locator('#op-status[data-final="succeeded"]').wait_for()
    assert "faq" not in page.locator("#op-events").inner_text()  # only the named collection
    assert acme.all_points("docs") == before
    alice.close()
