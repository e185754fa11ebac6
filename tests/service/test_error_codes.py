"""One table of error codes (``ERROR_CODES``: code → status, meaning): every code the service can
answer with is in it, each route documents its codes with the table's statuses, and the README names
codes only as the table has them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from fastapi import FastAPI

from tenancy.service.api.main import api_routers
from tenancy.service.core.errors import ERROR_CODES
from tests.conftest import PROJECT_DIR

SERVICE = PROJECT_DIR / "tenancy" / "service"
ROUTES = SERVICE / "api" / "routes"


def _name(call: ast.Call) -> str:
    function = call.func
    return function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def answered_codes(path: Path) -> dict[str, int | None]:
    """Codes a module answers with, as literals: ServiceError's, the body guard's (with its status),
    error_body's, and the tables that hand a code on (HTTP statuses, rotation refusals)."""
    found: dict[str, int | None] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = _name(node)
            if name in ("ServiceError", "error_body") and node.args and (code := _literal(node.args[0])):
                found[code] = None
            elif name == "BodyRefused" and len(node.args) >= 2 and (code := _literal(node.args[1])):
                status = node.args[0]
                found[code] = status.value if isinstance(status, ast.Constant) else None
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id in ("_HTTP_CODES", "_REFUSAL_CODES")
            for target in node.targets
        ):
            values = (
                node.value.values if isinstance(node.value, ast.Dict) else getattr(node.value, "elts", [])
            )
            found.update({code: None for value in values if (code := _literal(value))})
    return found


def documented_codes(path: Path) -> set[str]:
    """Codes a route module passes to error_responses (or names in a tuple such as AUTHENTICATED)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    codes = {
        code
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _name(node) == "error_responses"
        for argument in node.args
        if (code := _literal(argument))
    }
    if "AUTHENTICATED" in path.read_text(encoding="utf-8"):
        codes |= {"unauthenticated", "rate_limited"}
    return codes


def test_every_code_the_service_answers_with_is_in_the_table_with_its_status() -> None:
    seen = {}
    for path in sorted(SERVICE.rglob("*.py")):
        for code, status in answered_codes(path).items():
            assert code in ERROR_CODES, (
                f"{path.relative_to(PROJECT_DIR)} answers {code!r}, not in ERROR_CODES"
            )
            if status is not None:
                assert status == ERROR_CODES[code][0], f"{path.name} answers {code} with {status}"
            seen[code] = path
    # The scan finds what it should (else the assertions above would pass on nothing).
    assert {"tenant_not_found", "json_too_deep", "not_found", "rotation_in_progress"} <= set(seen)


def test_each_route_module_documents_the_codes_it_answers_with() -> None:
    for path in sorted(ROUTES.glob("*.py")):
        answered = set(answered_codes(path)) - {"not_ready"}  # /readyz: outside the API's documents
        missing = answered - documented_codes(path)
        assert not missing, f"{path.name} answers {sorted(missing)} without documenting them"


def test_openapi_documents_each_code_under_the_tables_status() -> None:
    app = FastAPI()
    for router in api_routers:
        app.include_router(router)
    documented = 0
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for code in re.findall(r"`([a-z_]+)`:", response.get("description", "")):
                    assert ERROR_CODES[code][0] == int(status), f"{method} {path}: {code} under {status}"
                    documented += 1
    assert documented > 50


def test_the_readme_names_codes_with_the_tables_status() -> None:
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"\b([45]\d\d)\s+\(?`([a-z]+(?:_[a-z]+)+)`", readme)
    assert len(named) > 10
    for status, code in named:
        assert code in ERROR_CODES, f"README names {code!r}, which the service never answers"
        assert ERROR_CODES[code][0] == int(status), (
            f"README: {status} {code}, the table says {ERROR_CODES[code][0]}"
        )
