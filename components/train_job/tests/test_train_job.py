"""train_job against a simulated training operator (``tfjob_double``): the TFJob it submits,
how it reads the job's conditions, and the model it hands on, trained for real by train's worker
entry point as the job's chief."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from conftest import EXCLUDE, LABEL, validate_outputs
from ctloop import contract
from ctloop.components.train_job import logic
from ctloop.components.train_job.component import train_job
from ctloop.components.train_job.tests.tfjob_double import TFJobCluster
from ctloop.errors import ClusterError, ConfigError
from ctloop.settings import Hyperparameters

CONFIG = logic.JobConfig(namespace="kubeflow", image="registry.example/ctloop-pipeline:1",
                         workers=3, cpu="4", memory="8Gi", gpus=1)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Path:
    from ctloop.components.validate_data import logic as validate
    from ctloop.data import datagen

    work = tmp_path_factory.mktemp("splits")
    frame = datagen.generate_span(datagen.SpanSpec(1, rows=2000))
    evaluation = np.arange(len(frame)) % 5 == 0
    frame[~evaluation].to_parquet(work / "train.parquet", index=False)
    frame[evaluation].to_parquet(work / "eval.parquet", index=False)
    outputs = validate_outputs(work / "schema")
    (work / "schema").mkdir()
    validate.run(str(work / "train.parquet"), str(work / "eval.parquet"), 1, LABEL, EXCLUDE,
                 None, None, None, outputs)
    return work


def _chief(spec: dict, tf_config: dict) -> None:
    """Worker 0 of the job, as one process (its peers' part is MultiWorkerMirroredStrategy's,
    tested in tests/test_train_stream.py)."""
    from ctloop.components.train import worker
    from ctloop.training import Cluster

    assert tf_config["task"] == {"type": "worker", "index": 0}
    worker.main(spec, Cluster())


def _call(splits: Path, tmp_path: Path, cluster: TFJobCluster, monkeypatch, **options):
    monkeypatch.setattr(logic, "connect", lambda: cluster)
    baseline = Model(uri=str(tmp_path / "no-baseline"))
    baseline.metadata["version"] = None
    outputs = {"model": Model(uri=str(tmp_path / "model")),
               "training_metrics": Metrics(uri=str(tmp_path / "metrics"))}
    arguments = dict(
        train_data=Dataset(uri=str(splits / "train.parquet")),
        eval_data=Dataset(uri=str(splits / "eval.parquet")),
        schema=Artifact(uri=str(splits / "schema")), baseline=baseline,
        anomalies=Artifact(uri=str(tmp_path / "anomalies")), data_valid=True, label=LABEL,
        epochs=4, batch_size=Hyperparameters.batch_size, learning_rate=0.01,
        hidden_units=[16], seed=7,
        early_stopping_patience=0, task=contract.BINARY, warm_start=False,
        mixed_precision=False, workers=2, namespace="kubeflow", image="ctloop-pipeline:test",
        worker_cpu="1", worker_memory="2Gi", worker_gpus=0, gpu_type="nvidia.com/gpu",
        storage_secret="mlpipeline-minio-artifact", timeout_s=60.0, exclude=EXCLUDE)
    arguments.update(options)
    train_job.python_func(**arguments, **outputs)
    return outputs["model"], outputs["training_metrics"]


def test_the_tfjob_runs_train_workers_with_their_resources():
    spec = {"output_uri": "minio://mlpipeline/v2/artifacts/run/model-workers", "label": "y"}
    job = logic.manifest(CONFIG, logic.job_name(spec["output_uri"]), spec)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert job["metadata"]["name"].startswith("ctloop-train-")
    workers = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"}  # worker 0 is the chief
    assert (workers["replicas"], workers["restartPolicy"]) == (3, "Never")
    (container,) = workers["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # where the operator sets TF_CONFIG
    assert container["image"] == CONFIG.image
    assert container["command"][:3] == ["python", "-m", "ctloop.components.train.worker"]
    assert json.loads(container["command"][3]) == spec
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"},
                                      "limits": {"cpu": "4", "memory": "8Gi",
                                                 "nvidia.com/gpu": 1}}
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]} == {
        "AWS_ACCESS_KEY_ID": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
        "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}
    assert job["spec"]["runPolicy"]["backoffLimit"] == 0


def test_one_worker_is_not_a_multi_worker_job():
    with pytest.raises(ConfigError, match="workers 1 is invalid"):
        logic.JobConfig(namespace="kubeflow", image="i", workers=1)


def test_a_succeeded_job_hands_on_the_chiefs_model(splits, tmp_path, monkeypatch):
    cluster = TFJobCluster(work=_chief)
    model, metrics = _call(splits, tmp_path, cluster, monkeypatch)
    assert contract.read_features(model.path)  # the SavedModel and features.json, copied
    assert (Path(model.path) / "saved_model.pb").is_file()
    assert 0.6 < metrics.metadata["eval_auc"] <= 1.0 and metrics.metadata["epochs_run"] == 4
    assert model.metadata["workers"] == 2 and model.metadata["parameters"]["workers"] == 2
    assert model.metadata["features"] == [f.name for f in contract.features_from_schema(
        str(splits / "schema" / "schema.pbtxt"), LABEL, EXCLUDE)]
    # The operator named two workers; the job is gone once its model is copied.
    assert [c["task"]["index"] for c in cluster.tf_configs] == [0, 1]
    assert cluster.tf_configs[0]["cluster"]["worker"][1].endswith("-worker-1.kubeflow.svc:2222")
    assert cluster.deleted == [cluster.created[0]["metadata"]["name"]] and not cluster.jobs


def test_a_failed_job_fails_the_task_with_the_operators_message(splits, tmp_path, monkeypatch):
    def crash(spec, tf_config):
        raise RuntimeError("worker out of memory")

    cluster = TFJobCluster(work=crash)
    with pytest.raises(ClusterError, match=r"failed: TFJob kubeflow/ctloop-train-\w+ has "
                                           r"failed because 1 Worker replica\(s\) failed\. "
                                           r"\(Worker: 1 active, 0 succeeded, 1 failed\)"):
        _call(splits, tmp_path, cluster, monkeypatch)
    (job,) = cluster.jobs.values()  # kept, for its pods' logs
    states = {c["type"]: c["status"] for c in job["status"]["conditions"]}
    assert states == {"Created": "True", "Running": "False", "Failed": "True"}


def test_a_job_that_never_starts_times_out_and_is_deleted(splits, tmp_path, monkeypatch):
    cluster = TFJobCluster(unschedulable=True)
    with pytest.raises(ClusterError, match="did not finish in 0 s: Created"):
        _call(splits, tmp_path, cluster, monkeypatch, timeout_s=0.0)
    assert not cluster.jobs and len(cluster.deleted) == 1


def test_no_training_operator_is_a_one_line_error(splits, tmp_path, monkeypatch):
    with pytest.raises(ClusterError, match="install the Kubeflow Training Operator"):
        _call(splits, tmp_path, TFJobCluster(installed=False), monkeypatch)


def test_a_job_left_by_an_earlier_attempt_is_replaced(splits, tmp_path, monkeypatch):
    cluster = TFJobCluster(work=_chief)
    output = Model(uri=str(tmp_path / "model")).uri.rstrip("/") + "-workers"
    stale = logic.manifest(CONFIG, logic.job_name(output), {"output_uri": output})
    cluster.create_namespaced_custom_object("kubeflow.org", "v1", "kubeflow", "tfjobs", stale)
    _, metrics = _call(splits, tmp_path, cluster, monkeypatch)
    assert len(cluster.created) == 2 and metrics.metadata["epochs_run"] == 4


def test_nothing_is_submitted_after_a_failed_data_validation(splits, tmp_path, monkeypatch):
    cluster = TFJobCluster()
    model, metrics = _call(splits, tmp_path, cluster, monkeypatch, data_valid=False)
    assert model.metadata == {"skipped": "data validation blocked: see its anomalies report"}
    assert metrics.metadata == model.metadata and not cluster.created
