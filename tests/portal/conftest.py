"""The portal's tests use the service's fixtures: the test issuer, apps on scratch state, live servers."""

from tests.service.conftest import issuer, make_app, serve

__all__ = ["issuer", "make_app", "serve"]
