"""`tenantctl validate`, as CI runs it on a pull request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenancy.cli import app
from tenancy.cli.exit_codes import INVALID_INPUT
from tests.conftest import PROJECT_DIR

runner = CliRunner()


def test_validate_accepts_the_shipped_tenants() -> None:
    result = runner.invoke(app, ["validate", "--tenants", str(PROJECT_DIR / "tenants")])
    assert result.exit_code == 0, result.output
    assert "4 tenant file(s) valid" in result.output


def test_validate_exits_non_zero_naming_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    (tmp_path / "prod" / "acme.yaml").write_text(
        "name: acme\nowners: [a@example.com]\nplan: small\nqdrant: {replicas: 0}\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path)])
    assert result.exit_code == INVALID_INPUT
    assert f"{tmp_path.name}/prod/acme.yaml: qdrant.replicas:" in result.output


def test_validate_names_a_file_whose_yaml_alias_contains_itself(tmp_path: Path) -> None:
    """Was a RecursionError traceback: PyYAML builds the cyclic value and every check recursed into it."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "acme.yaml").write_text(
        "name: acme\nowners: [a@example.com]\nplan: small\nlabels: &l {team: *l}\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT
    [issue] = json.loads(result.stdout)["issues"]
    assert issue["file"] == f"{tmp_path.name}/dev/acme.yaml"
    assert issue["reason"].startswith("line 4, column 9: a YAML alias refers to itself:")


def test_validate_refuses_a_key_given_twice_and_so_does_the_render(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a reviewer reading `deletionProtection: true` at the top
    of a pull request's file would not see the `false` at its end that wins. Was accepted silently."""
    tenants = tmp_path / "tenants"
    (tenants / "prod").mkdir(parents=True)
    (tenants / "prod" / "acme.yaml").write_text(
        "name: acme\nowners: [a@example.com]\nplan: small\ndeletionProtection: true\n"
        "qdrant: {enabled: true}\ndeletionProtection: false\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tenants)])
    assert result.exit_code == INVALID_INPUT, result.output
    assert (
        "prod/acme.yaml: (file): line 6, column 1: deletionProtection is given twice in one mapping "
        "(first at line 4)" in result.output
    ), result.output
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        (tmp_path / name).write_text((PROJECT_DIR / name).read_text())
    rendered = runner.invoke(
        app, ["render", "--stack", "prod.acme", "--project", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert rendered.exit_code == INVALID_INPUT, rendered.output
    assert "deletionProtection is given twice" in rendered.output
    assert not (tmp_path / "out" / "prod.acme").exists()


def test_validate_says_where_a_file_is_not_utf8(tmp_path: Path) -> None:
    """Was "cannot be read: UnicodeDecodeError", with no line: a Latin-1 editor's "é" is enough."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "acme.yaml").write_bytes(
        b"name: acme\nowners: [a@example.com]\nplan: small\ndisplayName: Caf\xe9 Acme\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path)])
    assert result.exit_code == INVALID_INPUT, result.output
    assert (
        "dev/acme.yaml: (file): line 4, column 17: byte 0xe9 is not UTF-8 text (tenant files are UTF-8); "
        "save the file as UTF-8" in result.output
    ), result.output


def test_validate_json_lists_issues(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "x.yaml").write_text("name: y\nowners: [a@example.com]\nplan: small\n")
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["issues"][0]["field"] == "name"


def test_validate_against_a_revision_refuses_volume_changes(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "tenants" / "prod").mkdir(parents=True)
    spec = tmp_path / "tenants" / "prod" / "acme.yaml"
    spec.write_text("name: acme\nowners: [a@example.com]\nplan: small\nqdrant: {enabled: true}\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "x", "--allow-empty")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "acme")
    spec.write_text("name: acme\nowners: [a@example.com]\nplan: medium\nqdrant: {enabled: true}\n")

    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path / "tenants"), "--against", "HEAD"])
    assert result.exit_code == INVALID_INPUT
    assert "qdrant.storage.size: would grow from 10Gi to 50Gi" in result.output
    assert "platform:expandableStorageClasses" in result.output

    spec.write_text(
        "name: acme\nowners: [a@example.com]\nplan: medium\n"
        "qdrant: {enabled: true, storage: {size: 10Gi}, snapshots: {size: 5Gi}}\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path / "tenants"), "--against", "HEAD"])
    assert result.exit_code == 0, result.output

    # A pull request that takes Qdrant back a version is refused too, naming the field.
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "pinned")
    spec.write_text(spec.read_text().replace("enabled: true,", "enabled: true, version: v1.18.2,"))
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path / "tenants"), "--against", "HEAD"])
    assert result.exit_code == INVALID_INPUT
    assert "qdrant.version: would go back from v1.19.0 to v1.18.2" in result.output


def test_validate_against_an_unknown_revision_is_an_input_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", "--tenants", str(PROJECT_DIR / "tenants"), "--against", "no-such-ref"]
    )
    assert result.exit_code == INVALID_INPUT
    # A revision is not a file: no "(file)" field on its line.
    assert "error: revision 'no-such-ref': is not a commit in this repository" in result.output


def test_validate_reads_the_project_named_by_flag_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the stack commands, validate takes the project from --project or TENANCY_PROJECT_DIR
    (docs/automation.md), so it runs from anywhere, not only from the project directory."""
    monkeypatch.chdir(tmp_path)
    by_flag = runner.invoke(app, ["validate", "--project", str(PROJECT_DIR)])
    assert by_flag.exit_code == 0, by_flag.output
    assert f"4 tenant file(s) valid in {PROJECT_DIR / 'tenants'}" in by_flag.output
    by_environment = runner.invoke(app, ["validate"], env={"TENANCY_PROJECT_DIR": str(PROJECT_DIR)})
    assert by_environment.exit_code == 0, by_environment.output


def test_validate_from_inside_the_project_says_where_the_tenants_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_DIR / "tenants" / "dev")
    result = runner.invoke(app, ["validate"], env={"TENANCY_PROJECT_DIR": None})
    assert result.exit_code == INVALID_INPUT
    assert (
        f"error: tenants: the tenants directory does not exist; {PROJECT_DIR / 'tenants'} does: run from "
        f"{PROJECT_DIR}, or pass --project {PROJECT_DIR}"
    ) in result.output


def test_validate_against_a_revision_refuses_a_new_platform_class_but_not_a_qdrant_scale_down(
    tmp_path: Path,
) -> None:
    """The platform file beside tenants/ at the revision holds the class default volumes were made with."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "tenants" / "prod").mkdir(parents=True)
    platform = tmp_path / "Pulumi.prod.yaml"
    platform.write_text("config:\n  platform:domain: data.example.com\n")  # storageClass: the default
    spec = tmp_path / "tenants" / "prod" / "acme.yaml"
    spec.write_text(
        "name: acme\nowners: [a@example.com]\nplan: medium\nqdrant: {enabled: true, replicas: 3}\n"
    )
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "acme")
    tenants = str(tmp_path / "tenants")

    platform.write_text("config:\n  platform:domain: data.example.com\n  platform:storageClass: fast-ssd\n")
    spec.write_text(
        "name: acme\nowners: [a@example.com]\nplan: medium\nqdrant: {enabled: true, replicas: 2}\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", tenants, "--against", "HEAD", "--json"])
    assert result.exit_code == INVALID_INPUT
    issues = {issue["field"]: issue["reason"] for issue in json.loads(result.stdout)["issues"]}
    assert set(issues) == {"qdrant.storage.storageClass", "qdrant.snapshots.storageClass"}
    assert "set qdrant.storage.storageClass: standard" in issues["qdrant.storage.storageClass"]

    spec.write_text(
        "name: acme\nowners: [a@example.com]\nplan: medium\n"
        "qdrant: {enabled: true, replicas: 3, storage: {storageClass: standard}}\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", tenants, "--against", "HEAD"])
    assert result.exit_code == 0, result.output


def test_validate_against_a_revision_lets_a_volume_grow_on_an_expandable_class_only(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "tenants" / "prod").mkdir(parents=True)
    platform = tmp_path / "Pulumi.prod.yaml"
    platform.write_text("config:\n  platform:domain: data.example.com\n")
    spec = tmp_path / "tenants" / "prod" / "acme.yaml"
    base = "name: acme\nowners: [a@example.com]\nplan: medium\n"
    spec.write_text(base + "qdrant: {enabled: true, storage: {size: 10Gi}}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "acme")
    tenants = str(tmp_path / "tenants")

    spec.write_text(base + "qdrant: {enabled: true, storage: {size: 40Gi}}\n")
    refused = runner.invoke(app, ["validate", "--tenants", tenants, "--against", "HEAD", "--json"])
    assert refused.exit_code == INVALID_INPUT
    [issue] = json.loads(refused.stdout)["issues"]
    assert issue["field"] == "qdrant.storage.size"
    assert "would grow from 10Gi to 40Gi, but StorageClass standard is not listed" in issue["reason"]

    platform.write_text(
        "config:\n  platform:domain: data.example.com\n  platform:expandableStorageClasses: [standard]\n"
    )
    assert runner.invoke(app, ["validate", "--tenants", tenants, "--against", "HEAD"]).exit_code == 0

    spec.write_text(base + "qdrant: {enabled: true, storage: {size: 5Gi}}\n")
    shrunk = runner.invoke(app, ["validate", "--tenants", tenants, "--against", "HEAD", "--json"])
    assert shrunk.exit_code == INVALID_INPUT
    [issue] = json.loads(shrunk.stdout)["issues"]
    assert "would shrink from 10Gi to 5Gi, and a volume never shrinks; set" in issue["reason"]


def test_validate_names_a_bad_worker_count_instead_of_ignoring_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """TENANCY_VALIDATE_WORKERS is read for every tree (a typo shows at once), and a value that is not
    a whole number of processes, 1 or more, is an error naming the variable, not silently one per CPU."""
    for bad in ("two", "0", "-3", ""):
        monkeypatch.setenv("TENANCY_VALIDATE_WORKERS", bad)
        result = runner.invoke(app, ["validate", "--tenants", str(PROJECT_DIR / "tenants")])
        assert result.exit_code == INVALID_INPUT, (bad, result.output)
        assert (
            f"error: environment: TENANCY_VALIDATE_WORKERS: is {bad!r}: set it to the number of processes"
            in result.output
        )
    monkeypatch.setenv("TENANCY_VALIDATE_WORKERS", "1")
    assert runner.invoke(app, ["validate", "--tenants", str(PROJECT_DIR / "tenants")]).exit_code == 0


def test_validate_names_a_file_with_a_date_that_does_not_exist(tmp_path: Path) -> None:
    """Was a ValueError traceback from PyYAML's timestamp constructor."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "acme.yaml").write_text(
        "name: acme\nowners: [a@example.com]\nplan: small\nlabels:\n  since: 2001-02-30\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT
    [issue] = json.loads(result.stdout)["issues"]
    assert issue["file"] == f"{tmp_path.name}/dev/acme.yaml"
    assert issue["reason"].startswith("line 5, column 10: '2001-02-30' is not a valid timestamp:")


def test_validate_names_a_file_whose_aliases_expand_beyond_the_limit(tmp_path: Path) -> None:
    """Was hours of CPU: nested aliases ("billion laughs") walked as a tree by every check."""
    (tmp_path / "dev").mkdir()
    laughs = ["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "dev" / "acme.yaml").write_text(
        "name: acme\nowners: [a@example.com]\nplan: small\n" + "\n".join(laughs) + "\n"
    )
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT
    [issue] = json.loads(result.stdout)["issues"]
    assert issue["file"] == f"{tmp_path.name}/dev/acme.yaml"
    assert "the document's aliases repeat its anchored values" in issue["reason"]
