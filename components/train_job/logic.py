"""train_job: the train step as a Kubeflow Training Operator TFJob of several workers.

Why a TFJob and not KFP alone: MultiWorkerMirroredStrategy needs every worker running at once
and reachable by a stable address (gRPC collectives), and a TF_CONFIG naming them all. KFP
tasks are independent pods with no addresses of each other (a ParallelFor's tasks may not even
run at the same time), so KFP cannot form the group. The training operator does: it starts the
replicas together, gives each a headless Service and sets TF_CONFIG in the container named
``tensorflow``. So this task creates a TFJob, waits for its conditions as any task waits for its
work, and hands the chief's model on as its own output; the workers run train's own logic
(``python -m ctloop.components.train.worker``).

Status, as the operator writes it (kubeflow/training-operator v1.9,
pkg/apis/kubeflow.org/v1/common_types.go: ``JobStatus``, ``JobCondition``,
``JobConditionType``; pkg/controller.v1/tensorflow/tfjob_controller.go ``UpdateJobStatus``):
``status.conditions`` of type Created, Running, Restarting, Succeeded, Failed, Suspended, each
with status True/False, reason and message (a Succeeded or Failed condition sets Running to
False; nothing follows a Failed one); ``status.replicaStatuses.<Worker|Chief>`` has ``active``,
``succeeded`` and ``failed`` pod counts. With no Chief replica, worker 0 is the chief, and the
job succeeds when it does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctloop.data import storage
from ctloop.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
# The operator sets TF_CONFIG only in the container of this name (TFJobDefaultContainerName,
# tensorflow_types.go), and opens port 2222 (TFJobDefaultPort) unless one is named tfjob-port.
CONTAINER = "tensorflow"
WORKER_COMMAND = ("python", "-m", "ctloop.components.train.worker")
RESULT_FILE, MODEL_FOLDER = "result.json", "model"  # what the chief publishes (train's worker)
TERMINAL = ("Succeeded", "Failed")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Where and how the workers run.

    Attributes:
        namespace: The TFJob's namespace (the run's: the workers read its storage Secret).
        image: The workers' image: the pipeline image (or its GPU variant).
        workers: Worker replicas, at least 2 (one process trains in the train step itself).
        cpu: CPU each worker requests and is limited to (Kubernetes quantity).
        memory: Memory each worker requests and is limited to.
        gpus: Accelerators each worker is limited to (0: none).
        gpu_type: The accelerator resource (e.g. ``nvidia.com/gpu``).
        storage_secret: The Secret with ``accesskey``/``secretkey`` of the object store the
            run's artifacts are in, given to the workers as boto3's variables.
    """

    namespace: str
    image: str
    workers: int
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 0
    gpu_type: str = "nvidia.com/gpu"
    storage_secret: str = "mlpipeline-minio-artifact"

    def __post_init__(self):
        if self.workers < 2:
            raise ConfigError(f"workers {self.workers} is invalid: a multi-worker job has at "
                              "least 2; with 1, use the train step")
        if self.gpus < 0:
            raise ConfigError(f"gpus {self.gpus} is invalid: use 0 or more per worker")
        if not self.namespace or not self.image:
            raise ConfigError("namespace and image must be set: the run's namespace and the "
                              "pipeline image")


def connect():
    """A ``kubernetes`` CustomObjectsApi on this cluster: the pod's service account (a KFP
    task), else ``~/.kube/config``.

    Raises:
        ClusterError: Neither configuration is there.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ClusterError(f"no Kubernetes cluster configured ({exc}); run train_job in a "
                               "KFP task on the cluster, or set a kubeconfig") from exc
    return client.CustomObjectsApi()


def job_name(output_uri: str) -> str:
    """A TFJob name unique to the task's output (a DNS label): a retried task finds its job."""
    return "ctloop-train-" + hashlib.sha256(output_uri.encode()).hexdigest()[:12]


def manifest(config: JobConfig, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The TFJob: ``config.workers`` Worker replicas running train's worker with ``spec``."""
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": config.cpu, "memory": config.memory},
        "limits": {"cpu": config.cpu, "memory": config.memory}}
    if config.gpus:
        resources["limits"][config.gpu_type] = config.gpus
    secret = [{"name": variable, "valueFrom": {"secretKeyRef": {
        "name": config.storage_secret, "key": key}}}
        for variable, key in (("AWS_ACCESS_KEY_ID", "accesskey"),
                              ("AWS_SECRET_ACCESS_KEY", "secretkey"))]
    container = {"name": CONTAINER, "image": config.image,
                 "command": [*WORKER_COMMAND, json.dumps(spec, sort_keys=True)],
                 "env": secret, "resources": resources}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": config.namespace,
                     "labels": {"app.kubernetes.io/part-of": "ctloop"}},
        "spec": {
            # A worker that fails breaks the collective group: fail the job at once (the
            # task's own retries, if any, start it again) and stop the other workers, keeping
            # finished pods for their logs; the operator deletes the job a day after it ends.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0,
                          "ttlSecondsAfterFinished": 86400},
            "tfReplicaSpecs": {"Worker": {
                "replicas": config.workers, "restartPolicy": "Never",
                "template": {"spec": {"containers": [container]}}}},
        },
    }


def condition(job: dict[str, Any]) -> tuple[str, str]:
    """The job's state: the last True condition's type and message (``("", "")`` before the
    operator has written any)."""
    conditions = (job.get("status") or {}).get("conditions") or []
    current = [c for c in conditions if c.get("status") == "True"]
    if not current:
        return "", ""
    last = current[-1]
    return last.get("type", ""), last.get("message") or last.get("reason") or ""


def _replicas(job: dict[str, Any]) -> str:
    statuses = (job.get("status") or {}).get("replicaStatuses") or {}
    return ", ".join(f"{kind}: {s.get('active', 0)} active, {s.get('succeeded', 0)} "
                     f"succeeded, {s.get('failed', 0)} failed"
                     for kind, s in sorted(statuses.items())) or "no replica status yet"


def wait(api, name: str, namespace: str, timeout_s: float, poll_s: float = 5.0,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Polls the TFJob until a Succeeded or Failed condition; returns the job.

    Raises:
        ClusterError: The job failed (its message and replica counts), vanished, or did not
            finish within ``timeout_s`` (its last state).
    """
    from kubernetes.client.exceptions import ApiException

    deadline = clock() + timeout_s
    seen = None
    while True:
        try:
            job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            raise ClusterError(f"TFJob {namespace}/{name} could not be read ({exc.status} "
                               f"{exc.reason}); check that the training operator is installed "
                               "and pipeline-runner may get tfjobs (manifests/base/rbac.yaml)"
                               ) from exc
        state, message = condition(job)
        if state != seen:
            log.info("TFJob %s/%s: %s %s (%s)", namespace, name, state or "pending", message,
                     _replicas(job))
            seen = state
        if state == "Succeeded":
            return job
        if state == "Failed":
            raise ClusterError(f"TFJob {namespace}/{name} failed: {message} ({_replicas(job)}); "
                               f"see its worker pods' logs (kubectl logs -n {namespace} -l "
                               f"training.kubeflow.org/job-name={name})")
        if clock() >= deadline:
            raise ClusterError(f"TFJob {namespace}/{name} did not finish in {timeout_s:g} s: "
                               f"{state or 'not started'} ({_replicas(job)}); raise timeout_s "
                               "or check that the cluster can schedule every worker at once")
        sleep(poll_s)


def submit(api, job: dict[str, Any]) -> None:
    """Creates the TFJob; one left by an earlier attempt of the same task is replaced.

    Raises:
        ClusterError: The API refused it (no training operator, no RBAC, invalid spec).
    """
    from kubernetes.client.exceptions import ApiException

    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise ClusterError(f"creating TFJob {namespace}/{name} failed ({exc.status} "
                               f"{exc.reason}); install the Kubeflow Training Operator "
                               "(v1.9) and apply manifests/ (pipeline-runner's tfjobs Role)"
                               ) from exc
    log.info("TFJob %s/%s exists from an earlier attempt: replacing it", namespace, name)
    delete(api, name, namespace)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)


def delete(api, name: str, namespace: str) -> None:
    """Deletes the TFJob and its pods (background propagation); gone already is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise ClusterError(f"deleting TFJob {namespace}/{name} failed ({exc.status} "
                               f"{exc.reason})") from exc


def collect(output_uri: str, model_dir: str, s3_endpoint_url: str | None) -> dict[str, Any]:
    """Copies the chief's model from ``output_uri`` into ``model_dir``; returns its result.

    Raises:
        ClusterError: The job succeeded but its chief published no result.
    """
    uri = "s3://" + output_uri.removeprefix("minio://") if output_uri.startswith(
        "minio://") else output_uri
    root = uri.rstrip("/")
    try:
        result = json.loads(storage.read(f"{root}/{RESULT_FILE}", s3_endpoint_url)[0])
    except FileNotFoundError as exc:
        raise ClusterError(f"the TFJob succeeded but {root}/{RESULT_FILE} is missing: its "
                           "chief (worker 0) did not publish; see its log") from exc
    prefix = f"{root}/{MODEL_FOLDER}"
    for stored in storage.list_files(prefix, s3_endpoint_url):
        target = Path(model_dir, stored.uri[len(prefix):].lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read(stored.uri, s3_endpoint_url)[0])
    return result


def run(api, config: JobConfig, spec: dict[str, Any], model_dir: str, timeout_s: float,
        s3_endpoint_url: str | None = None, poll_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Runs the job (``spec`` as train's worker takes it, ``output_uri`` where its chief
    publishes), waits for it, copies its model into ``model_dir`` and returns its result.

    On success, and when waiting gives up, the job is deleted (no worker left running); a
    failed job stays (its pods' logs) until the operator's TTL removes it.
    """
    name = job_name(spec["output_uri"])
    submit(api, manifest(config, name, spec))
    try:
        wait(api, name, config.namespace, timeout_s, poll_s, sleep)
    except ClusterError as exc:
        if "did not finish" in str(exc):
            delete(api, name, config.namespace)
        raise
    result = collect(spec["output_uri"], model_dir, s3_endpoint_url)
    delete(api, name, config.namespace)
    return result
