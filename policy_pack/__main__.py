"""CrossGuard entry point: the platform's policies, enforced as mandatory.

The rules are ``tenancy.policy.rules``; ``tenancy.policy.crossguard`` adapts them to pulumi-policy.
"""

import sys
from pathlib import Path

# The project root, for running the pack from a checkout where the project is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from tenancy.policy.crossguard import policies

PolicyPack(
    name="tenancy-platform",
    policies=policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
)
