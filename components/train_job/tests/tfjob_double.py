"""A Kubernetes API with the Kubeflow Training Operator's TFJob controller, in one object: the
``CustomObjectsApi`` calls train_job makes (create, get, delete of ``kubeflow.org/v1`` tfjobs),
each get moving the simulated job one reconcile step, as the operator would.

Everything in a status follows kubeflow/training-operator v1.9:
- types: pkg/apis/kubeflow.org/v1/common_types.go (``JobStatus.conditions`` of
  ``JobCondition`` {type, status, reason, message, lastUpdateTime, lastTransitionTime};
  ``replicaStatuses`` of ``ReplicaStatus`` {active, succeeded, failed}; condition types
  Created, Running, Restarting, Succeeded, Suspended, Failed) and tensorflow_types.go (replica
  types PS, Worker, Chief, Master, Evaluator; container ``tensorflow``; port 2222);
- transitions: pkg/controller.v1/tensorflow/tfjob_controller.go (``onOwnerCreateFunc``: Created,
  "TFJob <name> is created."; ``UpdateJobStatus`` without a Chief: Running while workers are
  active, Succeeded once worker 0 completes, Failed when a replica failed, with their messages)
  and pkg/util/status.go (reasons ``TFJob`` + Created/Running/Succeeded/Failed; a Succeeded or
  Failed condition turns Running False; nothing changes after Failed);
- TF_CONFIG: pkg/controller.v1/tensorflow/tensorflow.go (``genTFConfigJSONStr``: cluster of
  ``<job>-<type>-<i>.<ns>.svc:2222`` per replica, task type lowercased, environment "cloud").

Knobs: ``work(spec, tf_config)`` runs as the workers when the job starts (an exception: worker
0 fails); ``unschedulable``: pods never start (the job stays Created).
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

REPLICA_TYPES = ("PS", "Worker", "Chief", "Master", "Evaluator")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str) -> ApiException:
    return ApiException(status=status, reason=reason)


class TFJobCluster:
    """The custom objects API of a cluster with the training operator installed."""

    def __init__(self, work: Callable[[dict, dict], None] | None = None,
                 unschedulable: bool = False, installed: bool = True):
        self.work = work
        self.unschedulable = unschedulable
        self.installed = installed
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []  # every job as submitted
        self.deleted: list[str] = []
        self.tf_configs: list[dict[str, Any]] = []  # what the operator set in each worker

    def _check(self, group: str, version: str, plural: str) -> None:
        if not self.installed or (group, version, plural) != ("kubeflow.org", "v1", "tfjobs"):
            raise _error(404, "Not Found")  # no such resource: the CRD is not installed

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **_):
        self._check(group, version, plural)
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise _error(409, "Conflict")
        specs = body["spec"]["tfReplicaSpecs"]
        if not specs or set(specs) - set(REPLICA_TYPES):
            raise _error(422, "Unprocessable Entity")  # the CRD's schema (kubeflow.org_tfjobs)
        job = copy.deepcopy(body)
        job["metadata"].setdefault("namespace", namespace)
        job["status"] = {}
        job["_steps"] = 0
        self.jobs[(namespace, name)] = job
        self.created.append(copy.deepcopy(body))
        return self._public(job)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        self._check(group, version, plural)
        job = self.jobs.get((namespace, name))
        if job is None:
            raise _error(404, "Not Found")
        self._reconcile(job)
        return self._public(job)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        self._check(group, version, plural)
        if self.jobs.pop((namespace, name), None) is None:
            raise _error(404, "Not Found")
        self.deleted.append(name)
        return {"status": "Success"}

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy({k: v for k, v in job.items() if not k.startswith("_")})

    def _set(self, job: dict[str, Any], kind: str, message: str) -> None:
        """setCondition: after Failed nothing changes; the same type is replaced; Succeeded or
        Failed turns Running False."""
        status = job["status"]
        conditions = status.setdefault("conditions", [])
        if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
            return
        kept = []
        for c in conditions:
            if c["type"] == kind or {c["type"], kind} == {"Running", "Restarting"}:
                continue
            if kind in ("Succeeded", "Failed") and c["type"] == "Running":
                c = {**c, "status": "False"}
            kept.append(c)
        kept.append({"type": kind, "status": "True", "reason": f"TFJob{kind}",
                     "message": message, "lastUpdateTime": _now(),
                     "lastTransitionTime": _now()})
        status["conditions"] = kept

    def _tf_config(self, job: dict[str, Any], kind: str, index: int) -> dict[str, Any]:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        cluster = {
            rtype.lower(): [f"{name}-{rtype.lower()}-{i}.{namespace}.svc:2222"
                            for i in range(spec.get("replicas", 1))]
            for rtype, spec in job["spec"]["tfReplicaSpecs"].items()}
        return {"cluster": cluster, "task": {"type": kind.lower(), "index": index},
                "environment": "cloud"}

    def _reconcile(self, job: dict[str, Any]) -> None:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        workers = job["spec"]["tfReplicaSpecs"]["Worker"].get("replicas", 1)
        step = job["_steps"]
        job["_steps"] += 1
        if step == 0:
            self._set(job, "Created", f"TFJob {name} is created.")
            job["status"]["replicaStatuses"] = {"Worker": {}}
            return
        if self.unschedulable:
            return  # pods pending: no replica active, the job stays Created
        replicas = job["status"]["replicaStatuses"]["Worker"]
        if step == 1:
            replicas.update(active=workers)
            self._set(job, "Running", f"TFJob {namespace}/{name} is running.")
            job["status"]["startTime"] = _now()
            return
        if step == 2:
            container = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"][
                "containers"][0]
            configs = [self._tf_config(job, "Worker", i) for i in range(workers)]
            self.tf_configs.extend(configs)
            try:
                assert container["name"] == "tensorflow"  # else no TF_CONFIG is set
                if self.work:
                    self.work(json.loads(container["command"][-1]), configs[0])
            except Exception as exc:  # noqa: BLE001 - the worker's process exits non-zero
                job["_error"] = repr(exc)
                replicas.update(active=workers - 1, failed=1)
                self._set(job, "Failed", f"TFJob {namespace}/{name} has failed because 1 "
                                         "Worker replica(s) failed.")
            else:
                replicas.update(active=0, succeeded=workers)
                self._set(job, "Succeeded", f"TFJob {namespace}/{name} successfully completed.")
            job["status"]["completionTime"] = _now()
