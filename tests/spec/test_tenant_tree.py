"""The tenants/ tree: files in the right place, one tenant per name, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenancy.spec.errors import SpecError
from tenancy.spec.tree import load_tenants
from tests.conftest import PROJECT_DIR

GOOD = "name: {name}\nowners: [a@example.com]\nplan: small\n"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def problems(root: Path) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_tenants(root)
    return {f"{i.file}:{i.field}": i.reason for i in caught.value.issues}


def test_the_shipped_examples_are_valid_and_cover_each_service_mix() -> None:
    tree = load_tenants(PROJECT_DIR / "tenants")
    mixes = {(f.spec.qdrant.enabled, f.spec.vcluster.enabled) for f in tree.files}
    assert {(True, False), (False, True), (True, True)} <= mixes
    assert {f.environment for f in tree.files} == {"dev", "prod"}


def test_file_outside_an_environment_is_in_the_wrong_place(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", GOOD.format(name="acme"))
    [(where, reason)] = problems(tmp_path).items()
    assert where == f"{tmp_path.name}/acme.yaml:"
    assert "wrong place" in reason


def test_unknown_environment_directory_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "staging/acme.yaml", GOOD.format(name="acme"))
    found = problems(tmp_path)
    assert any("not an environment" in reason for reason in found.values())


def test_nested_directories_are_the_wrong_place(tmp_path: Path) -> None:
    write(tmp_path, "prod/team/acme.yaml", GOOD.format(name="acme"))
    assert any("wrong place" in reason for reason in problems(tmp_path).values())


def test_yml_extension_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "prod/acme.yml", GOOD.format(name="acme"))
    assert problems(tmp_path) == {
        f"{tmp_path.name}/prod/acme.yml:": "tenant files end in .yaml (not .yml or anything else)"
    }


def test_name_must_match_the_file_name(tmp_path: Path) -> None:
    write(tmp_path, "prod/acme.yaml", GOOD.format(name="globex"))
    [(where, reason)] = problems(tmp_path).items()
    assert where.endswith("prod/acme.yaml:name")
    assert "rename the file to globex.yaml" in reason


def test_duplicate_tenant_names_name_both_files(tmp_path: Path) -> None:
    write(tmp_path, "prod/acme.yaml", GOOD.format(name="acme"))
    write(tmp_path, "prod/acme2.yaml", GOOD.format(name="acme"))
    [(where, reason)] = problems(tmp_path).items()
    assert where.endswith("prod/acme2.yaml:name")
    assert "already defined in" in reason and "prod/acme.yaml" in reason


def test_same_tenant_in_two_environments_is_allowed(tmp_path: Path) -> None:
    write(tmp_path, "dev/acme.yaml", GOOD.format(name="acme"))
    write(tmp_path, "prod/acme.yaml", GOOD.format(name="acme"))
    assert len(load_tenants(tmp_path).files) == 2


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    write(tmp_path, "prod/acme.yaml", "name: acme\nowners: [a@example.com\nplan: small\n")
    [(where, reason)] = problems(tmp_path).items()
    assert where.endswith("prod/acme.yaml:")
    assert reason.startswith("line ")


def test_every_problem_in_the_tree_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "prod/acme.yaml", GOOD.format(name="acme") + "colour: blue\n")
    write(tmp_path, "dev/globex.yaml", "name: globex\nplan: small\n")
    found = problems(tmp_path)
    assert any(key.endswith("prod/acme.yaml:colour") for key in found)
    assert any(key.endswith("dev/globex.yaml:owners") for key in found)


def test_readme_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "# tenants")
    write(tmp_path, "prod/README.md", "# prod")
    write(tmp_path, "prod/acme.yaml", GOOD.format(name="acme"))
    assert [f.spec.name for f in load_tenants(tmp_path).files] == ["acme"]
