"""The service's settings: environment variables prefixed ``TENANCY_SERVICE_``.

The embedded default needs none of them: one process, SQLite and a local git repository under
``state_dir``, tokens from the local issuer. Setting ``backend=redis`` (with a Sentinel or a URL)
moves the queue, rate limits, API keys, idempotency records and write locks to Redis, so several
API and worker replicas share them.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tenancy.builders.contract import issuer_url
from tenancy.spec.cidr import EXAMPLES, parse_network
from tenancy.spec.plans import Plan
from tenancy.spec.tree import ENVIRONMENTS

API_AUDIENCE = "tenant-api"
LOCAL_ISSUER = issuer_url("localhost")  # https://auth.localhost/realms/platform: the documented local issuer
# Asymmetric algorithms only: an HMAC algorithm would let anyone holding the public key sign tokens.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANCY_SERVICE_", extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address `tenantctl serve` listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port `tenantctl serve` listens on.")
    state_dir: Path = Field(
        default=Path(".tenancy"),
        validate_default=True,
        description="SQLite databases, the local issuer's key, the audit log and the tenants repo (default).",
    )
    project_dir: Path = Field(
        default=Path("."),
        validate_default=True,
        description="The Pulumi project (Pulumi.yaml, Pulumi.<env>.yaml) previews render.",
    )
    repo_dir: Path | None = Field(
        default=None,
        description="The tenants git repository; default <state_dir>/tenants-repo, created on first start.",
    )
    tenants_path: str = Field(
        default="tenants", description="Directory inside the repository holding <env>/<name>.yaml."
    )
    environments: Annotated[tuple[str, ...], NoDecode] = Field(
        default=ENVIRONMENTS,
        description=(
            "Environments whose tenants this service manages (comma-separated). A platform stack's "
            "service runs its tenants' stacks in its own cluster, with its own state and credentials, so "
            "it is given its own environment only: the API answers 404 environment_not_served for the "
            "others, and neither its start nor its workers run their operations. Default: every "
            "environment (a service on a checkout, as tenantctl serve runs by default)."
        ),
    )
    git_remote: str | None = Field(
        default=None,
        description="Remote to push every commit to (pulling and retrying when it moved); none: local only.",
    )
    git_branch: str = Field(default="main", description="Branch the service commits to.")
    git_refresh_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "With a remote: reads fetch what other replicas and merged pull requests committed when "
            "the checkout is older than this."
        ),
    )

    # --- authentication ----------------------------------------------------------------------------
    issuer: str = Field(
        default=LOCAL_ISSUER, description="Expected `iss`: https://auth.<domain>/realms/platform."
    )
    audience: str = Field(default=API_AUDIENCE, description="Expected entry in `aud`.")
    jwks_url: str | None = Field(
        default=None, description="Keycloak's JWKS, e.g. <issuer>/protocol/openid-connect/certs."
    )
    jwks_file: Path | None = Field(
        default=None,
        description="A static JWKS file; default (no URL either): <state_dir>/local-issuer/jwks.json.",
    )
    algorithms: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("RS256", "ES256"), description="Signature algorithms accepted (asymmetric only)."
    )
    leeway_seconds: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat."
    )
    jwks_cache_seconds: float = Field(default=300.0, ge=0, description="How long fetched keys are trusted.")
    jwks_min_refresh_seconds: float = Field(
        default=10.0, ge=0, description="Least time between refetches caused by unknown key ids."
    )
    authorized_parties: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Clients (`azp`) whose access tokens are accepted (comma-separated); empty: any client of "
            "the realm whose token names this API in `aud`."
        ),
    )
    auth_failures_per_ip: int = Field(
        default=60,
        ge=1,
        description=(
            "Failed authentications per client address (IPv6: per /64) per rate-limit window; beyond "
            "it, credentials from that address that do not verify answer 429, while ones that verify "
            "still pass (a burst of bad tokens never locks out valid callers sharing the address)."
        ),
    )
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description=(
            "Proxies (comma-separated CIDRs) whose X-Forwarded-For is believed; default none: the "
            "client address is the connection's peer. Behind the Istio gateway, the service's own "
            "sidecar (127.0.0.6/32) is the peer and the gateway appends the client's address."
        ),
    )
    jwks_retry_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description=(
            "After a failed JWKS fetch, how long tokens needing keys the cache lacks answer 503 "
            "identity_provider_unavailable before the next request tries the endpoint again."
        ),
    )

    # --- behaviour ---------------------------------------------------------------------------------
    rate_limit_requests: int = Field(default=600, ge=1, description="Requests per principal per window.")
    rate_limit_window_seconds: int = Field(default=60, ge=1, description="The rate-limit window.")
    max_body_bytes: int = Field(default=65536, ge=1024, description="Largest request body accepted.")
    request_threads: int = Field(
        default=128,
        ge=1,
        le=1024,
        description=(
            "Threads each server process runs blocking request work on (writes, their commits and "
            "queueing). Writes arriving together share one commit and one flush, so fewer threads than "
            "concurrent writers cap those groups; Starlette's default is 40."
        ),
    )
    max_json_depth: int = Field(
        default=16,
        ge=2,
        le=64,
        description="Deepest nesting of arrays and objects a JSON body may have (checked before parsing).",
    )
    api_key_max_days: int = Field(default=365, ge=1, description="Longest lifetime of an API key.")
    api_key_max_active: int = Field(
        default=20,
        ge=1,
        description="Most API keys a tenant may have active at once: each is a caller with its own "
        "request rate budget.",
    )
    idempotency_ttl_seconds: int = Field(
        default=86400, ge=60, description="How long Idempotency-Keys are kept."
    )
    idempotency_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How long an Idempotency-Key stays reserved by a request that has not answered; after "
            "that (the process died mid-request) a retry with the key goes ahead."
        ),
    )
    self_service_plans: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("small",),
        description=(
            "Plans a tenant-admin may choose when creating a tenant (comma-separated); changing a "
            "plan, or any other plan on create, needs a platform-admin."
        ),
    )
    change_request_ttl_hours: float = Field(
        default=168.0,
        gt=0,
        description="How long a change request waits for a platform-admin before it expires (hours).",
    )
    change_request_retention_days: float = Field(
        default=90.0,
        gt=0,
        description=(
            "How long a decided change request (approved, rejected, expired) is kept after it was made; "
            "the audit log keeps every decision."
        ),
    )
    change_request_max_pending: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "Change requests one tenant may have waiting for a platform-admin; more answer 409 "
            "too_many_change_requests."
        ),
    )
    preview_max_in_flight: int = Field(
        default=4,
        ge=1,
        description="Previews rendering or waiting to render at once; more answer 429 preview_busy.",
    )
    preview_max_per_principal: int = Field(
        default=1, ge=1, description="Previews one caller may have in flight at once."
    )
    audit_log: str | None = Field(
        default=None,
        description="Audit log file (JSON lines); '-' for stdout; default <state_dir>/audit.log.",
    )
    backup_bucket: str | None = Field(
        default=None,
        description=(
            "Bucket of the tenants' Qdrant backups (each under tenants/<env>/<tenant>/qdrant/); unset: "
            "backup, restore and the automatic backup before a destroy are refused as data_unavailable."
        ),
    )
    backup_s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint of the backup bucket; unset: AWS's."
    )
    backup_s3_region: str = Field(default="us-east-1", description="Region of the backup bucket.")
    backup_s3_path_style: bool = Field(
        default=False, description="Path-style addressing of the backup bucket (MinIO, Ceph RGW)."
    )
    workers: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Worker threads of the service (divided among its processes); default "
            "TENANCY_MAX_PARALLEL; 0: none."
        ),
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "Server processes `tenantctl serve` runs on one socket and one state directory; default 1 "
            "(at most the usable CPUs help)."
        ),
    )
    worker_stale_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A running operation without a heartbeat this long is requeued (keep it several times "
            "SQLite's 30 s lock wait, and above the clock skew between replicas)."
        ),
    )
    key_grace_check_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "How often the service looks for Qdrant key rotations whose grace period is over, to commit "
            "the revocation and queue its update (also once at start); 0 turns the check off."
        ),
    )
    reconcile_seconds: float = Field(
        default=300.0,
        ge=0,
        description=(
            "How often a running service queues what git holds but was never queued: a change committed "
            "while the queue could not be reached, a deletion whose destroy was never queued (every "
            "start does it too, and also retries failed updates); 0 leaves it to the starts."
        ),
    )
    backup_sweep_seconds: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "How often a replica running workers deletes the backups deleted tenants left once their "
            "retention is over (also once at start); 0 turns the sweep off."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long stopping waits for running operations before handing them back to the queue "
            "(requeued; the next start recovers the stack and runs them again)."
        ),
    )
    pulumi_preview: bool | None = Field(
        default=None, description="Also queue a Pulumi preview on /preview; default: when the CLI is on PATH."
    )
    sse_poll_seconds: float = Field(
        default=0.25, gt=0, description="How often an event stream polls for progress."
    )
    sse_max_seconds: float = Field(default=3600.0, gt=0, description="Longest an event stream stays open.")

    # --- shared state for several replicas -----------------------------------------------------------
    backend: Literal["embedded", "redis"] = Field(
        default="embedded",
        description="embedded: SQLite in state_dir; redis: the platform's Redis (Sentinel).",
    )
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Sentinel addresses host:port (comma-separated in the environment)."
    )
    redis_master: str = Field(
        default="mymaster", description="Sentinel master group name (redis-ha's default)."
    )
    redis_url: str | None = Field(default=None, description="A plain redis:// URL instead of Sentinel.")
    redis_password: SecretStr | None = Field(default=None, description="Password of Redis (and of Sentinel).")
    redis_prefix: str = Field(default="tenancy:", description="Prefix of every key the service writes.")

    @field_validator(
        "algorithms",
        "redis_sentinels",
        "authorized_parties",
        "self_service_plans",
        "environments",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        networks = []
        for item in value:
            if isinstance(item, IPv4Network | IPv6Network):
                networks.append(item)
            elif not isinstance(item, str):
                raise ValueError(f"{item!r} is not a CIDR {EXAMPLES}")
            else:  # read once, with the platform config's parser and wording
                networks.append(parse_network(item))
        return tuple(networks)

    @field_validator("state_dir", "project_dir", "repo_dir", "jwks_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolved once, here: git runs with the repository as its working directory, so a relative
        # path handed further down would be joined to itself (.tenancy/tenants-repo/.tenancy/...).
        return None if value is None else value.expanduser().resolve()

    @field_validator("algorithms")
    @classmethod
    def _only_asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            raise ValueError(
                f"algorithms {refused or '(none)'} are not allowed; use asymmetric ones: "
                + ", ".join(ASYMMETRIC_ALGORITHMS)
            )
        return value

    @field_validator("self_service_plans")
    @classmethod
    def _known_plans(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [plan for plan in value if plan not in {p.value for p in Plan}]
        if unknown:
            raise ValueError(f"unknown plans {unknown}; plans are " + ", ".join(p.value for p in Plan))
        return value

    @field_validator("environments")
    @classmethod
    def _known_environments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [environment for environment in value if environment not in ENVIRONMENTS]
        if unknown or not value:
            raise ValueError(
                f"environments {unknown or '(none)'} are not environments of the platform; name one or "
                "more of " + ", ".join(ENVIRONMENTS)
            )
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _keys_match_the_issuer(self) -> ServiceSettings:
        # Trusting Keycloak's issuer with the local key would let whoever reads state_dir mint tokens
        # that look like Keycloak's: a real issuer needs its real keys.
        if self.uses_local_issuer and self.issuer != LOCAL_ISSUER:
            raise ValueError(
                f"issuer {self.issuer} needs its signing keys: set TENANCY_SERVICE_JWKS_URL "
                "(<issuer>/protocol/openid-connect/certs) or TENANCY_SERVICE_JWKS_FILE"
            )
        return self

    @model_validator(mode="after")
    def _redis_is_reachable(self) -> ServiceSettings:
        if self.backend == "redis" and not (self.redis_sentinels or self.redis_url):
            raise ValueError(
                "backend=redis needs TENANCY_SERVICE_REDIS_SENTINELS (host:port,...) "
                "or TENANCY_SERVICE_REDIS_URL"
            )
        return self

    @property
    def tenants_repo(self) -> Path:
        return self.repo_dir or self.state_dir / "tenants-repo"

    @property
    def local_issuer_dir(self) -> Path:
        return self.state_dir / "local-issuer"

    @property
    def uses_local_issuer(self) -> bool:
        return self.jwks_url is None and self.jwks_file is None

    @property
    def effective_jwks_file(self) -> Path | None:
        if self.jwks_url is not None:
            return None
        return self.jwks_file or self.local_issuer_dir / "jwks.json"

    @property
    def audit_target(self) -> str:
        return self.audit_log or str(self.state_dir / "audit.log")
