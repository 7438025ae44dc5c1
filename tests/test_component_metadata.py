"""Each component folder's metadata.yaml (in the manner of kubeflow/pipelines-components) says what
the component is, and it is held to the component's real, compiled interface: a changed input,
output, type or default fails here until the metadata says so too."""

from __future__ import annotations

import datetime
import importlib
from pathlib import Path

import kfp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent for p in (ROOT / "components").glob("*/component.py"))
STABILITY = ("alpha", "beta", "stable")
FIELDS = {"name", "description", "stability", "dependencies", "verified", "inputs", "outputs"}


def _interface(name: str) -> dict:
    """The component's inputs and outputs as its compiled IR (KFP's ComponentSpec) has them."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    component = getattr(importlib.import_module(f"ctloop.components.{name}.component"), name)
    spec = component.pipeline_spec.components[f"comp-{name.replace('_', '-')}"]

    def side(definitions) -> dict:
        found = {}
        for key, parameter in definitions.parameters.items():
            item = {"type": pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(
                parameter.parameter_type)}
            if getattr(parameter, "is_optional", False):  # not on output parameters
                item["optional"] = True
            if "default_value" in type(parameter).DESCRIPTOR.fields_by_name and (
                    parameter.HasField("default_value")):
                item["default"] = json_format.MessageToDict(parameter.default_value)
            found[key] = item
        for key, artifact in definitions.artifacts.items():
            found[key] = {"type": artifact.artifact_type.schema_title}
            if getattr(artifact, "is_optional", False):  # output artifacts have no such field
                found[key]["optional"] = True
        return found

    return {"inputs": side(spec.input_definitions), "outputs": side(spec.output_definitions),
            "description": component.component_spec.description}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_metadata_matches_the_component(folder):
    path = folder / "metadata.yaml"
    assert path.is_file(), f"{folder.relative_to(ROOT)} has no metadata.yaml; add one"
    metadata = yaml.safe_load(path.read_text())
    assert set(metadata) == FIELDS, f"{path}: fields {sorted(metadata)}, expected {sorted(FIELDS)}"
    real = _interface(folder.name)
    assert metadata["name"] == folder.name
    summary = " ".join(metadata["description"].split())
    assert summary and summary in " ".join(real["description"].split()), (
        f"{path}: the description is not the component's docstring's first paragraph")
    assert metadata["stability"] in STABILITY
    assert {d["name"]: d["version"] for d in metadata["dependencies"]["kubeflow"]} == {
        "Pipelines": f">={'.'.join(kfp.__version__.split('.')[:2])}"}
    # Verified with the kfp this environment runs: bumping kfp means verifying again.
    assert metadata["verified"]["kfp"] == kfp.__version__
    verified = datetime.date.fromisoformat(str(metadata["verified"]["date"]))
    assert verified <= datetime.date.today()
    assert metadata["inputs"] == real["inputs"], f"{path}: inputs differ from the component's"
    assert metadata["outputs"] == real["outputs"], f"{path}: outputs differ from the component's"


def test_every_component_is_a_folder_with_metadata():
    assert [p.name for p in FOLDERS] == sorted(
        p.parent.name for p in (ROOT / "components").glob("*/metadata.yaml"))
