"""The policies as a CrossGuard (pulumi-policy) pack: the same rules, fed from the engine's arguments.

CrossGuard hands a resource's type, URN and properties (proxies that raise on values unknown during a
preview). They become the ``PolicyObject`` render output produces: a Kubernetes object, or a Helm
release with its values. A finding about a value unknown during preview is not reported as a
violation; the policy says it cannot run on that value during preview instead, as pulumi-policy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from tenancy.policy.model import (
    FieldPath,
    PolicyObject,
    ResourceRule,
    StackRule,
    Violation,
    display_path,
    manifest_object,
    release_object,
)
from tenancy.policy.rules import RESOURCE_RULES, STACK_RULES, check_object, check_stack
from tenancy.render.write import HELM_RELEASE_TYPE

UNKNOWN = "<unknown during preview>"


def plain(value: Any, path: FieldPath, unknowns: list[FieldPath]) -> Any:
    """Proxies and secrets turned into plain data; values unknown during preview become UNKNOWN."""
    if isinstance(value, Secret):
        return plain(value.value, path, unknowns)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:
            try:
                item = value[key]
            except UnknownValueError:
                unknowns.append((*path, str(key)))
                item = UNKNOWN
            result[str(key)] = plain(item, (*path, str(key)), unknowns)
        return result
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                item = value[index]
            except UnknownValueError:
                unknowns.append((*path, index))
                item = UNKNOWN
            items.append(plain(item, (*path, index), unknowns))
        return items
    return value


def stack_of(urn: str) -> str | None:
    """``urn:pulumi:prod.acme::platform::type::name`` -> ``prod.acme``."""
    head = urn.split("::", 1)[0]
    return head.rsplit(":", 1)[-1] if head.startswith("urn:pulumi:") else None


def policy_object(
    resource_type: str, props: Mapping[str, Any], *, urn: str, name: str
) -> PolicyObject | None:
    """The policy view of one engine resource; values unknown during preview are its hidden paths."""
    unknowns: list[FieldPath] = []
    body = plain(props, (), unknowns)
    stack = stack_of(urn)
    if resource_type == HELM_RELEASE_TYPE:
        repository = body.get("repositoryOpts")
        release = {
            "name": body.get("name") or name,
            "namespace": body.get("namespace") or "default",
            "chart": body.get("chart"),
            "version": body.get("version"),
            "repo": repository.get("repo") if isinstance(repository, Mapping) else None,
            **({"postrender": body["postrender"]} if body.get("postrender") else {}),
            "values": body.get("values") or {},
        }
        hidden = [("repo", *p[2:]) if p[:2] == ("repositoryOpts", "repo") else p for p in unknowns]
        return release_object(release, stack=stack, origin=urn, hidden=hidden)
    if resource_type.startswith("kubernetes:") and body.get("kind") and body.get("apiVersion"):
        patch = resource_type.endswith("Patch")
        return manifest_object(body, stack=stack, origin=urn, default_name=name, patch=patch, hidden=unknowns)
    return None


def _report(found: list[Violation], report_violation: ReportViolation, *, with_urn: bool) -> None:
    """Report what is decided; then, if anything depended on unknown values, say it cannot be decided yet."""
    undecided = [v for v in found if v.undecided]
    for decided in (v for v in found if not v.undecided):
        report_violation(decided.message, decided.origin if with_urn else None)
    if undecided:
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [display_path(undecided[0].path)])


def resource_policy(rule: ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        obj = policy_object(args.resource_type, args.props, urn=args.urn, name=args.name)
        if obj is not None:
            _report(check_object(obj, [rule]), report_violation, with_urn=False)

    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def stack_policy(rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        objects = [
            obj
            for resource in args.resources
            if (
                obj := policy_object(
                    resource.resource_type, resource.props, urn=resource.urn, name=resource.name
                )
            )
        ]
        _report(check_stack(objects, resource_rules=(), stack_rules=[rule]), report_violation, with_urn=True)

    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies() -> list[Policy]:
    """Every rule of ``tenancy.policy.rules`` as a CrossGuard policy, mandatory."""
    found: list[Policy] = [resource_policy(rule) for rule in RESOURCE_RULES]
    found += [stack_policy(rule) for rule in STACK_RULES]
    return found
