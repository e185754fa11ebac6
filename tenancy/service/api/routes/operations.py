"""Operations: read one (status, progress, summary) and follow its progress as Server-Sent Events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Path
from fastapi.sse import EventSourceResponse, ServerSentEvent

from tenancy.automation.contract import Operation
from tenancy.service.api import API_PREFIX
from tenancy.service.api.responses import AUTHENTICATED, error_responses
from tenancy.service.core.errors import ServiceError
from tenancy.service.deps import BackendsDep, CurrentPrincipal
from tenancy.service.models import OperationDetail, OperationView, ProgressEventView

router = APIRouter(prefix=API_PREFIX, tags=["operations"])

_MAX_EVENTS = 1000
_ERRORS = error_responses(*AUTHENTICATED, "operation_not_found")
OperationId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def accessible_operation(
    operation_id: OperationId, backends: BackendsDep, principal: CurrentPrincipal
) -> Operation:
    """The operation, if it belongs to the current incarnation of a tenant the caller can read (a
    reused name shows nothing of the tenant before it); 404 alike for missing and foreign."""
    operation = backends.queue.get(operation_id)
    if (
        operation is None
        or not principal.can_read(operation.stack.tenant, operation.stack.environment)
        or not (principal.platform_admin or backends.incarnations.current([operation], operation.stack))
    ):
        raise ServiceError("operation_not_found", f"there is no operation {operation_id} that you can access")
    return operation


AccessibleOperation = Annotated[Operation, Depends(accessible_operation)]


@router.get(
    "/operations/{operation_id}",
    response_model=OperationDetail,
    responses=_ERRORS,
    summary="Read an operation",
)
def read_operation(operation: AccessibleOperation, backends: BackendsDep) -> OperationDetail:
    events = backends.queue.events(operation.id)[-_MAX_EVENTS:]
    view = OperationView.of(operation)
    return OperationDetail(**view.model_dump(), events=[ProgressEventView.of(event) for event in events])


@router.get(
    "/operations/{operation_id}/events",
    response_class=EventSourceResponse,
    responses={
        **_ERRORS,
        200: {
            "description": (
                "text/event-stream: one `operation` event (data = the operation as it stands), then "
                "`progress` events (id = seq, data = a progress event) until the operation finishes, "
                "then one `end` event whose data is the operation."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    summary="Follow an operation's progress (Server-Sent Events)",
)
async def follow_operation(
    operation: AccessibleOperation,
    backends: BackendsDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID", max_length=20, description="Resume after this event (sent on reconnect)."
        ),
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    settings = backends.settings
    deadline = time.monotonic() + settings.sse_max_seconds
    queue = backends.queue
    current = operation
    yield ServerSentEvent(event="operation", data=OperationView.of(current).wire(), retry=2000)
    while True:
        events = await anyio.to_thread.run_sync(partial(queue.events, operation.id, after_seq=after))
        for event in events:
            after = event.seq
            yield ServerSentEvent(
                event="progress", id=str(event.seq), data=ProgressEventView.of(event).wire()
            )
        if current.status.finished:
            # Events written before the status flipped were read above; the stream is complete.
            yield ServerSentEvent(event="end", data=OperationView.of(current).wire())
            return
        if time.monotonic() > deadline:
            yield ServerSentEvent(event="timeout", data={"message": "reconnect to keep following"})
            return
        await anyio.sleep(settings.sse_poll_seconds)
        refreshed = await anyio.to_thread.run_sync(lambda: queue.get(operation.id))
        current = refreshed or current
