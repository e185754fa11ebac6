"""Who the service thinks you are: handy when a token does not grant what you expected."""

from __future__ import annotations

from fastapi import APIRouter

from tenancy.service.api import API_PREFIX
from tenancy.service.api.responses import AUTHENTICATED, error_responses
from tenancy.service.deps import CurrentPrincipal
from tenancy.service.models import Me

router = APIRouter(prefix=API_PREFIX, tags=["me"])


@router.get(
    "/me",
    response_model=Me,
    responses=error_responses(*AUTHENTICATED),
    summary="Your identity and roles as this service reads them",
)
def read_me(principal: CurrentPrincipal) -> Me:
    return Me(
        subject=principal.actor,
        kind=principal.kind,
        platform_admin=principal.platform_admin,
        tenants=dict(principal.tenant_roles),
    )
