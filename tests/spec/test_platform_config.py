"""Platform config (Pulumi.<env>.yaml): typed, validated, with errors naming file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenancy.spec.errors import SpecError
from tenancy.spec.platform import parse_platform_config, read_platform_config, read_platform_config_file
from tests.conftest import PROJECT_DIR


def test_shipped_stack_files_are_valid_and_differ_where_they_should() -> None:
    dev = read_platform_config_file(PROJECT_DIR / "Pulumi.dev.yaml")
    prod = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")
    assert (dev.environment, prod.environment) == ("dev", "prod")
    assert not dev.high_availability and prod.high_availability
    assert not dev.vault.enabled and prod.vault.enabled
    assert dev.object_storage is None and prod.object_storage is not None


def test_unknown_key_in_a_stack_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  platform:domain: dev.example.com\n  platform:storageClas: fast\n")
    with pytest.raises(SpecError) as caught:
        read_platform_config_file(path)
    [issue] = caught.value.issues
    assert (issue.file, issue.field) == ("Pulumi.dev.yaml", "platform:storageClas")
    assert "unknown key" in issue.reason and "storageClass" in issue.reason


def test_bad_domain_is_rejected() -> None:
    with pytest.raises(SpecError) as caught:
        parse_platform_config({"domain": "not a domain"}, environment="dev", file="Pulumi.dev.yaml")
    [issue] = caught.value.issues
    assert issue.field == "platform:domain" and "not a DNS name" in issue.reason


def test_prod_without_vault_is_rejected_with_the_reason() -> None:
    with pytest.raises(SpecError) as caught:
        parse_platform_config({"domain": "example.com"}, environment="prod", file="Pulumi.prod.yaml")
    assert "vault.enabled must be true in prod" in str(caught.value)


def test_high_availability_needs_object_storage() -> None:
    values = {"domain": "example.com", "highAvailability": True}
    with pytest.raises(SpecError, match="objectStorage is required"):
        parse_platform_config(values, environment="dev", file="Pulumi.dev.yaml")


def test_nested_errors_name_the_nested_key() -> None:
    values = {"domain": "example.com", "vault": {"enabled": True, "adress": "https://v"}}
    with pytest.raises(SpecError) as caught:
        parse_platform_config(values, environment="dev", file="Pulumi.dev.yaml")
    assert "platform:vault.adress" in {i.field for i in caught.value.issues}


def test_live_config_strings_are_decoded_like_the_engine_passes_them() -> None:
    raw = {"domain": "example.com", "highAvailability": "false", "vault": '{"enabled": false}'}
    config = read_platform_config(raw.get, environment="dev")
    assert config.high_availability is False and config.vault.enabled is False


def test_encrypted_credentials_are_allowed_and_plain_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(
        "config:\n  platform:domain: dev.example.com\n  platform:vaultToken:\n    secure: AAABAbc=\n"
    )
    assert read_platform_config_file(path).domain == "dev.example.com"
    path.write_text("config:\n  platform:domain: dev.example.com\n  platform:vaultToken: s.plaintext\n")
    with pytest.raises(SpecError) as caught:
        read_platform_config_file(path)
    [issue] = caught.value.issues
    assert issue.field == "platform:vaultToken" and "pulumi config set --secret" in issue.reason


def test_a_stack_file_that_contains_itself_is_named_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  platform:domain: &d [*d]\n")
    with pytest.raises(SpecError) as caught:
        read_platform_config_file(path)
    [issue] = caught.value.issues
    assert issue.file == str(path)
    assert issue.reason.startswith("cannot be read as YAML: line 2, column 20: a YAML alias refers to itself")
