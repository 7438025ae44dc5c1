"""Pipeline upserts and run parameters, decided by pure functions.

Every decision here takes the objects the KFP API returns (``kfp_server_api`` models such as
``V2beta1Pipeline`` and ``V2beta1PipelineVersion``) and returns a plan, so it is tested by
building those objects by hand; ``ctloop.kfp.api`` carries a plan out against ``kfp.Client``.

A pipeline version uploaded by ctloop carries the hash of its IR spec in its description
(``ctloop-spec-sha256:<hex>``): KFP returns specs re-encoded (numbers become floats), so the
hash of what was uploaded is the only reliable way to tell "this spec is already there".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ctloop.errors import ConfigError

SPEC_TAG = "ctloop-spec-sha256:"
_SPEC_TAG_RE = re.compile(re.escape(SPEC_TAG) + r"([0-9a-f]{64})")
LATEST = "latest"


def spec_hash(ir_text: str) -> str:
    """The SHA-256 of a compiled pipeline's content, blind to YAML formatting and comments.

    Args:
        ir_text: The IR YAML (one or more documents: pipeline spec, platform spec).

    Returns:
        64 hex digits.
    """
    docs = [doc for doc in yaml.safe_load_all(ir_text) if doc is not None]
    canonical = json.dumps(docs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def tagged(description: str, digest: str) -> str:
    """``description`` with the spec tag appended, as stored on a version ctloop uploads."""
    return f"{description} ({SPEC_TAG}{digest})" if description else f"{SPEC_TAG}{digest}"


def tagged_hash(description: str | None) -> str | None:
    """The spec hash a version's description carries, or None for versions ctloop did not tag."""
    match = _SPEC_TAG_RE.search(description or "")
    return match.group(1) if match else None


def default_version_name(commit: str | None, dirty: bool, digest: str) -> str:
    """A version name from the git commit (``-dirty`` when the tree has changes), else the hash.

    Args:
        commit: ``git rev-parse --short HEAD``, or None outside a git work tree.
        dirty: Whether the work tree has uncommitted changes.
        digest: The spec hash.

    Returns:
        ``<commit>``, ``<commit>-dirty`` or ``spec-<12 hex digits>``.
    """
    if commit is None:
        return f"spec-{digest[:12]}"
    return f"{commit}-dirty" if dirty else commit


@dataclasses.dataclass(frozen=True)
class CreatePipeline:
    """Upload the spec as a new pipeline (KFP names its first version after the pipeline)."""

    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class CreateVersion:
    """Upload the spec as a new version of an existing pipeline."""

    pipeline_id: str
    version_name: str
    description: str


@dataclasses.dataclass(frozen=True)
class KeepVersion:
    """Upload nothing: a version with the same spec exists."""

    pipeline_id: str
    version_id: str
    version_name: str


UploadAction = CreatePipeline | CreateVersion | KeepVersion


def plan_upload(pipeline_name: str, pipeline: Any | None, versions: Sequence[Any], digest: str,
                version_name: str, name_is_explicit: bool, description: str = "") -> UploadAction:
    """Decides how a compiled spec reaches KFP: a new pipeline, a new version, or nothing.

    Args:
        pipeline_name: The pipeline's display name.
        pipeline: The ``V2beta1Pipeline`` of that name, or None when there is none.
        versions: All ``V2beta1PipelineVersion``s of that pipeline (any order).
        digest: ``spec_hash`` of the spec to upload.
        version_name: The name for a new version.
        name_is_explicit: Whether the user chose ``version_name`` (``--version-name``); a derived
            name that is taken by another spec gets the hash appended instead of failing.
        description: Free text stored with the pipeline or version, before the spec tag.

    Returns:
        The one action to carry out.

    Raises:
        ConfigError: ``version_name`` was given explicitly and names a version with another spec.
    """
    if pipeline is None:
        return CreatePipeline(pipeline_name, tagged(description, digest))
    for version in sorted(versions, key=_created):
        if tagged_hash(version.description) == digest:
            return KeepVersion(pipeline.pipeline_id, version.pipeline_version_id,
                               version.display_name)
    taken = {version.display_name for version in versions}
    if version_name in taken:
        if name_is_explicit:
            raise ConfigError(
                f"--version-name {version_name!r}: pipeline {pipeline_name!r} already has a "
                "version of that name with another spec; pass a new --version-name")
        # Same commit, another spec (a dirty tree edited again, another --image): keep the
        # commit in the name and tell the specs apart by their hash.
        version_name = f"{version_name}-{digest[:8]}"
    return CreateVersion(pipeline.pipeline_id, version_name, tagged(description, digest))


def resolve_version(pipeline_name: str, versions: Sequence[Any], wanted: str) -> Any:
    """The ``V2beta1PipelineVersion`` named ``wanted``, or the newest one for ``"latest"``.

    Raises:
        ConfigError: The pipeline has no versions, or none of that name.
    """
    if not versions:
        raise ConfigError(
            f"pipeline {pipeline_name!r} has no versions on this KFP; run `ctloop upload` first")
    if wanted == LATEST:
        return max(versions, key=_created)
    matches = [v for v in versions if v.display_name == wanted]
    if not matches:
        known = ", ".join(v.display_name for v in sorted(versions, key=_created, reverse=True)[:5])
        raise ConfigError(
            f"pipeline version {wanted!r} of {pipeline_name!r} does not exist; use one of "
            f"{known} (newest first) or {LATEST!r}")
    return max(matches, key=_created)


def pipeline_parameters(pipeline_spec: Mapping[str, Any] | None) -> dict[str, dict]:
    """The input parameters of a version's ``pipeline_spec`` as KFP returns it.

    KFP returns the pipeline spec itself, or ``{"pipeline_spec": ..., "platform_spec": ...}``
    when the IR has a platform spec (kfp-kubernetes settings).

    Returns:
        Parameter name -> its IR definition (``parameterType``, ``defaultValue``, ``isOptional``).
    """
    spec = dict(pipeline_spec or {})
    spec = spec.get("pipeline_spec", spec)
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def coerce_parameters(definitions: Mapping[str, Mapping], values: Mapping[str, Any],
                      source: str) -> dict[str, Any]:
    """Checks run parameters against a pipeline's definitions and converts them to their types.

    Strings (from ``--param k=v``) are parsed for non-string parameters: integers, numbers,
    ``true``/``false``, JSON lists and objects. Native values (from a YAML file) must already
    have the parameter's type.

    Args:
        definitions: ``pipeline_parameters`` of the version to run.
        values: Parameter name -> value.
        source: Where the values come from, for messages (``--param``, ``schedule 'nightly'``).

    Returns:
        The values converted to the parameters' types.

    Raises:
        ConfigError: An unknown parameter, a value of the wrong type, or a required parameter
            missing.
    """
    unknown = sorted(set(values) - set(definitions))
    if unknown:
        raise ConfigError(
            f"{source}: {', '.join(unknown)} is not a parameter of this pipeline; its parameters "
            f"are {', '.join(sorted(definitions))}")
    missing = sorted(
        name for name, spec in definitions.items()
        if name not in values and "defaultValue" not in spec and not spec.get("isOptional"))
    if missing:
        raise ConfigError(
            f"{source}: required parameter(s) {', '.join(missing)} missing; pass a value for each")
    return {name: _coerce(name, definitions[name].get("parameterType", "STRING"), value, source)
            for name, value in values.items()}


_TYPES = {
    "STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,),
}
_EXAMPLES = {
    "STRING": "text", "NUMBER_INTEGER": "an integer such as 10", "NUMBER_DOUBLE": "a number "
    "such as 0.7", "BOOLEAN": "true or false", "LIST": 'a JSON list such as ["a","b"]',
    "STRUCT": 'a JSON object such as {"k":"v"}',
}


def _coerce(name: str, kind: str, value: Any, source: str) -> Any:
    wanted = _TYPES.get(kind, (str,))
    if isinstance(value, str) and str not in wanted:
        value = _parse(value)
    # bool is an int in Python, but never a valid integer or number parameter.
    if isinstance(value, bool) != (bool in wanted) or not isinstance(value, wanted):
        raise ConfigError(
            f"{source}: {name}={value!r} is not {_EXAMPLES.get(kind, kind)}; "
            f"{name} is a {kind} parameter")
    return float(value) if kind == "NUMBER_DOUBLE" else value


def _parse(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def _created(version: Any) -> tuple:
    # Versions without a creation time sort first; ties break on the ID for a stable order.
    created = version.created_at
    return (created is not None, created.timestamp() if created else 0.0,
            version.pipeline_version_id or "")
