"""Fuzz every operation of the OpenAPI document (schemathesis): whatever arrives, never a 500.

Bounded to keep the suite fast: a few examples per operation, as a platform admin (the caller who
reaches the most code), against the app over ASGI with its real backends and the engine double.
The app is built at import (schemathesis generates one test per operation at collection time), with
its own signing key served from a static JWKS file.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from jwt.algorithms import RSAAlgorithm
from schemathesis.checks import not_a_server_error

from tenancy.service.app import create_app
from tenancy.service.core.config import ServiceSettings
from tests.conftest import PROJECT_DIR
from tests.service.conftest import AUDIENCE, ISSUER, TenantEngine

EXAMPLES_PER_OPERATION = 15

_scratch = Path(tempfile.mkdtemp(prefix="tenant-api-fuzz-"))
atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_jwks = {"keys": [{**json.loads(RSAAlgorithm.to_jwk(_key.public_key())), "kid": "fuzz", "alg": "RS256"}]}
(_scratch / "jwks.json").write_text(json.dumps(_jwks))
_now = int(time.time())
TOKEN = jwt.encode(
    {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "fuzzer",
        "iat": _now,
        "exp": _now + 3600,
        "roles": ["platform-admin"],
    },
    _key,
    algorithm="RS256",
    headers={"kid": "fuzz"},
)
app = create_app(
    ServiceSettings(
        state_dir=_scratch / "state",
        project_dir=PROJECT_DIR,
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=_scratch / "jwks.json",
        workers=0,
        rate_limit_requests=100_000,
        sse_max_seconds=1.0,
        pulumi_preview=False,
    ),
    engine=TenantEngine(),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


# One test per operation, named by it ("GET /healthz"): schemathesis' own ``schema.parametrize()`` gives
# every operation the same test id, and pytest-xdist, which schedules tests by id, ran one of the 30.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.label for operation in OPERATIONS])
def test_no_request_makes_the_service_fail(operation: Any) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        case.validate_response(response, checks=[not_a_server_error])

    no_server_error()


def test_every_operation_of_the_document_is_fuzzed() -> None:
    paths = app.openapi()["paths"]
    documented = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    assert {operation.label for operation in OPERATIONS} == documented
