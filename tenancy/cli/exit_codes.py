"""Exit codes of tenantctl, so CI can tell what went wrong without parsing text."""

OK = 0
INVALID_INPUT = 2  # a tenant file, config or argument is wrong: fix the input
OPERATION_FAILED = 3  # an update/preview/destroy ran and failed, or a policy was violated
PULUMI_CLI_MISSING = 4  # the Pulumi CLI is missing or too old
SERVICE_FAILED = 1  # tenantctl serve could not start (the message says what failed and why)
