"""A Kubernetes API server with KServe's controllers, in one process, for the rollout's and
infra validation's cluster code: the real ``kubernetes`` client talks HTTP to it.

It serves what that code uses (discovery; GET, LIST by label, server-side apply PATCH and
DELETE of InferenceServices; GET and LIST of Deployments and pods) and, on every request,
moves the simulated cluster one step, as KServe's and Kubernetes' controllers would. Each
behaviour follows the upstream source named beside it (kserve/kserve and kubernetes/kubernetes);
nothing in a status object is made up: its fields are the ones those functions set.

Knobs a test sets: ``broken`` (storage URIs whose download fails), ``unpullable`` (images no
node has), ``address`` (the URL every status reports, so requests reach a local server), and
``steps_to_ready`` (controller steps a new pod takes to become ready).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ISVC_API = "serving.kserve.io/v1beta1"
FINALIZER = "inferenceservice.finalizers"  # controller.go
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # constants.InferenceServicePodLabelKey
COMPONENT_LABEL = "component"  # constants.KServiceComponentLabel
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
STOP_ANNOTATION = "serving.kserve.io/stop"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
# inferenceservice-config's serviceAnnotationDisallowedList defaults
# (config/configmap/inferenceservice.yaml): all other InferenceService annotations reach pods.
DISALLOWED_ANNOTATIONS = frozenset({
    "autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration", "modelFormat"})


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def predictor_service_name(isvc: str, predictor: str | None = None) -> str:
    # constants.PredictorServiceName (pkg/constants/constants.go)
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


def _merge(base: Any, override: Any) -> Any:
    # buildCanaryPredictor merges a canary's predictor over the stable one with
    # mergo.WithOverride: maps merge key by key, anything else set in the canary replaces.
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(override)


def _storage_uri(predictor: dict) -> str | None:
    # GetStorageUri: the model's storageUri, or a custom container's STORAGE_URI variable
    # (pkg/apis/serving/v1beta1/predictor_custom.go).
    if predictor.get("model"):
        return predictor["model"].get("storageUri")
    for container in predictor.get("containers") or []:
        if container.get("name") == "kserve-container":
            for env in container.get("env") or []:
                if env.get("name") == "STORAGE_URI":
                    return env.get("value")
    return None


def _image(predictor: dict) -> str:
    containers = predictor.get("containers") or []
    return containers[0].get("image", "") if containers else "kserve/tensorflow-serving"


class Invalid(Exception):
    """What the API server answers 422 (CRD schema) or the webhook 400 (denied) for."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def validate(isvc: dict) -> None:
    """The checks KServe's CRD schema (config/crd/full/serving.kserve.io_inferenceservices.yaml:
    canary entries require predictor and trafficPercent, a canary's model requires name and
    modelFormat) and its validating webhook (validateCanarySpecs,
    pkg/apis/serving/v1beta1/inference_service_validation.go) make of a canary."""
    spec = isvc.get("spec") or {}
    for i, entry in enumerate(spec.get("canary") or []):
        if "predictor" not in entry or "trafficPercent" not in entry:
            raise Invalid(422, f"spec.canary[{i}]: predictor and trafficPercent are required")
        model = entry["predictor"].get("model")
        if model is not None and not {"name", "modelFormat"} <= set(model):
            raise Invalid(422, f"spec.canary[{i}].predictor.model.name: Required value")
    if spec.get("canary"):
        annotations = (isvc.get("metadata") or {}).get("annotations") or {}
        if annotations.get(MODE_ANNOTATION) != "Standard":
            raise Invalid(400, "admission webhook denied the request: canary is only "
                          "supported in Standard deployment mode")
        stable_name = spec["predictor"].get("name")
        for i, entry in enumerate(spec["canary"]):
            name = entry["predictor"].get("name")
            if not name:
                raise Invalid(400, f"admission webhook denied the request: canary[{i}] "
                              "predictor.name is required")
            if name == stable_name:
                raise Invalid(400, f"admission webhook denied the request: canary "
                              f"predictor.name {name!r} conflicts with stable predictor name")


class KServeCluster(ThreadingHTTPServer):
    """The API server's objects and the controllers that move them, one step per request."""

    def __init__(self, namespace: str = "ctloop-serving"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.namespace = namespace
        self.isvcs: dict[str, dict] = {}
        self.deployments: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.template_history: dict[str, list[str]] = {}  # Deployment -> pod template hashes
        self.applied: list[dict] = []
        self.deleted: list[str] = []
        self.broken: set[str] = set()
        self.unpullable: set[str] = set()
        self.address: str | None = None
        self.steps_to_ready = 1
        self.lock = threading.RLock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    # --- the API server -------------------------------------------------------------------

    def apply(self, body: dict) -> dict:
        """Server-side apply by ctloop, the only manager of the fields it applies: they are
        replaced; what others own (KServe's finalizer, the status, bookkeeping) stays. The
        generation counts spec changes only (CRDs with a status subresource)."""
        validate(body)
        name = body["metadata"]["name"]
        old = self.isvcs.get(name)
        if old is None:
            meta = {**body["metadata"], "generation": 1, "uid": hashlib.sha1(
                f"{name}{len(self.applied)}".encode()).hexdigest()[:12],
                "creationTimestamp": _now(), "resourceVersion": "1"}
            isvc = {"apiVersion": ISVC_API, "kind": "InferenceService", "metadata": meta,
                    "spec": copy.deepcopy(body["spec"])}
        else:
            isvc = copy.deepcopy(old)
            kept = {k: v for k, v in old["metadata"].items()
                    if k in ("generation", "uid", "creationTimestamp", "finalizers",
                             "deletionTimestamp", "resourceVersion")}
            isvc["metadata"] = {**copy.deepcopy(body["metadata"]), **kept}
            if old["spec"] != body["spec"]:
                isvc["metadata"]["generation"] += 1
            isvc["spec"] = copy.deepcopy(body["spec"])
        isvc["metadata"]["resourceVersion"] = str(int(isvc["metadata"]["resourceVersion"]) + 1)
        self.isvcs[name] = isvc
        self.applied.append(copy.deepcopy(body))
        return isvc

    def delete_isvc(self, name: str) -> bool:
        """With a finalizer the object stays, marked, until KServe's controller removes it."""
        isvc = self.isvcs.get(name)
        if isvc is None:
            return False
        self.deleted.append(name)
        if isvc["metadata"].get("finalizers"):
            isvc["metadata"].setdefault("deletionTimestamp", _now())
        else:
            self._remove(name)
        return True

    def _remove(self, name: str) -> None:
        self.isvcs.pop(name, None)
        # The garbage collector deletes what the InferenceService owns (owner references).
        for dep in [d for d, obj in self.deployments.items()
                    if obj["metadata"]["labels"].get(ISVC_LABEL) == name]:
            self._delete_deployment(dep)

    def _delete_deployment(self, name: str) -> None:
        self.deployments.pop(name, None)
        for pod in [p for p, obj in self.pods.items()
                    if obj["metadata"]["labels"].get("app") == f"isvc.{name}"]:
            del self.pods[pod]

    # --- KServe's controller --------------------------------------------------------------

    def step(self) -> None:
        """One pass of every controller over every object."""
        with self.lock:
            for name in list(self.isvcs):
                self._reconcile_isvc(name)
            for name in list(self.deployments):
                self._reconcile_deployment(name)
            for name in list(self.isvcs):
                isvc = self.isvcs[name]
                if not isvc["metadata"].get("deletionTimestamp") and self._mode(isvc) == (
                        "Standard"):
                    self._standard_status(isvc)

    @staticmethod
    def _mode(isvc: dict) -> str:
        mode = isvc["metadata"].get("annotations", {}).get(MODE_ANNOTATION, "Knative")
        return {"RawDeployment": "Standard", "Serverless": "Knative"}.get(mode, mode)

    def _reconcile_isvc(self, name: str) -> None:
        isvc = self.isvcs[name]
        meta = isvc["metadata"]
        # controller.go: the finalizer is added on the first reconcile, and removed (letting the
        # API server delete the object) on the first one after deletion was asked.
        if meta.get("deletionTimestamp"):
            self._remove(name)
            return
        meta.setdefault("finalizers", [FINALIZER])
        if self._mode(isvc) == "Standard":
            self._standard_deployments(isvc)
        else:
            self._knative_status(isvc)

    def _standard_deployments(self, isvc: dict) -> None:
        # components/predictor.go Reconcile: canaries first (reconcileCanaryDeployments), then
        # the stable predictor (reconcileRawDeployment); orphaned predictor Deployments go.
        name, spec = isvc["metadata"]["name"], isvc["spec"]
        stop = isvc["metadata"].get("annotations", {}).get(STOP_ANNOTATION) == "true"
        wanted: dict[str, dict] = {}
        if not stop:
            stable = spec["predictor"]
            for entry in spec.get("canary") or []:
                merged = _merge(stable, entry["predictor"])
                wanted[predictor_service_name(name, entry["predictor"]["name"])] = merged
            wanted[predictor_service_name(name, stable.get("name"))] = stable
        for dep_name, predictor in wanted.items():
            self._apply_deployment(isvc, dep_name, predictor)
        for dep_name in [d for d, obj in self.deployments.items()
                         if obj["metadata"]["labels"].get(ISVC_LABEL) == name
                         and d not in wanted]:
            self._delete_deployment(dep_name)

    def _apply_deployment(self, isvc: dict, dep_name: str, predictor: dict) -> None:
        # buildPredictorResources / buildObjectMeta (components/predictor.go): the pod
        # template's annotations are the InferenceService's (but the disallowed ones), the
        # storage initializer's source URI and the predictor's own; labels the
        # InferenceService's and the predictor's plus KServe's; createRawDefaultDeployment
        # (reconcilers/deployment/deployment_reconciler.go) adds app: isvc.<name>.
        meta = isvc["metadata"]
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if k not in DISALLOWED_ANNOTATIONS}
        uri = _storage_uri(predictor)
        if uri:
            annotations[SOURCE_URI] = uri
        annotations.update(predictor.get("annotations") or {})
        labels = {**(meta.get("labels") or {}), **(predictor.get("labels") or {}),
                  ISVC_LABEL: meta["name"], COMPONENT_LABEL: "predictor",
                  "app": f"isvc.{dep_name}"}
        pod_spec = {k: v for k, v in predictor.items()
                    if k not in ("annotations", "labels", "name", "minReplicas",
                                 "canaryTrafficPercent")}
        template = {"metadata": {"labels": labels, "annotations": annotations},
                    "spec": pod_spec}
        replicas = predictor.get("minReplicas") or 1
        old = self.deployments.get(dep_name)
        if old is None:
            self.deployments[dep_name] = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": dep_name, "namespace": meta["namespace"],
                             "labels": labels, "generation": 1,
                             "creationTimestamp": _now()},
                "spec": {"replicas": replicas, "template": template,
                         "selector": {"matchLabels": {"app": f"isvc.{dep_name}"}}},
                "status": {}}
        elif (old["spec"]["template"], old["spec"]["replicas"]) != (template, replicas):
            old["spec"].update(template=template, replicas=replicas)
            old["metadata"]["generation"] += 1

    # --- Kubernetes' Deployment controller and kubelet ----------------------------------

    @staticmethod
    def _hash(template: dict) -> str:
        return hashlib.sha1(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]

    def _reconcile_deployment(self, name: str) -> None:
        # A changed pod template is a new ReplicaSet: new pods start, the old ones go once the
        # new are available (a rolling update); status as the Deployment controller reports it.
        dep = self.deployments[name]
        template = dep["spec"]["template"]
        current = self._hash(template)
        history = self.template_history.setdefault(name, [])
        if not history or history[-1] != current:
            history.append(current)
        replicas = dep["spec"]["replicas"]
        mine = {p: obj for p, obj in self.pods.items()
                if obj["metadata"]["labels"].get("app") == f"isvc.{name}"}
        new = {p: obj for p, obj in mine.items() if obj["template_hash"] == current}
        for i in range(len(new), replicas):
            pod_name = f"{name}-{current[:8]}-{i}"
            self.pods[pod_name] = self._new_pod(pod_name, template, current)
            new[pod_name] = self.pods[pod_name]
        for pod in new.values():
            self._kubelet(pod)
        ready_new = [p for p in new.values() if p["ready"]]
        if len(ready_new) >= replicas:  # the old ReplicaSet scales down
            for pod in [p for p in mine if p not in new]:
                del self.pods[pod]
        remaining = [p for p in self.pods.values()
                     if p["metadata"]["labels"].get("app") == f"isvc.{name}"]
        available = len([p for p in remaining if p["ready"]])
        complete = len(ready_new) >= replicas and len(remaining) == len(new)
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": len(remaining), "updatedReplicas": len(new),
            "readyReplicas": available, "availableReplicas": available,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available
                 else "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated"}]}

    def _new_pod(self, name: str, template: dict, template_hash: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": dict(template["metadata"]["labels"]),
                             "annotations": dict(template["metadata"]["annotations"])},
                "spec": copy.deepcopy(template["spec"]), "status": {"phase": "Pending"},
                "template_hash": template_hash, "ready": False, "age": 0}

    def _kubelet(self, pod: dict) -> None:
        # Container states as kubelet reports them: an image no node has waits in
        # ImagePullBackOff; a storage initializer that cannot download the model exits with an
        # Error, then waits in CrashLoopBackOff (the states KServe's PropagateModelStatus reads).
        pod["age"] += 1
        uri = pod["metadata"]["annotations"].get(SOURCE_URI)
        image = _image(pod["spec"])
        status: dict[str, Any] = {"phase": "Pending"}
        if uri in self.broken:
            message = f"Failed to download model from {uri}: no SavedModel found"
            status["initContainerStatuses"] = [{
                "name": "storage-initializer", "ready": False, "restartCount": pod["age"],
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off restarting failed container"}}
                if pod["age"] > 1 else {"terminated": {"reason": "Error", "exitCode": 1,
                                                       "message": message}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1,
                                             "message": message}}}]
        elif image in self.unpullable:
            status["containerStatuses"] = [{
                "name": "kserve-container", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff" if pod["age"] > 1
                                      else "ErrImagePull",
                                      "message": f'Back-off pulling image "{image}"'}}}]
        elif pod["age"] > self.steps_to_ready:
            pod["ready"] = True
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"name": "kserve-container", "ready": True,
                                             "state": {"running": {"startedAt": _now()}}}]}
        pod["status"] = status

    # --- KServe's status ----------------------------------------------------------------

    def _standard_status(self, isvc: dict) -> None:
        # PropagateRawStatus (pkg/apis/serving/v1beta1/inference_service_status.go):
        # PredictorReady from the stable Deployment's conditions and observedGeneration copied
        # from it; canaryStatuses and CanaryPredictorReady from each canary Deployment's
        # available replicas (reconcileCanaryDeployments); IngressReady and the address from
        # the raw ingress reconciler (kube_ingress_reconciler.go, ingress creation disabled);
        # modelStatus from the stable pods (PropagateModelStatus); Ready from PredictorReady and
        # IngressReady (the living condition set).
        name, spec = isvc["metadata"]["name"], isvc["spec"]
        status = isvc.setdefault("status", {})
        status["deploymentMode"] = "Standard"
        if isvc["metadata"].get("annotations", {}).get(STOP_ANNOTATION) == "true":
            isvc["status"] = {"deploymentMode": "Standard", "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "Stopped"},
                {"type": "Ready", "status": "False", "reason": "Stopped"},
                {"type": "Stopped", "status": "True"}]}
            return
        stable_name = predictor_service_name(name, spec["predictor"].get("name"))
        stable = self.deployments.get(stable_name)
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if stable is not None and stable.get("status"):
            dep_status = stable["status"]
            by_type = {c["type"]: c for c in dep_status.get("conditions") or []}
            available, progressing = by_type.get("Available"), by_type.get("Progressing")
            predictor = {"type": "PredictorReady", "status": "False"}
            if available and available["status"] == "True":
                predictor = {"type": "PredictorReady", "status": "True",
                             "reason": available["reason"]}
            if progressing and progressing["status"] == "True":
                if progressing["reason"] == "NewReplicaSetAvailable":
                    predictor = {"type": "PredictorReady", "status": "True",
                                 "reason": progressing["reason"]}
                elif predictor["status"] != "True":
                    predictor = {"type": "PredictorReady", "status": "Unknown",
                                 "reason": progressing["reason"]}
            if available and available["status"] == "False":
                predictor = {"type": "PredictorReady", "status": "False",
                             "reason": available["reason"]}
            conditions["PredictorReady"] = predictor
            status["observedGeneration"] = dep_status["observedGeneration"]
        conditions["IngressReady"] = {"type": "IngressReady", "status": "True"}
        if spec.get("canary"):
            statuses = []
            for entry in spec["canary"]:
                dep = self.deployments.get(predictor_service_name(name, entry["predictor"]["name"]))
                ready = bool(dep and (dep.get("status") or {}).get("availableReplicas"))
                statuses.append({"name": entry["predictor"]["name"], "ready": ready,
                                 "trafficPercent": entry["trafficPercent"]})
            status["canaryStatuses"] = statuses
            all_ready = all(s["ready"] for s in statuses)
            conditions["CanaryPredictorReady"] = {
                "type": "CanaryPredictorReady", "status": "True" if all_ready else "False",
                "reason": "AllCanariesReady" if all_ready else "CanariesNotReady"}
        else:
            status.pop("canaryStatuses", None)
            conditions.pop("CanaryPredictorReady", None)
        happy = all(conditions.get(t, {}).get("status") == "True"
                    for t in ("PredictorReady", "IngressReady"))
        conditions["Ready"] = {"type": "Ready", "status": "True" if happy else "False"}
        if not happy:
            conditions["Ready"]["reason"] = "PredictorReady not ready"
        status["conditions"] = list(conditions.values())
        status["modelStatus"] = self._model_status(stable_name)
        status["address"] = {"url": self.address
                             or f"http://{stable_name}.{self.namespace}.svc.cluster.local"}

    def _model_status(self, deployment: str) -> dict:
        pods = [p for p in self.pods.values()
                if p["metadata"]["labels"].get("app") == f"isvc.{deployment}"]
        for pod in pods[:1]:
            for container in pod["status"].get("initContainerStatuses") or []:
                if container["name"] == "storage-initializer":
                    last = container["lastState"]["terminated"]
                    return {"transitionStatus": "BlockedByFailedLoad",
                            "states": {"activeModelState": "", "targetModelState":
                                       "FailedToLoad"},
                            "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                "message": last["message"],
                                                "exitCode": last["exitCode"]}}
        if pods and all(p["ready"] for p in pods):
            return {"transitionStatus": "UpToDate",
                    "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                    "copies": {"failedCopies": 0, "totalCopies": len(pods)}}
        return {"transitionStatus": "InProgress",
                "states": {"activeModelState": "", "targetModelState": "Pending"}}

    def _knative_status(self, isvc: dict) -> None:
        # PropagateStatus (inference_service_status.go): Knative mode copies the Knative
        # Service's observedGeneration, which follows each spec it is given; its traffic lists
        # the latest revision under the "latest" tag when tag routing is on.
        meta, spec = isvc["metadata"], isvc["spec"]
        stop = meta.get("annotations", {}).get(STOP_ANNOTATION) == "true"
        url = self.address or f"http://{meta['name']}.{self.namespace}.svc.cluster.local"
        status: dict[str, Any] = {"observedGeneration": meta["generation"],
                                  "deploymentMode": "Serverless", "address": {"url": url},
                                  "components": {"predictor": {"traffic": [
                                      {"tag": "latest", "latestRevision": True,
                                       "url": url}]}}}
        if stop:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "Stopped"}]
        elif _storage_uri(spec["predictor"]) in self.broken:
            status["conditions"] = [{"type": "Ready", "status": "False",
                                     "reason": "PredictorReady not ready"}]
            status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad",
                                     "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                         "message": "no SavedModel found"}}
        else:
            status["conditions"] = [{"type": "Ready", "status": "True"},
                                    {"type": "PredictorReady", "status": "True"}]
        isvc["status"] = status

    # --- for tests ----------------------------------------------------------------------

    def restarts(self, deployment: str) -> int:
        """How many times a Deployment's pods were replaced by a new pod template."""
        return len(self.template_history.get(deployment, [])) - 1

    def public(self, obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k not in ("template_hash", "ready", "age")}


_DISCOVERY = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.2"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list"]}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "serving.kserve.io",
         "versions": [{"groupVersion": ISVC_API, "version": "v1beta1"}],
         "preferredVersion": {"groupVersion": ISVC_API, "version": "v1beta1"}},
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    f"/apis/{ISVC_API}": {
        "kind": "APIResourceList", "groupVersion": ISVC_API, "resources": [{
            "name": "inferenceservices", "singularName": "inferenceservice", "namespaced": True,
            "kind": "InferenceService", "verbs": ["get", "list", "patch", "delete"]}]},
    "/apis/apps/v1": {"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
        {"name": "deployments", "singularName": "deployment", "namespaced": True,
         "kind": "Deployment", "verbs": ["get", "list"]}]},
}


def _matches(labels: dict, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: KServeCluster

    def reply(self, code: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def status(self, code: int, reason: str, message: str) -> None:
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "code": code, "reason": reason, "message": message})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path in _DISCOVERY:
            return self.reply(200, _DISCOVERY[url.path])
        cluster = self.server
        cluster.step()
        selector = parse_qs(url.query).get("labelSelector", [""])[0]
        parts = url.path.strip("/").split("/")
        at = parts.index("namespaces") if "namespaces" in parts else -1
        if at < 0 or len(parts) < at + 3:
            return self.status(404, "NotFound", f"{url.path} is not served here")
        resource, name = parts[at + 2], (parts[at + 3] if len(parts) > at + 3 else None)
        with cluster.lock:
            store = {"inferenceservices": cluster.isvcs, "deployments": cluster.deployments,
                     "pods": cluster.pods}.get(resource)
            if store is None:
                return self.status(404, "NotFound", f"{resource} are not served here")
            if name is None:
                items = [cluster.public(o) for o in store.values()
                         if _matches(o["metadata"].get("labels") or {}, selector)]
                return self.reply(200, {"kind": "List", "apiVersion": "v1",
                                        "metadata": {}, "items": items})
            obj = store.get(name)
            if obj is None:
                return self.status(404, "NotFound", f"{resource} {name!r} not found")
            return self.reply(200, cluster.public(obj))

    def do_PATCH(self):
        assert self.headers["Content-Type"] == "application/apply-patch+yaml"
        assert "fieldManager=ctloop" in self.path and "force=True" in self.path
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            try:
                isvc = self.server.apply(body)
            except Invalid as exc:
                return self.status(exc.code, "Invalid" if exc.code == 422 else "BadRequest",
                                   str(exc))
            return self.reply(200, isvc)

    def do_DELETE(self):
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        with self.server.lock:
            if not self.server.delete_isvc(name):
                return self.status(404, "NotFound", f"inferenceservices {name!r} not found")
        self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def log_message(self, *args):  # keep pytest's output clean
        pass


def start(tmp_path) -> tuple[KServeCluster, Any]:
    """A running cluster and a ``kubernetes.dynamic.DynamicClient`` on it."""
    from kubernetes import client as k8s
    from kubernetes import dynamic

    cluster = KServeCluster()
    threading.Thread(target=cluster.serve_forever, daemon=True).start()
    configuration = k8s.Configuration()
    configuration.host = cluster.url
    api = dynamic.DynamicClient(k8s.ApiClient(configuration),
                                cache_file=str(tmp_path / "discovery.json"))
    return cluster, api


def stop(cluster: KServeCluster) -> None:
    cluster.shutdown()
    cluster.server_close()
