"""Generated passwords that a service takes in only once: a change of value must never be generated."""

from __future__ import annotations

import pulumi
import pulumi_random as random

# Every input of a RandomPassword whose change would make Pulumi replace it with a new value.
PASSWORD_INPUTS = [
    "length", "lower", "upper", "numeric", "number", "special", "overrideSpecial",
    "minLower", "minUpper", "minNumeric", "minSpecial", "keepers",
]  # fmt: skip


def password_taken_once(
    name: str, *, length: int, parent: pulumi.Resource, protect: bool
) -> random.RandomPassword:
    """An alphanumeric password a service reads only on its first start or first import (Keycloak's
    bootstrap admin and realm client secrets, Grafana's admin). A new value would reach the Kubernetes
    Secret and the stack outputs, never the service, and every sign-in with it would fail. So nothing
    in the program may replace one: no input change (ignored), and with ``protect`` (prod) no
    ``--replace`` or delete either. Rotation is done in the service first (README)."""
    return random.RandomPassword(
        name,
        length=length,
        special=False,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect, ignore_changes=PASSWORD_INPUTS),
    )
