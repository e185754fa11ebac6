"""Revealing a tenant's secrets: the Qdrant API keys and the vCluster kubeconfig.

Tenant-admins only, each call audited (who, which tenant, which secret, never the value), and
answered with Cache-Control: no-store. Values come from the stack's outputs with secrets revealed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tenancy.automation.contract import StackRef
from tenancy.service.api import API_PREFIX
from tenancy.service.api.responses import AUTHENTICATED, error_responses
from tenancy.service.backends import Backends
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.security import Principal
from tenancy.service.deps import BackendsDep, ChangeableTenant, CurrentPrincipal, tenant_not_found
from tenancy.service.models import QdrantApiKeys

router = APIRouter(prefix=API_PREFIX, tags=["secrets"])
log = logging.getLogger("tenancy.service")

TENANT_PATH = "/environments/{environment}/tenants/{name}"
_ERRORS = error_responses(
    *AUTHENTICATED,
    "forbidden",
    "tenant_not_found",
    "environment_not_served",
    "output_not_available",
    "engine_unavailable",
)


def _revealed_outputs(
    request: Request, backends: Backends, principal: Principal, stack: StackRef, action: str
) -> dict[str, Any]:
    def audit(outcome: Any, reason: str | None = None) -> None:
        backends.audit.record(
            actor=principal.actor,
            action=action,
            outcome=outcome,
            tenant=stack.tenant,
            environment=stack.environment,
            request_id=request_id(request),
            reason=reason,
        )

    if backends.repository.read_text(stack.environment, stack.tenant) is None:
        audit("refused", "tenant_not_found")
        raise tenant_not_found(stack.environment, stack.tenant)
    try:
        outputs = backends.engine.outputs(stack, reveal_secrets=True)
    except Exception as error:
        code = getattr(error, "code", None)
        audit("failed", code or type(error).__name__)
        if code == "not_found":
            raise ServiceError(
                "output_not_available", f"{stack.name} has not been deployed yet; wait for its first update"
            ) from None
        if code == "pulumi_cli_missing":
            raise ServiceError(
                "engine_unavailable", str(getattr(error, "message", "the Pulumi CLI is missing"))
            ) from None
        log.warning("reading outputs of %s failed: %s", stack.name, type(error).__name__)
        raise ServiceError(
            "engine_unavailable", f"the outputs of {stack.name} cannot be read right now; retry shortly"
        ) from None
    audit("succeeded")
    return outputs


@router.post(
    f"{TENANT_PATH}/qdrant/api-key/reveal",
    response_model=QdrantApiKeys,
    responses=_ERRORS,
    summary="Reveal the tenant's Qdrant API keys (tenant-admin, audited)",
)
def reveal_qdrant_api_key(
    request: Request, stack: ChangeableTenant, backends: BackendsDep, principal: CurrentPrincipal
) -> QdrantApiKeys:
    outputs = _revealed_outputs(request, backends, principal, stack, "secret.reveal.qdrant-api-key")
    key = outputs.get("qdrantApiKey")
    if not isinstance(key, str):
        raise ServiceError(
            "output_not_available", f"{stack.name} has no Qdrant API key: is qdrant.enabled true?"
        )
    read_only = outputs.get("qdrantReadOnlyApiKey")
    backends.metrics.secrets_revealed.labels("qdrantApiKey").inc()
    return QdrantApiKeys(api_key=key, read_only_api_key=read_only if isinstance(read_only, str) else None)


@router.get(
    f"{TENANT_PATH}/vcluster/kubeconfig",
    responses={
        **_ERRORS,
        200: {
            "content": {"application/yaml": {"schema": {"type": "string"}}},
            "description": "The kubeconfig.",
        },
    },
    response_class=Response,
    summary="Download the tenant's vCluster kubeconfig (tenant-admin, audited)",
)
def download_vcluster_kubeconfig(
    request: Request, stack: ChangeableTenant, backends: BackendsDep, principal: CurrentPrincipal
) -> Response:
    outputs = _revealed_outputs(request, backends, principal, stack, "secret.reveal.vcluster-kubeconfig")
    kubeconfig = outputs.get("vclusterKubeconfig")
    if not isinstance(kubeconfig, str):
        raise ServiceError(
            "output_not_available", f"{stack.name} has no vCluster kubeconfig: is vcluster.enabled true?"
        )
    backends.metrics.secrets_revealed.labels("vclusterKubeconfig").inc()
    filename = f"{stack.environment}-{stack.tenant}-vcluster.kubeconfig"
    return Response(
        kubeconfig,
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
