"""A ValidatingAdmissionPolicy decided the way the API server decides it, with cel-python: its match
conditions, then its variables (lazily, as ``variables.<name>``) and every validation, with ``request``,
``object``, ``oldObject`` (null on CREATE and DELETE as the API server binds them), ``namespaceObject``
and an ``authorizer`` that asks a given function."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (group, resource, verb) -> allowed: the API server's authorizer for the request's user.
Authorize = Callable[[str, str, str], bool]


def _deny_all(group: str, resource: str, verb: str) -> bool:
    return False


@dataclass
class Review:
    """One request as the policy sees it."""

    operation: str
    resource: str
    name: str
    namespace: str = ""
    group: str = ""
    username: str = ""
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    namespace_object: dict[str, Any] | None = None
    authorize: Authorize = field(default=_deny_all)

    def request(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "name": self.name,
            "namespace": self.namespace,
            "resource": {"group": self.group, "resource": self.resource},
            "userInfo": {"username": self.username},
        }


@functools.cache
def _environment() -> Any:
    import celpy

    return celpy.Environment()


@functools.cache
def _compiled(expression: str) -> Any:
    return _environment().compile(expression)


_REQUEST_VARIABLES = re.compile(r"\b(request|object|oldObject|namespaceObject|authorizer|variables)\b")


@functools.cache
def _constant(expression: str) -> Any:
    """A variable that reads nothing of the request (a table): evaluated once."""
    return _program(expression, Review("", "", "")).evaluate({})


def _program(expression: str, review: Review) -> Any:
    from celpy import celtypes

    def group(authorizer: Any, name: Any) -> Any:
        return celtypes.MapType({celtypes.StringType("group"): name})

    def resource(check: Any, name: Any) -> Any:
        return celtypes.MapType({**check, celtypes.StringType("resource"): name})

    def check(check: Any, verb: Any) -> Any:
        return celtypes.MapType({**check, celtypes.StringType("verb"): verb})

    def allowed(decision: Any) -> Any:
        keys = [celtypes.StringType(key) for key in ("group", "resource", "verb")]
        return celtypes.BoolType(review.authorize(*(str(decision[key]) for key in keys)))

    return _environment().program(
        _compiled(expression),
        functions={"group": group, "resource": resource, "check": check, "allowed": allowed},
    )


def _activation(review: Review, variables: dict[str, Any]) -> dict[str, Any]:
    import celpy

    def cel(value: Any) -> Any:
        return None if value is None else celpy.json_to_cel(value)

    return {
        "request": celpy.json_to_cel(review.request()),
        "object": cel(review.object),
        "oldObject": cel(review.old_object),
        "namespaceObject": cel(review.namespace_object),
        "authorizer": celpy.json_to_cel({}),
        "variables": celpy.celtypes.MapType(variables),
    }


def matched(policy: dict[str, Any], review: Review) -> bool:
    """Whether the policy applies to the request: its resource rules and match conditions."""
    spec = policy["spec"]
    if not any(
        review.group in rule["apiGroups"]
        and review.resource in rule["resources"]
        and review.operation in rule["operations"]
        for rule in spec["matchConstraints"]["resourceRules"]
    ):
        return False
    return all(
        bool(_program(c["expression"], review).evaluate(_activation(review, {})))
        for c in spec.get("matchConditions", [])
    )


def failed_validations(policy: dict[str, Any], review: Review) -> list[str]:
    """The messages of the validations that refuse the request (none: admitted). A request the policy
    does not match is admitted."""
    from celpy import celtypes

    if not matched(policy, review):
        return []
    spec = policy["spec"]
    variables: dict[Any, Any] = {}
    for variable in spec.get("variables", []):
        expression = variable["expression"]
        if _REQUEST_VARIABLES.search(expression):
            value = _program(expression, review).evaluate(_activation(review, variables))
        else:
            value = _constant(expression)
        variables[celtypes.StringType(variable["name"])] = value
    failed = []
    for validation in spec["validations"]:
        result = _program(validation["expression"], review).evaluate(_activation(review, variables))
        if not isinstance(result, celtypes.BoolType):
            raise AssertionError(f"{validation['expression'][:80]}… did not evaluate: {result!r}")
        if not result:
            failed.append(validation["message"])
    return failed


def admitted(policy: dict[str, Any], review: Review) -> bool:
    return not failed_validations(policy, review)
