"""The compiled pipeline: golden IR, the settings a cluster needs, components compile alone."""

import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components

from ctloop.components.evaluate.component import evaluate
from ctloop.components.ingest.component import ingest
from ctloop.components.rollout.component import rollout
from ctloop.components.select_span.component import select_span
from ctloop.components.train.component import train
from ctloop.components.validate_data.component import validate_data
from ctloop.kfp import compiling
from ctloop.kfp.images import PIPELINE_IMAGE

GOLDEN = Path(__file__).resolve().parent.parent / "pipelines" / "ct_pipeline.yaml"
GOLDEN_GPU = GOLDEN.with_name("ct_pipeline_gpu.yaml")
COMPONENTS = [select_span, ingest, validate_data, train, evaluate, rollout]


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("ir") / "ct_pipeline.yaml"
    compiling.compile_pipeline(path)
    spec, platform = yaml.safe_load_all(path.read_text())
    return {"text": path.read_text(), "spec": spec, "platform": platform}


@pytest.fixture(scope="module")
def gpu_ir(tmp_path_factory) -> dict:
    from ctloop.pipelines.ct_pipeline import GpuSettings

    path = tmp_path_factory.mktemp("ir") / "ct_pipeline_gpu.yaml"
    compiling.compile_pipeline(path, gpu=GpuSettings())
    spec, platform = yaml.safe_load_all(path.read_text())
    return {"text": path.read_text(), "spec": spec, "platform": platform}


def test_compiled_pipeline_matches_golden_file(ir):
    assert ir["text"] == GOLDEN.read_text(), (
        "pipelines/ct_pipeline.yaml is stale: run `make compile` and review the diff"
    )


def test_compiled_gpu_variant_matches_golden_file(gpu_ir):
    assert gpu_ir["text"] == GOLDEN_GPU.read_text(), (
        "pipelines/ct_pipeline_gpu.yaml is stale: run `make compile` and review the diff"
    )


def test_gpu_variant_schedules_the_train_task_on_gpu_nodes(gpu_ir, ir):
    executors = gpu_ir["spec"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"].startswith("ctloop-pipeline-gpu:")
    assert {e["container"]["image"] for n, e in executors.items() if n != "exec-train"} == {
        PIPELINE_IMAGE}
    defaults = gpu_ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["gpu_count"]["defaultValue"] == "1"
    train = gpu_ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train"]
    assert train["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert train["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm",
                                        "medium": "Memory", "sizeLimit": "2Gi"}]
    # The CPU pipeline is the same graph, without GPU scheduling.
    assert gpu_ir["spec"]["root"]["dag"] == ir["spec"]["root"]["dag"]
    cpu = ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert set(cpu) == {"secretAsEnv"}


def test_train_task_requests_accelerators_from_pipeline_parameters(ir):
    tasks = ir["spec"]["root"]["dag"]["tasks"]
    resources = ir["spec"]["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "accelerator_type" in resources["accelerator"]["resourceType"]
    assert "gpu_count" in resources["accelerator"]["resourceCount"]
    inputs = tasks["train"]["inputs"]["parameters"]
    assert inputs["pipelinechannel--gpu_count"]["componentInputParameter"] == "gpu_count"
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["gpu_count"]["defaultValue"] == "0"
    assert defaults["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"


def driver_accelerator(ir: dict, task: str, arguments: dict) -> tuple[str, str]:
    """The accelerator (type, count) KFP's driver puts on ``task``'s pod for a run with
    ``arguments``, as backend/src/v2/driver/resolve.go's resolvePodSpecInputRuntimeParameter
    does: a channel resolves to the executor input's value read with GetStringValue(), which is
    "" for anything but a string (a NUMBER parameter arrives as a number_value)."""
    executor = ir["spec"]["root"]["dag"]["tasks"][task]["componentRef"]["name"].replace(
        "comp-", "exec-")
    accelerator = ir["spec"]["deploymentSpec"]["executors"][executor]["container"][
        "resources"]["accelerator"]
    channels = ir["spec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    root = ir["spec"]["root"]["inputDefinitions"]["parameters"]

    def resolve(value: str) -> str:
        match = re.fullmatch(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}", value)
        if not match:
            return value  # a constant
        # The channel carries the pipeline parameter's value with the parameter's type.
        pipeline_param = channels[match.group(1)]["componentInputParameter"]
        given = arguments.get(pipeline_param, root[pipeline_param].get("defaultValue"))
        return given if root[pipeline_param]["parameterType"] == "STRING" else ""

    return resolve(accelerator["resourceType"]), resolve(accelerator["resourceCount"])


def test_kfps_driver_resolves_the_gpu_count_of_the_gpu_variant(gpu_ir, ir):
    assert driver_accelerator(gpu_ir, "train", {}) == ("nvidia.com/gpu", "1")
    assert driver_accelerator(gpu_ir, "train", {"gpu_count": "4"}) == ("nvidia.com/gpu", "4")
    assert gpu_ir["spec"]["root"]["inputDefinitions"]["parameters"]["gpu_count"][
        "parameterType"] == "STRING"
    assert driver_accelerator(ir, "train", {}) == ("nvidia.com/gpu", "0")


def test_tasks_reading_outside_state_are_never_cached(ir):
    tasks = ir["spec"]["root"]["dag"]["tasks"]
    # train reads the registry's serving version when it warm-starts.
    for name in ("select-span", "validate-data", "train", "evaluate", "rollout"):
        assert tasks[name]["cachingOptions"].get("enableCache") is not True, name


def test_ingest_is_cached_under_a_key_that_holds_the_data_fingerprint(ir):
    ingest_task = ir["spec"]["root"]["dag"]["tasks"]["ingest"]
    assert ingest_task["cachingOptions"]["enableCache"] is True
    # KFP's cache key covers a task's inputs: with select_span's fingerprint among them, a
    # changed byte of data is a cache miss, and unchanged data a hit.
    inputs = ingest_task["inputs"]["parameters"]
    for name in ("fingerprint", "files", "spans_read"):
        assert inputs[name]["taskOutputParameter"] == {
            "producerTask": "select-span", "outputParameterKey": name}
    assert "data_uri" not in inputs  # it reads the files it is given, nothing it looks up


def test_tasks_that_read_storage_get_its_credentials_from_a_secret(ir):
    executors = ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    readers = {"exec-select-span", "exec-ingest", "exec-validate-data", "exec-train",
               "exec-evaluate", "exec-rollout"}
    assert set(executors) == readers  # infra-validate touches no storage itself
    for name in readers:
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretNameParameter"] == {"componentInputParameter": "storage_secret"}
        assert secret["keyToEnv"] == [
            {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
            {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["storage_secret"]["defaultValue"] == "mlpipeline-minio-artifact"


def test_every_task_runs_on_the_pipeline_image(ir):
    executors = ir["spec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {PIPELINE_IMAGE}
    # Lightweight components on the project image: no pip install at container start.
    assert not any("pip install" in " ".join(e["container"]["command"])
                   for e in executors.values())


def test_image_override(tmp_path):
    path = tmp_path / "p.yaml"
    compiling.compile_pipeline(path, image="registry.example/ctloop-pipeline:abc")
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {
        "registry.example/ctloop-pipeline:abc"}
    assert "exec-rollout" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_component_compiles_and_loads_back(component, tmp_path):
    path = tmp_path / f"{component.name}.yaml"
    compiler.Compiler().compile(component, str(path))
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == component.name
    assert set(loaded.component_spec.inputs) == set(component.component_spec.inputs)
    assert set(loaded.component_spec.outputs) == set(component.component_spec.outputs)


def test_no_value_threshold_is_hand_set_by_default(ir):
    """No flag, no pipeline parameter: evaluate's no-skill check judges every task, and only the
    exact off sentinel travels as "none"."""
    from ctloop.cli import main
    from ctloop.settings import NO_THRESHOLD

    value_bounds = ("min_auc", "min_accuracy", "max_mae")
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert {name: defaults[name]["defaultValue"] for name in value_bounds} == dict.fromkeys(
        value_bounds, NO_THRESHOLD)
    assert defaults["max_mae_increase"]["defaultValue"] == NO_THRESHOLD  # then 1% relative
    assert defaults["max_auc_decrease"]["defaultValue"] == 0.01
    parsed = main.commands["run"].make_context("run", [
        "--local", "--data", "data", "--label", "churned", "--workdir", "work",
        "--serving-python", "python"]).params
    assert {name: parsed[name] for name in value_bounds} == dict.fromkeys(value_bounds)
