"""Limits on failed authentication that hold: forwarding headers count only from trusted proxies, a
burst of bad tokens never locks out valid callers sharing the address, and a JWKS outage answers 503
(retryable) to everyone, counts against nobody and ends as soon as the endpoint answers again."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tenancy.service.core.client_address import client_address, failure_key
from tenancy.service.core.config import ServiceSettings
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant

ME = "/api/v1/me"


def _status_and_code(response: Any) -> tuple[int, str | None]:
    body = response.json()
    return response.status_code, body["error"]["code"] if "error" in body else None


# --- which address a request comes from ------------------------------------------------------------

PROXIES = (ip_network("127.0.0.6/32"), ip_network("10.20.0.0/16"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),  # an untrusted peer's header is ignored
        ("127.0.0.6", ["203.0.113.1"], "203.0.113.1"),  # the sidecar forwards what the gateway saw
        ("127.0.0.6", ["6.6.6.6, 203.0.113.1"], "203.0.113.1"),  # the client's own entry is ignored
        ("127.0.0.6", ["6.6.6.6", "203.0.113.1, 10.20.3.4"], "203.0.113.1"),  # chained trusted proxies
        ("127.0.0.6", ["10.20.1.1, 10.20.3.4"], "10.20.1.1"),  # every hop trusted: the leftmost
        ("127.0.0.6", [], "127.0.0.6"),  # no header: the proxy itself
        ("127.0.0.6", ["not-an-address"], "127.0.0.6"),  # garbage: stop at the last trusted hop
        ("127.0.0.6", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("127.0.0.6", ["203.0.113.1:5678"], "203.0.113.1"),
        ("::ffff:127.0.0.6", ["203.0.113.1"], "203.0.113.1"),  # IPv4-mapped peers are IPv4
    ],
)
def test_the_client_address_comes_from_forwarding_headers_only_behind_trusted_proxies(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_forwarding_header_is_believed_by_default() -> None:
    assert client_address("127.0.0.1", ["203.0.113.1"], ()) == "127.0.0.1"
    assert ServiceSettings().trusted_proxies == ()


def test_ipv6_clients_count_per_64() -> None:
    assert failure_key("2001:db8:1:2::1") == failure_key("2001:db8:1:2:ffff::9") == "ip:2001:db8:1:2::/64"
    assert failure_key("2001:db8:1:3::1") != failure_key("2001:db8:1:2::1")
    assert failure_key("203.0.113.1") == "ip:203.0.113.1"


def test_trusted_proxies_are_comma_separated_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_SERVICE_TRUSTED_PROXIES", "127.0.0.6/32, 10.0.0.0/8,fd00::/8")
    assert [str(n) for n in ServiceSettings().trusted_proxies] == ["127.0.0.6/32", "10.0.0.0/8", "fd00::/8"]
    monkeypatch.setenv("TENANCY_SERVICE_TRUSTED_PROXIES", "10.0.0.1/8")
    with pytest.raises(ValueError, match="is not a CIDR: it has host bits set"):
        ServiceSettings()


def test_trusted_proxies_are_read_once_with_the_platform_configs_wording(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each CIDR is read by one ip_network call (it was read, written back as text, and read again),
    and refused with the words the platform config uses for its CIDR fields."""
    import ipaddress

    from tenancy.spec import cidr

    reads: list[str] = []
    real = ipaddress.ip_network

    def counted(value: str, strict: bool = True) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        reads.append(value)
        return real(value, strict=strict)

    monkeypatch.setattr(cidr.ipaddress, "ip_network", counted)
    monkeypatch.setenv("TENANCY_SERVICE_TRUSTED_PROXIES", "127.0.0.6/32,fd00::/8")
    assert [str(n) for n in ServiceSettings().trusted_proxies] == ["127.0.0.6/32", "fd00::/8"]
    assert reads == ["127.0.0.6/32", "fd00::/8"]
    monkeypatch.undo()
    for value, words in (
        ("fe80::%eth0/64", "is not a CIDR: a zone"),
        ("proxy.example", "is not a CIDR such as 10.0.0.0/16"),
        (
            "10.0.0.1/8",
            "is not a CIDR: it has host bits set; write 10.0.0.0/8 for the network or 10.0.0.1/32",
        ),
    ):
        monkeypatch.setenv("TENANCY_SERVICE_TRUSTED_PROXIES", f"127.0.0.6/32,{value}")
        with pytest.raises(ValueError, match=re.escape(f"{value!r} {words}")):
            ServiceSettings()


# --- failed authentications, through the real app --------------------------------------------------


def test_rotating_x_forwarded_for_does_not_escape_the_limit_without_a_trusted_proxy(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    server: LiveServer = serve(make_app(workers=0, auth_failures_per_ip=3)[0])
    with server.client("not-a-token") as client:
        answers = [
            _status_and_code(client.get(ME, headers={"X-Forwarded-For": f"203.0.113.{i}"})) for i in range(5)
        ]
    assert answers == [(401, "unauthenticated")] * 3 + [(429, "rate_limited")] * 2


def test_naming_someone_elses_address_never_locks_them_out(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    # The test client plays the trusted proxy: it appends the address it saw, after whatever the
    # client sent. The attacker (198.51.100.66) puts the victim's address (203.0.113.7) in front.
    server: LiveServer = serve(make_app(workers=0, auth_failures_per_ip=2, trusted_proxies="127.0.0.1/32")[0])
    with server.client("not-a-token") as attacker:
        forged = {"X-Forwarded-For": "203.0.113.7, 198.51.100.66"}
        answers = [_status_and_code(attacker.get(ME, headers=forged)) for _ in range(4)]
    assert answers == [(401, "unauthenticated")] * 2 + [(429, "rate_limited")] * 2
    with server.client("a-typo") as victim:  # the victim's own failures are still its own, and few
        response = victim.get(ME, headers={"X-Forwarded-For": "203.0.113.7"})
    assert _status_and_code(response) == (401, "unauthenticated")


def test_a_burst_of_bad_tokens_never_locks_out_valid_callers_from_the_same_address(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0, auth_failures_per_ip=3)
    server: LiveServer = serve(app)
    create_tenant(app, "acme")
    with server.client(issuer.admin_of("acme")) as person:
        key = person.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).json()["key"]
    with server.client("not-a-token") as noisy:
        answers = [noisy.get(ME) for _ in range(6)]
    assert [_status_and_code(r) for r in answers] == [(401, "unauthenticated")] * 3 + [
        (429, "rate_limited")
    ] * 3
    blocked = answers[-1]
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "credentials that verify still pass" in blocked.json()["error"]["message"]
    # Same address, valid credentials: a person's token and a machine's API key both pass.
    with server.client(issuer.platform_admin()) as person:
        assert person.get(ME).status_code == 200
    with server.client(key) as machine:
        assert machine.get(ME).status_code == 200
    with server.client(key[:-4] + "AAAA") as guesser:  # a wrong key from there is still refused
        assert _status_and_code(guesser.get(ME)) == (429, "rate_limited")


# --- a JWKS outage -----------------------------------------------------------------------------------


class FlakyJwks:
    """A JWKS endpoint that can go down (answers 503) and come back."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self.down = threading.Event()
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                if owner.down.is_set():
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": owner.issuer.jwks["keys"] + owner.issuer.extra_keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def jwks(issuer: Issuer) -> Iterator[FlakyJwks]:
    flaky = FlakyJwks(issuer)
    yield flaky
    flaky.server.shutdown()


RETRY = 0.3


def test_a_jwks_outage_answers_503_to_everyone_counts_against_nobody_and_ends_with_it(
    make_app: AppFactory, serve: Any, issuer: Issuer, jwks: FlakyJwks
) -> None:
    jwks.down.set()
    app, _ = make_app(workers=0, jwks_url=jwks.url, jwks_retry_seconds=1.0, auth_failures_per_ip=2)
    server: LiveServer = serve(app)
    callers = [issuer.platform_admin(), issuer.admin_of("acme"), issuer.viewer_of("beta")]
    answers = []
    for _ in range(2):  # more attempts than the failure limit allows
        for token in callers:
            with server.client(token) as client:
                answers.append(client.get(ME))
    for response in answers:
        assert _status_and_code(response) == (503, "identity_provider_unavailable"), response.text
        assert response.headers["Retry-After"] == "1"
        assert "WWW-Authenticate" not in response.headers
        assert "retry" in response.json()["error"]["message"]
    fetches_during_outage = jwks.requests
    assert fetches_during_outage < len(answers)  # a failure is remembered for a second: no fetch per request

    jwks.down.clear()
    time.sleep(1.0)
    for token in callers:  # the endpoint answers: everyone is back at once, and nobody is locked out
        with server.client(token) as client:
            assert client.get(ME).status_code == 200


def test_keys_already_fetched_keep_verifying_through_an_outage(
    make_app: AppFactory, serve: Any, issuer: Issuer, jwks: FlakyJwks
) -> None:
    app, _ = make_app(
        workers=0, jwks_url=jwks.url, jwks_retry_seconds=RETRY, jwks_cache_seconds=0, auth_failures_per_ip=1
    )
    server: LiveServer = serve(app)
    with server.client(issuer.platform_admin()) as client:
        assert client.get(ME).status_code == 200
    jwks.down.set()
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_kid = jwt.encode(
        issuer.claims(roles=["platform-admin"]), rotated, algorithm="RS256", headers={"kid": "rsa-9"}
    )
    with server.client(issuer.platform_admin()) as client:
        assert client.get(ME).status_code == 200  # a cached key, though its cache time is over
    for _ in range(3):
        with server.client(new_kid) as client:  # a key the cache lacks cannot be checked: 503, not 401
            assert _status_and_code(client.get(ME)) == (503, "identity_provider_unavailable")
    public = json.loads(RSAAlgorithm.to_jwk(rotated.public_key()))
    issuer.extra_keys.append({**public, "kid": "rsa-9", "alg": "RS256", "use": "sig"})
    try:
        jwks.down.clear()
        time.sleep(RETRY)
        with server.client(new_kid) as client:
            assert client.get(ME).status_code == 200
    finally:
        issuer.extra_keys.clear()


def test_a_jwks_that_answers_without_keys_is_an_outage_not_a_bad_token() -> None:
    from tenancy.service.core.security import JwksKeys, KeysUnavailable

    answers: list[Any] = [{"error": "maintenance"}, {"keys": [{"kid": "k1", "kty": "RSA"}]}]
    now = [100.0]
    keys = JwksKeys(
        url="https://auth.example/certs",
        retry_seconds=1.0,
        fetch=lambda url: answers.pop(0),
        clock=lambda: now[0],
    )
    with pytest.raises(KeysUnavailable) as outage:
        keys.key("k1")
    assert outage.value.retry_after == 1
    with pytest.raises(KeysUnavailable):
        keys.key("k1")  # within the retry interval: no second fetch
    assert len(answers) == 1
    now[0] += 1.0
    assert keys.key("k1") == {"kid": "k1", "kty": "RSA"}
