"""Every error code tenantctl prints (``--json``) has one meaning: the service's table when the
service answered it (or tenantctl refuses the same thing here), an operation's table for a run that
failed, or tenantctl's own table for what only a command line meets; its own never reuses a service
code (``--hand-over`` without ``--url`` printed the service's ``invalid_request``, a 422 body check)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from typer.testing import CliRunner

from tenancy.automation.errors import ERROR_CODES as OPERATION_CODES
from tenancy.cli import app
from tenancy.cli.exit_codes import CLI_ERROR_CODES, INVALID_INPUT
from tenancy.service.core.errors import ERROR_CODES as SERVICE_CODES
from tests.conftest import PROJECT_DIR


def _text(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def printed_codes(path: Path) -> set[str]:
    """Code literals of a CLI module: ``code=...``, RemoteFailure's first argument, ``{"code": ...}``
    and the default codes of ``_fail``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            found |= {code for kw in node.keywords if kw.arg == "code" and (code := _text(kw.value))}
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "RemoteFailure" and node.args and (code := _text(node.args[0])):
                found.add(code)
            if name == "get" and getattr(node.func, "value", None) is not None:
                target = node.func.value  # type: ignore[attr-defined]
                if getattr(target, "id", "") == "default_code" and len(node.args) > 1:
                    found |= {code for code in [_text(node.args[1])] if code}
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _text(key) == "code" and (code := _text(value)):
                    found.add(code)
        elif isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "default_code" for t in node.targets
        ):
            assert isinstance(node.value, ast.Dict)
            found |= {code for value in node.value.values if (code := _text(value))}
    return found


def test_every_code_the_cli_prints_is_in_one_table() -> None:
    seen: dict[str, Path] = {}
    for path in sorted((PROJECT_DIR / "tenancy" / "cli").glob("*.py")):
        for code in printed_codes(path):
            assert code in CLI_ERROR_CODES or code in SERVICE_CODES or code in OPERATION_CODES, (
                f"{path.name} prints {code!r}, in no table of codes"
            )
            seen[code] = path
    # The scan sees what it should (else the assertion above would pass on nothing).
    assert {"invalid_input", "failed", "service_unreachable", "backup_not_found", "unauthenticated"} <= set(
        seen
    )
    assert "invalid_request" not in seen


def test_the_cli_s_own_codes_never_reuse_a_service_code() -> None:
    assert not set(CLI_ERROR_CODES) & set(SERVICE_CODES)
    assert not set(CLI_ERROR_CODES) & set(OPERATION_CODES)


def test_a_hand_over_without_the_service_is_invalid_input(tmp_path: Path) -> None:
    """The documented command, without --url: an argument tenantctl refuses, as every other."""
    runner = CliRunner()
    for arguments in (["--hand-over", "c" * 40], ["--hand-over", "../../x", "--url", "http://127.0.0.1:9"]):
        result = runner.invoke(
            app, ["backups", "acme", "--env", "dev", *arguments, "--json"], env={"TENANCY_API_URL": ""}
        )
        assert result.exit_code == INVALID_INPUT, result.output
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "invalid_input"
        assert "--hand-over" in error["message"]
