"""Every Keycloak group a tenant's access is bound to exists: its stack declares its part of /tenants."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.tenant.identity import TenantGroups, tenant_keycloak_provider
from tenancy.builders.identity import TenantGroup, tenant_groups
from tenancy.builders.rbac import role_binding_manifests
from tenancy.render.runtime import StackCapture, capture_program
from tenancy.spec.tenant import Tenant, TenantSpec, resolve

Run = Callable[[str], StackCapture]
GROUP = "keycloak:index/group:Group"
GROUP_ROLES = "keycloak:index/groupRoles:GroupRoles"
PROVIDER = "pulumi:providers:keycloak"


def tenant(name: str = "acme", groups: dict[str, list[str]] | None = None, **extra: Any) -> Tenant:
    document: dict[str, Any] = {"name": name, "owners": [f"owner@{name}.example"], "plan": "small", **extra}
    if groups is not None:
        document["groups"] = groups
    return resolve(TenantSpec.model_validate(document), "prod")


def capture_groups(subject: Tenant) -> StackCapture:
    def program() -> dict[str, Any]:
        provider = tenant_keycloak_provider(
            "keycloak", url="https://auth.data.example.com", client_secret="provisioner-secret"
        )
        groups = TenantGroups(f"{subject.name}-groups", tenant=subject, provider=provider)
        return {"groups": groups.group_paths}

    return capture_program(program, stack=f"prod.{subject.name}")


def declared(capture: StackCapture) -> dict[str, dict[str, Any]]:
    """Declared groups by name, with their parent's id."""
    return {r.name: r.inputs for r in capture.of_type(GROUP)}


# --- pure: which groups ---------------------------------------------------------------------------


def test_every_tenant_gets_its_group_with_admins_and_viewers_mapped_to_the_tenant_roles() -> None:
    assert tenant_groups(tenant("acme")) == [
        TenantGroup("/tenants/acme"),
        TenantGroup("/tenants/acme/admins", ("tenant-admin",)),
        TenantGroup("/tenants/acme/viewers", ("tenant-viewer",)),
    ]


def test_custom_groups_under_the_tenant_are_declared_with_the_role_of_their_list() -> None:
    globex = tenant(
        "globex",
        groups={
            "admins": ["/tenants/globex/admins", "/tenants/globex/search-oncall"],
            "viewers": ["/tenants/globex/viewers", "/tenants/globex/analysts/berlin"],
        },
    )
    roles = {group.path: group.realm_roles for group in tenant_groups(globex)}
    assert roles == {
        "/tenants/globex": (),
        "/tenants/globex/admins": ("tenant-admin",),
        "/tenants/globex/viewers": ("tenant-viewer",),
        "/tenants/globex/search-oncall": ("tenant-admin",),
        "/tenants/globex/analysts": (),  # the missing parent of a nested group, without a role
        "/tenants/globex/analysts/berlin": ("tenant-viewer",),
    }


def test_groups_outside_the_tenants_subtree_are_bound_but_never_declared() -> None:
    acme = tenant(
        "acme",
        groups={
            "admins": ["/platform-admins", "/tenants/acme-corp/admins", "/tenants/other/admins"],
            "viewers": ["/teams/search"],
        },
    )
    assert {group.path for group in tenant_groups(acme)} == {
        "/tenants/acme",
        "/tenants/acme/admins",
        "/tenants/acme/viewers",
    }


def test_parents_come_before_their_children() -> None:
    acme = tenant("acme", groups={"admins": ["/tenants/acme/a/b/c"]})
    seen: set[str] = {"/tenants"}
    for group in tenant_groups(acme):
        assert group.parent in seen
        seen.add(group.path)


def test_every_group_a_rolebinding_names_under_the_tenant_is_declared() -> None:
    globex = tenant(
        "globex", groups={"admins": ["/tenants/globex/search-oncall"], "viewers": ["/tenants/globex/x"]}
    )
    bound = {
        subject["name"]
        for binding in role_binding_manifests(globex, group_prefix="")
        for subject in binding["subjects"]
    }
    assert bound <= {group.path for group in tenant_groups(globex)}


# --- the component under mocks --------------------------------------------------------------------


def test_tenant_group_hangs_under_the_realms_tenants_group() -> None:
    groups = declared(capture_groups(tenant("acme")))
    root = groups["acme-groups-acme"]
    assert root["name"] == "acme"
    assert root["realmId"] == "platform"
    assert root["parentId"] == "group-tenants"  # the id the /tenants lookup returned
    for sub in ("admins", "viewers"):
        assert groups[f"acme-groups-acme/{sub}"]["parentId"] == "acme-groups-acme-id"
        assert groups[f"acme-groups-acme/{sub}"]["name"] == sub


def test_admins_and_viewers_get_the_realm_roles_the_lookups_return() -> None:
    capture = capture_groups(tenant("acme"))
    mappings = {r.inputs["groupId"]: r.inputs["roleIds"] for r in capture.of_type(GROUP_ROLES)}
    assert mappings == {
        "acme-groups-acme/admins-id": ["role-tenant-admin"],
        "acme-groups-acme/viewers-id": ["role-tenant-viewer"],
    }
    assert all(r.inputs["realmId"] == "platform" for r in capture.of_type(GROUP_ROLES))


def test_deletion_protection_protects_the_tenant_group_and_so_every_membership() -> None:
    protected = capture_groups(tenant("acme", deletionProtection=True))
    assert {r.name for r in protected.of_type(GROUP) if r.protect} == {"acme-groups-acme"}
    unprotected = capture_groups(tenant("acme", deletionProtection=False))
    assert not [r.name for r in unprotected.of_type(GROUP) if r.protect]


def test_provider_logs_in_to_the_platform_realm_as_the_provisioner_with_a_secret() -> None:
    [provider] = capture_groups(tenant("acme")).of_type(PROVIDER)
    assert provider.inputs["url"] == "https://auth.data.example.com"
    assert provider.inputs["realm"] == "platform"
    assert provider.inputs["clientId"] == "tenant-provisioner"
    assert provider.inputs["keycloakVersion"] == "26.5.6"
    assert ("clientSecret",) in provider.secret_paths


# --- the tenant stack ------------------------------------------------------------------------------


def test_tenant_stack_declares_the_groups_of_its_spec(run_stack: Run) -> None:
    globex = run_stack("prod.globex")
    names = {r.inputs["name"] for r in globex.of_type(GROUP)}
    assert names == {"globex", "admins", "viewers", "search-oncall"}


def test_rolebindings_and_argocd_project_wait_for_the_groups(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    assert "acme-groups" in capture.named("acme-access").depends_on
    assert "acme-groups" in capture.named("acme-gitops").depends_on


def test_tenant_stack_reaches_keycloak_with_the_platform_stacks_url_and_secret(run_stack: Run) -> None:
    [provider] = run_stack("prod.acme").of_type(PROVIDER)
    assert provider.inputs["url"] == "https://auth.data.example.com"
    assert provider.inputs["clientSecret"] == "placeholder-credential"
    assert ("clientSecret",) in provider.secret_paths


def test_the_stack_reference_keeps_the_provisioner_secret_secret() -> None:
    def program() -> dict[str, Any]:
        reference = pulumi.StackReference("platform", stack_name="organization/platform/prod")
        return {
            "secret": reference.require_output("keycloakProvisionerSecret"),
            "url": reference.require_output("keycloakUrl"),
        }

    capture = capture_program(
        program,
        stack="prod.acme",
        stack_outputs={"tenantContract": {"domain": "data.example.com"}},
    )
    assert capture.secret_outputs == {"secret"}
    assert capture.outputs["url"] == "https://auth.data.example.com"


def test_groups_can_be_left_to_another_system(scratch_project: Path) -> None:
    from tenancy.render.runtime import capture_program, config_values, platform_outputs_for
    from tenancy.spec.platform import read_platform_config_file
    from tenancy.stacks import stack_outputs

    config = read_platform_config_file(scratch_project / "Pulumi.dev.yaml")
    capture = capture_program(
        lambda: stack_outputs("dev.acme", project_dir=scratch_project),
        stack="dev.acme",
        config={**config_values(config), "platform:manageKeycloakGroups": "false"},
        stack_outputs=platform_outputs_for(config),
    )
    assert not [r for r in capture.resources if r.type.startswith(("keycloak:", "pulumi:providers:keycloak"))]
    assert capture.of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")


def test_a_keycloak_url_that_is_no_url_fails_the_program_naming_the_key(scratch_project: Path) -> None:
    # Set by hand on a stack (pulumi config set platform:keycloakUrl ...): the program names it, instead
    # of the Keycloak provider failing later without saying which setting.
    from tenancy.render.runtime import capture_program, config_values, platform_outputs_for
    from tenancy.spec.errors import SpecError
    from tenancy.spec.platform import read_platform_config_file
    from tenancy.stacks import stack_outputs

    config = read_platform_config_file(scratch_project / "Pulumi.dev.yaml")
    with pytest.raises(SpecError, match=r"platform:keycloakUrl is 'not a url'"):
        capture_program(
            lambda: stack_outputs("dev.acme", project_dir=scratch_project),
            stack="dev.acme",
            config={**config_values(config), "platform:keycloakUrl": "not a url"},
            stack_outputs=platform_outputs_for(config),
        )
