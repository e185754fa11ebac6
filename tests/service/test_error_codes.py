"""One table of error codes (``ERROR_CODES``: code → status, meaning): every code the service can
answer with is in it, each route documents its codes with the table's statuses, and the README names
codes only as the table has them."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tenancy.automation import errors as automation_errors
from tenancy.automation.errors import AutomationError
from tenancy.service.api.main import api_routers
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY
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
    """Codes a route module passes to error_responses, names in a ``*_CODES`` tuple, or takes from
    AUTHENTICATED and WITH_BODY."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    codes = {
        code
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _name(node) == "error_responses"
        for argument in node.args
        if (code := _literal(argument))
    }
    # A tuple of codes several routes share (qdrant.py's _CODES, tenants.py's _WRITE_CODES).
    codes |= {
        code
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
        if any(isinstance(target, ast.Name) and target.id.endswith("_CODES") for target in node.targets)
        for element in node.value.elts
        if (code := _literal(element))
    }
    text = path.read_text(encoding="utf-8")
    if "AUTHENTICATED" in text:
        codes |= set(AUTHENTICATED)
    if "WITH_BODY" in text:
        codes |= set(WITH_BODY)
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


def _openapi() -> dict[str, Any]:
    app = FastAPI()
    for router in api_routers:
        app.include_router(router)
    return app.openapi()


def _documented(operation: dict[str, Any]) -> set[str]:
    return {
        code
        for response in operation["responses"].values()
        for code in re.findall(r"`([a-z_]+)`:", response.get("description", ""))
    }


def test_every_route_documents_what_authentication_and_body_checks_answer() -> None:
    """Authentication may answer 401, 429 and 503 (the identity provider's keys cannot be fetched)
    before any route runs; a JSON body may be refused (400, 413, 422) before it does."""
    checked = 0
    for path, operations in _openapi()["paths"].items():
        for method, operation in operations.items():
            documented = _documented(operation)
            if path != "/api/v1/healthz" and "readyz" not in path:
                missing = set(AUTHENTICATED) - documented
                assert not missing, f"{method} {path} does not document {sorted(missing)}"
            if "requestBody" in operation:
                missing = set(WITH_BODY) - documented
                assert not missing, f"{method} {path} takes a body but does not document {sorted(missing)}"
            checked += 1
    assert checked > 20
    preview = _openapi()["paths"]["/api/v1/environments/{environment}/tenants/{name}/preview"]["post"]
    assert {"preview_busy", "rate_limited"} <= _documented(preview)  # both 429, one entry


def test_an_unreadable_body_and_an_invalid_one_answer_different_codes(
    make_app: Any, issuer: Any, serve: Any
) -> None:
    """400 and 422 never share a code: a body that is not UTF-8 is bad_request, JSON that is not
    valid is invalid_request (with details). Served by uvicorn as `tenantctl serve` serves it."""
    from tests.service.conftest import create_tenant

    app, _ = make_app()
    create_tenant(app, "acme")
    headers = {"Content-Type": "application/json"}
    with serve(app).client(issuer.admin_of("acme")) as client:
        url = "/api/v1/environments/dev/tenants/acme"
        unreadable = client.patch(url, content=b'{"displayName": "\xff\xfe"}', headers=headers)
        invalid = client.patch(url, content=b'{"displayName": ', headers=headers)
    assert (unreadable.status_code, unreadable.json()["error"]["code"]) == (400, "bad_request")
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (422, "invalid_request")
    for response in (unreadable, invalid):
        code = response.json()["error"]["code"]
        assert ERROR_CODES[code][0] == response.status_code


def test_a_5xx_the_framework_raises_answers_a_code_of_its_status(
    make_app: Any, serve: Any, caplog: Any
) -> None:
    """Starlette's HTTPException with a 5xx (a library's middleware, a later Starlette) answered
    ``internal_error`` with its own status (502, 503, ...) where the table says 500: a 503 now answers
    ``service_unavailable`` (Retry-After kept), any other 5xx 500 ``internal_error`` (logged)."""
    import httpx
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app, _ = make_app()

    async def raises(status: int) -> None:
        raise StarletteHTTPException(status, detail="the framework's own text", headers={"Retry-After": "7"})

    app.add_api_route("/framework-raises/{status}", raises)
    server = serve(app)
    answers = {}
    with caplog.at_level("ERROR", logger="tenancy.service"):
        for status in (500, 501, 502, 503, 504):
            answers[status] = httpx.get(f"{server.url}/framework-raises/{status}")
    for status, response in answers.items():
        code = response.json()["error"]["code"]
        assert ERROR_CODES[code][0] == response.status_code, (status, code, response.status_code)
        assert "the framework's own text" not in response.text
    assert [answers[status].status_code for status in (500, 501, 502, 503, 504)] == [500, 500, 500, 503, 500]
    assert answers[503].json()["error"]["code"] == "service_unavailable"
    assert answers[503].headers["Retry-After"] == "7"
    assert answers[502].json()["error"]["code"] == "internal_error"
    assert "Retry-After" not in answers[502].headers  # an internal error says nothing about retrying
    request_ids = [answers[status].headers.get("X-Request-ID") for status in (500, 501, 502, 504)]
    logged = [record.getMessage() for record in caplog.records]
    for status, rid in zip((500, 501, 502, 504), request_ids, strict=True):
        assert rid and rid in answers[status].json()["error"]["message"]
        assert any(f"HTTP {status} raised" in line and rid in line for line in logged), logged


def test_every_code_the_automation_layer_emits_is_in_its_table() -> None:
    """Operation summaries carry automation codes (a table of their own: they are not HTTP answers,
    and `not_found`/`conflict` mean a stack there); each error class's code has a meaning."""
    import importlib
    import pkgutil

    import tenancy.automation as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    pending, codes = [AutomationError], set()
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    literal = set()
    for path in (PROJECT_DIR / "tenancy" / "automation").glob("*.py"):
        literal |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert {"backup_failed", "scaling_failed", "interrupted"} <= codes | literal
    missing = (codes | literal) - set(automation_errors.ERROR_CODES)
    assert not missing, f"tenancy.automation.errors.ERROR_CODES lacks {sorted(missing)}"


def test_platform_admin_required_describes_every_route_answering_it() -> None:
    meaning = ERROR_CODES["platform_admin_required"][1]
    assert all(word in meaning for word in ("plan", "force", "hand", "backups")), meaning


def test_openapi_documents_each_code_under_the_tables_status() -> None:
    documented = 0
    for path, operations in _openapi()["paths"].items():
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
