"""``tenantctl rotate-keys``: start a Qdrant key rotation for one tenant (local path).

Records the next ``qdrant.keyRotation`` in the tenant file (tenancy.spec.rotation) and runs ``up``: the
new keys work beside the old ones until the revocation is recorded. The service records it by itself
once ``graceUntil`` has passed; on the local path ``--end-grace`` does. The key itself is never printed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
import yaml

from tenancy.automation.contract import OperationKind
from tenancy.cli import exit_codes
from tenancy.cli.operations import (
    EnvOption,
    JsonOption,
    ProjectOption,
    StateOption,
    TenantArgument,
    TenantsOption,
    _fail,
    _read_spec,
    _requester,
    _run_one,
    _settings,
    _stack,
)
from tenancy.spec.rotation import RotationRefused, begin_rotation, end_grace, parse_grace

EndGraceOption = Annotated[
    bool,
    typer.Option(
        "--end-grace",
        help="Once graceUntil has passed: record the revocation and run up, so the old keys stop working.",
    ),
]
GraceOption = Annotated[
    str, typer.Option("--grace", help="How long the old keys keep working: 15m to 7d (e.g. 1h, 2d).")
]


def rotate_keys(
    tenant: TenantArgument,
    env: EnvOption,
    grace: GraceOption = "1h",
    end: EndGraceOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Rotate one tenant's Qdrant API key and read-only key without downtime.

    Writes the next key generation to tenants/<env>/<tenant>.yaml and runs
    `up`. The old keys keep working until the grace period ends; clients
    re-read their key (Vault or the Secret qdrant-api-keys) before then.
    Refused while a previous rotation's grace period runs. After graceUntil,
    --end-grace records the revocation and runs `up` (the service does this
    by itself for the tenants it manages).

    Example:  tenantctl rotate-keys acme --env dev --grace 1h

    Exit codes: 0 ok, 2 invalid input or refused, 3 the operation failed.
    """
    settings = _settings(project, tenants, state_dir)
    stack = _stack(env, tenant, as_json)
    document = _read_spec(settings, stack, as_json)
    now = datetime.now(UTC)
    try:
        if end:
            ended = end_grace(document, now=now)
            if ended is None:
                raise RotationRefused(
                    "grace_not_over",
                    f"{stack.name} has no rotation whose grace period is over and not yet ended: "
                    "nothing to revoke",
                )
            rotated = ended
        else:
            rotated = begin_rotation(document, now=now, grace=parse_grace(grace), requested_by=_requester())
    except RotationRefused as refused:
        _fail(str(refused), exit_codes.INVALID_INPUT, as_json, code=refused.code)
    path = settings.tenants_dir / env / f"{tenant}.yaml"
    path.write_text(yaml.safe_dump(rotated, sort_keys=False), encoding="utf-8")
    _run_one(OperationKind.up, tenant, env, as_json, settings)


def register(app: typer.Typer) -> None:
    app.command("rotate-keys")(rotate_keys)
