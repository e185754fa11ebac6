"""Pulumi entry point: stack `dev`/`prod` declares the platform, `<env>.<tenant>` one tenant."""

from pathlib import Path

import pulumi

from tenancy.stacks import declare_stack

declare_stack(pulumi.get_stack(), project_dir=Path(__file__).resolve().parent)
