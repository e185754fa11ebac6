"""The portal in a real headless Chromium (Debian's package, driven by Playwright): sign in, create a
tenant and follow its operation to the end, edit it, reveal its key, create and revoke an API key,
request an upgrade as a tenant-admin, approve it and reject another as a platform-admin; no console
errors on the way. Screenshots of the main pages land in build/portal-screenshots/ for reviewers.

One browser for the module; the service is the real app (uvicorn on loopback, SQLite, git, the
local issuer's dev sign-in) with the engine double standing in for Pulumi.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.service.app import create_app
from tenancy.service.core.config import ServiceSettings
from tests.conftest import PROJECT_DIR
from tests.service.conftest import LiveServer, TenantEngine, secret_key_of

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = PROJECT_DIR / "build" / "portal-screenshots"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the portal tests (apt-get install chromium)")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    state = tmp_path_factory.mktemp("portal-state")
    settings = ServiceSettings(
        state_dir=state, project_dir=PROJECT_DIR, workers=2, sse_poll_seconds=0.05, pulumi_preview=False
    )
    engine = TenantEngine(delay=0.6)  # long enough to watch progress arrive
    app = create_app(settings, engine=engine, seed_tenants=PROJECT_DIR / "tenants")
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS, headless=True)
        yield browser
        browser.close()


class Session:
    """One person's browser context, recording console errors and failed page loads."""

    def __init__(self, browser: Any, portal: LiveServer, *, phone: bool = False) -> None:
        options: dict[str, Any] = {"viewport": {"width": 390, "height": 844}} if phone else {}
        self.context = browser.new_context(**options)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)  # previews render the program; CI machines are shared
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = portal.url

    def stray_nulls(self) -> int:
        """Text nodes that read "null": an optional part of a page passed on as null (found by an
        outside journey review on the sign-in page and on tenant and request pages)."""
        count: int = self.page.evaluate(
            """() => {
              const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
              let found = 0;
              while (walker.nextNode()) if (walker.currentNode.data.includes("null")) found++;
              return found;
            }"""
        )
        return count

    def sign_in(self, *, name: str, kind: str, tenants: str = "") -> None:
        page = self.page
        page.goto(self.url + "/")
        page.get_by_label("User name").wait_for()
        # Signed out: no navigation (its Sign out button included), and no stray "null".
        assert not page.is_visible("#signout") and not page.is_visible("#nav")
        assert self.stray_nulls() == 0
        page.get_by_label("User name").fill(name)
        page.get_by_label("Email (git author of your changes)").fill(f"{name}@example.com")
        page.get_by_label("Role").select_option(kind)
        if tenants:
            page.get_by_label("Tenants").fill(tenants)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Tenants").wait_for()

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


def _file(portal: LiveServer, name: str) -> dict[str, Any] | None:
    text = portal.app.state.backends.repository.read_text("dev", name)
    return yaml.safe_load(text) if text else None


def test_a_tenant_admin_creates_follows_edits_and_reveals(browser: Any, portal: LiveServer) -> None:
    alice = Session(browser, portal)
    page = alice.page
    alice.sign_in(name="alice", kind="admin", tenants="newco")
    page.get_by_role("link", name="New tenant").click()
    page.get_by_label("Name", exact=True).fill("newco")
    page.get_by_label("Owners").fill("alice@newco.example")
    # A size above the plan is shown beside its field, with the API's own message.
    page.get_by_label("Replicas").fill("9")
    error = page.locator('[data-error-for="qdrant.replicas"]')
    error.filter(has_text="exceed the small plan's maximum").wait_for()
    page.get_by_label("Replicas").fill("")
    page.locator("#preview-summary").filter(has_text="to create").wait_for()
    alice.shot("create-form")
    page.get_by_role("button", name="Create tenant").click()
    page.locator("#op-status[data-final]").wait_for()
    assert page.locator("#op-status").get_attribute("data-final") == "succeeded"
    assert page.locator("#op-events li").count() > 0  # progress arrived live over SSE
    page.locator('#tenant-phase[data-phase="ready"]').wait_for()  # the page refreshed after the end
    assert alice.stray_nulls() == 0  # no display name yet: nothing shown for it
    assert _file(portal, "newco")["plan"] == "small"  # type: ignore[index]

    # Edit: a change the tenant-admin may make alone is applied.
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Display name").fill("New Co")
    page.locator("#preview-summary").wait_for()  # the submit checks once more before it writes
    page.get_by_role("button", name="Save changes").click()
    page.locator("#op-status[data-final]").wait_for()
    page.locator('#tenant-phase[data-phase="ready"]').wait_for()
    assert _file(portal, "newco")["displayName"] == "New Co"  # type: ignore[index]
    # The form's controls show the defaults; saving pins none of them (a later default still applies).
    saved = _file(portal, "newco")
    assert saved is not None and "version" not in saved["qdrant"] and "vcluster" not in saved, saved
    assert "deletionProtection" not in saved and "readOnlyKey" not in saved["qdrant"], saved

    # Reveal the key after confirming; the reveal is audited.
    page.get_by_role("button", name="Reveal Qdrant API keys").click()
    page.get_by_role("dialog").get_by_role("button", name="Reveal").click()
    from tenancy.automation.contract import StackRef

    key = page.locator('[data-secret="API key"]')
    key.wait_for()
    assert key.inner_text() == secret_key_of(StackRef("dev", "newco"))
    audit = Path(portal.app.state.backends.settings.audit_target).read_text()
    assert "secret.reveal.qdrant-api-key" in audit and secret_key_of(StackRef("dev", "newco")) not in audit

    # API keys: created (shown once), then revoked.
    page.get_by_label("Name", exact=True).fill("ci-reader")
    page.get_by_role("button", name="Create key").click()
    created = page.locator("#created-key")
    created.wait_for()
    assert created.inner_text().startswith("tnk_")
    page.get_by_role("button", name="Revoke ci-reader").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    page.locator('tr[data-key="ci-reader"] .badge').filter(has_text="revoked").wait_for()
    assert not page.is_visible("#created-key")  # a revoked key's secret is no longer shown
    alice.shot("tenant")

    # Upgrade request: the plan change becomes a change request, nothing applied.
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Plan", exact=True).select_option("medium")
    page.get_by_label("Volume size", exact=True).fill("10Gi")
    page.get_by_label("Snapshot volume size").fill("5Gi")
    page.locator("#approval:not([hidden])").wait_for()
    page.get_by_label("Reason for the platform team").fill("launch traffic")
    page.get_by_role("button", name="Request approval").click()
    page.get_by_role("heading", name="Diff").wait_for()
    assert _file(portal, "newco")["plan"] == "small"  # type: ignore[index]
    alice.close()


def test_a_deleted_tenant_whose_destroy_failed_offers_a_retry(browser: Any, portal: LiveServer) -> None:
    """Found by an outside journey review: the page of a deleted tenant whose destroy failed said
    "DELETE again to retry" and offered no way to, so its stack and data stayed with no way out. And
    the dashboard did not list the tenant, so that page was found only by typing its address."""
    from tenancy.automation.contract import StackRef
    from tenancy.service.core.security import Principal
    from tests.service.conftest import spec

    backends = portal.app.state.backends
    stack = StackRef("dev", "doomed")
    owner = Principal(subject="dora", display_name="dora", email=None, kind="user", platform_admin=True)
    created = backends.changes.replace(stack, spec("doomed", deletionProtection=False), owner, if_match=None)
    deadline = time.monotonic() + 30
    while backends.queue.get(created.operation.id).status.value != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    backends.engine.fail_next(stack, "the cluster refused the destroy")
    destroy = backends.changes.delete(stack, owner, if_match=None).operation
    while backends.queue.get(destroy.id).status.value != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    dora = Session(browser, portal)
    page = dora.page
    dora.sign_in(name="dora", kind="admin", tenants="doomed")
    card = page.locator('[data-tenant="dev.doomed"][data-deleted="true"]')  # on the dashboard
    assert "failed" in card.inner_text() and "deleted" in card.inner_text()
    card.get_by_role("link", name="dev.doomed").click()
    page.locator('#tenant-phase[data-phase="failed"]').wait_for()
    assert not page.is_visible("#reveal-key") and not page.is_visible("#edit")
    page.get_by_role("button", name="Retry delete").click()
    page.locator("#confirm-typed").fill("doomed")
    page.get_by_role("dialog").get_by_role("button", name="Destroy").click()
    page.locator("#op-status[data-final]").wait_for()
    assert page.locator("#op-status").get_attribute("data-final") == "succeeded"
    dora.close()


def test_a_platform_admin_approves_one_request_and_rejects_another(browser: Any, portal: LiveServer) -> None:
    backends = portal.app.state.backends
    if _file(portal, "newco") is None:
        pytest.skip("needs the tenant the previous test creates")
    # A second request from the tenant-admin, through the API, to reject.
    bob = Session(browser, portal)
    bob.sign_in(name="bob", kind="admin", tenants="newco")
    bob.page.goto(portal.url + "/#/requests")
    bob.page.locator("tr[data-request]").first.wait_for()
    requests = backends.approvals.store.list()
    upgrade = next(r for r in requests if r.document.get("plan") == "medium")

    root = Session(browser, portal, phone=True)  # platform-admins decide from a phone too
    page = root.page
    root.sign_in(name="root", kind="platform")
    root.shot("dashboard-phone")
    page.goto(portal.url + f"/#/requests/{upgrade.id}")
    page.get_by_role("heading", name="Diff").wait_for()
    root.shot("change-request")
    page.get_by_role("button", name="Approve").click()
    page.get_by_role("dialog").get_by_role("button", name="Approve").click()
    page.locator("#op-status[data-final]").wait_for()
    assert _file(portal, "newco")["plan"] == "medium"  # type: ignore[index]

    # Another request (groups) made by the tenant-admin, rejected with a reason the requester sees.
    from tenancy.automation.contract import StackRef
    from tenancy.service.core.security import Principal, Role

    requester = Principal("bob", "bob", None, "user", tenant_roles={"newco": Role.admin})
    proposal = backends.approvals.assess(
        StackRef("dev", "newco"), requester, {"groups": {"viewers": ["/auditors"]}}, patch=True
    )
    other = backends.approvals.file(proposal, requester, "auditors need access", "-")
    page.goto(portal.url + f"/#/requests/{other.id}")
    page.get_by_label("Reason for rejecting (the requester sees it)").fill("auditors use the platform group")
    page.get_by_role("button", name="Reject").click()
    page.locator(".badge.rejected").first.wait_for()
    bob.page.goto(portal.url + f"/#/requests/{other.id}")
    bob.page.locator("#decision-reason").filter(has_text="auditors use the platform group").wait_for()

    # The dashboard: platform-admins see every tenant, with search.
    page.goto(portal.url + "/#/")
    page.get_by_label("Search").fill("newco")
    page.locator('[data-tenant="dev.newco"]').wait_for()
    assert page.locator("[data-tenant]").count() == 1
    root.shot("dashboard")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    bob.close()
    root.close()


def test_a_tenant_admin_rotates_keys_and_the_form_never_offers_the_rotation_record(
    browser: Any, portal: LiveServer
) -> None:
    carol = Session(browser, portal)
    page = carol.page
    carol.sign_in(name="carol", kind="admin", tenants="acme")
    page.goto(portal.url + "/#/t/dev/acme")
    page.locator('#key-rotation[data-phase="none"]').wait_for()
    page.get_by_role("button", name="Rotate keys").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate keys").click()
    page.locator("#op-status[data-final]").wait_for()
    assert page.locator("#op-status").get_attribute("data-final") == "succeeded"
    page.locator('#key-rotation[data-phase="grace"]').wait_for()  # both generations' keys work now
    record = _file(portal, "acme")["qdrant"]["keyRotation"]  # type: ignore[index]
    assert record["generation"] == 1 and record["requestedBy"] == "user:carol"
    audit = Path(portal.app.state.backends.settings.audit_target).read_text()
    assert '"action":"qdrant.keys.rotate"' in audit

    # The form's schema has no keyRotation, and saving the form keeps the record exactly as it is.
    schema = page.evaluate("fetch('/portal/api/schema').then((r) => r.json())")
    assert "keyRotation" not in json.dumps(schema)
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Display name").fill("Acme Rotated")
    page.locator("#preview-summary").wait_for()
    assert "keyRotation" not in page.locator("#tenant-form").inner_text()
    page.get_by_role("button", name="Save changes").click()
    page.locator("#op-status[data-final]").wait_for()
    saved = _file(portal, "acme")
    assert saved["displayName"] == "Acme Rotated" and saved["qdrant"]["keyRotation"] == record  # type: ignore[index]
    carol.close()


def test_the_api_docs_render_with_no_way_out_of_the_machine(browser: Any, portal: LiveServer) -> None:
    """Swagger UI and ReDoc from the service's own assets: every request leaving loopback is refused,
    as in a cluster without internet, and both pages still show the API's operations. (ReDoc's bundle
    still asks for its "powered by" logo from cdn.redoc.ly: an image, refused here, nothing else.)"""
    context = browser.new_context()
    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith(portal.url):
            route.continue_()
        else:
            if route.request.resource_type != "image":
                outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{portal.url}/docs")
    page.get_by_text("Change parts of a tenant's spec").first.wait_for()
    page.goto(f"{portal.url}/redoc")  # rendered by its script (the side menu keeps it folded)
    page.get_by_text("Change parts of a tenant's spec").first.wait_for(state="attached")
    context.close()
    assert outside == [] and errors == []
