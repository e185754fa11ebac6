"""The schema check gives kubernetes-validate's verdict and first error, with schemas loaded once.

``schema_errors`` compiles each kind's validator once (jsonschema-rs says valid or not; the error of
an invalid object comes from python-jsonschema). These compare it with ``kubernetes_validate.validate``
itself, strict, on real rendered objects and on broken copies of them.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tenancy import versions
from tenancy.render import schema
from tenancy.render.runtime import capture_stack
from tenancy.render.schema import NotBuiltIn, schema_errors
from tests.conftest import PROJECT_DIR


def _reference(manifest: dict[str, Any]) -> list[str] | None:
    """kubernetes-validate's own answer (None: not a built-in kind), formatted as schema_errors does."""
    try:
        kubernetes_validate.validate(manifest, versions.KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path) or '(object)'}: {error.message}"]
    return []


def _ours(manifest: dict[str, Any]) -> list[str] | None:
    try:
        return schema_errors(manifest)
    except NotBuiltIn:
        return None


def _broken(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies with an unknown field at the top and in metadata, a wrong type, a wrong nested type."""
    unknown_top = {**copy.deepcopy(manifest), "colour": "blue"}
    unknown_meta = copy.deepcopy(manifest)
    unknown_meta["metadata"]["colour"] = "blue"
    wrong_name = copy.deepcopy(manifest)
    wrong_name["metadata"]["name"] = 12
    wrong_labels = copy.deepcopy(manifest)
    wrong_labels["metadata"]["labels"] = {"tenant": ["acme"]}
    return [unknown_top, unknown_meta, wrong_name, wrong_labels]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    capture = capture_stack("prod.acme", project_dir=PROJECT_DIR)
    # one object per kind: the reference decodes 1.5 MB of JSON per call
    by_kind = {(r.inputs["apiVersion"], r.kind): r.inputs for r in capture.kubernetes_objects()}
    return list(by_kind.values())


def test_valid_objects_are_valid_and_custom_resources_are_not_built_in(objects: list[dict[str, Any]]) -> None:
    assert [_ours(o) for o in objects] == [_reference(o) for o in objects]
    assert any(_ours(o) is None for o in objects)  # Istio's and others' custom resources
    assert any(_ours(o) == [] for o in objects)


def test_broken_objects_get_the_first_error_kubernetes_validate_reports(
    objects: list[dict[str, Any]],
) -> None:
    built_in = [o for o in objects if _ours(o) is not None][:6]
    broken = [b for o in built_in for b in _broken(o)]
    ours = [_ours(b) for b in broken]

    assert ours == [_reference(b) for b in broken]
    assert all(ours)  # every broken copy is refused


def test_a_deep_error_names_its_field() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {},
            "template": {"spec": {"containers": [{"name": "a", "image": "b", "resources": {"limits": []}}]}},
        },
    }
    assert schema_errors(deployment) == _reference(deployment)
    assert schema_errors(deployment)[0].startswith("spec.template.spec.containers.0.resources.limits: ")


def test_without_jsonschema_rs_the_answers_are_the_same(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    built_in = [o for o in objects if _ours(o) is not None][:3]
    cases = [*built_in, *(b for o in built_in for b in _broken(o))]
    with_rust = [_ours(c) for c in cases]

    monkeypatch.setattr(schema, "jsonschema_rs", None)
    schema._kind_validator.cache_clear()
    try:
        assert [_ours(c) for c in cases] == with_rust
    finally:
        schema._kind_validator.cache_clear()
