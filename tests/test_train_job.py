"""The multi-worker train variant compiled (pipelines/distributed.py): the train_job task's IR
carries the job's shape (workers, image, resources, namespace), the storage Secret, and the
same inputs and outputs as train; a golden file holds the compiled test pipeline. And, on a
cluster with the training operator (e2e), a real TFJob of train workers."""

import os
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl, kubernetes

from ctloop.components.train.component import train
from ctloop.components.train_job import logic
from ctloop.errors import ConfigError
from ctloop.pipelines.distributed import WorkerSettings, multi_worker_train
from ctloop.settings import Hyperparameters

GOLDEN = (Path(__file__).resolve().parents[1] / "components" / "train_job" / "tests" / "golden"
          / "multi_worker_train.yaml")
SETTINGS = WorkerSettings(workers=3, image="registry.example/ctloop-pipeline:1", cpu="4",
                          memory="8Gi", gpus=1, namespace="team-a", timeout_s=3600.0)


def _pipeline(settings: WorkerSettings | None):
    """train's place in a pipeline, as ct_pipeline fills it, with or without ``settings``."""

    @dsl.pipeline(name="multi-worker-train")
    def pipeline(label: str = "churned", storage_secret: str = "mlpipeline-minio-artifact",
                 gpu_count: str = "0"):
        def imported(name, kind):
            return dsl.importer(artifact_uri=f"minio://mlpipeline/in/{name}",
                                artifact_class=kind).output

        hp = Hyperparameters()
        arguments = dict(
            train_data=imported("train", dsl.Dataset), eval_data=imported("eval", dsl.Dataset),
            schema=imported("schema", dsl.Artifact), baseline=imported("baseline", dsl.Model),
            anomalies=imported("anomalies", dsl.Artifact), data_valid=True, label=label,
            exclude=["customer_id"], epochs=hp.epochs, batch_size=hp.batch_size,
            learning_rate=hp.learning_rate, hidden_units=list(hp.hidden_units), seed=hp.seed,
            early_stopping_patience=0, task="binary", warm_start=False, mixed_precision=False,
            gpu_count=gpu_count, gpu_type="nvidia.com/gpu")
        if settings:
            trained = multi_worker_train(settings, arguments, storage_secret)
        else:
            trained = train(**arguments)
        trained.set_caching_options(True)
        kubernetes.use_secret_as_env(trained, secret_name=storage_secret, secret_key_to_env={
            "accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"})

    return pipeline


def _compile(settings, path: Path) -> dict:
    compiler.Compiler().compile(_pipeline(settings), str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return {"text": path.read_text(), "spec": docs[0], "platform": docs[1]}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    return _compile(SETTINGS, tmp_path_factory.mktemp("ir") / "multi_worker_train.yaml")


def _constants(task: dict) -> dict:
    return {name: value["runtimeValue"]["constant"]
            for name, value in task["inputs"]["parameters"].items() if "runtimeValue" in value}


def test_the_task_carries_the_jobs_shape(compiled):
    task = compiled["spec"]["root"]["dag"]["tasks"]["train-job"]
    constants = _constants(task)
    assert {k: constants[k] for k in ("workers", "image", "worker_cpu", "worker_memory",
                                      "worker_gpus", "gpu_type", "namespace", "timeout_s")} == {
        "workers": 3, "image": "registry.example/ctloop-pipeline:1", "worker_cpu": "4",
        "worker_memory": "8Gi", "worker_gpus": 1, "gpu_type": "nvidia.com/gpu",
        "namespace": "team-a", "timeout_s": 3600.0}
    assert task["inputs"]["parameters"]["storage_secret"]["componentInputParameter"] == (
        "storage_secret")
    assert "gpu_count" not in task["inputs"]["parameters"]  # the workers' GPUs, not the task's
    # The TFJob the task will create from those inputs.
    job = logic.manifest(logic.JobConfig(
        namespace=constants["namespace"], image=constants["image"],
        workers=constants["workers"], cpu=constants["worker_cpu"],
        memory=constants["worker_memory"], gpus=constants["worker_gpus"]), "j", {})
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3 and job["metadata"]["namespace"] == "team-a"
    container = worker["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/ctloop-pipeline:1"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi",
                                                "nvidia.com/gpu": 1}


def test_the_task_reads_the_store_and_caches_like_train(compiled):
    task = compiled["spec"]["root"]["dag"]["tasks"]["train-job"]
    assert task["cachingOptions"] == {"enableCache": True}
    executor = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train-job"]
    assert executor["secretAsEnv"][0]["keyToEnv"] == [
        {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]
    container = compiled["spec"]["deploymentSpec"]["executors"]["exec-train-job"]["container"]
    assert container["image"].startswith("ctloop-pipeline:")  # the task only waits: CPU image
    assert "resources" not in container


def test_train_job_takes_trains_inputs_and_gives_its_outputs(tmp_path):
    single = _compile(None, tmp_path / "train.yaml")["spec"]
    multi = _compile(SETTINGS, tmp_path / "job.yaml")["spec"]
    train_spec = single["components"]["comp-train"]
    job_spec = multi["components"]["comp-train-job"]
    assert job_spec["outputDefinitions"] == train_spec["outputDefinitions"]
    assert set(train_spec["inputDefinitions"]["parameters"]) - {"gpu_count", "gpu_type"} <= set(
        job_spec["inputDefinitions"]["parameters"])
    assert set(train_spec["inputDefinitions"]["artifacts"]) == set(
        job_spec["inputDefinitions"]["artifacts"])


def test_compiled_variant_matches_golden_file(compiled):
    if os.environ.get("CTLOOP_UPDATE_GOLDEN") == "1":  # then review the diff
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(compiled["text"])
    assert GOLDEN.is_file() and compiled["text"] == GOLDEN.read_text(), (
        "components/train_job/tests/golden/multi_worker_train.yaml is stale: rerun this test "
        "with CTLOOP_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize(("options", "message"), [
    ({"workers": 1}, "workers 1 is invalid"),
    ({"workers": 2, "gpus": -1}, "gpus -1 is invalid"),
    ({"workers": 2, "namespace": ""}, "namespace and image must be set"),
])
def test_bad_settings_fail_at_compile_time(options, message):
    with pytest.raises(ConfigError, match=message):
        WorkerSettings(**options)


@pytest.mark.e2e
def test_a_tfjob_of_two_workers_trains_on_the_cluster(tmp_path):
    """Needs a cluster with the Kubeflow Training Operator (v1.9), ctloop's manifests applied,
    and ``CTLOOP_E2E_SPLITS``: an object-store folder holding train.parquet, eval.parquet and
    schema/schema.pbtxt that the workers can read (``s3://`` at ``CTLOOP_E2E_S3``)."""
    from kubernetes import config

    try:
        config.load_kube_config()
    except (config.ConfigException, OSError):
        pytest.skip("no Kubernetes cluster configured (kubeconfig): `make kind-up` starts one; "
                    "the training operator too: kubectl apply --server-side -k "
                    "github.com/kubeflow/training-operator/manifests/overlays/standalone?ref=v1.9.0")
    splits = os.environ.get("CTLOOP_E2E_SPLITS")
    if not splits:
        pytest.skip("set CTLOOP_E2E_SPLITS to an object-store folder of splits the workers read")
    api = logic.connect()
    output = f"{splits.rstrip('/')}/e2e-model-{os.getpid()}"
    spec = {"train_uri": f"{splits}/train.parquet", "eval_uri": f"{splits}/eval.parquet",
            "schema_uri": f"{splits}/schema", "output_uri": output, "label": "churned",
            "exclude": ["customer_id"], "task": "binary",
            "hp": {**Hyperparameters(epochs=2).__dict__, "hidden_units": [16]},
            "s3_endpoint_url": os.environ.get("CTLOOP_E2E_S3")}
    config_ = logic.JobConfig(namespace="kubeflow", image="ctloop-pipeline:e2e", workers=2,
                              cpu="1", memory="2Gi")
    try:
        result = logic.run(api, config_, spec, str(tmp_path / "model"), timeout_s=900,
                           s3_endpoint_url=spec["s3_endpoint_url"])
    finally:
        logic.delete(api, logic.job_name(output), "kubeflow")
    assert result["epochs_run"] == 2 and (tmp_path / "model" / "saved_model.pb").is_file()
