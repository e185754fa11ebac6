"""The approval workflow over change requests: assess a write, file it, approve, reject, expire.

``assess`` decides whether a tenant-admin's write needs a platform-admin: the platform-owned fields
(plan, groups; a new tenant beyond the self-service plans) and sizes above the tenant's plan. For a
size above the plan, the request proposes the smallest larger plan that fits (what the validator's
message asks for), so a platform-admin approves an upgrade, not an invalid spec.

Every step (filed, approved, refused approval, rejected, expired) is one audit line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from tenancy.automation.contract import StackRef
from tenancy.service.core.audit import AuditLog, Outcome
from tenancy.service.core.change_requests import (
    ChangeRequest,
    ChangeRequestStore,
    ListScope,
    RequestStatus,
    decided,
    field_diff,
    new_request_id,
)
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.incarnation import incarnation_of
from tenancy.service.core.security import Principal
from tenancy.service.core.tenant_changes import (
    CHANGE_REQUEST_TRAILER,
    ChangeResult,
    TenantChanges,
    _repository_unavailable,
    etag_of,
    merge_patch,
)
from tenancy.service.core.tenants_repo import RepositoryError, TenantRepository, parse_document
from tenancy.spec.errors import SpecError
from tenancy.spec.plans import Plan
from tenancy.spec.tenant import TenantSpec, parse_tenant, resolve

log = logging.getLogger("tenancy.service")
# Why a pending request ended when its tenant went (``_expire_if_due``): approving it is then stale.
_DELETED_SINCE = "the tenant it was made for was deleted since; file a new one if it is still wanted"
_CREATED_SINCE = (
    "the tenant it would create was created since by another change; file a new one if it is still wanted"
)
_RECREATED_SINCE = (
    "the tenant it was made for was deleted since, and the name is another tenant's now; file a new one "
    "if it is still wanted"
)
_STALE_REASONS = (_DELETED_SINCE, _CREATED_SINCE, _RECREATED_SINCE)
_EXPIRY_FRESHNESS_SECONDS = 1.0  # a read fetches for an expiry at most this often
_REPLICA_CLOCK_SKEW_SECONDS = (
    5.0  # replicas' clocks may differ by this much (a request's time is its filer's)
)


def _stale_message(request: ChangeRequest, name_taken: bool) -> str:
    """Why approving a request that ended with its tenant is refused (``change_request_stale``);
    ``name_taken``: a tenant of the name is there now."""
    name = f"{request.environment}.{request.tenant}"
    if request.decision_reason in (_RECREATED_SINCE, _DELETED_SINCE) and name_taken:
        return (
            f"change request {request.id} was filed for an earlier tenant named {request.tenant}, deleted "
            f"since; {name} now is another tenant, so it can no longer be applied (it ended as expired)"
        )
    happened = "created by another change" if request.decision_reason == _CREATED_SINCE else "deleted"
    return f"{name} was {happened} since change request {request.id} was made, so it can no longer be applied"


Render = Callable[[StackRef, dict[str, Any] | None, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Proposal:
    """A write that needs a platform-admin: the document approval would commit, and why."""

    stack: StackRef
    document: dict[str, Any]
    base_document: dict[str, Any] | None
    base_etag: str | None
    needs: list[dict[str, str]]


LIST_LIMIT = 500  # requests one listing returns at most
_PURGE_EVERY_SECONDS = 3600
_PAGE = 200
# Longer than any approval takes: its wait for the tenant (30 s; a crashed holder's Redis lock lasts
# 120 s), its commit and its operation's place in the queue. A request ``applying`` for longer was
# cut short by a crash.
APPLYING_FOR_AT_MOST_SECONDS = 600.0


class Approvals:
    def __init__(
        self,
        *,
        store: ChangeRequestStore,
        changes: TenantChanges,
        repository: TenantRepository,
        audit: AuditLog,
        ttl_seconds: float,
        render: Render,
        max_pending_per_tenant: int,
        retention_seconds: float,
        admit_render: Callable[[str], AbstractContextManager[None]] = lambda who: nullcontext(),
    ) -> None:
        """``max_pending_per_tenant`` and ``retention_seconds``: the service's settings
        (``change_request_max_pending``, ``change_request_retention_days``). ``admit_render(who)``:
        held while a request's preview renders (the service's preview bounds: ``preview_busy``
        beyond them), as for ``POST .../preview``."""
        self.store = store
        self.changes = changes
        self.repository = repository
        self.audit = audit
        self.ttl_seconds = ttl_seconds
        self.render = render
        self.max_pending_per_tenant = max_pending_per_tenant
        self.admit_render = admit_render
        self.retention_seconds = retention_seconds
        self._purged_at = 0.0  # when this process last removed decided requests past retention

    # --- filing -------------------------------------------------------------------------------

    def assess(
        self, stack: StackRef, principal: Principal, body: Any, *, patch: bool, always: bool = False
    ) -> Proposal | None:
        """The change request ``body`` (a document, or a merge patch) would make, or None when the
        caller may make the change alone (then the ordinary write path runs and reports any error).
        ``always``: file a request even when no field needs a platform-admin (asked for explicitly)."""
        if principal.platform_admin and not always:
            return None
        if not isinstance(body, dict):
            return None
        text = self.repository.read_text(stack.environment, stack.tenant)
        current = parse_document(text) if text is not None else None
        if patch:
            if current is None:
                return None  # the ordinary path answers tenant_not_found
            self.changes.refuse_unreadable(stack)  # nothing to merge into: 422 naming the file
            body = merge_patch(current, body)
        spec, upgrade = self._validate_or_upgrade(stack, principal, body, current)
        spec = self.changes.keep_key_rotation(stack, current, spec)  # the platform's record stays
        needs = self.changes.check_proposal(stack, principal, current, spec)
        if upgrade is not None:
            needs = [item for item in needs if item["field"] != "plan"]
            needs.insert(0, upgrade)
        if not needs and not always:
            return None
        return Proposal(
            stack=stack,
            document=spec.to_file_document(),  # what approval commits: the file's fields as written
            base_document=current,
            base_etag=etag_of(text) if text is not None else None,
            needs=needs,
        )

    def _validate_or_upgrade(
        self, stack: StackRef, principal: Principal, document: dict[str, Any], current: dict[str, Any] | None
    ) -> tuple[TenantSpec, dict[str, str] | None]:
        try:
            return self.changes.validate(stack, document), None
        except ServiceError as invalid:
            if invalid.code != "invalid_spec" or principal.platform_admin:
                raise
            asked = str(document.get("plan", ""))
            plans = [plan.value for plan in Plan]
            if asked not in plans:
                raise
            # The larger plan keeps the volumes the tenant has: its default sizes would grow them, which
            # their class may not allow (and nobody asked for), and the proposal would be refused.
            kept = _with_current_volumes(document, current, stack, self.changes.display_file(stack))
            for larger in plans[plans.index(asked) + 1 :]:
                try:
                    spec = self.changes.validate(stack, {**kept, "plan": larger})
                except ServiceError:
                    continue
                reason = f"the sizes asked for exceed the {asked} plan; the {larger} plan fits them"
                if kept != document:
                    reason += " (the volumes keep their current sizes)"
                return spec, {"field": "plan", "reason": reason}
            raise

    def file(self, proposal: Proposal, principal: Principal, reason: str, request_id: str) -> ChangeRequest:
        """Store the request (with its rendered preview); nothing reaches git or the queue. A tenant
        has at most ``max_pending_per_tenant`` requests waiting for a decision: each renders a preview
        when filed and is listed to every platform-admin, so one tenant's flood must neither cost the
        service without bound nor push the others' requests out of sight."""
        stack = proposal.stack
        self._check_room(stack)
        with self.admit_render(principal.budget):
            preview = self.render(stack, proposal.base_document, proposal.document)
        now = time.time()
        request = ChangeRequest(
            id=new_request_id(),
            environment=stack.environment,
            tenant=stack.tenant,
            requested_by=principal.actor,
            requester_name=principal.display_name,
            reason=reason,
            created_at=now,
            expires_at=now + self.ttl_seconds,
            base_etag=proposal.base_etag,
            base_document=proposal.base_document,
            document=proposal.document,
            diff=field_diff(proposal.base_document, {"name": stack.tenant, **proposal.document}),
            needs=proposal.needs,
            preview=preview,
            incarnation=incarnation_of(self.repository, stack),
        )
        # The count and the add under the tenant's write lock (every process and replica takes it):
        # filings at once never pass the cap between them.
        try:
            with self.changes.write_lock.hold(stack):
                self._check_room(stack)
                self.store.add(request)
        except RepositoryError as error:  # the lock: another replica writes the tenant (tenant_busy)
            raise _repository_unavailable(error) from None
        self._audit(
            principal,
            "change_request.create",
            "accepted",
            request,
            request_id,
            done=f"change request {request.id} for {request.environment}.{request.tenant} was filed",
        )
        self._purge_if_due(now)
        return request

    def _purge_if_due(self, now: float) -> None:
        """Decided requests are kept ``retention_seconds`` after they were made (the audit log keeps
        every decision for good), so listings, which read what they must page through, stay bounded;
        at most once an hour per process, on a filing."""
        if now - self._purged_at < _PURGE_EVERY_SECONDS:
            return
        self._purged_at = now
        removed = self.store.purge(now - self.retention_seconds)
        if removed:
            log.info("removed %d decided change request(s) past retention", removed)

    def _check_room(self, stack: StackRef) -> None:
        """Refuse (409) a tenant that has as many requests waiting as it may. Requests whose tenant is
        gone (an earlier tenant's, or a create's whose name was taken since) count for nobody: they
        end as expired when next read (``_expire_if_due``)."""
        current: dict[StackRef, str] = {}  # the stack's incarnation, looked up once
        pending = sum(
            1
            for request in self.store.pending()
            if request.environment == stack.environment
            and request.tenant == stack.tenant
            and not request.expired(time.time())
            and not self._tenant_gone(request, current)
        )
        if pending >= self.max_pending_per_tenant:
            raise ServiceError(
                "too_many_change_requests",
                f"{stack.name} has {pending} change requests waiting for a platform-admin, the most it may "
                "have; file this one once one of them is decided or has expired",
            )

    # --- reading ------------------------------------------------------------------------------

    def visible(
        self, principal: Principal, request: ChangeRequest, current: dict[StackRef, str] | None = None
    ) -> bool:
        """Platform-admins see every request, a requester their own, and the tenant's readers those of
        its current incarnation: a later tenant of the name never sees the earlier one's requests
        (reasons, documents, who asked). ``current``: incarnations already looked up (a listing)."""
        if principal.platform_admin or request.requested_by == principal.actor:
            return True
        if not principal.can_read(request.tenant, request.environment):
            return False
        if request.incarnation is None:  # stored before requests recorded it
            return True
        stack = StackRef(request.environment, request.tenant)
        cache = current if current is not None else {}
        if stack not in cache:
            cache[stack] = incarnation_of(self.repository, stack)
        return request.incarnation == cache[stack]

    def get(self, principal: Principal, request_id: str, rid: str) -> ChangeRequest:
        request = self.store.get(request_id)
        if request is None or not self.visible(principal, request):
            raise ServiceError(
                "change_request_not_found", f"there is no change request {request_id} that you can see"
            )
        return self._expire_if_due(self._settle_if_interrupted(request, rid), rid)

    def list(
        self,
        principal: Principal,
        rid: str,
        *,
        status: RequestStatus | None = None,
        environment: str | None = None,
        tenant: str | None = None,
    ) -> list[ChangeRequest]:
        """The newest ``LIST_LIMIT`` requests the caller may see that match, however many others
        (other tenants', other statuses) were filed since."""
        found: list[ChangeRequest] = []
        seen: set[str] = set()  # a request filed while this pages moves the rest down one
        current: dict[StackRef, str] = {}
        for request in self._all(_scope(principal, tenant)):
            if len(found) >= LIST_LIMIT:
                break
            if request.id in seen or not self.visible(principal, request, current):
                continue
            request = self._expire_if_due(self._settle_if_interrupted(request, rid), rid, current)
            if status is not None and request.status is not status:
                continue
            if environment is not None and request.environment != environment:
                continue
            if tenant is not None and request.tenant != tenant:
                continue
            seen.add(request.id)
            found.append(request)
        return found

    def _all(self, scope: ListScope | None) -> Iterator[ChangeRequest]:
        """Every stored request in ``scope`` (None: every one), newest first, read a page at a time."""
        offset = 0
        while True:
            page = self.store.list(limit=_PAGE, offset=offset, scope=scope)
            yield from page
            if len(page) < _PAGE:
                return
            offset += len(page)

    def _expire_if_due(
        self, request: ChangeRequest, rid: str, current: dict[StackRef, str] | None = None
    ) -> ChangeRequest:
        """A pending request past its expiry, or whose tenant is gone (deleted, or deleted and made
        again: another tenant of the name), ends as expired: it can no longer be approved, and a
        listing of pending requests must not keep offering it. ``current``: as for ``visible``."""
        if request.status is not RequestStatus.pending:
            return request
        if request.expired(time.time()):
            reason = "not decided before it expired"
        elif self._tenant_gone(request, current if current is not None else {}) and self._gone_on_the_remote(
            request
        ):
            if request.base_etag is None:
                reason = _CREATED_SINCE
            elif self.repository.exists(request.environment, request.tenant):
                reason = _RECREATED_SINCE
            else:
                reason = _DELETED_SINCE
        else:
            return request
        expired = self.store.transition(
            request.id, RequestStatus.pending, decided(request, RequestStatus.expired, by=None, reason=reason)
        )
        if expired is None:  # decided meanwhile
            return self.store.get(request.id) or request
        self.audit.record(
            actor="system:expiry",
            action="change_request.expire",
            outcome="succeeded",
            tenant=request.tenant,
            environment=request.environment,
            request_id=rid,
            reason=request.id,
        )
        return expired

    def _gone_on_the_remote(self, request: ChangeRequest) -> bool:
        """``_tenant_gone`` again on a branch fetched from the remote after the request was filed: the
        expiry is stored for every replica, and this one's checkout may be behind the replica that
        filed it (a tenant it had just created would read as absent here). A branch fetched after the
        filing has everything pushed before it, so a file absent from it was deleted since. The fetch
        is a read's (at most one a second, never waiting for a writer, backing off from an unreachable
        remote); unsure: not gone, for now (a later read decides)."""
        filed = request.created_at + _REPLICA_CLOCK_SKEW_SECONDS
        if not self.repository.fetched_after(filed):
            self.repository.refresh(max_age=_EXPIRY_FRESHNESS_SECONDS)
            if not self.repository.fetched_after(filed):
                return False
        return self._tenant_gone(request, {})

    def _tenant_gone(self, request: ChangeRequest, current: dict[StackRef, str]) -> bool:
        """Whether the tenant ``request`` was made for no longer is: its file was deleted, or the name
        now belongs to another incarnation (for a request to create it: someone created it). A request
        to create a tenant stands while the name is free."""
        stack = StackRef(request.environment, request.tenant)
        if request.base_etag is not None and not self.repository.exists(stack.environment, stack.tenant):
            return True
        if request.incarnation is None:  # stored before requests recorded it
            return False
        if stack not in current:
            current[stack] = incarnation_of(self.repository, stack)
        return request.incarnation != current[stack]

    def _commit_of(self, request: ChangeRequest) -> str | None:
        """The commit an approval of ``request`` made (it names the request), or None."""
        trailer = f"{CHANGE_REQUEST_TRAILER}{request.id}"
        return self.repository.commit_naming(request.environment, request.tenant, trailer)

    def _settle_if_interrupted(self, request: ChangeRequest, rid: str) -> ChangeRequest:
        """A request left ``applying`` longer than any approval takes (``APPLYING_FOR_AT_MOST_SECONDS``:
        the process applying it died): approved if git has the commit that names it (the start-up
        reconcile queues its update if the process died before it did), pending again otherwise, so
        it can be decided. Audited either way, by ``system:recovery``."""
        if request.status is not RequestStatus.applying:
            return request
        started = request.decided_at if request.decided_at is not None else 0.0
        if time.time() - started < APPLYING_FOR_AT_MOST_SECONDS:
            return request
        stack = StackRef(request.environment, request.tenant)
        commit = self._commit_of(request)
        if commit is not None:
            settled = replace(
                request,
                status=RequestStatus.approved,
                commit=commit,
                incarnation=incarnation_of(self.repository, stack),
            )
            outcome: Outcome = "succeeded"
            reason = f"{request.id}: the approval was cut short after its commit {commit[:12]}"
        else:
            settled = replace(request, status=RequestStatus.pending, decided_by=None, decided_at=None)
            outcome, reason = (
                "failed",
                f"{request.id}: the approval was cut short before its commit; pending again",
            )
        stored = self.store.transition(request.id, RequestStatus.applying, settled)
        if stored is None:  # settled or finished meanwhile
            return self.store.get(request.id) or request
        log.warning("change request %s: %s", request.id, reason.split(": ", 1)[1])
        self.audit.record(
            actor="system:recovery",
            action="change_request.approve",
            outcome=outcome,
            tenant=request.tenant,
            environment=request.environment,
            request_id=rid,
            reason=reason,
        )
        return stored

    # --- deciding -----------------------------------------------------------------------------

    def approve(self, principal: Principal, request_id: str, rid: str) -> tuple[ChangeRequest, ChangeResult]:
        """Apply exactly the stored document, against exactly the version it was made against."""
        request = self._decidable(principal, request_id, rid, "change_request.approve")
        stack = StackRef(request.environment, request.tenant)
        # Who applies it and since when: an approval cut short (a crash) is settled once it is older
        # than any approval can take (``_settle_if_interrupted``).
        applying = self.store.transition(
            request.id,
            RequestStatus.pending,
            replace(
                request, status=RequestStatus.applying, decided_by=principal.actor, decided_at=time.time()
            ),
        )
        if applying is None:
            raise self._refused(
                principal, request, rid, "change_request.approve", self._decided_meanwhile(request)
            )
        try:
            result = self.changes.replace(
                stack,
                request.document,
                principal,
                if_match=f'"{request.base_etag}"' if request.base_etag else None,
                if_none_match="*" if request.base_etag is None else None,
                change_request=request.id,
                requested_by=request.requested_by,
                # Its tenant deleted and the name made again, the version it was made against may read
                # the same (an identical file), but the tenant is someone else's (outside security
                # review): the write refuses it in its own turn, where no delete can come in between.
                incarnation=request.incarnation if request.base_etag is not None else None,
            )
        except ServiceError as error:
            # The change is in git, its operation not queued (the next start queues it).
            committed = self._commit_of(request) if error.code == "engine_unavailable" else None
            if committed is not None:
                approved = decided(
                    applying,
                    RequestStatus.approved,
                    by=principal.actor,
                    commit=committed,
                    incarnation=incarnation_of(self.repository, stack),
                )
                self.store.transition(request.id, RequestStatus.applying, approved)
                self._audit(
                    principal,
                    "change_request.approve",
                    "succeeded",
                    approved,
                    rid,
                    done=f"change request {request.id} was approved and committed",
                )
                raise
            self.store.transition(request.id, RequestStatus.applying, request)  # pending again
            if error.code == "precondition_failed":
                gone = self.repository.read(stack.environment, stack.tenant) is None
                error = ServiceError(
                    "change_request_stale",
                    f"{stack.name} was deleted since change request {request.id} was made; reject it"
                    if gone
                    else f"{stack.name} changed since change request {request.id} was made, so approving it "
                    "would not apply what was reviewed; reject it and ask the requester for a new one",
                )
            raise self._refused(principal, request, rid, "change_request.approve", error) from None
        except BaseException:
            self.store.transition(request.id, RequestStatus.applying, request)
            raise
        approved = decided(
            applying,
            RequestStatus.approved,
            by=principal.actor,
            operation_id=result.operation.id,
            commit=result.commit,
            incarnation=incarnation_of(self.repository, stack),  # a create's: the one it began
        )
        if self.store.transition(request.id, RequestStatus.applying, approved) is None:
            # Settled meanwhile as cut short (it took longer than APPLYING_FOR_AT_MOST_SECONDS): the
            # settling read git, which has this commit, so it reads approved all the same.
            log.warning("change request %s was settled while its approval still ran", request.id)
        self._audit(
            principal,
            "change_request.approve",
            "succeeded",
            approved,
            rid,
            result.operation.id,
            done=f"change request {request.id} was approved, committed and queued (operation "
            f"{result.operation.id})",
        )
        return approved, result

    def reject(self, principal: Principal, request_id: str, reason: str, rid: str) -> ChangeRequest:
        request = self._decidable(principal, request_id, rid, "change_request.reject")
        rejected = self.store.transition(
            request.id,
            RequestStatus.pending,
            decided(request, RequestStatus.rejected, by=principal.actor, reason=reason),
        )
        if rejected is None:
            raise self._refused(
                principal, request, rid, "change_request.reject", self._decided_meanwhile(request)
            )
        self._audit(
            principal,
            "change_request.reject",
            "succeeded",
            rejected,
            rid,
            done=f"change request {request.id} was rejected",
        )
        return rejected

    def _decidable(self, principal: Principal, request_id: str, rid: str, action: str) -> ChangeRequest:
        request = self.get(principal, request_id, rid)
        if not principal.platform_admin:
            raise self._refused(
                principal,
                request,
                rid,
                action,
                ServiceError("forbidden", "deciding a change request needs the platform-admin role"),
            )
        if request.status is RequestStatus.expired:
            refusal = (
                ServiceError(
                    "change_request_stale",
                    _stale_message(request, self.repository.exists(request.environment, request.tenant)),
                )
                if request.decision_reason in _STALE_REASONS  # it ended with its tenant
                else ServiceError(
                    "change_request_expired",
                    f"change request {request.id} expired undecided; the requester can file it again",
                )
            )
            raise self._refused(principal, request, rid, action, refusal)
        if request.status is not RequestStatus.pending:
            raise self._refused(principal, request, rid, action, _already_decided(request))
        return request

    def _decided_meanwhile(self, request: ChangeRequest) -> ServiceError:
        """Another decision won the race for ``request``: say what it is now, not what it was when read."""
        return _already_decided(self.store.get(request.id) or request)

    def _refused(
        self, principal: Principal, request: ChangeRequest, rid: str, action: str, error: ServiceError
    ) -> ServiceError:
        outcome: Outcome = "denied" if error.code == "forbidden" else "refused"
        self.audit.record(
            actor=principal.actor,
            action=action,
            outcome=outcome,
            tenant=request.tenant,
            environment=request.environment,
            request_id=rid,
            reason=f"{request.id}: {error.code}",
        )
        return error

    def _audit(
        self,
        principal: Principal,
        action: str,
        outcome: Outcome,
        request: ChangeRequest,
        rid: str,
        operation_id: str | None = None,
        *,
        done: str,
    ) -> None:
        self.audit.record(
            done=done,
            actor=principal.actor,
            action=action,
            outcome=outcome,
            tenant=request.tenant,
            environment=request.environment,
            request_id=rid,
            operation_id=operation_id,
            reason=request.id,
        )


def _scope(principal: Principal, tenant: str | None) -> ListScope | None:
    """What a listing by ``principal`` reads (``Approvals.visible`` still decides what it sees): a
    platform-admin's everything, or one tenant's when it asks for one; anyone else's the tenants it
    holds a role on (that one, when it asks for it) and the requests it filed."""
    if principal.platform_admin:
        return None if tenant is None else ListScope(frozenset({tenant}))
    tenants = frozenset(principal.tenant_roles)
    return ListScope(tenants if tenant is None else tenants & {tenant}, principal.actor)


def _already_decided(request: ChangeRequest) -> ServiceError:
    return ServiceError(
        "change_request_decided",
        f"change request {request.id} is {request.status.value}, no longer pending; nothing was changed",
    )


def _with_current_volumes(
    document: dict[str, Any], current: dict[str, Any] | None, stack: StackRef, file: str
) -> dict[str, Any]:
    """``document`` with the Qdrant volume sizes it leaves to its plan's default set to the sizes the
    tenant's file resolves to now (``current``), so another plan does not change them."""
    qdrant = document.get("qdrant")
    if current is None or not isinstance(qdrant, dict) or not qdrant.get("enabled"):
        return document
    try:
        now = resolve(parse_tenant(current, file=file), stack.environment).qdrant
    except SpecError:
        return document
    if now is None:
        return document
    qdrant = dict(qdrant)
    storage = qdrant.get("storage")
    if not isinstance(storage, dict) or storage.get("size") is None:
        qdrant["storage"] = {**(storage if isinstance(storage, dict) else {}), "size": now.storage_size}
    snapshots = qdrant.get("snapshots")
    if now.snapshots and (
        not isinstance(snapshots, dict)
        or (snapshots.get("size") is None and snapshots.get("enabled") is not False)
    ):
        qdrant["snapshots"] = {
            **(snapshots if isinstance(snapshots, dict) else {}),
            "size": now.snapshot_size,
        }
    return {**document, "qdrant": qdrant}
