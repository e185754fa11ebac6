"""Everything a request needs beyond itself, built once per app from the settings.

Embedded (the default): SQLite files in ``state_dir`` for operations, API keys and idempotency
records; an in-process rate limiter; worker threads in this process. ``backend=redis``: the same
roles played by the platform's Redis (Sentinel), so several API and worker replicas share them.
The tenants git repository is the source of truth in both.

Starting reconciles git with the queue (a change committed but never queued, say because the
process died in between, is queued then); stopping hands operations still running after the grace
period back to the queue, so the next start recovers their stacks and runs them again.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tenancy.automation.contract import Engine, EngineInventory, OperationQueue, StackRef, WorkQueue
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.scaling import QdrantScaling
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.storage import QueueSettings, connect_redis
from tenancy.redaction import redact
from tenancy.service.core.api_keys import ApiKeyStore, RedisApiKeyStore, SqliteApiKeyStore
from tenancy.service.core.approvals import Approvals
from tenancy.service.core.audit import AuditLog
from tenancy.service.core.change_requests import (
    ChangeRequestStore,
    RedisChangeRequestStore,
    SqliteChangeRequestStore,
)
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.idempotency import IdempotencyStore, RedisIdempotencyStore, SqliteIdempotencyStore
from tenancy.service.core.incarnation import TenantIncarnations
from tenancy.service.core.key_rotation import GraceTimer, KeyRotations
from tenancy.service.core.local_issuer import ensure_local_issuer
from tenancy.service.core.metrics import ServiceMetrics
from tenancy.service.core.preview import PreviewGate, render_preview
from tenancy.service.core.processes import ALONE, ProcessShare
from tenancy.service.core.rate_limit import RateLimiter, RedisRateLimiter, SharedRateLimiter
from tenancy.service.core.reconcile import (
    RunningReconcile,
    queue_unapplied_changes,
    queue_unfinished_deletions,
)
from tenancy.service.core.security import JwksKeys, TokenVerifier
from tenancy.service.core.tenant_changes import TenantChanges
from tenancy.service.core.tenants_repo import TenantRepository
from tenancy.service.core.write_lock import LocalWriteLock, RedisPushTurn, RedisWriteLock, TenantWriteLock
from tenancy.spec.platform import platform_config_reader

log = logging.getLogger("tenancy.service")


@dataclass
class Backends:
    settings: ServiceSettings
    verifier: TokenVerifier
    repository: TenantRepository
    queue: OperationQueue
    engine: Engine
    api_keys: ApiKeyStore
    idempotency: IdempotencyStore
    rate_limiter: RateLimiter
    write_lock: TenantWriteLock
    audit: AuditLog
    metrics: ServiceMetrics
    changes: TenantChanges
    incarnations: TenantIncarnations
    previews: PreviewGate
    auth_failures: RateLimiter  # failed authentications per client address
    approvals: Approvals  # change requests a platform-admin decides
    rotations: KeyRotations  # Qdrant key rotations: start, status, revocation after the grace period
    worker: Any | None = None  # tenancy.automation.worker.Worker, when this process runs operations
    data: Any | None = None  # tenancy.automation.data_operations.TenantData: tenants' Qdrant and backups
    redis: Any | None = None
    closers: list[Any] = field(default_factory=list)
    grace_timer: GraceTimer | None = (
        None  # ends key grace periods that are over (settings: key_grace_check_seconds)
    )
    backup_sweeper: Any | None = None  # core.backup_sweep.RetiredBackupSweeper (backup_sweep_seconds)
    reconciles: bool = True  # at start (one process of several does: ``ProcessShare.reconciles``)
    running_reconcile: RunningReconcile | None = None  # then every ``reconcile_seconds`` (one process)
    maintains: bool = True  # packs loose git objects at start (one process of several does)

    def start(self) -> None:
        if self.reconciles:
            self._reconcile()
        # Pack loose git objects in the background: a start never waits for it (writes wait only
        # while it holds the commit lock, and only when git decides there is enough to pack).
        self._start_threads()

    def _reconcile(self) -> None:
        try:
            queued = queue_unapplied_changes(
                self.repository,
                self.queue,
                environments=self.settings.environments,
                hold=self.changes.write_lock.hold,  # every replica's lock: others serve meanwhile
            )
            destroys = queue_unfinished_deletions(self.changes, environments=self.settings.environments)
        except Exception as error:  # never keep the service from starting; the next start retries
            # The error's own words (redacted: git and Redis may echo a credential) say what to fix.
            said = " ".join(redact(str(error)).split())[:500] or "no message"
            log.error(
                "reconciling the tenants repository with the queue failed: %s: %s", type(error).__name__, said
            )
        else:
            if queued:
                log.warning("queued %d update(s) for changes in git that were never applied", len(queued))
            if destroys:
                log.warning(
                    "queued %d destroy(s) for deletions in git whose destroy was never queued", len(destroys)
                )

    def _start_threads(self) -> None:
        if self.maintains:  # it holds the commit lock while git looks: once per service start
            threading.Thread(target=self.repository.maintain, name="tenants-repo-gc", daemon=True).start()
        if self.worker is not None:
            self.worker.start()
        if self.grace_timer is not None:
            self.grace_timer.start()  # its first sweep runs now: grace periods that ended while down
        if self.backup_sweeper is not None:
            self.backup_sweeper.start()
        if self.running_reconcile is not None:
            self.running_reconcile.start()

    def stop(self) -> None:
        if self.running_reconcile is not None:
            self.running_reconcile.stop()
        if self.grace_timer is not None:
            self.grace_timer.stop()
        if self.backup_sweeper is not None:
            self.backup_sweeper.stop()
        if self.worker is not None:
            self.worker.stop(timeout=self.settings.shutdown_grace_seconds)
            # Still mid-update after the grace period, or stopped while waiting for another update's
            # lock: hand the operations back to the queue rather than failing them (the stacks Pulumi
            # was working on flagged, so the next start recovers each and runs the operation again),
            # and nothing is left "running" for nobody. Nothing to hand back: nothing happens.
            released = self.worker.release("the service stopped while this operation was running")
            if released:
                log.warning("stopped with %d operation(s) still running; requeued", len(released))

    def close(self) -> None:
        """Release the databases (after ``stop``; the app cannot serve afterwards)."""
        for close in self.closers:
            close()

    def wake_worker(self) -> None:
        """Let the local worker pick up a just-queued operation now instead of at its next poll."""
        if self.worker is not None:
            self.worker.wake()

    @property
    def local_reads(self) -> bool:
        """Whether the queue is this host's SQLite file (reads never wait on the network or on
        writers), so quick reads may run on the event loop."""
        return isinstance(self.queue, SqliteOperationQueue)

    @property
    def pulumi_preview_enabled(self) -> bool:
        if self.settings.pulumi_preview is not None:
            return self.settings.pulumi_preview
        return shutil.which("pulumi") is not None


def _repository(settings: ServiceSettings) -> TenantRepository:
    return TenantRepository(
        settings.tenants_repo,
        tenants_path=settings.tenants_path,
        remote=settings.git_remote,
        branch=settings.git_branch,
        refresh_seconds=settings.git_refresh_seconds,
        view_delay_seconds=0.5,  # the working copy is a view for people: refreshed twice a second at most
    )


def prepare_shared_state(settings: ServiceSettings, *, seed_tenants: Path | None = None) -> None:
    """Make what several processes of the service share before they start, so none races another
    to make it: the state directory, the tenants repository (created and seeded, or cloned, or
    recovered from what a killed process left) and the local issuer's key."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _repository(settings).ensure(seed_from=seed_tenants)
    if settings.uses_local_issuer:
        ensure_local_issuer(settings.local_issuer_dir)


def build_verifier(settings: ServiceSettings) -> TokenVerifier:
    if settings.uses_local_issuer:
        ensure_local_issuer(settings.local_issuer_dir)
    keys = JwksKeys(
        url=settings.jwks_url,
        file=settings.effective_jwks_file,
        cache_seconds=settings.jwks_cache_seconds,
        min_refresh_seconds=settings.jwks_min_refresh_seconds,
        retry_seconds=settings.jwks_retry_seconds,
    )
    return TokenVerifier(
        keys,
        issuer=settings.issuer,
        audience=settings.audience,
        algorithms=settings.algorithms,
        leeway=settings.leeway_seconds,
        authorized_parties=settings.authorized_parties,
    )


def build_backends(
    settings: ServiceSettings,
    *,
    engine: Engine | None = None,
    queue: WorkQueue | None = None,
    redis: Any | None = None,
    seed_tenants: Path | None = None,
    scaling: QdrantScaling | None = None,
    data: Any | None = None,
    share: ProcessShare = ALONE,
) -> Backends:
    """Wire the backends ``settings`` ask for; tests pass their own engine, queue or Redis client.
    ``share``: this process's part of a service run as several processes (``core.processes``)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    repository = _repository(settings)
    # Processes started together find the checkout just recovered by their supervisor; one started
    # in place of a process that died recovers it from what that one left (``ProcessShare``).
    repository.ensure(seed_from=seed_tenants, recover=share.count == 1 or share.restarted)
    automation = _automation_settings(settings, repository)
    closers: list[Any] = []
    if queue is None:  # the one factory the CLI and the worker use too
        opened = automation.open_queue(redis=redis)
        queue, redis = opened.queue, opened.redis
        closers.append(opened.close)
    elif settings.backend == "redis" and redis is None:
        redis = connect_redis(automation.queue)

    if settings.backend == "redis":
        prefix = settings.redis_prefix
        api_keys: ApiKeyStore = RedisApiKeyStore(redis, prefix=prefix)
        idempotency: IdempotencyStore = RedisIdempotencyStore(
            redis,
            prefix=prefix,
            ttl_seconds=settings.idempotency_ttl_seconds,
            lease_seconds=settings.idempotency_lease_seconds,
        )
        rate_limiter: RateLimiter = RedisRateLimiter(
            redis,
            prefix=prefix,
            limit=settings.rate_limit_requests,
            window_seconds=settings.rate_limit_window_seconds,
        )
        auth_failures: RateLimiter = RedisRateLimiter(
            redis,
            prefix=f"{prefix}auth-failures:",
            limit=settings.auth_failures_per_ip,
            window_seconds=settings.rate_limit_window_seconds,
        )
        write_lock: TenantWriteLock = RedisWriteLock(repository, redis, prefix=prefix)
        repository.push_turn = RedisPushTurn(redis, prefix=prefix)  # replicas pushing to one remote
        change_requests: ChangeRequestStore = RedisChangeRequestStore(redis, prefix=prefix)
    else:
        sqlite_keys = SqliteApiKeyStore(settings.state_dir / "api-keys.sqlite3")
        sqlite_idempotency = SqliteIdempotencyStore(
            settings.state_dir / "idempotency.sqlite3",
            ttl_seconds=settings.idempotency_ttl_seconds,
            lease_seconds=settings.idempotency_lease_seconds,
        )
        sqlite_requests = SqliteChangeRequestStore(settings.state_dir / "change-requests.sqlite3")
        closers += [sqlite_keys.close, sqlite_idempotency.close, sqlite_requests.close]
        change_requests = sqlite_requests
        api_keys, idempotency = sqlite_keys, sqlite_idempotency
        # Counted in tables every process of this state directory shares (``tenantctl serve
        # --processes``): N processes must not allow N times the limit.
        shared_rates = SharedRateLimiter(
            settings.state_dir / "rate-limits.table",
            limit=settings.rate_limit_requests,
            window_seconds=settings.rate_limit_window_seconds,
        )
        shared_failures = SharedRateLimiter(
            settings.state_dir / "auth-failures.table",
            limit=settings.auth_failures_per_ip,
            window_seconds=settings.rate_limit_window_seconds,
        )
        closers += [shared_rates.close, shared_failures.close]
        rate_limiter, auth_failures = shared_rates, shared_failures
        write_lock = LocalWriteLock(repository)

    if engine is None:
        from tenancy.automation.pulumi_engine import PulumiEngine

        engine = PulumiEngine(automation)

    if data is None:
        data = _tenant_data(settings, engine)
    worker = None
    workers = share.workers(settings.workers if settings.workers is not None else automation.max_parallel)
    if workers > 0:
        from tenancy.automation.scaling import default_scaling
        from tenancy.automation.worker import Worker

        worker = Worker(
            queue,
            engine,
            max_parallel=workers,
            stale_after=settings.worker_stale_after_seconds,
            heartbeat_interval=min(5.0, settings.worker_stale_after_seconds / 3),
            scaling=scaling if scaling is not None else default_scaling(engine, automation.project_dir),
            data=data,
            environments=settings.environments,
            lock_wait_seconds=automation.lock_wait_seconds,
        )

    metrics = ServiceMetrics()
    previews = PreviewGate(
        max_in_flight=settings.preview_max_in_flight,
        max_per_principal=settings.preview_max_per_principal,
        # Counted for every process of this state directory together (``tenantctl serve
        # --processes``); replicas with Redis each keep their own bounds, as before.
        slots=settings.state_dir / "preview-slots" if settings.backend != "redis" else None,
    )
    audit = AuditLog(settings.audit_target)
    changes = TenantChanges(
        repository=repository,
        queue=queue,
        write_lock=write_lock,
        api_keys=api_keys,
        self_service_plans=settings.self_service_plans,
        platform_of=platform_config_reader(automation.project_dir),
        waited=metrics.write_waited,
        stack_exists=_stack_exists(engine),
        audit=audit,
    )
    rotations = KeyRotations(changes=changes, audit=audit)
    grace_timer = None  # the timer and the sweep run in one process of the service, not in each
    if settings.key_grace_check_seconds > 0 and share.runs_singletons:
        grace_timer = GraceTimer(rotations, interval=settings.key_grace_check_seconds)
        if worker is not None:
            grace_timer.on_queued(worker.wake)
    backup_sweeper = None
    if (
        worker is not None
        and data is not None
        and settings.backup_sweep_seconds > 0
        and share.runs_singletons
    ):
        from tenancy.service.core.backup_sweep import RetiredBackupSweeper

        backup_sweeper = RetiredBackupSweeper(
            data, interval=settings.backup_sweep_seconds, environments=settings.environments
        )
    running_reconcile = None
    if settings.reconcile_seconds > 0 and share.runs_singletons:
        running_reconcile = RunningReconcile(
            changes,
            interval=settings.reconcile_seconds,
            environments=settings.environments,
            on_queued=worker.wake if worker is not None else None,
        )
    return Backends(
        settings=settings,
        verifier=build_verifier(settings),
        repository=repository,
        queue=queue,
        engine=engine,
        api_keys=api_keys,
        idempotency=idempotency,
        rate_limiter=rate_limiter,
        write_lock=write_lock,
        audit=audit,
        metrics=metrics,
        changes=changes,
        incarnations=TenantIncarnations(repository, environments=settings.environments),
        previews=previews,
        auth_failures=auth_failures,
        approvals=Approvals(
            store=change_requests,
            changes=changes,
            repository=repository,
            audit=audit,
            ttl_seconds=settings.change_request_ttl_hours * 3600,
            render=partial(render_preview, settings.project_dir),
            max_pending_per_tenant=settings.change_request_max_pending,
            retention_seconds=settings.change_request_retention_days * 86400,
            admit_render=previews.admitted,
        ),
        rotations=rotations,
        worker=worker,
        data=data,
        redis=redis,
        closers=closers,
        grace_timer=grace_timer,
        backup_sweeper=backup_sweeper,
        reconciles=share.reconciles,
        running_reconcile=running_reconcile,
        maintains=share.runs_singletons,
    )


def _stack_exists(engine: Engine) -> Callable[[StackRef], bool | None]:
    """Whether the engine's backend has a stack, where the engine can list them (None otherwise)."""
    if not isinstance(engine, EngineInventory):
        return lambda stack: None
    return lambda stack: stack in engine.stacks(stack.environment)


def _tenant_data(settings: ServiceSettings, engine: Engine) -> Any | None:
    """Tenants' Qdrant (from their stacks' outputs) and the platform's backup bucket, when the settings
    name one (``backup_bucket``; object-store credentials as boto3 reads them from the environment)."""
    if not settings.backup_bucket:
        return None
    from tenancy.automation.data_operations import BackupStore

    store = BackupStore(
        backup_bucket=settings.backup_bucket,
        backup_s3_endpoint=settings.backup_s3_endpoint,
        backup_s3_region=settings.backup_s3_region,
        backup_s3_path_style=settings.backup_s3_path_style,
    )
    return store.tenant_data(engine)


def _automation_settings(settings: ServiceSettings, repository: TenantRepository) -> AutomationSettings:
    """The automation layer's settings, pointed at this service's project, tenants, state and queue."""
    return AutomationSettings(
        project_dir=settings.project_dir.resolve(),
        tenants_dir=repository.tenants_dir.resolve(),
        state_dir=settings.state_dir.resolve(),
        queue=QueueSettings(
            backend=settings.backend,
            redis_sentinels=settings.redis_sentinels,
            redis_master=settings.redis_master,
            redis_url=settings.redis_url,
            redis_password=settings.redis_password,
            redis_prefix=settings.redis_prefix,
        ),
    )
