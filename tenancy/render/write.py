"""Write a captured stack as files a reviewer can read and CI can check.

Layout of ``OUT/<stack>/``::

    manifests/<namespace or _cluster>/<Kind>-<name>.yaml   each object the program declares directly
    helm/<release>.yaml                                      each Helm release: name, namespace, chart,
                                                              version, repo, values
    outputs.yaml                                             the stack outputs
    resources.yaml                                           every declared resource: type, name, parent,
                                                              and the file it was rendered to

Secret values are masked (see ``tenancy.render.redact``). The output is a pure function of the capture:
keys are sorted, files are listed in a fixed order, and a stack directory is replaced as a whole, so
two renders of the same input are byte-identical and a diff between renders is a review.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tenancy.render.redact import GeneratedValues, mask_leaves, mask_paths, mask_secret_data
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_stack
from tenancy.spec.errors import SpecError
from tenancy.spec.tree import ENVIRONMENTS, load_tenants
from tenancy.stacks import parse_stack_name

MANIFESTS_DIR = "manifests"
HELM_DIR = "helm"
OUTPUTS_FILE = "outputs.yaml"
RESOURCES_FILE = "resources.yaml"
CLUSTER_SCOPED_DIR = "_cluster"
RENDER_ENTRIES = frozenset({MANIFESTS_DIR, HELM_DIR, OUTPUTS_FILE, RESOURCES_FILE})
HELM_RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
HELM_RELEASE_FIELDS = ("name", "namespace", "chart", "version", "repo", "postrender", "values")

_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


class RenderError(Exception):
    """The capture cannot be rendered (two resources claim the same object), or OUT is not ours to replace."""


@dataclass(frozen=True)
class RenderedStack:
    stack: str
    files: dict[str, str] = field(default_factory=dict)  # path relative to OUT/<stack> -> YAML text
    warnings: tuple[str, ...] = ()  # what a reviewer cannot see in the files, and why

    @property
    def manifest_count(self) -> int:
        return sum(1 for path in self.files if path.startswith(f"{MANIFESTS_DIR}/"))

    @property
    def release_count(self) -> int:
        return sum(1 for path in self.files if path.startswith(f"{HELM_DIR}/"))


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, configs, policies) as literal blocks, the way people write them."""


def _represent_str(dumper: yaml.representer.SafeRepresenter, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)

# libyaml's emitter is four times faster than PyYAML's, which was 40% of a render (issue #11). The two
# write the same bytes for the documents render produces, except around characters and shapes libyaml
# treats differently (it escapes characters beyond the BMP and NEL, quotes CR, writes an explicit
# document end after a keep-chomped block, writes an empty key inline): a document holding any of
# those is written by PyYAML's emitter, so output stays byte-identical whichever emitter runs.
_CReadableDumper: type | None = None
_SCALAR_TAGS: dict[tuple[str, tuple[bool, bool]], str] = {}
_SCALAR_TAGS_KEPT = 10_000
if hasattr(yaml, "CSafeDumper"):

    class _CReadable(yaml.CSafeDumper):
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            # libyaml's serializer asks twice per scalar; with no path resolvers registered a scalar's
            # tag depends on its text alone, so it is remembered (a bounded table: memory stays flat).
            if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
                return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            key = (value, implicit)
            tag = _SCALAR_TAGS.get(key)
            if tag is None:
                if len(_SCALAR_TAGS) >= _SCALAR_TAGS_KEPT:
                    _SCALAR_TAGS.clear()
                tag = _SCALAR_TAGS[key] = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            return tag

    _CReadable.add_representer(str, _represent_str)
    _CReadableDumper = _CReadable

_LIBYAML_SAFE_TEXT = re.compile("[\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*")


def _libyaml_safe_text(text: str) -> bool:
    return _LIBYAML_SAFE_TEXT.fullmatch(text) is not None and not text.endswith("\n\n") and text != "\n"


def emits_identically(document: Any) -> bool:
    """Both emitters write ``document`` the same way: plain data, every string within the shared
    range, every mapping key a non-empty one-line string."""
    if isinstance(document, str):
        return _libyaml_safe_text(document)
    if isinstance(document, dict):
        return all(
            isinstance(key, str)
            and key
            and "\n" not in key
            and _libyaml_safe_text(key)
            and emits_identically(value)
            for key, value in document.items()
        )
    if isinstance(document, list):
        return all(emits_identically(item) for item in document)
    return document is None or isinstance(document, bool | int | float)


def dump_yaml(document: Any, *, fast: bool = True) -> str:
    """``document`` as YAML: keys sorted, block style, multi-line strings as literal blocks.

    ``fast=False`` always uses PyYAML's emitter (the reference the libyaml path is tested against).
    """
    if fast and _CReadableDumper is not None:
        node = _plain_node(document)
        if node is not None:
            return _emit(node, _CReadableDumper)
    use_libyaml = fast and _CReadableDumper is not None and emits_identically(document)
    return yaml.dump(
        document,
        Dumper=_CReadableDumper if use_libyaml else _ReadableDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )


# PyYAML's representer builds a node per value through generic dispatch and alias bookkeeping, then
# libyaml's emitter writes the nodes: the representer was most of dump_yaml's time (issue #11). For a
# document of plain values that both emitters write alike (``emits_identically``), with no container
# appearing twice (PyYAML would write an anchor and an alias), ``_plain_node`` builds the very nodes
# the representer builds (the same tags, values, styles and key order) in one pass that also makes
# ``emits_identically``'s checks; anything else goes the representer's way.
_FLOAT_REPRESENTER = yaml.representer.SafeRepresenter()  # PyYAML's own text for a float
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _NotPlain(Exception):
    pass


def _plain_node(document: Any) -> yaml.Node | None:
    try:
        return _node(document, set())
    except _NotPlain:
        return None


def _node(value: Any, containers: set[int]) -> yaml.Node:
    kind = type(value)
    if kind is str:
        if not _libyaml_safe_text(value):
            raise _NotPlain
        return yaml.ScalarNode(_STR_TAG, value, style="|" if "\n" in value else None)
    if kind is dict:
        if id(value) in containers:
            raise _NotPlain
        containers.add(id(value))
        if not all(type(key) is str for key in value):
            raise _NotPlain  # PyYAML sorts mixed keys differently, or not at all
        pairs = []
        for key in sorted(value):
            if not key or "\n" in key or not _libyaml_safe_text(key):
                raise _NotPlain
            pairs.append((yaml.ScalarNode(_STR_TAG, key), _node(value[key], containers)))
        return yaml.MappingNode(_MAP_TAG, pairs, flow_style=False)
    if kind is list:
        if id(value) in containers:
            raise _NotPlain
        containers.add(id(value))
        return yaml.SequenceNode(_SEQ_TAG, [_node(item, containers) for item in value], flow_style=False)
    if kind is bool:
        return yaml.ScalarNode(_BOOL_TAG, "true" if value else "false")
    if kind is int:
        return yaml.ScalarNode(_INT_TAG, str(value))
    if value is None:
        return yaml.ScalarNode(_NULL_TAG, "null")
    if kind is float:
        return _FLOAT_REPRESENTER.represent_float(value)
    raise _NotPlain


def _emit(node: yaml.Node, dumper: type) -> str:
    """What ``yaml.dump`` writes for a document represented as ``node`` (the same calls, from the node on)."""
    stream = io.StringIO()
    emitter = dumper(stream, default_flow_style=False, allow_unicode=True, width=1_000_000, sort_keys=True)
    try:
        emitter.open()
        emitter.serialize(node)
        emitter.close()
    finally:
        emitter.dispose()
    return stream.getvalue()


def file_name(name: str) -> str:
    return _UNSAFE_FILE_CHARACTERS.sub("_", name) or "_"


def is_manifest(resource: DeclaredResource) -> bool:
    """Declared directly as a Kubernetes object (custom resources included); not a read, not a chart."""
    return (
        resource.type.startswith("kubernetes:")
        and resource.kind is not None
        and not resource.read
        and resource.type != HELM_RELEASE_TYPE
        and "helm.sh" not in resource.type
    )


def _kind_label(resource: DeclaredResource) -> str:
    """The kind as a file-name prefix; patches keep their Pulumi type (``NamespacePatch``): they stand out."""
    pulumi_kind = resource.type.rsplit(":", 1)[-1]
    return pulumi_kind if pulumi_kind.endswith("Patch") else str(resource.kind)


def _object_name(resource: DeclaredResource) -> str:
    metadata = resource.inputs.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    # Without metadata.name Pulumi auto-names the object from the resource name plus a random suffix.
    return str(name) if name else resource.name


def _object_namespace(resource: DeclaredResource) -> str | None:
    metadata = resource.inputs.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return str(namespace) if namespace else None


def _group(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else "core"


ResourceKey = tuple[str, str]  # (type, name): what makes a Pulumi resource unique in a stack


def _key(resource: DeclaredResource) -> ResourceKey:
    return (resource.type, resource.name)


def _manifest_paths(resources: list[DeclaredResource]) -> dict[ResourceKey, str]:
    """Resource -> file path. Kinds shared by two API groups (Istio's and Gateway API's ``Gateway``)
    get the group in the file name; the same object declared twice is an error."""
    keys: dict[ResourceKey, tuple[str, str, str, str]] = {}
    for resource in resources:
        api_version = str(resource.inputs.get("apiVersion", ""))
        namespace = _object_namespace(resource) or CLUSTER_SCOPED_DIR
        keys[_key(resource)] = (namespace, _kind_label(resource), _object_name(resource), api_version)

    owners: dict[tuple[str, str, str, str], list[str]] = {}
    for (_, name), (namespace, kind, object_name, api_version) in keys.items():
        owners.setdefault((namespace, kind, object_name, _group(api_version)), []).append(name)
    duplicates = {key: names for key, names in owners.items() if len(names) > 1}
    if duplicates:
        described = "; ".join(
            f"{kind} {namespace}/{name} by {', '.join(sorted(names))}"
            for (namespace, kind, name, _), names in sorted(duplicates.items())
        )
        raise RenderError(f"the same object is declared by more than one resource: {described}")

    shared = Counter((ns, kind, name) for ns, kind, name, _ in keys.values())
    paths = {}
    for key, (namespace, kind, object_name, api_version) in keys.items():
        prefix = kind if shared[(namespace, kind, object_name)] == 1 else f"{kind}.{_group(api_version)}"
        paths[key] = (
            f"{MANIFESTS_DIR}/{file_name(namespace)}/{file_name(prefix)}-{file_name(object_name)}.yaml"
        )
    return paths


def _release_document(resource: DeclaredResource, inputs: Mapping[str, Any]) -> dict[str, Any]:
    repository = inputs.get("repositoryOpts")
    return {
        "name": inputs.get("name") or resource.name,
        "namespace": inputs.get("namespace") or "default",
        "chart": inputs.get("chart"),
        "version": inputs.get("version"),
        "repo": repository.get("repo") if isinstance(repository, Mapping) else None,
        **({"postrender": inputs["postrender"]} if inputs.get("postrender") else {}),
        "values": inputs.get("values") or {},
    }


def _release_paths(releases: list[tuple[DeclaredResource, dict[str, Any]]]) -> dict[ResourceKey, str]:
    names = Counter(str(document["name"]) for _, document in releases)
    paths = {}
    for resource, document in releases:
        name = str(document["name"])
        # Two releases of one name in different namespaces: the namespace tells the files apart.
        stem = name if names[name] == 1 else f"{name}.{document['namespace']}"
        paths[_key(resource)] = f"{HELM_DIR}/{file_name(stem)}.yaml"
    return paths


def _shows_inputs(resource: DeclaredResource) -> bool:
    """Inputs of resources with no file of their own (Vault, random) are listed; providers never are:
    their inputs include credentials such as a kubeconfig."""
    return not resource.type.startswith(("kubernetes:", "pulumi:")) and bool(resource.inputs)


def render_capture(capture: StackCapture) -> RenderedStack:
    """The files of one stack, secrets masked; a pure function of ``capture``."""
    generated = GeneratedValues.of(capture)

    def masked_inputs(resource: DeclaredResource) -> Any:
        return generated.scrub(mask_paths(resource.inputs, resource.secret_paths))

    files: dict[str, str] = {}
    manifests = [r for r in capture.resources if is_manifest(r)]
    manifest_paths = _manifest_paths(manifests)
    for resource in manifests:
        files[manifest_paths[_key(resource)]] = dump_yaml(mask_secret_data(masked_inputs(resource)))

    releases = [
        (r, _release_document(r, masked_inputs(r)))
        for r in capture.resources
        if r.type == HELM_RELEASE_TYPE and not r.read
    ]
    release_paths = _release_paths(releases)
    warnings = []
    for resource, document in releases:
        files[release_paths[_key(resource)]] = dump_yaml(document)
        if ("values",) in {tuple(p) for p in resource.secret_paths}:
            warnings.append(
                f"{release_paths[_key(resource)]}: every value of release {document['name']} is masked: "
                "a secret inside the values makes Pulumi mark all of them secret. Pass the secret through "
                "a Kubernetes Secret the chart references (existingSecret or similar) to keep the values "
                "reviewable."
            )

    outputs = {
        key: mask_leaves(value) if key in capture.secret_outputs else value
        for key, value in capture.outputs.items()
    }
    files[OUTPUTS_FILE] = dump_yaml(generated.scrub(outputs))

    rendered_to = {**manifest_paths, **release_paths}
    summary = []
    for resource in capture.resources:
        entry: dict[str, Any] = {"type": resource.type, "name": resource.name}
        if resource.parent:
            entry["parent"] = resource.parent
        if resource.depends_on:
            entry["dependsOn"] = sorted(resource.depends_on)
        if resource.read:
            entry["read"] = True
        if _key(resource) in rendered_to:
            entry["file"] = rendered_to[_key(resource)]
        if _shows_inputs(resource):
            entry["inputs"] = masked_inputs(resource)
        summary.append(entry)
    summary.sort(key=lambda e: (e["type"], e["name"]))
    files[RESOURCES_FILE] = dump_yaml(summary)
    return RenderedStack(stack=capture.stack, files=dict(sorted(files.items())), warnings=tuple(warnings))


def write_rendered(rendered: RenderedStack, out: Path) -> Path:
    """Replace ``out/<stack>`` with the rendered files; return that directory.

    Only a directory render wrote before is replaced: anything else in it is left alone and reported,
    so a mistyped ``--out`` cannot delete someone's files.
    """
    directory = out / rendered.stack
    if directory.exists():
        if not directory.is_dir():
            raise RenderError(f"{directory} exists and is not a directory")
        foreign = sorted(entry.name for entry in directory.iterdir() if entry.name not in RENDER_ENTRIES)
        if foreign:
            raise RenderError(
                f"refusing to replace {directory}: it holds {', '.join(foreign)}, which render did not "
                "write; choose another --out or remove them"
            )
        for entry in directory.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for relative, text in rendered.files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return directory


def remove_stale_stacks(out: Path, stacks: Iterable[str]) -> list[Path]:
    """Remove the directories below ``out`` that render wrote for a stack not in ``stacks`` (a tenant
    removed or renamed since); return them. ``render --all`` calls this once every stack rendered, so
    ``tenantctl policy OUT`` and a diff of two renders see only the stacks that exist now. As in
    ``write_rendered``, only what render wrote goes: a directory named as no stack could be, or one
    holding anything else, is left alone."""
    current = set(stacks)
    removed = []
    for directory in sorted(out.iterdir()) if out.is_dir() else []:
        if directory.name in current or directory.is_symlink() or not directory.is_dir():
            continue
        entries = {entry.name for entry in directory.iterdir()}
        if not entries or not entries <= RENDER_ENTRIES:
            continue
        try:
            parse_stack_name(directory.name)
        except SpecError:
            continue
        shutil.rmtree(directory)
        removed.append(directory)
    return removed


def render_stack(stack: str, *, project_dir: Path, out: Path) -> tuple[RenderedStack, Path]:
    """Run ``stack``'s program under mocks and write its render below ``out``."""
    rendered = render_capture(capture_stack(stack, project_dir=project_dir))
    return rendered, write_rendered(rendered, out)


def example_stacks(project_dir: Path) -> list[str]:
    """Every stack the repository declares: the platform of each environment, then each tenant."""
    configured = os.environ.get("TENANCY_TENANTS_DIR")
    tenants_dir = Path(configured) if configured else project_dir / "tenants"
    tenants = sorted(f"{f.environment}.{f.spec.name}" for f in load_tenants(tenants_dir).files)
    return [*ENVIRONMENTS, *tenants]
