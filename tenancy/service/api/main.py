"""The versioned API: every route under /api/v1.

Each route module's router carries the prefix itself, so a matched route knows its full path
template (what metrics label requests with).
"""

from __future__ import annotations

from fastapi import APIRouter

from tenancy.service.api import API_PREFIX
from tenancy.service.api.routes import (
    api_keys,
    change_requests,
    me,
    operations,
    qdrant,
    qdrant_keys,
    secrets,
    tenants,
)

__all__ = ["API_PREFIX", "api_routers"]

api_routers: list[APIRouter] = [
    me.router,
    tenants.router,
    operations.router,
    secrets.router,
    api_keys.router,
    change_requests.router,
    qdrant.router,
    qdrant_keys.router,
]
