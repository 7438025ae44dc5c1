"""`ctloop compile` writes each component as a reusable component YAML that loads back."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kfp import components

from ctloop.cli import main
from ctloop.kfp import compiling


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    result = CliRunner().invoke(main, ["compile", "--output", str(out / "p.yaml")])
    assert result.exit_code == 0, result.output
    return out


def test_every_component_is_written_beside_the_pipeline(compiled):
    names = sorted(compiling.all_components())
    assert sorted(p.stem for p in (compiled / "components").glob("*.yaml")) == names
    # One folder per component, each one the pipeline's: none left out, none orphaned.
    folders = Path(__file__).resolve().parents[1] / "components"
    assert names == sorted(p.parent.name for p in folders.glob("*/component.py"))


def test_component_yamls_load_with_kfp_and_keep_their_interface(compiled):
    for name, component in compiling.all_components().items():
        loaded = components.load_component_from_file(str(compiled / "components" / f"{name}.yaml"))
        assert loaded.name == component.name
        assert set(loaded.component_spec.inputs or {}) == set(component.component_spec.inputs or {})
        assert set(loaded.component_spec.outputs or {}) == set(
            component.component_spec.outputs or {})


def test_committed_component_yamls_are_current(compiled):
    committed = compiling.COMPONENTS_DIR
    for fresh in sorted((compiled / "components").glob("*.yaml")):
        golden = committed / fresh.name
        assert golden.exists() and golden.read_text() == fresh.read_text(), (
            f"pipelines/components/{fresh.name} is stale: run `make compile` and review the diff")
    assert {p.name for p in committed.glob("*.yaml")} == {
        p.name for p in (compiled / "components").glob("*.yaml")}, (
        "pipelines/components/ holds a component that no longer exists: remove it")


def test_components_dir_and_image_options(tmp_path):
    result = CliRunner().invoke(main, [
        "compile", "--output", str(tmp_path / "p.yaml"), "--components-dir",
        str(tmp_path / "c"), "--image", "registry.example/ctloop-pipeline:abc"])
    assert result.exit_code == 0, result.output
    train = yaml.safe_load((tmp_path / "c" / "train.yaml").read_text())
    assert {e["container"]["image"] for e in train["deploymentSpec"]["executors"].values()} == {
        "registry.example/ctloop-pipeline:abc"}
    assert f"wrote {tmp_path / 'c' / 'train.yaml'}" in result.output.splitlines()
