"""Where the automation layer finds the project and keeps its state: ``TENANCY_*`` environment
variables, or arguments (the CLI passes its options through here).

Defaults make a laptop work with nothing set: the project in the current directory, tenants beside
it, and everything the automation layer writes (operation queue, Pulumi file backend) under
``.tenancy/``. Production points ``backend_url`` at shared storage and ``secrets_provider`` at Vault,
and the queue at the platform's Redis (``queue``: the service's ``TENANCY_SERVICE_BACKEND`` and
``TENANCY_SERVICE_REDIS_*``, see ``tenancy.automation.storage``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenancy.automation.storage import QUEUE_FILE, OpenQueue, QueueSettings, open_queue

# The Pulumi CLI this project is tested with: the CLI ships the Python language host that runs the
# program, so it must be at least as new as the pinned SDK (pyproject: pulumi==3.272.0).
REQUIRED_PULUMI_VERSION = "3.272.0"
PASSPHRASE = "passphrase"


class AutomationSettings(BaseSettings):
    """Settings of the automation layer (env prefix ``TENANCY_``)."""

    model_config = SettingsConfigDict(env_prefix="TENANCY_", extra="ignore", frozen=True)

    project_dir: Path = Field(
        default_factory=Path.cwd, description="Directory holding Pulumi.yaml and __main__.py."
    )
    workspace_dir: Path | None = Field(
        default=None,
        description=(
            "Writable directory the Pulumi CLI works in: a view of the project (links to its files) where "
            "stacks' Pulumi.<stack>.yaml are written, for a read-only project (the self-service pods). "
            "Default: none, the CLI works in the project directory."
        ),
    )
    tenants_dir: Path = Field(
        default=Path("tenants"), description="The tenants/ tree; default: tenants/ in the project."
    )
    state_dir: Path = Field(
        default=Path(".tenancy"),
        description="Operation queue (SQLite) and the default file backend; default: <project>/.tenancy.",
    )
    backend_url: str | None = Field(
        default=None,
        description=(
            "Pulumi backend URL (file://, s3://, gs://, azblob://, https://api.pulumi.com). Default: "
            "$PULUMI_BACKEND_URL when set, else file://<state_dir>/pulumi-state."
        ),
    )
    secrets_provider: str | None = Field(
        default=PASSPHRASE,
        description=(
            "Secrets provider for new tenant stacks: 'passphrase' (needs PULUMI_CONFIG_PASSPHRASE), "
            "'hashivault://<transit-key>' in prod, or None to let the backend choose."
        ),
    )
    max_parallel: int = Field(default=4, ge=1, le=64, description="Tenant stacks updated at once.")
    lock_wait_seconds: float = Field(
        default=600.0,
        ge=0,
        le=3600,
        description=(
            "How long an operation waits for another update's lock on its stack (the deploy workflow's "
            "sync, a person's pulumi up) before it fails with locked_elsewhere; 0: fail at once."
        ),
    )
    pulumi_min_version: str = Field(
        default=REQUIRED_PULUMI_VERSION, description="Oldest Pulumi CLI the automation layer accepts."
    )
    stack_config: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra config set on every tenant stack, e.g. {'kubernetes:context': 'prod'} "
            "(TENANCY_STACK_CONFIG as JSON)."
        ),
    )

    queue: QueueSettings = Field(
        default_factory=QueueSettings,
        description="Where operations are queued (TENANCY_SERVICE_BACKEND, TENANCY_SERVICE_REDIS_*).",
    )

    @model_validator(mode="before")
    @classmethod
    def _place_beside_project(cls, data: Any) -> Any:
        """Relative defaults live in the project; a path the caller gives is taken as given."""
        if not isinstance(data, dict):
            return data
        project = Path(data.get("project_dir") or Path.cwd())
        data = dict(data)
        data["project_dir"] = project
        data.setdefault("tenants_dir", project / "tenants")
        data.setdefault("state_dir", project / ".tenancy")
        return data

    @field_validator("project_dir", "tenants_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolved once, here: the Pulumi CLI and the program run in other directories than the
        # caller's, so a relative path handed further down would point somewhere else.
        return value.expanduser().resolve()

    @field_validator("workspace_dir")
    @classmethod
    def _absolute_workspace(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None and str(value) else None

    @model_validator(mode="after")
    def _default_backend(self) -> AutomationSettings:
        if not self.backend_url:
            url = os.environ.get("PULUMI_BACKEND_URL") or self.pulumi_state_dir.resolve().as_uri()
            object.__setattr__(self, "backend_url", url)
        return self

    @property
    def pulumi_state_dir(self) -> Path:
        """Where the default file backend keeps stack state."""
        return self.state_dir / "pulumi-state"

    @property
    def work_dir(self) -> Path:
        """Where the Pulumi CLI runs and writes stacks' settings files (``workspace_dir`` or the project)."""
        return self.workspace_dir or self.project_dir

    @property
    def queue_path(self) -> Path:
        """The SQLite database of operations and their progress events."""
        return self.state_dir / QUEUE_FILE

    def open_queue(self, *, redis: Any | None = None) -> OpenQueue:
        """The one queue the CLI, the service and the worker share (``queue`` says which)."""
        return open_queue(self.queue, state_dir=self.state_dir, redis=redis)

    @property
    def operations_dir(self) -> Path:
        """Scratch space per running operation (the spec it applies); removed when it ends."""
        return self.state_dir / "operations"

    @property
    def uses_file_backend(self) -> bool:
        return bool(self.backend_url and self.backend_url.startswith("file://"))

    @property
    def uses_passphrase(self) -> bool:
        return self.secrets_provider == PASSPHRASE
