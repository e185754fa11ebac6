"""The real engine: tenant stacks through the Pulumi Automation API. The ONLY module that imports
``pulumi.automation``; everything else talks to it through ``Engine`` (tenancy.automation.contract).

Why a *local program* (a LocalWorkspace on the project directory) and not an inline program:
an inline program runs inside this Python process, and the Pulumi Python SDK keeps its runtime
state (settings, the resource monitor, the stack being declared, mocks) in module globals. Two
inline updates in one process therefore interfere, and a worker that runs tenants in parallel would
have to fork. With a local program the Pulumi CLI starts the language host, which runs
``__main__.py`` in a process of its own for every operation: updates are isolated from each other and
from the service, the program is exactly what ``pulumi up -s prod.acme`` runs by hand, and a crash in
the program cannot take the worker down.

Each operation applies exactly the spec it recorded: the spec is written to
``<state_dir>/operations/<id>/tenants/<env>/<tenant>.yaml`` and the stack's ``platform:tenantsDir``
points there for the duration of the operation (the program reads its tenant from that tree).
``platform:specHash`` is set on ``up`` so the update history in the backend records which spec was
applied (``applied_fingerprint``). Both keys are removed again afterwards, so a later hand-run
``pulumi up`` reads ``tenants/`` as usual.

Concurrency: operations name their stack explicitly (``--stack``), but ``pulumi stack select``
writes the project's "current stack" file, so selecting/creating stacks is serialised within the
process; the updates themselves run in parallel.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sysconfig
import threading
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from pulumi.automation import (
    CommandError,
    ConcurrentUpdateError,
    ConfigValue,
    Deployment,
    EngineEvent,
    InvalidVersionError,
    LocalWorkspace,
    OutputMap,
    PulumiCommand,
    Stack,
    StackAlreadyExistsError,
    StackNotFoundError,
    StepEventMetadata,
)
from pulumi.automation import (
    CompilationError as PulumiCompilationError,
)
from pulumi.automation import (
    InlineSourceRuntimeError as PulumiInlineSourceRuntimeError,
)
from pulumi.automation import (
    RuntimeError as PulumiRuntimeError,
)
from semver import VersionInfo

from tenancy.automation.contract import (
    SECRET_MASK,
    EmitEvent,
    EngineRequest,
    EngineResult,
    OperationKind,
    StackRef,
)
from tenancy.automation.errors import (
    AutomationError,
    EngineFailed,
    OperationInterrupted,
    ProgramError,
    ProtectedResources,
    PulumiCliMissing,
    SecretsUnavailable,
    StackConflict,
    StackLocked,
    StackNotFound,
)
from tenancy.automation.fingerprint import spec_fingerprint
from tenancy.automation.progress import describe_changes
from tenancy.automation.project_view import prepare_project_view
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.stack_config import (
    OPERATION_KEYS,
    PROGRAM_KINDS,
    SPEC_HASH_KEY,
    StackConfig,
    tenant_stack_config,
    write_operation_spec,
)
from tenancy.redaction import redact, subprocess_message
from tenancy.spec.yaml_loading import load_yaml

_log = logging.getLogger(__name__)

INSTALL_DOCS = "https://www.pulumi.com/docs/iac/download-install/"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|<\{%[^%]*%\}>")  # terminal colours, Pulumi colour tags
_SELECT_LOCK = threading.Lock()


def install_hint(version: str) -> str:
    return (
        f"Install Pulumi {version} or newer: "
        f"`curl -fsSL https://get.pulumi.com | sh -s -- --version {version}` and put ~/.pulumi/bin on PATH "
        f"(other systems: {INSTALL_DOCS}). In GitHub Actions: "
        f"`uses: pulumi/actions@v6` with `pulumi-version: {version}`."
    )


class PulumiEngine:
    """``Engine`` and ``EngineInventory`` over the Pulumi CLI (see the module docstring)."""

    def __init__(self, settings: AutomationSettings) -> None:
        self.settings = settings
        self._command: PulumiCommand | None = None
        self._command_lock = threading.Lock()
        self._project_name: str | None = None

    # --- CLI -------------------------------------------------------------------------------------

    def check_cli(self) -> str:
        """Return the Pulumi CLI's version; raise PulumiCliMissing naming the version needed and how
        to install it when the CLI is missing, broken or too old."""
        return str(self._pulumi().version)

    def _pulumi(self) -> PulumiCommand:
        with self._command_lock:
            if self._command is None:
                self._command = _checked_command(self.settings.pulumi_min_version)
            return self._command

    def _workspace(self, *, needs_secrets: bool = True, writes_backend: bool = True) -> LocalWorkspace:
        """``writes_backend`` false: only reads, so a file backend is never created here (the API reads
        the workers' file backend through a read-only mount)."""
        command = self._pulumi()
        if needs_secrets:
            self._check_secrets_provider()
        env = {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # A fresh checkout (CI) has no Pulumi.<stack>.yaml: reuse the secrets manager recorded in
            # the stack's state instead of minting a new passphrase salt.
            "PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true",
            # Helm runs the Qdrant release's post-renderer (a console script of this package) from PATH.
            "PATH": _path_with_scripts(os.environ.get("PATH", "")),
        }
        backend = self.settings.backend_url
        if backend:
            env["PULUMI_BACKEND_URL"] = backend
            if self.settings.uses_file_backend and writes_backend:
                _file_backend_path(backend).mkdir(parents=True, exist_ok=True)
        return LocalWorkspace(
            work_dir=str(self._work_dir()),
            env_vars=env,
            secrets_provider=self.settings.secrets_provider or None,
            pulumi_command=command,
        )

    def _work_dir(self) -> Path:
        """The CLI's working directory: the project, or (``TENANCY_WORKSPACE_DIR``) a writable view of it
        where stacks' settings files are written (tenancy.automation.project_view)."""
        if self.settings.workspace_dir is None:
            return self.settings.project_dir
        try:
            return prepare_project_view(self.settings.project_dir, self.settings.workspace_dir)
        except OSError as error:
            where = f"TENANCY_WORKSPACE_DIR={self.settings.workspace_dir}"
            raise EngineFailed(
                f"cannot prepare the Pulumi work directory {where} for the project "
                f"{self.settings.project_dir}: {error.strerror or error}"
            ) from None

    def _check_secrets_provider(self) -> None:
        provider = self.settings.secrets_provider or ""
        if self.settings.uses_passphrase and not (
            "PULUMI_CONFIG_PASSPHRASE" in os.environ or "PULUMI_CONFIG_PASSPHRASE_FILE" in os.environ
        ):
            raise SecretsUnavailable(
                "the passphrase secrets provider needs PULUMI_CONFIG_PASSPHRASE (or "
                "PULUMI_CONFIG_PASSPHRASE_FILE): set it to the passphrase the tenant stacks were created "
                "with, or set TENANCY_SECRETS_PROVIDER (e.g. hashivault://tenants-transit)"
            )
        if provider.startswith("hashivault://") and not (
            "VAULT_SERVER_URL" in os.environ and "VAULT_SERVER_TOKEN" in os.environ
        ):
            raise SecretsUnavailable(
                f"the secrets provider {provider} needs VAULT_SERVER_URL and VAULT_SERVER_TOKEN "
                "(a token allowed to encrypt and decrypt with that transit key)"
            )

    # --- Engine ------------------------------------------------------------------------------------

    def run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        kind, ref = request.kind, request.stack
        workspace = self._workspace()
        errors: list[str] = []
        operation_dir = self.settings.operations_dir / request.operation_id
        created = False
        stack: Stack | None = None

        def on_event(event: EngineEvent) -> None:
            try:
                forward_event(event, emit, errors)
            except Exception:  # an odd event must not break Pulumi's event stream
                _log.exception("could not map an engine event of %s", ref.name)

        try:
            # Everything the stack needs, before any Pulumi run: a missing credential fails here.
            config = self._operation_config(request, operation_dir)
            stack, created = self._select(workspace, ref, create=kind in PROGRAM_KINDS)
            stack.set_all_config(config_values(config))

            message = f"tenancy operation {request.operation_id}"
            if kind is OperationKind.preview:
                preview = stack.preview(on_event=on_event, message=message, color="never")
                changes = _counts(preview.change_summary)
                return EngineResult(succeeded=True, changes=changes)
            if kind is OperationKind.up:
                up = stack.up(on_event=on_event, message=message, color="never")
                return EngineResult(
                    succeeded=True,
                    changes=_counts(up.summary.resource_changes),
                    outputs=mask_outputs(up.outputs, reveal=False),
                )
            if kind is OperationKind.refresh:
                refresh = stack.refresh(on_event=on_event, message=message, color="never")
                return EngineResult(succeeded=True, changes=_counts(refresh.summary.resource_changes))
            destroy = stack.destroy(on_event=on_event, message=message, color="never")
            return EngineResult(succeeded=True, changes=_counts(destroy.summary.resource_changes))
        except CommandError as error:
            # The CLI's own message, redacted (stderr can echo a backend URL with credentials).
            _log.warning("pulumi %s of %s failed: %s", kind.value, ref.name, _first_error(str(error)))
            _log.debug("pulumi %s of %s failed: %s", kind.value, ref.name, redact(str(error)))
            raise map_command_error(error, stack=ref, kind=kind.value, diagnostics=errors) from None
        finally:
            shutil.rmtree(operation_dir, ignore_errors=True)
            if stack is not None:
                self._forget_operation_config(workspace, stack, created=created, kind=kind)

    def _forget_operation_config(
        self, workspace: LocalWorkspace, stack: Stack, *, created: bool, kind: OperationKind
    ) -> None:
        """Leave the stack as a person would find it: no operation-scoped config, and no empty stack
        created just to preview a tenant that does not exist yet."""
        try:
            if created and kind is OperationKind.preview:
                workspace.remove_stack(stack.name)
            elif kind is not OperationKind.destroy:
                stack.remove_all_config(list(OPERATION_KEYS))
        except CommandError as error:
            _log.warning(
                "could not tidy stack %s after the operation: %s", stack.name, _first_error(str(error))
            )

    def needs_recovery(self, stack: StackRef) -> bool:
        """Pending operations in the stack's state, or a lock left behind (a lock file in a file
        backend, a lock object in an ``s3://`` one). Locks in other buckets and in Pulumi Cloud are not
        visible here: the queue flags stacks whose own update was cut off, and Pulumi refuses to start
        an update on a locked stack (``conflict``)."""
        workspace = self._workspace()
        try:
            deployment = workspace.export_stack(stack.name)
        except StackNotFoundError:
            return False
        except CommandError as error:
            raise map_command_error(error, stack=stack, kind="export", diagnostics=[]) from None
        if (deployment.deployment or {}).get("pending_operations"):
            return True
        return bool(self._lock_files(stack))

    def recover(self, stack: StackRef) -> str:
        """Cancel the stale lock/update, drop pending operations from the state, refresh; return what
        was done. Safe when the queue guarantees nothing else updates the stack: never run this while
        someone updates the stack by hand."""
        workspace = self._workspace()
        done: list[str] = []
        try:
            selected, _ = self._select(workspace, stack, create=False)
        except StackNotFound:
            return f"nothing to recover: stack {stack.name} does not exist yet"
        try:
            try:
                had_locks = bool(self._lock_files(stack))
            except EngineFailed:  # the cancel below removes a lock whether or not it was listed
                had_locks = False
            selected.cancel()
            if had_locks or not self.settings.uses_file_backend:
                done.append("cancelled the interrupted update's lock")
        except CommandError as error:  # nothing in progress: fine
            _log.debug("cancel on %s: %s", stack.name, _first_error(str(error)))
        try:
            exported = selected.export_stack()
            pending = list((exported.deployment or {}).get("pending_operations") or [])
            if pending:
                cleaned = dict(exported.deployment or {})
                cleaned["pending_operations"] = []
                selected.import_stack(Deployment(version=exported.version, deployment=cleaned))
                names = ", ".join(_pending_name(item) for item in pending[:5])
                more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                done.append(f"cleared {len(pending)} pending operation(s) ({names}{more})")
            selected.set_all_config(config_values(self._config(stack, OperationKind.refresh)))
            refreshed = selected.refresh(message="tenancy recovery", color="never")
            changes = describe_changes(_counts(refreshed.summary.resource_changes))
            done.append(f"refreshed the state against the cluster ({changes})")
        except CommandError as error:
            raise map_command_error(error, stack=stack, kind="recovery", diagnostics=[]) from None
        return "; ".join(done)

    def outputs(self, stack: StackRef, *, reveal_secrets: bool = False) -> dict[str, Any]:
        workspace = self._workspace(writes_backend=False)
        if self._file_backend_is_empty():
            # No stack was ever written there. Asked anyway, the CLI would write the backend's metadata
            # first (.pulumi/meta.yaml), which a reader must not do and a read-only mount refuses.
            raise _not_found(stack)
        try:
            values = workspace.stack_outputs(stack.name)
        except StackNotFoundError:
            raise _not_found(stack) from None
        except CommandError as error:
            raise map_command_error(error, stack=stack, kind="outputs", diagnostics=[]) from None
        return mask_outputs(values, reveal=reveal_secrets)

    def remove(self, stack: StackRef) -> None:
        workspace = self._workspace(needs_secrets=False)
        try:
            workspace.remove_stack(stack.name)
        except StackNotFoundError:
            return  # already gone
        except CommandError as error:
            raise map_command_error(error, stack=stack, kind="remove", diagnostics=[]) from None

    # --- EngineInventory -------------------------------------------------------------------------------

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        workspace = self._workspace(needs_secrets=False)
        try:
            summaries = workspace.list_stacks()
        except CommandError as error:
            raise map_command_error(
                error, stack=StackRef(environment or "*", "*"), kind="list", diagnostics=[]
            ) from None
        found = []
        for summary in summaries:
            short = summary.name.rsplit("/", 1)[-1]
            env, dot, tenant = short.partition(".")
            if dot and tenant and (environment is None or env == environment):
                found.append(StackRef(env, tenant))
        return sorted(found, key=lambda s: s.name)

    def applied_fingerprint(self, stack: StackRef) -> str | None:
        """The ``platform:specHash`` recorded with the stack's last update, if it succeeded. Reads
        the history without selecting the stack, so sync can ask about many stacks in parallel."""
        workspace = self._workspace(needs_secrets=False)
        args = ["stack", "history", "--json", "--page-size", "10", "--page", "1", "--stack", stack.name]
        try:
            result = workspace.pulumi_command.run(args, workspace.work_dir, workspace.env_vars)
        except StackNotFoundError:
            return None
        except CommandError as error:
            raise map_command_error(error, stack=stack, kind="history", diagnostics=[]) from None
        try:
            history = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            return None
        return fingerprint_from_history(history)

    # --- internals -----------------------------------------------------------------------------------

    def _select(self, workspace: LocalWorkspace, ref: StackRef, *, create: bool) -> tuple[Stack, bool]:
        """Select the stack, creating it when asked; True when it was created here."""
        with _SELECT_LOCK:
            try:
                return Stack.select(ref.name, workspace), False
            except StackNotFoundError:
                if not create:
                    raise _not_found(ref) from None
            except CommandError as error:
                raise map_command_error(error, stack=ref, kind="select", diagnostics=[]) from None
            try:
                return Stack.create(ref.name, workspace), True
            except StackAlreadyExistsError:  # another process created it meanwhile
                return Stack.select(ref.name, workspace), False
            except CommandError as error:
                raise map_command_error(error, stack=ref, kind="create", diagnostics=[]) from None

    def _operation_config(self, request: EngineRequest, operation_dir: Path) -> StackConfig:
        """The stack config of one operation; for up/preview the spec it applies is written first."""
        tenants_dir = None
        if request.kind in PROGRAM_KINDS:
            if request.spec is None:
                raise ProgramError(f"{request.kind.value} of {request.stack.name} needs the tenant's spec")
            tenants_dir = write_operation_spec(operation_dir, request.stack, request.spec)
        return self._config(
            request.stack,
            request.kind,
            tenants_dir=tenants_dir,
            spec_hash=spec_fingerprint(request.spec) if request.spec is not None else None,
        )

    def _config(
        self,
        ref: StackRef,
        kind: OperationKind,
        *,
        tenants_dir: Path | None = None,
        spec_hash: str | None = None,
    ) -> StackConfig:
        return tenant_stack_config(
            ref,
            kind,
            project_dir=self.settings.project_dir,
            extra=self.settings.stack_config,
            environ=os.environ,
            tenants_dir=tenants_dir,
            spec_hash=spec_hash,
        )

    def _file_backend_is_empty(self) -> bool:
        if not (self.settings.uses_file_backend and self.settings.backend_url):
            return False
        return not (_file_backend_path(self.settings.backend_url) / ".pulumi").is_dir()

    def _lock_files(self, stack: StackRef) -> list[str]:
        """The stack's lock files in a file backend, or its lock objects in an ``s3://`` one (the state
        buckets the platform gives the workers); other backends' locks are not visible here."""
        url = self.settings.backend_url
        if not url:
            return []
        if self.settings.uses_file_backend:
            locks = _file_backend_path(url) / ".pulumi" / "locks"
            return (
                sorted(str(path) for path in locks.glob(f"**/{stack.name}/*.json")) if locks.is_dir() else []
            )
        if url.startswith("s3://"):
            return s3_lock_keys(url, stack, self._project())
        return []

    def _project(self) -> str:
        """The Pulumi project's name (``Pulumi.yaml``), which names its stacks' lock folders."""
        if self._project_name is None:
            document = load_yaml((self.settings.project_dir / "Pulumi.yaml").read_text(encoding="utf-8"))
            self._project_name = str(document["name"])
        return self._project_name


# --- pure helpers (tested without the CLI) ---------------------------------------------------------


def fingerprint_from_history(history: Sequence[Mapping[str, Any]]) -> str | None:
    """From ``pulumi stack history --json`` (newest first): the spec hash of the last update, when
    that update succeeded and no destroy followed it."""
    for entry in history:
        kind = entry.get("kind")
        if kind not in ("update", "destroy"):
            continue  # refreshes and previews do not change what was applied
        if kind == "destroy" or entry.get("result") != "succeeded":
            return None
        value = (entry.get("config") or {}).get(SPEC_HASH_KEY) or {}
        found = value.get("value") if isinstance(value, Mapping) else None
        return found if isinstance(found, str) and found else None
    return None


def _checked_command(minimum: str) -> PulumiCommand:
    wanted = VersionInfo.parse(minimum)
    path = shutil.which("pulumi")
    if path is None:
        raise PulumiCliMissing(f"the Pulumi CLI was not found on PATH. {install_hint(minimum)}")
    try:
        command = PulumiCommand(version=wanted)
    except InvalidVersionError:
        installed = _installed_version(path)
        raise PulumiCliMissing(
            f"the Pulumi CLI at {path} is version {installed}; tenantctl needs {minimum} or newer. "
            f"{install_hint(minimum)}"
        ) from None
    except (OSError, subprocess.CalledProcessError) as error:
        # Its own words (stderr, or the OS's reason), redacted: they say what is broken.
        said = (
            subprocess_message(error.stderr)
            if isinstance(error, subprocess.CalledProcessError)
            else (error.strerror or "")
        )
        raise PulumiCliMissing(
            f"`{path} version` failed ({type(error).__name__}{': ' + said if said else ''}); reinstall the "
            f"Pulumi CLI. {install_hint(minimum)}"
        ) from None
    # The SDK lets PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK waive its check; the program still needs it.
    if command.version is not None and command.version.compare(wanted) < 0:
        raise PulumiCliMissing(
            f"the Pulumi CLI at {path} is version {command.version}; tenantctl needs {minimum} or newer. "
            f"{install_hint(minimum)}"
        )
    return command


def _installed_version(path: str) -> str:
    try:
        done = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip().removeprefix("v") or "unknown"


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool


def s3_backend_location(url: str) -> tuple[str, str, dict[str, Any]]:
    """An ``s3://`` backend URL's bucket, key prefix and boto3 options, read as the CLI reads it:
    gocloud.dev's s3blob takes each parameter's first value, ``region``, ``endpoint`` (a bare host is
    https, http with ``disableSSL`` or ``disable_https``, as Pulumi's ``translateLegacyS3Params``),
    path style from ``s3ForcePathStyle`` or ``use_path_style``, ``profile``, and applies ``prefix``
    verbatim; Pulumi then adds the URL's path and a ``/`` (``pkg/backend/diy/backend.go``)."""
    parsed = urlparse(url)
    query = {key: values[0] for key, values in parse_qs(parsed.query, keep_blank_values=True).items()}
    path = parsed.path.strip("/")
    prefix = query.get("prefix", "") + (f"{path}/" if path else "")
    options: dict[str, Any] = {}
    if query.get("region"):
        options["region_name"] = query["region"]
    endpoint = query.get("endpoint")
    if endpoint:
        if "://" not in endpoint:
            insecure = query.get("disableSSL") in _GO_TRUE or query.get("disable_https") in _GO_TRUE
            endpoint = f"{'http' if insecure else 'https'}://{endpoint}"
        options["endpoint_url"] = endpoint
    if query.get("s3ForcePathStyle") in _GO_TRUE or query.get("use_path_style") in _GO_TRUE:
        options["path_style"] = True
    if query.get("profile"):
        options["profile"] = query["profile"]
    return parsed.netloc, prefix, options


def s3_lock_keys(url: str, stack: StackRef, project: str) -> list[str]:
    """The lock objects of ``stack`` of ``project`` in the ``s3://`` backend at ``url``
    (``.pulumi/locks/organization/<project>/<stack>/<id>.json``, or ``.pulumi/locks/<stack>/`` in the
    layout from before projects), listed with the credentials the CLI uses (the AWS environment, the
    URL's profile). A bucket that cannot be listed fails the caller (``EngineFailed``): a lock nobody
    could look for is not a lock that is not there."""
    import boto3  # only for an s3:// backend: boto3 costs a quarter of a second to import
    from botocore.config import Config

    bucket, prefix, options = s3_backend_location(url)
    path_style = options.pop("path_style", False)
    session = boto3.Session(profile_name=options.pop("profile", None))
    client = session.client(
        "s3", config=Config(s3={"addressing_style": "path" if path_style else "virtual"}), **options
    )
    locks = f"{prefix}.pulumi/locks/"
    wanted = (f"{locks}organization/{project}/{stack.name}/", f"{locks}{stack.name}/")
    found: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=locks):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                folder, _, name = key.rpartition("/")
                if f"{folder}/" in wanted and name.endswith(".json"):
                    found.append(key)
    except Exception as error:  # botocore's errors, a missing credential, an unreachable endpoint
        raise EngineFailed(
            f"could not list the locks of {stack.name} in s3://{bucket}/{prefix} to check that no other "
            f"update holds it ({type(error).__name__}: {redact(str(error))[:300]}); nothing ran"
        ) from None
    return sorted(found)


def _file_backend_path(url: str) -> Path:
    parsed = urlparse(url)
    raw = unquote(parsed.netloc + parsed.path) if parsed.netloc.startswith("~") else unquote(parsed.path)
    return Path(os.path.expanduser(raw))


def config_values(config: StackConfig) -> dict[str, ConfigValue]:
    """The stack config as Pulumi config values: credentials as SECRET values (encrypted by the
    stack's secrets provider in Pulumi.<stack>.yaml), everything else plain."""
    values = {key: ConfigValue(value) for key, value in config.plain.items()}
    values.update({key: ConfigValue(value, secret=True) for key, value in config.secret.items()})
    return values


def _counts(changes: Mapping[Any, int] | None) -> dict[str, int]:
    if not changes:
        return {}
    return {str(key.value if isinstance(key, Enum) else key): int(count) for key, count in changes.items()}


def mask_outputs(outputs: OutputMap, *, reveal: bool) -> dict[str, Any]:
    """Stack outputs as plain values, each secret replaced by SECRET_MASK unless ``reveal``."""
    return {
        key: output.value if (reveal or not output.secret) else SECRET_MASK for key, output in outputs.items()
    }


def _resource_label(metadata: StepEventMetadata) -> str:
    name = metadata.urn.rsplit("::", 1)[-1] if metadata.urn else ""
    return f"{metadata.type} {name}".strip()


def forward_event(event: EngineEvent, emit: EmitEvent, errors: list[str]) -> None:
    """Map one engine event to ``emit`` (resource, op, status / diagnostics); collect error messages."""
    if event.resource_pre_event is not None or event.res_outputs_event is not None:
        step = event.resource_pre_event or event.res_outputs_event
        assert step is not None
        metadata = step.metadata
        if metadata.type == "pulumi:pulumi:Stack":
            return
        status = "started" if event.resource_pre_event is not None else "done"
        emit(kind="resource", resource=_resource_label(metadata), op=_op(metadata.op), status=status)
    elif event.res_op_failed_event is not None:
        metadata = event.res_op_failed_event.metadata
        emit(kind="resource", resource=_resource_label(metadata), op=_op(metadata.op), status="failed")
    elif event.diagnostic_event is not None:
        diagnostic = event.diagnostic_event
        if diagnostic.ephemeral or diagnostic.severity == "debug":
            return
        message = actionable_message(diagnostic.message)
        if not message:
            return
        severity = diagnostic.severity.split("#", 1)[0]
        if severity == "error":
            errors.append(message)
        resource = diagnostic.urn.rsplit("::", 1)[-1] if diagnostic.urn else None
        emit(kind="diagnostic", resource=resource, status=severity, message=message)
    elif event.policy_event is not None:
        policy = event.policy_event
        message = actionable_message(policy.message)
        emit(
            kind="diagnostic",
            status=policy.enforcement_level,
            message=f"policy {policy.policy_pack_name}/{policy.policy_name}: {message}",
        )


def _op(op: Any) -> str:
    return str(op.value if isinstance(op, Enum) else op)


def actionable_message(text: str, *, limit: int = 600) -> str:
    """Engine text without colour codes or Python tracebacks (keep the exception's own message)."""
    text = _ANSI.sub("", text or "").strip()
    if "Traceback (most recent call last):" in text:
        head, _, tail = text.partition("Traceback (most recent call last):")
        last = [line for line in tail.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
        exception = last[-1] if last else ""
        # "tenancy.spec.errors.SpecError: tenants/dev/acme.yaml: ..." -> "SpecError: tenants/dev/..."
        exception = re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=[A-Za-z_]\w*(?:Error|Exception)\b)", "", exception)
        text = " ".join(part for part in (head.strip().rstrip(":"), exception) if part)
    text = redact(re.sub(r"\s+", " ", text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_error(text: str) -> str:
    for line in _ANSI.sub("", text).splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("error:"):
            return actionable_message(stripped.removeprefix("error:").strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return actionable_message(lines[-1]) if lines else ""


def _not_found(stack: StackRef) -> StackNotFound:
    return StackNotFound(
        f"stack {stack.name} does not exist in this backend; create it with "
        f"`tenantctl up {stack.tenant} --env {stack.environment}`"
    )


def map_command_error(
    error: CommandError, *, stack: StackRef, kind: str, diagnostics: Sequence[str]
) -> AutomationError:
    """Turn a Pulumi CLI failure into an AutomationError with a message a person can act on."""
    text = str(error)
    if isinstance(error, StackNotFoundError):
        return _not_found(stack)
    if isinstance(error, StackAlreadyExistsError):
        return StackConflict(f"stack {stack.name} already exists")
    if isinstance(error, ConcurrentUpdateError):
        return StackLocked(
            f"stack {stack.name} is locked by another update. If nothing else is updating it, the lock is "
            f"left from an interrupted update: run `tenantctl refresh {stack.tenant} --env "
            f"{stack.environment} --recover`, then retry"
        )
    exit_code = re.search(r"code: (-?\d+)", text)
    if exit_code and (int(exit_code.group(1)) < 0 or int(exit_code.group(1)) in (130, 137, 143)):
        return OperationInterrupted(
            f"the pulumi process was stopped by a signal before the {kind} of stack {stack.name} finished; "
            "the stack is recovered before its next operation"
        )
    lowered = text.lower()
    if "protected" in lowered and ("cannot be deleted" in lowered or "protect" in lowered):
        return ProtectedResources(
            f"stack {stack.name} has protected resources because the tenant's deletionProtection is on: set "
            f"deletionProtection: false in tenants/{stack.environment}/{stack.tenant}.yaml, run "
            f"`tenantctl up {stack.tenant} --env {stack.environment}`, then destroy"
        )
    if "passphrase" in lowered and (
        "incorrect" in lowered or "must be set" in lowered or "unable to find" in lowered
    ):
        return SecretsUnavailable(
            f"cannot decrypt stack {stack.name}: PULUMI_CONFIG_PASSPHRASE is missing or is not the "
            "passphrase the stack was created with"
        )
    if "hashivault" in lowered or "secrets manager" in lowered:
        return SecretsUnavailable(
            f"cannot open the secrets provider of stack {stack.name} ({_first_error(text)}): for Vault check "
            "VAULT_SERVER_URL, VAULT_SERVER_TOKEN and the transit key"
        )
    reason = diagnostics[0] if diagnostics else _first_error(text)
    if isinstance(error, PulumiRuntimeError | PulumiInlineSourceRuntimeError | PulumiCompilationError):
        return ProgramError(f"the program failed for stack {stack.name}: {reason}")
    return EngineFailed(f"pulumi {kind} of stack {stack.name} failed: {reason or 'see the operation events'}")


def _pending_name(item: Mapping[str, Any]) -> str:
    resource = item.get("resource") or {}
    urn = str(resource.get("urn", ""))
    return f"{item.get('type', 'operation')} {urn.rsplit('::', 1)[-1]}".strip()


def _path_with_scripts(path: str) -> str:
    """``path`` with this environment's scripts directory first, so the engine finds its console scripts."""
    scripts = sysconfig.get_path("scripts")
    entries = path.split(os.pathsep) if path else []
    return os.pathsep.join([scripts, *(e for e in entries if e != scripts)])
