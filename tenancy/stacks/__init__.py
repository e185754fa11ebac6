"""The two programs behind ``__main__.py``: the platform (stacks ``dev``, ``prod``) or one tenant
(stacks ``<env>.<tenant>``, for example ``prod.acme``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import DNS_LABEL
from tenancy.spec.tree import ENVIRONMENTS


@dataclass(frozen=True)
class StackName:
    environment: str
    tenant: str | None = None

    @property
    def is_platform(self) -> bool:
        return self.tenant is None

    def __str__(self) -> str:
        return self.environment if self.tenant is None else f"{self.environment}.{self.tenant}"


def parse_stack_name(stack: str) -> StackName:
    """``dev`` -> platform of dev; ``prod.acme`` -> tenant acme in prod. Organisation prefixes are dropped."""
    short = stack.rsplit("/", 1)[-1]
    environment, _, tenant = short.partition(".")
    if environment not in ENVIRONMENTS or (tenant and not DNS_LABEL.match(tenant)) or short.endswith("."):
        raise SpecError(
            [
                SpecIssue(
                    f"stack {stack!r}",
                    "name",  # an option's value, not a file: "(file)" would point at none
                    f"stacks are named <env> for the platform or <env>.<tenant> for one tenant, "
                    f"env one of {', '.join(ENVIRONMENTS)} (for example 'prod' or 'prod.acme')",
                )
            ]
        )
    return StackName(environment=environment, tenant=tenant or None)


def stack_outputs(stack: str, *, project_dir: Path) -> dict[str, Any]:
    """Declare the platform or one tenant, whichever ``stack`` names; return its outputs."""
    from tenancy.stacks.platform import declare_platform_stack
    from tenancy.stacks.tenant import declare_tenant_stack

    name = parse_stack_name(stack)
    if name.tenant is None:
        return declare_platform_stack(name.environment, project_dir=project_dir)
    return declare_tenant_stack(name.environment, name.tenant, project_dir=project_dir)


def declare_stack(stack: str, *, project_dir: Path) -> None:
    """The Pulumi program: declare the stack's resources and export its outputs."""
    import pulumi

    for key, value in stack_outputs(stack, project_dir=project_dir).items():
        pulumi.export(key, value)
