"""The tenant model: what a file may say, and the message a person gets when it says something wrong."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from cronsim import CronSim

from tenancy import versions
from tenancy.spec.errors import SpecError
from tenancy.spec.plans import PLANS, Plan
from tenancy.spec.tenant import (
    LABEL_TENANT,
    TenantSpec,
    parse_tenant,
    quota_usage,
    resolve,
    shortest_interval,
)
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR

FILE = "tenants/prod/acme.yaml"


def tenant_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "acme", "owners": ["a@acme.example"], "plan": "medium"}
    doc.update(overrides)
    return doc


def issues_of(doc: Any) -> list[tuple[str, str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_tenant(doc, file=FILE)
    return [(i.file, i.field, i.reason) for i in caught.value.issues]


def test_minimal_tenant_is_valid_and_gets_plan_defaults() -> None:
    spec = parse_tenant(tenant_doc(qdrant={"enabled": True}), file=FILE)
    tenant = resolve(spec, "prod")
    assert tenant.namespace == "tenant-acme"
    assert tenant.qdrant is not None
    assert tenant.qdrant.replicas == PLANS[Plan.medium].qdrant_default_replicas
    assert tenant.qdrant.memory == PLANS[Plan.medium].qdrant_default_size.memory
    assert tenant.admin_groups == ("/tenants/acme/admins",)
    assert tenant.deletion_protection is True
    assert tenant.labels[LABEL_TENANT] == "acme"


def test_unknown_key_is_rejected_naming_the_field() -> None:
    [(file, field, reason)] = issues_of(tenant_doc(qdrant={"enabled": True, "replica": 3}))
    assert file == FILE
    assert field == "qdrant.replica"
    assert "unknown key" in reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Acme", "not a DNS label"),
        ("acme_corp", "not a DNS label"),
        ("-acme", "not a DNS label"),
        ("a" * 31, "at most 30"),
        ("platform", "reserved"),
    ],
)
def test_bad_names_are_rejected_with_the_reason(name: str, reason: str) -> None:
    [(_, field, message)] = issues_of(tenant_doc(name=name))
    assert field == "name"
    assert reason in message


def test_missing_required_fields_are_named() -> None:
    fields = {field for _, field, _ in issues_of({"name": "acme"})}
    assert fields == {"owners", "plan"}


def test_unknown_plan_lists_the_choices() -> None:
    [(_, field, reason)] = issues_of(tenant_doc(plan="huge"))
    assert field == "plan"
    assert "small" in reason and "large" in reason


def test_replicas_above_the_plan_are_rejected_with_the_fix() -> None:
    [(_, field, reason)] = issues_of(tenant_doc(plan="small", qdrant={"enabled": True, "replicas": 3}))
    assert field == "qdrant.replicas"
    assert "maximum of 1" in reason and "larger plan" in reason


def test_pod_larger_than_the_plan_allows_is_rejected() -> None:
    doc = tenant_doc(plan="small", qdrant={"enabled": True, "resources": {"cpu": "3", "memory": "1Gi"}})
    [(_, field, reason)] = issues_of(doc)
    assert field == "qdrant.resources.cpu"
    assert "exceeds the small plan's maximum of 2" in reason


def test_sidecars_and_vcluster_dns_count_against_the_quota() -> None:
    # 2 + 2 CPU of sized containers fit the small plan's 4 CPU only if the three sidecars and the
    # vCluster's CoreDNS pod are forgotten; the namespace quota would refuse the last pod.
    doc = tenant_doc(
        plan="small",
        qdrant={"enabled": True, "resources": {"cpu": "2", "memory": "2Gi"}},
        vcluster={"enabled": True, "resources": {"cpu": "2", "memory": "2Gi"}},
    )
    problems = issues_of(doc)
    assert any(
        "CPU requests (every pod's containers, their sidecars included)" in reason and "quota of 4" in reason
        for _, _, reason in problems
    )


def test_quota_error_names_the_service_that_uses_most() -> None:
    # Qdrant asks for 1.5 CPU plus its Guaranteed 500m sidecar, the vCluster for 2 CPU plus its sidecar and
    # CoreDNS pod: the vCluster is the larger.
    doc = tenant_doc(
        plan="small",
        qdrant={"enabled": True, "resources": {"cpu": "1500m", "memory": "1Gi"}},
        vcluster={"enabled": True, "resources": {"cpu": "2", "memory": "1Gi"}},
    )
    problems = issues_of(doc)
    assert [field for _, field, reason in problems if "CPU requests" in reason] == ["vcluster.resources.cpu"]


def test_qdrant_sidecars_are_guaranteed_and_counted_at_their_size() -> None:
    # Medium: 16 CPU of requests. Three 4-CPU nodes take 12; their sidecars (a quarter each, 1 CPU,
    # requests = limits) take 3 more, the backup job (100m + a 50m sidecar) 0.15: 15.15 fits. A
    # fourth CPU per node (+5 with sidecars) does not.
    fits = tenant_doc(
        plan="medium", qdrant={"enabled": True, "replicas": 3, "resources": {"cpu": "4", "memory": "4Gi"}}
    )
    parse_tenant(fits, file=FILE)
    over = tenant_doc(
        plan="medium", qdrant={"enabled": True, "replicas": 3, "resources": {"cpu": "5", "memory": "4Gi"}}
    )
    assert any("need 18.9 CPU requests" in reason for _, _, reason in issues_of(over))


def test_total_memory_above_the_quota_is_rejected() -> None:
    doc = tenant_doc(
        plan="medium", qdrant={"enabled": True, "replicas": 3, "resources": {"cpu": "1", "memory": "12Gi"}}
    )
    problems = issues_of(doc)
    assert ("tenants/prod/acme.yaml", "qdrant.resources.memory") in {(f, fld) for f, fld, _ in problems}
    assert any("quota of 32Gi" in reason for _, _, reason in problems)


def test_storage_above_the_quota_is_rejected() -> None:
    doc = tenant_doc(plan="small", qdrant={"enabled": True, "storage": {"size": "200Gi"}})
    [(_, field, reason)] = issues_of(doc)
    assert field == "qdrant.storage.size"
    assert "quota of 100Gi" in reason


@pytest.mark.parametrize(
    ("resources", "field", "reason"),
    [
        ({"cpu": "1Gi", "memory": "1Gi"}, "qdrant.resources.cpu", "memory unit"),
        ({"cpu": "1", "memory": "lots"}, "qdrant.resources.memory", "not a Kubernetes quantity"),
        ({"cpu": "1", "memory": "512"}, "qdrant.resources.memory", "below 1Mi"),
    ],
)
def test_bad_quantities_are_rejected(resources: dict[str, str], field: str, reason: str) -> None:
    [(_, got_field, message)] = issues_of(tenant_doc(qdrant={"enabled": True, "resources": resources}))
    assert got_field == field
    assert reason in message


def test_unsupported_versions_list_what_is_offered() -> None:
    problems = issues_of(
        tenant_doc(
            qdrant={"enabled": True, "version": "v0.9.0"},
            vcluster={"enabled": True, "kubernetesVersion": "1.20"},
        )
    )
    by_field = {field: reason for _, field, reason in problems}
    assert "supported versions: " in by_field["qdrant.version"]
    assert "1.34" in by_field["vcluster.kubernetesVersion"]


def test_labels_cannot_use_the_platform_prefix() -> None:
    [(_, field, reason)] = issues_of(tenant_doc(labels={"tenancy.platform/tenant": "other"}))
    assert field == "labels"
    assert "platform's prefix" in reason


def test_owners_must_be_email_addresses() -> None:
    [(_, field, reason)] = issues_of(tenant_doc(owners=["alice"]))
    assert field == "owners"
    assert "not an email address" in reason


def test_a_file_that_is_not_a_mapping_is_rejected() -> None:
    [(_, field, reason)] = issues_of(["name", "acme"])
    assert field == ""
    assert "one YAML mapping" in reason


def test_spec_round_trips_through_its_document_form() -> None:
    spec = parse_tenant(tenant_doc(qdrant={"enabled": True, "replicas": 2, "readOnlyKey": False}), file=FILE)
    document = spec.to_document()
    assert document["qdrant"] == {"enabled": True, "replicas": 2, "readOnlyKey": False}
    assert parse_tenant(document, file=FILE) == spec


def test_the_file_form_keeps_what_its_author_wrote_and_the_normal_form_drops_defaults() -> None:
    """A version pinned to today's default stays pinned in the file (else the next default upgrades the
    tenant unasked); operations compare the normal form, where it is the same as leaving it out."""
    pinned = tenant_doc(
        qdrant={"enabled": True, "version": versions.QDRANT_DEFAULT_VERSION, "readOnlyKey": True},
        vcluster={"enabled": True, "kubernetesVersion": versions.VCLUSTER_DEFAULT_KUBERNETES_VERSION},
    )
    spec = parse_tenant(pinned, file=FILE)
    assert spec.to_file_document() == pinned
    assert spec.to_document()["qdrant"] == {"enabled": True}
    assert (
        spec.to_document()
        == parse_tenant(
            tenant_doc(qdrant={"enabled": True}, vcluster={"enabled": True}), file=FILE
        ).to_document()
    )


def test_every_tenant_file_of_the_project_is_its_own_file_form() -> None:
    paths = sorted((PROJECT_DIR / "tenants").rglob("*.yaml"))
    assert paths
    for path in paths:
        written = load_yaml(path.read_text(encoding="utf-8"))
        assert parse_tenant(written, file=str(path)).to_file_document() == written, path


# --- scheduled backups ------------------------------------------------------------------------


def test_backups_default_to_daily_within_every_plan() -> None:
    spec = parse_tenant(tenant_doc(plan="small", qdrant={"enabled": True}), file=FILE)
    q = resolve(spec, environment="dev").qdrant
    assert q is not None
    assert (q.backup_schedule, q.backup_keep_last, q.backup_max_age_days) == ("0 3 * * *", 7, 14)


@pytest.mark.parametrize(
    "schedule",
    ["daily", "0 3 * *", "0 3 * * * *", "61 * * * *", "0 3 L * *", "0 3 * * 1#2", "@daily"],
)
def test_a_schedule_that_is_not_a_five_field_cron_is_rejected_naming_the_field(schedule: str) -> None:
    doc = tenant_doc(plan="large", qdrant={"enabled": True, "snapshots": {"schedule": schedule}})
    with pytest.raises(SpecError) as raised:
        parse_tenant(doc, file=FILE)
    [issue] = raised.value.issues
    assert issue.field == "qdrant.snapshots.schedule"
    assert "not a cron schedule" in issue.reason
    assert FILE in str(raised.value)


def test_the_plan_caps_how_often_backups_run() -> None:
    hourly = {"enabled": True, "snapshots": {"schedule": "0 * * * *"}}
    [(_, field, reason)] = issues_of(tenant_doc(plan="small", qdrant=hourly))
    assert field == "qdrant.snapshots.schedule"
    assert "one backup every 24h" in reason
    parse_tenant(tenant_doc(plan="large", qdrant=hourly), file=FILE)
    # Two runs an hour apart once a day are still more often than daily.
    twice = {"enabled": True, "snapshots": {"schedule": "0 3,4 * * *"}}
    assert [f for _, f, _ in issues_of(tenant_doc(plan="small", qdrant=twice))] == [
        "qdrant.snapshots.schedule"
    ]


@pytest.mark.parametrize("schedule", ["0 3 * * *", "59 23 * * *", "0 0,12,23 * * *", "40 */9 * * *"])
def test_a_schedule_that_runs_every_day_has_the_shortest_gap_of_many_days_of_runs(schedule: str) -> None:
    # shortest_interval reads such a schedule's gaps from one day of its runs; walk a thousand runs.
    runs = list(itertools.islice(CronSim(schedule, datetime(2026, 1, 1, tzinfo=UTC)), 1000))
    assert shortest_interval(schedule) == min(later - earlier for earlier, later in itertools.pairwise(runs))


def test_the_plan_caps_how_many_backups_are_kept_and_for_how_long() -> None:
    qdrant = {"enabled": True, "snapshots": {"keepLast": 8, "maxAgeDays": 15}}
    problems = issues_of(tenant_doc(plan="small", qdrant=qdrant))
    assert sorted(field for _, field, _ in problems) == [
        "qdrant.snapshots.keepLast",
        "qdrant.snapshots.maxAgeDays",
    ]
    spec = parse_tenant(tenant_doc(plan="medium", qdrant=qdrant), file=FILE)
    q = resolve(spec, environment="dev").qdrant
    assert q is not None and (q.backup_keep_last, q.backup_max_age_days) == (8, 15)


def test_the_backup_job_counts_in_the_quota_only_with_snapshots() -> None:
    with_backups = quota_usage(parse_tenant(tenant_doc(plan="small", qdrant={"enabled": True}), file=FILE))
    without = quota_usage(
        parse_tenant(
            tenant_doc(plan="small", qdrant={"enabled": True, "snapshots": {"enabled": False}}), file=FILE
        )
    )
    # 100m + its 50m sidecar requested; 100m + a 500m sidecar limit.
    assert with_backups["requests.cpu"][0] - without["requests.cpu"][0] == Decimal("0.15")
    assert with_backups["limits.cpu"][0] - without["limits.cpu"][0] == Decimal("0.6")


def test_plan_findings_remembered_by_settings_name_each_file_and_match_the_full_check() -> None:
    """plan_issues remembers findings by plan and Qdrant/vCluster spec: a second file with the same
    settings gets the same findings under its own name, and a change of any setting is checked anew."""
    from tenancy.spec import tenant as tenant_module

    over = {"enabled": True, "replicas": 3, "resources": {"cpu": "3", "memory": "1Gi"}}
    first = issues_of(tenant_doc(plan="small", qdrant=over))
    with pytest.raises(SpecError) as caught:
        parse_tenant(tenant_doc(name="globex", plan="small", qdrant=over), file="tenants/prod/globex.yaml")
    second = [(i.file, i.field, i.reason) for i in caught.value.issues]
    assert [issue[1:] for issue in second] == [issue[1:] for issue in first] and len(first) >= 2
    assert {issue[0] for issue in second} == {"tenants/prod/globex.yaml"}
    assert issues_of(tenant_doc(plan="small", qdrant={**over, "replicas": 4})) != first
    parse_tenant(tenant_doc(plan="large", qdrant=over), file=FILE)  # the plan is part of the key
    for doc in (tenant_doc(plan="small", qdrant=over), tenant_doc(plan="medium", vcluster={"enabled": True})):
        spec = TenantSpec.model_validate(doc)
        assert tenant_module.plan_issues(spec, file=FILE) == tenant_module._plan_issues(spec, file=FILE)


def test_a_schedule_is_checked_the_same_when_its_answer_is_remembered() -> None:
    """_check_schedule is cached (parsing the cron expression was a sixth of a file's check): a good
    schedule gives its normalised form every time, a bad one is refused every time."""
    for _ in range(2):
        spec = parse_tenant(
            tenant_doc(plan="large", qdrant={"enabled": True, "snapshots": {"schedule": "0  4 * * *"}}),
            file=FILE,
        )
        assert spec.qdrant.snapshots.schedule == "0 4 * * *"
        [(_, field, reason)] = issues_of(
            tenant_doc(plan="large", qdrant={"enabled": True, "snapshots": {"schedule": "0 4 * *"}})
        )
        assert field == "qdrant.snapshots.schedule" and "is not a cron schedule" in reason


@pytest.mark.parametrize(
    "key",
    [
        "app",  # qdrant's and vCluster's selector label: their StatefulSets' selectors stop matching
        "release",
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "helm.sh/chart",
        "sidecar.istio.io/inject",  # drops the pods' sidecar
        "security.istio.io/tlsMode",
        "kubernetes.io/metadata.name",
        "pod-security.kubernetes.io/warn-version",
        "vcluster.loft.sh/managed-by",
    ],
)
def test_labels_cannot_take_keys_the_charts_and_the_mesh_read(key: str) -> None:
    [(_, field, reason)] = issues_of(tenant_doc(labels={key: "x"}))
    assert field == "labels"
    assert "is reserved" in reason and key in reason


def test_labels_of_the_tenants_own_stay_allowed() -> None:
    labels = {"team": "search", "example.com/app": "search", "app.kubernetes.io/part-of": "search"}
    tenant = resolve(parse_tenant(tenant_doc(labels=labels), file=FILE), "prod")
    assert labels.items() <= tenant.labels.items()


def test_a_version_written_as_a_bare_number_is_refused_saying_to_quote_it() -> None:
    """Found by an outside review: ``kubernetesVersion: 1.30`` is read by YAML as the number 1.3, and
    the error did not say to quote it."""
    with pytest.raises(SpecError) as caught:
        parse_tenant(
            {
                "name": "acme",
                "owners": ["a@x.example"],
                "plan": "small",
                "vcluster": {"enabled": True, "kubernetesVersion": 1.3},
            },
            file="acme.yaml",
        )
    [issue] = caught.value.issues
    assert issue.field == "vcluster.kubernetesVersion"
    assert issue.reason == (
        "must be a string, not a decimal number; write it in quotes (YAML reads an unquoted 1.30 as the "
        "number 1.3)"
    )
