"""The self-service image's build file: linted, pinned, and in agreement with the code and the
Deployments that run it (no container engine here, so what can be checked without building it)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from image.fetch_verified import fetch
from tenancy import versions
from tenancy.builders import selfservice
from tenancy.cli import app
from tests.conftest import PROJECT_DIR

CONTAINERFILE = PROJECT_DIR / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def arg(name: str) -> str:
    for keyword, rest in instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_the_base_image_pinned_by_digest() -> None:
    assert arg("BASE_IMAGE") == versions.SELF_SERVICE_BASE_IMAGE
    assert re.fullmatch(r"[a-z0-9.:/-]+@sha256:[0-9a-f]{64}", versions.SELF_SERVICE_BASE_IMAGE)
    assert all(stage[0][1].split()[0] == "${BASE_IMAGE}" for stage in stages())


def test_tools_are_pinned_and_checked_against_their_publishers_checksums() -> None:
    pins = dict(
        item.split("==", 1)
        for item in tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    assert arg("PULUMI_VERSION") == versions.PULUMI_CLI_VERSION == pins["pulumi"]
    assert arg("KUBECTL_VERSION") == versions.KUBECTL_VERSION
    pinned = {arch: arg(f"KUBECTL_SHA256_{arch.upper()}") for arch in ("amd64", "arm64")}
    assert pinned == versions.KUBECTL_SHA256
    # kubectl within one minor of the clusters
    assert versions.KUBECTL_VERSION.split(".")[:2] == versions.KUBERNETES_VERSION.split(".")[:2]
    text = CONTAINERFILE.read_text()
    assert "pulumi-${PULUMI_VERSION}-checksums.txt" in text and "kubectl.sha256" in text
    # Providers baked in at the versions of the SDKs the program imports.
    for plugin in ("kubernetes", "random", "vault", "keycloak", "command"):
        assert f"plugin install resource {plugin} {pins['pulumi-' + plugin]}" in text


def tool_fetches(arch: str) -> subprocess.CompletedProcess[str]:
    """Run the tool stage's download step as the build would on ``arch`` (its ARG defaults, its SHELL),
    with dpkg answering ``arch`` and every command that would touch the network or the disk only
    printing its arguments."""
    tools = stages()[0]
    shell = json.loads(next(rest for keyword, rest in tools if keyword == "SHELL"))
    step = next(rest for keyword, rest in tools if keyword == "RUN" and "fetch_verified.py" in rest)
    env = {"PATH": "/usr/bin:/bin"}
    for keyword, rest in tools:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            env[name] = value
    doubles = f'dpkg() {{ echo {arch}; }}; python() {{ echo "$@"; }};'
    doubles += " mkdir() { :; }; tar() { :; }; chmod() { :; }"
    return subprocess.run(
        [*shell, f"{doubles}; {step}"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(("arch", "pulumi_arch"), [("amd64", "x64"), ("arm64", "arm64")])
def test_each_architecture_gets_its_own_tools_checked_against_its_own_digests(
    arch: str, pulumi_arch: str
) -> None:
    result = tool_fetches(arch)
    assert result.returncode == 0, result.stderr
    pulumi, kubectl = (line.split() for line in result.stdout.splitlines())
    version = versions.PULUMI_CLI_VERSION
    assert pulumi[1].endswith(f"/v{version}/pulumi-v{version}-linux-{pulumi_arch}.tar.gz")
    assert pulumi[pulumi.index("--checksums-url") + 1].endswith(f"pulumi-{version}-checksums.txt")
    release = f"https://dl.k8s.io/release/v{versions.KUBECTL_VERSION}/bin/linux/{arch}/kubectl"
    assert kubectl[1] == release
    assert kubectl[kubectl.index("--sha256") + 1] == versions.KUBECTL_SHA256[arch]
    assert kubectl[kubectl.index("--checksums-url") + 1] == f"{release}.sha256"


def test_an_architecture_without_pinned_tools_stops_the_build() -> None:
    result = tool_fetches("s390x")
    assert result.returncode != 0
    assert "no pinned tools for architecture s390x" in result.stderr
    assert "fetch_verified.py" not in result.stdout


# A stand-in for `pulumi plugin install <kind> <name> <version>` that leaves in $PULUMI_HOME what the real
# CLI leaves, with the same modes (read in pulumi/pulumi, pkg/util/atomicinstall/atomicinstall.go:
# Store.Mutate creates the plugins directory with 0700 and takes a lock file beside the entry, which it
# never deletes; Pending.Reset creates the plugin's directory with 0700; the provider binary keeps its
# archive's 0755). As root in the tool stage, that is root-owned and closed to everyone else.
PLUGIN_INSTALL_DOUBLE = r"""#!/bin/bash
set -eu
[ "$1 $2" = "plugin install" ] || { echo "unexpected: $*" >&2; exit 64; }
kind=$3 name=$4 version=$5
root="$PULUMI_HOME/plugins"
mkdir -p "$root" && chmod 0700 "$root"
entry="$root/$kind-$name-v$version"
: > "$entry.lock" && chmod 0600 "$entry.lock"
mkdir -p "$entry" && chmod 0700 "$entry"
: > "$entry/pulumi-$kind-$name" && chmod 0755 "$entry/pulumi-$kind-$name"
"""


def test_the_baked_plugins_can_be_loaded_by_the_image_user(tmp_path: Path) -> None:
    """The final image copies the tool stage's $PULUMI_HOME as it is (root-owned) and runs as 10001: every
    directory there must be open to others (read and traverse), every file readable, the providers
    executable, and nothing writable by others. Runs the stage's plugin step in bash, as the build would,
    with the CLI replaced by a stand-in that creates what the real one creates."""
    tools = stages()[0]
    shell = json.loads(next(rest for keyword, rest in tools if keyword == "SHELL"))
    index = next(i for i, (key, rest) in enumerate(tools) if key == "RUN" and "plugin install" in rest)
    step = tools[index][1]
    home = tmp_path / "pulumi-home"
    (home / "bin").mkdir(parents=True)
    cli = home / "bin" / "pulumi"
    cli.write_text(PLUGIN_INSTALL_DOUBLE)
    cli.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin"}
    for keyword, rest in tools[:index]:  # the stage's ENV before the step, e.g. PULUMI_HOME
        if keyword == "ENV":
            for item in rest.split():
                name, _, value = item.partition("=")
                env[name] = value.replace(selfservice.PULUMI_HOME, str(home))
    assert env.get("PULUMI_HOME") == str(home)
    result = subprocess.run(
        [*shell, step.replace(selfservice.PULUMI_HOME, str(home))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    providers = sorted(p.name for p in (home / "plugins").glob("resource-*") if p.is_dir())
    assert len(providers) == 5, providers
    closed = []
    for path in [home, *home.rglob("*")]:
        mode = path.lstat().st_mode
        wanted = 0o005 if path.is_dir() or mode & 0o100 else 0o004
        if mode & 0o007 != wanted:
            closed.append(f"{path.relative_to(tmp_path)} {stat.filemode(mode)}")
    assert not closed, f"modes the image's user 10001 cannot use (or may write): {closed}"


def test_the_final_stage_has_no_build_tools_and_runs_as_the_numeric_user_the_pods_use() -> None:
    final = stages()[-1]
    run = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for tool in ("gcc", "build-essential", "make", "curl", "wget"):
        assert tool not in run
    [user] = [rest for keyword, rest in final if keyword == "USER"]
    assert user == f"{selfservice.IMAGE_UID}:{selfservice.IMAGE_UID}"
    [workdir] = [rest for keyword, rest in final if keyword == "WORKDIR"]
    assert workdir == selfservice.PROJECT_DIR
    [entrypoint] = [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoint == selfservice.COMMAND[:1]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    for name, value in {
        "PULUMI_HOME": selfservice.PULUMI_HOME,
        "TENANCY_SERVICE_STATE_DIR": selfservice.STATE_DIR,
        "TENANCY_SERVICE_PROJECT_DIR": selfservice.PROJECT_DIR,
        "HOME": selfservice.STATE_DIR,  # git writes its config there: a writable volume
    }.items():
        assert f"{name}={value}" in env


def test_the_program_runs_from_the_virtualenv_pulumi_yaml_names() -> None:
    runtime = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["runtime"]
    venv = f"{selfservice.PROJECT_DIR}/{runtime['options']['virtualenv']}"
    text = CONTAINERFILE.read_text()
    assert f"python -m venv {venv}" in text and f"COPY --from=build {venv} {venv}" in text
    assert f"PATH={venv}/bin" in text
    for needed in ("Pulumi.yaml", "__main__.py"):
        assert needed in text


def test_the_command_the_deployments_run_exists() -> None:
    scripts = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["scripts"]
    assert selfservice.COMMAND[0] in scripts
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--workers" in result.output


def test_dependencies_are_installed_by_hash_at_the_pinned_versions() -> None:
    lock = (PROJECT_DIR / "image" / "requirements.lock").read_text()
    locked = dict(re.findall(r"^([a-z0-9_.-]+)==([^ \\\n]+)", lock, flags=re.MULTILINE))
    pins = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, version = re.sub(r"\[.*\]", "", pin).split("==")
        assert locked.get(name.lower()) == version, f"image/requirements.lock has {name} {locked.get(name)}"
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])
    assert "--require-hashes" in CONTAINERFILE.read_text()


# Compiled-only dependencies (no pure-Python wheel, and the image installs wheels only): the digest of
# PyPI's CPython 3.11 manylinux aarch64 wheel of each pinned version, as `pip download --platform
# manylinux2014_aarch64 --python-version 3.11 --only-binary=:all: --no-deps NAME==VERSION` saves it.
# A lock regenerated on an x86_64 machine that drops them fails here rather than in an arm64 build.
_AARCH64_WHEELS = {
    "httptools==0.9.0": "6e2780e33a58a93f27cc3bb74a55bae6f9a8278a1dbabdff392940d30d381671",
    "uvloop==0.23.0": "8fcd721113260ffb5e38bf14a8725b17d431f34209f7d1c7005b667946e630b3",
}


def test_the_lock_holds_the_arm64_wheels_of_compiled_only_dependencies() -> None:
    lock = (PROJECT_DIR / "image" / "requirements.lock").read_text()
    blocks = {block.split(" ", 1)[0]: block for block in re.split(r"\n(?=[a-z0-9_.-]+==)", lock)}
    for pin, digest in _AARCH64_WHEELS.items():
        assert pin in blocks, f"the lock no longer pins {pin}: add the new version's aarch64 wheel here"
        assert f"--hash=sha256:{digest}" in blocks[pin], f"{pin} has no hash for its aarch64 wheel"


def test_the_fetch_step_refuses_a_file_whose_digest_is_not_the_pinned_one(tmp_path: Path) -> None:
    release = tmp_path / "tool.tar.gz"
    release.write_bytes(b"the real release")
    digest = hashlib.sha256(b"the real release").hexdigest()
    checksums = tmp_path / "checksums.txt"
    checksums.write_text(f"{digest}  tool.tar.gz\n{'0' * 64}  other.tar.gz\n")

    assert fetch(release.as_uri(), tmp_path / "ok", sha256=digest, checksums_url=checksums.as_uri()) == digest
    with pytest.raises(SystemExit, match="is not the expected"):
        fetch(release.as_uri(), tmp_path / "bad", sha256="1" * 64, checksums_url=None)
    checksums.write_text(f"{'2' * 64}  tool.tar.gz\n")
    with pytest.raises(SystemExit, match="is not the expected"):
        fetch(release.as_uri(), tmp_path / "bad", sha256=digest, checksums_url=checksums.as_uri())
    with pytest.raises(SystemExit, match="refusing"):
        fetch(release.as_uri(), tmp_path / "bad", sha256=None, checksums_url=None)
    assert not (tmp_path / "bad").exists()


def test_the_deploy_workflow_builds_the_image_and_hands_its_digest_to_the_platform_stack() -> None:
    workflows = PROJECT_DIR / ".github" / "workflows"
    image = yaml.safe_load((workflows / "image.yml").read_text())
    build = " ".join(step.get("run", "") for step in image["jobs"]["build"]["steps"])
    assert "--file Containerfile" in build and "--push" in build and "ghcr.io/" in build
    assert "containerimage.digest" in build and "${{" not in build  # no template expansion in run:
    deploy = yaml.safe_load((workflows / "deploy.yml").read_text())
    assert deploy["jobs"]["image"]["uses"] == "./.github/workflows/image.yml"
    for environment in ("dev", "prod"):
        assert deploy["jobs"][environment]["with"]["image"] == "${{ needs.image.outputs.image }}"
    steps = yaml.safe_load((workflows / "deploy-environment.yml").read_text())["jobs"]["deploy"]["steps"]
    [platform] = [step for step in steps if step.get("name") == "Platform stack"]
    assert 'config set --stack "$ENVIRONMENT" --path platform:selfService.image "$IMAGE"' in platform["run"]
    assert platform["env"]["IMAGE"] == "${{ inputs.image }}"
