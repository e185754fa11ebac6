"""Subprocess messages keep their own words and lose their credentials."""

from __future__ import annotations

from tenancy.redaction import REDACTED, redact, subprocess_message


def test_credentials_in_urls_are_redacted_and_the_message_kept() -> None:
    text = "fatal: unable to access 'https://x-access-token:ghp_0123456789abcdefghijABCDEFGHIJ@github.com/o/r.git/'"
    assert redact(text) == f"fatal: unable to access 'https://{REDACTED}@github.com/o/r.git/'"
    assert redact("s3://bucket?region=eu-central-1") == "s3://bucket?region=eu-central-1"


def test_tokens_and_secret_assignments_are_redacted() -> None:
    text = "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln password=hunter22 "
    text += "tnk_abcdefghijkl"
    redacted = redact(text)
    for secret in ("eyJhbGci", "hunter22", "tnk_abcdefghijkl"):
        assert secret not in redacted
    assert redact("Missing required configuration variable 'platform:vaultToken'") == (
        "Missing required configuration variable 'platform:vaultToken'"
    )


def test_values_of_secret_environment_variables_are_redacted_anywhere() -> None:
    environ = {"VAULT_TOKEN": "s.opaque-value-42", "HOME": "/root"}
    assert redact("vault said s.opaque-value-42 is bad in /root", environ=environ) == (
        f"vault said {REDACTED} is bad in /root"
    )


def test_subprocess_message_keeps_the_error_lines() -> None:
    stderr = "hint: something\nfatal: pathspec 'x/tenants' did not match any files\n"
    assert subprocess_message(stderr) == "fatal: pathspec 'x/tenants' did not match any files"
    assert subprocess_message("just one line\n") == "just one line"
    assert subprocess_message(None) == ""
    assert subprocess_message(b"error: bytes too\n") == "error: bytes too"
