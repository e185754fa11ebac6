"""`tenantctl validate`, as CI runs it on a pull request."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_validate_json_lists_issues(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "x.yaml").write_text("name: y\nowners: [a@example.com]\nplan: small\n")
    result = runner.invoke(app, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["issues"][0]["field"] == "name"
