"""Exit codes of tenantctl, so CI can tell what went wrong without parsing text; and the error codes
its ``--json`` output carries.

A code tenantctl prints is one of three tables, each code with one meaning wherever it is printed:
the service's (``tenancy.service.core.errors.ERROR_CODES``: what the API answered, passed on as it
came, or the same refusal made here, e.g. ``backup_not_found``), an operation's
(``tenancy.automation.errors.ERROR_CODES``: why a run failed), or tenantctl's own below, for what
only a command line meets. Checked by ``tests/test_cli_error_codes.py``.
"""

OK = 0
INVALID_INPUT = 2  # a tenant file, config or argument is wrong: fix the input
OPERATION_FAILED = 3  # an update/preview/destroy ran and failed, or a policy was violated
PULUMI_CLI_MISSING = 4  # the Pulumi CLI is missing or too old
SERVICE_FAILED = 1  # tenantctl serve could not start (the message says what failed and why)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it): the message says what was left

# code -> what it means; never a code of the service's table (a client reading both must not find
# one code meaning two things).
CLI_ERROR_CODES: dict[str, str] = {
    "invalid_input": "a tenant file, option or argument is wrong (exit 2); issues or the message say which",
    "failed": "the command failed for a reason the message gives (exit 3)",
    "service_unreachable": "the service at --url cannot be reached, or was lost while following (exit 3)",
    "follow_gave_up": "the operation did not finish while tenantctl followed it; it keeps running (exit 3)",
    "http_error": "the service answered an HTTP error without its JSON error body (exit 2 or 3)",
}
