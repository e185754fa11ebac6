"""The tenants/ tree: files in the right place, one tenant per name, every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import TenantSpec
from tenancy.spec.tree import load_tenants
from tenancy.spec.yaml_loading import load_yaml
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


def test_a_file_whose_alias_contains_itself_is_named_with_the_reason(tmp_path: Path) -> None:
    write(tmp_path, "dev/acme.yaml", GOOD.format(name="acme") + "labels: &l {team: *l}\n")
    write(tmp_path, "dev/globex.yaml", "a: &x [*x]\n")
    assert problems(tmp_path) == {
        f"{tmp_path.name}/dev/acme.yaml:": "line 4, column 9: a YAML alias refers to itself: the node "
        "anchored here holds the alias at labels.team, so the document would contain itself; write "
        "the values out instead of the alias",
        f"{tmp_path.name}/dev/globex.yaml:": "line 1, column 4: a YAML alias refers to itself: the node "
        "anchored here holds the alias at a.0, so the document would contain itself; write the values "
        "out instead of the alias",
    }


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


def test_a_tangled_tree_reports_what_it_always_did_in_the_same_order(tmp_path: Path) -> None:
    """The walk lists what sorted(root.rglob("*")) listed: hidden entries and .md files skipped, a
    directory symlink listed but not entered, a file symlink refused, problems in path order, then
    duplicates, then file names (expected list recorded from the rglob-based walk)."""
    root = tmp_path / "tenants"

    def put(relative: str, text: str) -> None:
        write(root, relative, text)

    good = "name: {}\nowners: [a@example.com]\nplan: small\n"
    put("dev/b.yaml", good.format("b"))
    put("dev/a.yaml", "name: a\nplan: huge\n")
    put("dev-x/c.yaml", good.format("c"))
    put("dev.md", "x")
    put("zz.md/inner.yaml", good.format("inner"))
    put(".hidden/x.yaml", "::")
    put("dev/.x.yaml", "::")
    put("prod/team/acme.yaml", good.format("acme"))
    put("prod/acme.yml", good.format("acme"))
    put("prod/globex.yaml", good.format("globex"))
    put("stray.yaml", good.format("stray"))
    put("dev/c.yaml", good.format("b"))
    put("dev/README.md", "x")
    put("prod/d.yaml", "a: [1\n")
    put("dev/e.yaml", 'name: e\nowners: [a@example.com]\nplan: small\nlabels: {"a\\x1b": b, c: "\\u200e"}\n')
    (root / "prod-link").symlink_to("prod")
    (root / "dev/link.yaml").symlink_to("../prod/globex.yaml")
    (root / "dev/broken.yaml").symlink_to("nowhere")
    (root / "Dev").mkdir()
    with pytest.raises(SpecError) as caught:
        load_tenants(root)
    assert [(i.file, i.field, i.reason) for i in caught.value.issues] == TANGLED


WRONG_PLACE = (
    "in the wrong place: a tenant file lives at tenants/<environment>/<name>.yaml, "
    "environment one of dev, prod"
)
TANGLED = [
    ("tenants/Dev", "", "'Dev' is not an environment; tenant files live in dev, prod"),
    ("tenants/dev/a.yaml", "owners", "required field is missing"),
    ("tenants/dev/a.yaml", "plan", "Input should be 'small', 'medium' or 'large'"),
    (
        "tenants/dev/broken.yaml",
        "",
        "is a symbolic link (to nowhere); a tenant file is a regular file: git keeps and a pull request "
        "shows only a link's target path, never what it points at",
    ),
    ("tenants/dev/e.yaml", "labels", "a key contains the control or formatting character U+001B ESC"),
    (
        "tenants/dev/e.yaml",
        "labels.c",
        "contains the control or formatting character U+200E LEFT-TO-RIGHT MARK; remove it",
    ),
    (
        "tenants/dev/link.yaml",
        "",
        "is a symbolic link (to ../prod/globex.yaml); a tenant file is a regular file: git keeps and a "
        "pull request shows only a link's target path, never what it points at",
    ),
    ("tenants/dev-x", "", "'dev-x' is not an environment; tenant files live in dev, prod"),
    (
        "tenants/dev-x/c.yaml",
        "",
        WRONG_PLACE,
    ),
    ("tenants/prod/acme.yml", "", "tenant files end in .yaml (not .yml or anything else)"),
    ("tenants/prod/d.yaml", "", "line 2, column 1: did not find expected ',' or ']'"),
    (
        "tenants/prod/team/acme.yaml",
        "",
        WRONG_PLACE,
    ),
    (
        "tenants/prod-link",
        "",
        "is a symbolic link (to prod); an environment's tenants are files in a directory of the repository "
        "(a link would read as an environment without tenants, and sync --prune would destroy them)",
    ),
    (
        "tenants/stray.yaml",
        "",
        WRONG_PLACE,
    ),
    (
        "tenants/zz.md/inner.yaml",
        "",
        WRONG_PLACE,
    ),
    ("tenants/dev/c.yaml", "name", "tenant 'b' is already defined in tenants/dev/b.yaml"),
]


def _mixed_tree(root: Path, count: int) -> None:
    examples = sorted((PROJECT_DIR / "tenants").glob("*/*.yaml"))
    for index in range(count):
        example = examples[index % len(examples)]
        name = f"{example.stem}-{index:03d}"
        text = example.read_text().replace(f"name: {example.stem}\n", f"name: {name}\n", 1)
        if index % 7 == 3:
            text += "plan: huge\n"  # a duplicate key: the last one wins, and is refused
        if index % 11 == 5:
            text = "name: [unclosed\n"
        if index % 13 == 6:
            name = f"{name}-renamed"
        if index % 17 == 9:
            text += "labels: &l {team: *l}\n"  # a document that would contain itself
        write(root, f"{example.parent.name}/{name}.yaml", text)
    write(root, "prod/stray/deep.yaml", "x: 1\n")


def _outcome(root: Path) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, str]]]:
    try:
        tree = load_tenants(root)
    except SpecError as error:
        return [], [(i.file, i.field, i.reason) for i in error.issues]
    return [(f.environment, str(f.path), f.spec) for f in tree.files], []


def test_forked_workers_find_what_one_process_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tenancy.spec import tree as tree_module

    _mixed_tree(tmp_path / "mixed", 120)
    for index in range(90):
        write(tmp_path / "valid", f"dev/t{index:03d}.yaml", GOOD.format(name=f"t{index:03d}"))
    serial = {name: _outcome(tmp_path / name) for name in ("mixed", "valid")}
    assert serial["mixed"][1] and not serial["valid"][1] and len(serial["valid"][0]) == 90

    monkeypatch.setattr(tree_module, "_worker_count", lambda files: 2)
    forked = {name: _outcome(tmp_path / name) for name in ("mixed", "valid")}
    assert forked == serial
    files = [(str(path), path.name) for path in sorted((tmp_path / "mixed").rglob("*.yaml"))]

    def specs(results: list[Any]) -> list[Any]:
        shipped = tree_module._Shipped
        return [
            TenantSpec.model_validate(load_yaml(r.text)) if isinstance(r, shipped) else r for r in results
        ]

    assert specs(tree_module._check_files(files, 3)) == tree_module._check_files(files, 1)


def test_files_checked_with_workers_are_validated_again_only_when_their_spec_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tenantctl validate reads names only: with workers, no file's spec (this process's share
    included) is validated a second time unless a command reads it, and then it is the spec one
    process gives."""
    from tenancy.spec import tree as tree_module

    for index in range(60):
        write(tmp_path, f"dev/t{index:03d}.yaml", GOOD.format(name=f"t{index:03d}"))
    serial = load_tenants(tmp_path)
    monkeypatch.setattr(tree_module, "_worker_count", lambda files: 2)
    validated: list[Any] = []
    model_validate = TenantSpec.model_validate
    monkeypatch.setattr(
        TenantSpec, "model_validate", lambda data: validated.append(data) or model_validate(data)
    )
    forked = load_tenants(tmp_path)
    loaded = len(validated)  # this process's own share, if parse_tenant goes through model_validate

    assert [f.name for f in forked.files] == [f.name for f in serial.files]
    assert forked.get("dev", "t059").path == serial.get("dev", "t059").path
    assert len(validated) == loaded  # names, duplicates and file names read no spec
    assert [f.spec for f in forked.files] == [f.spec for f in serial.files]
    read = len(validated)
    assert read - loaded == 60 and 0 < loaded < 60  # every file once more; this process checked some
    assert [f.spec for f in forked.files] == [f.spec for f in serial.files]
    assert len(validated) == read  # once each


def test_the_worker_count_follows_the_tree_size_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tenancy.spec import tree as tree_module

    monkeypatch.setenv(tree_module.WORKERS_VARIABLE, "3")
    assert tree_module._worker_count(10) == 1
    assert tree_module._worker_count(10_000) in (1, 3)  # 1 only when other threads run
    monkeypatch.setenv(tree_module.WORKERS_VARIABLE, "1")
    assert tree_module._worker_count(10_000) == 1


@pytest.mark.timeout(60)
def test_a_worker_that_dies_fails_the_check_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-check (the OOM killer, a crash in a C extension) must fail load_tenants:
    multiprocessing.Pool waits forever for the lost chunk, so tenantctl validate would hang CI."""
    import os
    from concurrent.futures.process import BrokenProcessPool

    from tenancy.spec import tree as tree_module

    parent, check_file = os.getpid(), tree_module._check_file

    def dies_in_a_worker(path: Any, shown: str) -> Any:
        if os.getpid() != parent:
            os._exit(137)
        return check_file(path, shown)

    monkeypatch.setattr(tree_module, "_check_file", dies_in_a_worker)
    files = [(str(tmp_path / f"t{index}.yaml"), f"t{index}.yaml") for index in range(120)]
    with pytest.raises(BrokenProcessPool):
        tree_module._check_files(files, 2)
    assert tree_module.gc.isenabled()


def test_many_workers_leave_this_process_at_most_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 7 or more workers the cost of a shipped file can exceed a worker's share: this
    process's share must not go negative (files[:-n] made it check nearly every file itself)."""
    import os

    from tenancy.spec import tree as tree_module

    parent, check_file, here = os.getpid(), tree_module._check_file, []

    def counted(path: str, shown: str) -> Any:
        if os.getpid() == parent:
            here.append(shown)
        return check_file(path, shown)

    monkeypatch.setattr(tree_module, "_check_file", counted)
    files = [(f"/nonexistent/t{index}.yaml", f"t{index}.yaml") for index in range(150)]
    expected = [tree_module._checked(path, shown) for path, shown in files]
    here.clear()
    assert tree_module._check_files(files, 8) == expected
    assert 0 < len(here) <= len(files) // 8


def test_threads_reading_a_lazy_spec_at_once_all_get_it() -> None:
    """A worker-checked file builds its spec on first read; threads racing on that read each get the
    same spec (the text is kept, so no thread can find it gone while another finishes first)."""
    from concurrent.futures import ThreadPoolExecutor

    from tenancy.spec.tree import TenantFile

    text = GOOD.format(name="t001")
    for _ in range(20):
        lazy = TenantFile("dev", Path("dev/t001.yaml"), name="t001", text=text)
        with ThreadPoolExecutor(8) as pool:
            specs = list(pool.map(lambda tenant_file: tenant_file.spec, [lazy] * 8))
        assert specs == [TenantSpec.model_validate(load_yaml(text))] * 8


def test_tenant_files_are_read_as_path_read_text_reads_them(tmp_path: Path) -> None:
    """The check reads files with system calls: same text (universal newlines, a BOM kept), same
    errors, up to the largest a tenant file may be (``MAX_TENANT_FILE_BYTES``, read in 64 KiB chunks)."""
    from tenancy.spec.tree import MAX_TENANT_FILE_BYTES, _read_text

    samples = [
        b"",
        b"a: 1\r\nb: 2\rc: 3\n\r\n",
        "\ufeffname: caf\u00e9\n".encode(),
        b"x" * (MAX_TENANT_FILE_BYTES - 2) + b"\r\n",
    ]
    for index, data in enumerate(samples):
        path = tmp_path / f"f{index}.yaml"
        path.write_bytes(data)
        assert _read_text(path) == path.read_text(encoding="utf-8")
        assert _read_text(str(path)) == path.read_text(encoding="utf-8")
    (tmp_path / "bad.yaml").write_bytes(b"a: \xff\n")
    for reader in (_read_text, lambda path: path.read_text(encoding="utf-8")):
        with pytest.raises(UnicodeDecodeError):
            reader(tmp_path / "bad.yaml")
        with pytest.raises(FileNotFoundError):
            reader(tmp_path / "missing.yaml")
        with pytest.raises(IsADirectoryError):
            reader(tmp_path)


@pytest.mark.parametrize(
    ("text", "where", "character"),
    [
        (
            "name: acme\nowners: [a@example.com]\nplan: small\ndisplayName: ACME \x1bCorp\n",
            "line 4, column 19",
            "U+001B ESC",
        ),
        (
            "name: acme\n# pasted \x00 here\nowners: [a@example.com]\nplan: small\n",
            "line 2, column 10",
            "U+0000 NUL",
        ),
        (
            "name: acme\ndisplayName: Caf\u00e9 Z\u00fcrich\nowners: [a@example.com]\nplan: small\n"
            "labels: {a: \x1bb}\n",  # libyaml counts the bytes of "é" and "ü" twice
            "line 5, column 13",
            "U+001B ESC",
        ),
    ],
)
def test_a_raw_control_character_is_named_with_its_line_and_column(
    tmp_path: Path, text: str, where: str, character: str
) -> None:
    """Found by an outside review: a raw ESC pasted from a terminal (or a NUL, even in a comment) gave
    only "not valid YAML", with no line, no character and no reason."""
    write(tmp_path, "dev/acme.yaml", text)
    with pytest.raises(SpecError) as caught:
        load_tenants(tmp_path)
    [issue] = caught.value.issues
    assert issue.reason == (
        f"{where}: contains the control character {character}, which YAML allows nowhere (comments "
        "included); remove it"
    )


def test_a_stray_copy_is_blamed_for_a_duplicate_not_the_file_named_after_the_tenant(tmp_path: Path) -> None:
    """Found by an outside review: when a stray copy sorted before the real file (aaa.yaml with
    name: acme), the "already defined" error pointed at acme.yaml, the file that is right."""
    good = "name: acme\nowners: [a@example.com]\nplan: small\n"
    write(tmp_path, "dev/aaa.yaml", good)
    write(tmp_path, "dev/acme.yaml", good)
    with pytest.raises(SpecError) as caught:
        load_tenants(tmp_path)
    [issue] = caught.value.issues
    assert issue.file.endswith("dev/aaa.yaml") and issue.field == "name"
    assert issue.reason.startswith("tenant 'acme' is already defined in ") and issue.reason.endswith(
        "dev/acme.yaml"
    )


def test_a_huge_tenant_file_or_one_with_too_many_labels_is_refused_before_it_costs(tmp_path: Path) -> None:
    """Found by an outside review: an 18 MB file validated, and one with 100,000 labels made render run
    past five minutes in 1.6 GB (and would make objects past the API server's limit)."""
    good = "name: acme\nowners: [a@example.com]\nplan: small\n"
    write(tmp_path, "dev/acme.yaml", good + "# padding\n" * 8000)
    labels = "".join(f"  k{index}: v\n" for index in range(33))
    write(tmp_path, "dev/labelled.yaml", good.replace("acme", "labelled") + "labels:\n" + labels)
    with pytest.raises(SpecError) as caught:
        load_tenants(tmp_path)
    huge, labelled = caught.value.issues
    size = (tmp_path / "dev" / "acme.yaml").stat().st_size
    assert huge.file.endswith("dev/acme.yaml") and huge.reason == (
        f"is {size:,} bytes; a tenant file is at most 64 KiB"
    )
    assert labelled.field == "labels" and "has 33 labels; a tenant has at most 32" in labelled.reason


def test_an_environment_that_is_a_symbolic_link_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    """Found by a review: ``tenants/prod -> elsewhere`` loaded as a prod with no tenants, which sync
    --prune would have taken as every prod tenant removed."""
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, "acme.yaml", "name: acme\nowners: [a@example.com]\nplan: small\n")
    root = tmp_path / "tenants"
    root.mkdir()
    (root / "prod").symlink_to(elsewhere)
    with pytest.raises(SpecError) as caught:
        load_tenants(root)
    [issue] = caught.value.issues
    assert issue.file == "tenants/prod" and issue.reason.startswith("is a symbolic link (to ")
