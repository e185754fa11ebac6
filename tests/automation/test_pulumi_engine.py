"""The Pulumi engine's pure parts, without the Pulumi CLI: error mapping, event mapping, output
masking, the CLI check and the settings it runs with. (Tests build Pulumi's own error and event
objects, so they import pulumi.automation; the library imports it only in pulumi_engine.)"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandResult, EngineEvent, OutputValue
from pulumi.automation.errors import create_command_error

from tenancy.automation.contract import EngineRequest, OperationKind
from tenancy.automation.errors import (
    EngineFailed,
    OperationInterrupted,
    ProgramError,
    ProtectedResources,
    PulumiCliMissing,
    SecretsUnavailable,
    StackConflict,
    StackNotFound,
)
from tenancy.automation.pulumi_engine import (
    PulumiEngine,
    actionable_message,
    fingerprint_from_history,
    forward_event,
    map_command_error,
    mask_outputs,
    s3_backend_location,
)
from tenancy.automation.settings import AutomationSettings

from .conftest import stack

TRACEBACK = (
    "Program failed with an unhandled exception:\n"
    "Traceback (most recent call last):\n"
    '  File "/work/main/__main__.py", line 7, in <module>\n'
    "    declare_stack(pulumi.get_stack(), project_dir=Path(__file__).resolve().parent)\n"
    "tenancy.spec.errors.SpecError: tenants/dev/acme.yaml: plan: "
    "Input should be 'small', 'medium' or 'large'\n"
)


def mapped(stderr: str = "", stdout: str = "", diagnostics: list[str] | None = None) -> Exception:
    error = create_command_error(CommandResult(stdout=stdout, stderr=stderr, code=255))
    return map_command_error(error, stack=stack("acme"), kind="up", diagnostics=diagnostics or [])


def test_a_missing_stack_maps_to_not_found_with_how_to_create_it() -> None:
    error = mapped(stderr="error: no stack named 'dev.acme' found")

    assert isinstance(error, StackNotFound)
    assert "tenantctl up acme --env dev" in error.message


@pytest.mark.parametrize(
    "stderr",
    [
        "error: [409] Conflict: Another update is currently in progress.",
        "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end",
    ],
)
def test_a_concurrent_update_or_stale_lock_maps_to_conflict(stderr: str) -> None:
    error = mapped(stderr=stderr)

    assert isinstance(error, StackConflict)
    assert error.code == "conflict"
    assert "tenantctl refresh acme --env dev --recover" in error.message


def test_an_existing_stack_maps_to_conflict() -> None:
    error = mapped(stderr="error: stack 'dev.acme' already exists")

    assert isinstance(error, StackConflict)


def test_protected_resources_map_to_the_way_to_turn_protection_off() -> None:
    error = mapped(
        stderr="error: resource "
        '"urn:pulumi:dev.acme::platform::kubernetes:core/v1:Namespace::acme-namespace" '
        "cannot be deleted\nbecause it is protected. To unprotect the resource, ..."
    )

    assert isinstance(error, ProtectedResources)
    assert "deletionProtection: false in tenants/dev/acme.yaml" in error.message


def test_a_missing_passphrase_maps_to_secrets_unavailable() -> None:
    error = mapped(
        stderr="error: getting secrets manager: passphrase must be set with PULUMI_CONFIG_PASSPHRASE or "
        "PULUMI_CONFIG_PASSPHRASE_FILE environment variables"
    )

    assert isinstance(error, SecretsUnavailable)
    assert "PULUMI_CONFIG_PASSPHRASE" in error.message


def test_a_program_failure_keeps_the_exception_message_and_drops_the_traceback() -> None:
    error = mapped(
        stdout="an unhandled error occurred: Program exited with non-zero exit code: 1",
        diagnostics=[actionable_message(TRACEBACK)],
    )

    assert isinstance(error, ProgramError)
    assert "SpecError: tenants/dev/acme.yaml: plan: Input should be" in error.message
    assert "Traceback" not in error.message and "File " not in error.message


def test_other_failures_name_the_first_error_line() -> None:
    error = mapped(
        stderr="Updating (dev.acme)\nerror: could not load plugin kubernetes: no such file\nmore noise"
    )

    assert isinstance(error, EngineFailed)
    assert error.message.endswith("could not load plugin kubernetes: no such file")


def test_actionable_message_removes_colour_codes_and_collapses_whitespace() -> None:
    assert actionable_message("\x1b[31merror:\x1b[0m  quota\n exceeded ") == "error: quota exceeded"


def events(*documents: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    emitted: list[dict[str, Any]] = []
    errors: list[str] = []

    def emit(**fields: Any) -> None:
        emitted.append(fields)

    for document in documents:
        forward_event(EngineEvent.from_json(document), emit, errors)
    return emitted, errors


URN = (
    "urn:pulumi:dev.acme::platform::platform:tenant:TenantResources"
    "$kubernetes:core/v1:Namespace::acme-namespace"
)


def test_resource_steps_become_progress_events_and_the_stack_itself_is_left_out() -> None:
    step = {"op": "create", "urn": URN, "type": "kubernetes:core/v1:Namespace", "provider": ""}
    root = {
        "op": "same",
        "urn": "urn:pulumi:dev.acme::platform::pulumi:pulumi:Stack::platform-dev.acme",
        "type": "pulumi:pulumi:Stack",
        "provider": "",
    }

    emitted, _ = events(
        {"sequence": 1, "timestamp": 1, "resourcePreEvent": {"metadata": root}},
        {"sequence": 2, "timestamp": 1, "resourcePreEvent": {"metadata": step}},
        {"sequence": 3, "timestamp": 2, "resOutputsEvent": {"metadata": step}},
        {"sequence": 4, "timestamp": 2, "resOpFailedEvent": {"metadata": step, "status": 1, "steps": 1}},
    )

    label = "kubernetes:core/v1:Namespace acme-namespace"
    assert emitted == [
        {"kind": "resource", "resource": label, "op": "create", "status": "started"},
        {"kind": "resource", "resource": label, "op": "create", "status": "done"},
        {"kind": "resource", "resource": label, "op": "create", "status": "failed"},
    ]


def test_diagnostics_are_forwarded_and_errors_collected_without_tracebacks() -> None:
    emitted, errors = events(
        {"sequence": 1, "timestamp": 1, "diagnosticEvent": {"message": "debugging", "severity": "debug"}},
        {
            "sequence": 2,
            "timestamp": 1,
            "diagnosticEvent": {"message": "spinner", "severity": "info", "ephemeral": True},
        },
        {"sequence": 3, "timestamp": 1, "diagnosticEvent": {"message": "careful", "severity": "warning"}},
        {
            "sequence": 4,
            "timestamp": 1,
            "diagnosticEvent": {"message": TRACEBACK, "severity": "error", "urn": URN},
        },
        {
            "sequence": 5,
            "timestamp": 1,
            "policyEvent": {
                "message": "no host ports",
                "policyName": "ports",
                "policyPackName": "tenancy",
                "enforcementLevel": "mandatory",
            },
        },
    )

    assert [(event["status"], event.get("resource")) for event in emitted] == [
        ("warning", None),
        ("error", "acme-namespace"),
        ("mandatory", None),
    ]
    assert errors == [emitted[1]["message"]]
    assert "Traceback" not in errors[0] and "SpecError: tenants/dev/acme.yaml" in errors[0]
    assert emitted[2]["message"] == "policy tenancy/ports: no host ports"


def test_secret_outputs_are_masked_unless_revealed() -> None:
    values = {"namespace": OutputValue("tenant-acme", False), "qdrantApiKey": OutputValue("s3cr3t", True)}

    assert mask_outputs(values, reveal=False) == {"namespace": "tenant-acme", "qdrantApiKey": "[secret]"}
    assert mask_outputs(values, reveal=True)["qdrantApiKey"] == "s3cr3t"


def fake_pulumi(tmp_path: Path, body: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "pulumi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def settings_for(tmp_path: Path, **values: Any) -> AutomationSettings:
    return AutomationSettings(project_dir=tmp_path, **values)


def test_check_cli_names_the_needed_version_when_the_cli_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(PulumiCliMissing) as raised:
        PulumiEngine(settings_for(tmp_path)).check_cli()

    assert "not found on PATH" in raised.value.message
    assert "--version 3.272.0" in raised.value.message and "pulumi/actions" in raised.value.message


def test_check_cli_names_both_versions_when_the_cli_is_too_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "echo v3.200.1"))

    with pytest.raises(PulumiCliMissing) as raised:
        PulumiEngine(settings_for(tmp_path)).check_cli()

    assert "is version 3.200.1; tenantctl needs 3.272.0 or newer" in raised.value.message


def test_check_cli_holds_even_when_the_sdk_check_is_waived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "echo v3.200.1"))
    monkeypatch.setenv("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK", "true")

    with pytest.raises(PulumiCliMissing):
        PulumiEngine(settings_for(tmp_path)).check_cli()


def test_check_cli_reports_a_broken_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "exit 3"))

    with pytest.raises(PulumiCliMissing) as raised:
        PulumiEngine(settings_for(tmp_path)).check_cli()

    assert "reinstall the Pulumi CLI" in raised.value.message


def test_check_cli_accepts_the_required_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "echo v3.272.0"))

    assert PulumiEngine(settings_for(tmp_path)).check_cli() == "3.272.0"


def test_a_passphrase_stack_refuses_to_run_without_the_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "echo v3.272.0"))
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    request = EngineRequest("op", stack("acme"), OperationKind.up, {"name": "acme"})

    with pytest.raises(SecretsUnavailable) as raised:
        PulumiEngine(settings_for(tmp_path)).run(request, lambda **_: None)

    assert "PULUMI_CONFIG_PASSPHRASE" in raised.value.message


def test_vault_secrets_need_the_vault_address_and_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "echo v3.272.0"))
    monkeypatch.delenv("VAULT_SERVER_TOKEN", raising=False)
    engine = PulumiEngine(settings_for(tmp_path, secrets_provider="hashivault://tenants-transit"))

    with pytest.raises(SecretsUnavailable) as raised:
        engine.run(EngineRequest("op", stack("acme"), OperationKind.refresh, None), lambda **_: None)

    assert "VAULT_SERVER_URL and VAULT_SERVER_TOKEN" in raised.value.message


def test_settings_keep_state_beside_the_project_by_default(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)

    assert settings.tenants_dir == tmp_path / "tenants"
    assert settings.state_dir == tmp_path / ".tenancy"
    assert settings.queue_path == tmp_path / ".tenancy" / "operations.sqlite3"
    assert settings.backend_url == (tmp_path / ".tenancy" / "pulumi-state").resolve().as_uri()
    assert settings.secrets_provider == "passphrase" and settings.max_parallel == 4


def test_settings_take_the_backend_from_pulumi_backend_url_or_tenancy_backend_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://tenant-state?region=eu-central-1")
    assert settings_for(tmp_path).backend_url == "s3://tenant-state?region=eu-central-1"

    monkeypatch.setenv("TENANCY_BACKEND_URL", "https://api.pulumi.com")
    monkeypatch.setenv("TENANCY_STACK_CONFIG", '{"kubernetes:context": "prod"}')
    settings = settings_for(tmp_path)
    assert settings.backend_url == "https://api.pulumi.com"
    assert settings.stack_config == {"kubernetes:context": "prod"}


def test_a_pulumi_killed_by_a_signal_maps_to_interrupted() -> None:
    error = create_command_error(CommandResult(stdout="Updating (dev.acme)", stderr="", code=-9))

    mapped_error = map_command_error(error, stack=stack("acme"), kind="up", diagnostics=[])

    assert isinstance(mapped_error, OperationInterrupted)
    assert "recovered before its next operation" in mapped_error.message


def history_entry(kind: str, result: str, spec_hash: str | None = None) -> dict[str, Any]:
    config = {} if spec_hash is None else {"platform:specHash": {"value": spec_hash, "secret": False}}
    return {"kind": kind, "result": result, "config": config}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([history_entry("refresh", "succeeded"), history_entry("update", "succeeded", "abc")], "abc"),
        ([history_entry("update", "failed", "new"), history_entry("update", "succeeded", "old")], None),
        ([history_entry("destroy", "succeeded"), history_entry("update", "succeeded", "abc")], None),
        ([history_entry("update", "succeeded")], None),  # applied by hand: spec unknown
        ([], None),
    ],
)
def test_the_applied_fingerprint_is_the_last_successful_updates(
    history: list[dict[str, Any]], expected: str | None
) -> None:
    assert fingerprint_from_history(history) == expected


def test_an_s3_backend_url_is_read_as_the_cli_reads_it() -> None:
    assert s3_backend_location("s3://state") == ("state", "", {})
    assert s3_backend_location(
        "s3://state/platform/dev?region=eu-west-1&endpoint=minio.storage:9000&disableSSL=true&s3ForcePathStyle=1"
    ) == (
        "state",
        "platform/dev/",
        {"region_name": "eu-west-1", "endpoint_url": "http://minio.storage:9000", "path_style": True},
    )
    # gocloud applies ?prefix= verbatim, then Pulumi adds the URL's path and a slash; first values win.
    assert s3_backend_location(
        "s3://state/sub?prefix=team-&endpoint=https://s3.example&use_path_style=true&profile=ops&region=a&region=b"
    ) == (
        "state",
        "team-sub/",
        {"region_name": "a", "endpoint_url": "https://s3.example", "path_style": True, "profile": "ops"},
    )
    assert s3_backend_location("s3://state?endpoint=minio:9000&disableSSL=false")[2] == {
        "endpoint_url": "https://minio:9000"
    }


def test_a_lock_object_in_an_s3_backend_is_seen_for_its_stack_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers' state bucket (platform:selfService.stateBucket): another update's lock is visible
    # before anything runs, as a lock file is in a file backend; a bucket that cannot be listed fails
    # the check instead of passing it.
    import boto3
    from moto import mock_aws

    (tmp_path / "Pulumi.yaml").write_text("name: tenancy\nruntime: python\n")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    locks = "tenants/.pulumi/locks"
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="state")
        for key in (
            f"{locks}/organization/tenancy/dev.acme/1f.json",
            f"{locks}/dev.globex/2a.json",  # the layout from before projects
            f"{locks}/organization/another-project/dev.initech/3b.json",  # same stack name, other project
            "tenants/.pulumi/stacks/tenancy/dev.initech.json",
        ):
            client.put_object(Bucket="state", Key=key, Body=b"{}")
        engine = PulumiEngine(settings_for(tmp_path, backend_url="s3://state/tenants?region=us-east-1"))

        assert engine._lock_files(stack("acme")) == [f"{locks}/organization/tenancy/dev.acme/1f.json"]
        assert engine._lock_files(stack("globex")) == [f"{locks}/dev.globex/2a.json"]
        assert engine._lock_files(stack("initech")) == []
        unreachable = PulumiEngine(settings_for(tmp_path, backend_url="s3://no-such-bucket?region=us-east-1"))
        with pytest.raises(EngineFailed) as raised:
            unreachable._lock_files(stack("acme"))
        assert "could not list the locks of dev.acme in s3://no-such-bucket/" in raised.value.message
        assert "NoSuchBucket" in raised.value.message
