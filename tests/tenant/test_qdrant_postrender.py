"""The Qdrant release's Helm post-renderer, run as Helm runs it: the console script, stdin to stdout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from tenancy import versions
from tenancy.builders.qdrant_postrender import POST_RENDERER, post_render

# What the qdrant 1.19.0 chart hands a post-renderer, in its shape (abridged): documents after "---" and
# a "# Source:" comment; a ConfigMap whose text must pass untouched.
RENDERED = """---
# Source: qdrant/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: qdrant
data:
  initialize.sh: |
    #!/bin/sh
    exec ./entrypoint.sh --uri 'http://qdrant-0.qdrant-headless:6335'
---
# Source: qdrant/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: qdrant
---
# Source: qdrant/templates/statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: qdrant
spec:
  template:
    spec:
      containers:
        - name: qdrant
          image: "docker.io/qdrant/qdrant:v1.19.0"
      serviceAccountName: qdrant
      volumes:
        - name: qdrant-config
          configMap:
            name: qdrant
            defaultMode: 0755
"""


def _script() -> str:
    found = shutil.which(POST_RENDERER, path=sysconfig.get_path("scripts"))
    assert found, f"{POST_RENDERER} is not installed beside {sys.executable} (pip install -e .)"
    return found


def test_the_post_renderer_pins_qdrant_by_digest_and_turns_the_token_off() -> None:
    result = subprocess.run([_script()], input=RENDERED, capture_output=True, text=True, check=True)
    documents = {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    pod = documents["StatefulSet"]["spec"]["template"]["spec"]
    digest = versions.QDRANT_IMAGE_DIGESTS["v1.19.0"]
    assert pod["containers"][0]["image"] == f"docker.io/qdrant/qdrant:v1.19.0@{digest}"
    assert pod["automountServiceAccountToken"] is False
    assert pod["volumes"][0]["configMap"]["defaultMode"] == 0o755  # the octal survives
    assert documents["ServiceAccount"]["automountServiceAccountToken"] is False
    # Documents it does not change pass through as rendered, byte for byte.
    assert RENDERED.split("---")[1] == result.stdout.split("---")[1]


def test_a_qdrant_tag_without_a_recorded_digest_stops_the_install() -> None:
    rendered = RENDERED.replace("v1.19.0", "v1.17.0")
    result = subprocess.run([_script()], input=rendered, capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert "no digest is recorded for docker.io/qdrant/qdrant:v1.17.0" in result.stderr


def test_every_offered_qdrant_version_passes_the_post_renderer() -> None:
    for version in versions.QDRANT_VERSIONS:
        out = post_render(RENDERED.replace("v1.19.0", version))
        assert f"{version}@{versions.QDRANT_IMAGE_DIGESTS[version]}" in out


def test_the_post_renderer_is_a_console_script_of_the_package() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'{POST_RENDERER} = "tenancy.builders.qdrant_postrender:main"' in pyproject


def test_the_engine_puts_the_post_renderer_on_the_path_it_gives_pulumi() -> None:
    from tenancy.automation.pulumi_engine import _path_with_scripts

    path = _path_with_scripts("/usr/bin")
    assert shutil.which(POST_RENDERER, path=path) == _script()
