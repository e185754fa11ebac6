"""The verifier remembers tokens that verified, and never longer than they would still verify: past
their exp, once their key is withdrawn, or once the keys are due for a refetch, the full check runs."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tenancy.service.core import security
from tenancy.service.core.security import AuthenticationFailed, JwksKeys, TokenVerifier

ISSUER = "https://auth.example/realms/platform"
AUDIENCE = "tenant-api"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, entries: int = 100) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk = {**public, "kid": "k1", "alg": "RS256", "use": "sig"}
        self.published: list[dict[str, Any]] = [self.jwk]
        self.keys_clock = Clock(1000.0)  # monotonic, for the key cache
        self.clock = Clock(time.time())  # wall time, for exp
        self.keys = JwksKeys(
            url="https://auth.example/certs",
            cache_seconds=300,
            min_refresh_seconds=0,
            fetch=lambda url: {"keys": list(self.published)},
            clock=self.keys_clock,
        )
        self.verifier = TokenVerifier(
            self.keys,
            issuer=ISSUER,
            audience=AUDIENCE,
            algorithms=("RS256",),
            leeway=30,
            cache_entries=entries,
            clock=self.clock,
        )
        self.checks = 0
        real_decode = jwt.decode

        def counting_decode(*args: Any, **kwargs: Any) -> Any:
            self.checks += 1
            return real_decode(*args, **kwargs)

        monkeypatch.setattr(security.jwt, "decode", counting_decode)

    def token(self, subject: str = "alice", lifetime: int = 300) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime,
            "roles": ["platform-admin"],
        }
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": "k1"})


def test_a_token_that_verified_passes_again_without_a_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup(monkeypatch)
    token = setup.token()
    first = setup.verifier.principal(token)
    assert setup.verifier.cached_principal(token) == first
    assert setup.verifier.principal(token) == first
    assert setup.verifier.verify(token)["sub"] == "alice"
    assert setup.checks == 1
    assert first.platform_admin and first.subject == "alice"


def test_a_remembered_token_is_checked_again_once_past_its_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(monkeypatch)
    token = setup.token(lifetime=300)
    exp = setup.verifier.verify(token)["exp"]
    setup.clock.now = exp  # at exp: no longer taken from memory, even within the leeway
    assert setup.verifier.cached_principal(token) is None
    setup.verifier.principal(token)  # the full check decides (real time: still valid)
    assert setup.checks == 2


def test_a_remembered_token_fails_once_its_key_is_withdrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(monkeypatch)
    token = setup.token()
    setup.verifier.principal(token)
    setup.published.clear()  # the issuer withdraws the key
    assert setup.verifier.cached_principal(token) is not None  # keys not refetched yet: as before
    setup.keys_clock.now += 301  # the key cache is due for a refetch
    assert setup.verifier.cached_principal(token) is None
    with pytest.raises(AuthenticationFailed) as failure:
        setup.verifier.principal(token)
    assert failure.value.reason == "unknown_key"


def test_tokens_that_do_not_verify_are_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(monkeypatch)
    forged = setup.token()[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            setup.verifier.principal(forged)
        assert setup.verifier.cached_principal(forged) is None
    assert setup.checks == 2


def test_the_memory_is_bounded_and_forgets_the_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(monkeypatch, entries=2)
    tokens = [setup.token(subject=f"user-{index}") for index in range(3)]
    for token in tokens:
        setup.verifier.principal(token)
    assert setup.verifier.cached_principal(tokens[0]) is None
    assert setup.verifier.cached_principal(tokens[1]) is not None
    assert setup.verifier.cached_principal(tokens[2]) is not None
