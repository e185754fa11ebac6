"""Policy as code: rules written once, run over render output (``tenantctl policy``) and in CrossGuard."""

from tenancy.policy.model import Finding, PolicyObject, Violation
from tenancy.policy.rules import RESOURCE_RULES, STACK_RULES, check_object, check_stack, check_stacks

__all__ = [
    "RESOURCE_RULES",
    "STACK_RULES",
    "Finding",
    "PolicyObject",
    "Violation",
    "check_object",
    "check_stack",
    "check_stacks",
]
