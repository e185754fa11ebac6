"""The options and arguments ``tenantctl``'s tenant commands share (``preview``, ``up``, ``refresh``,
``destroy``, ``sync``, ``outputs``, ``stacks``, ``backup``, ``backups``, ``restore``, ``rotate-keys``),
as ``Annotated`` aliases: one definition each, so a flag, its environment variable and its help read
the same on every command. Options only one command takes stay beside it.

Imported only by command modules that read tenant files anyway (``ENVIRONMENTS`` comes with the spec);
``requests`` and ``serve`` keep their own, lighter, options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tenancy.spec.tree import ENVIRONMENTS

TenantArgument = Annotated[str, typer.Argument(help="Tenant name: the file tenants/<env>/<tenant>.yaml.")]
EnvOption = Annotated[
    str, typer.Option("--env", "-e", help=f"Environment: {' or '.join(ENVIRONMENTS)}.", envvar="TENANCY_ENV")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, no progress.")]
ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        help="Pulumi project directory (Pulumi.yaml); default: the current directory.",
        envvar="TENANCY_PROJECT_DIR",
        show_default=False,
    ),
]
TenantsOption = Annotated[
    Path | None,
    typer.Option(
        "--tenants",
        help="The tenants/ tree; default: <project>/tenants.",
        envvar="TENANCY_TENANTS_DIR",
        show_default=False,
    ),
]
StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Operation history and the local Pulumi backend; default: <project>/.tenancy.",
        envvar="TENANCY_STATE_DIR",
        show_default=False,
    ),
]
ParallelOption = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        max=64,
        help="Tenant stacks updated at once (default: 4).",
        envvar="TENANCY_MAX_PARALLEL",
        show_default=False,
    ),
]
# --url and --token: backup, backups and restore call the service with them instead of running here.
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TENANCY_API_URL",
        help="Call the service at this base URL instead of running here.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TENANCY_TOKEN",
        help="Access token or API key for --url (e.g. tenantctl dev-token).",
        show_default=False,
    ),
]
# rotate-keys: the same flags, worded for a command that otherwise changes the local file.
RemoteUrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TENANCY_API_URL",
        help="Ask the running service at this URL instead of changing the local file.",
        show_default=False,
    ),
]
RemoteTokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TENANCY_TOKEN", help="Your access token (with --url).", show_default=False
    ),
]
