"""What KServe 0.21's and Kubernetes' controllers report, read: pure functions over the
InferenceService, Deployment and pod objects as the API returns them.

Readiness for the generation written (``readiness`` in Knative mode, ``standard_readiness`` in
Standard mode), failures that waiting will not fix, the versions an InferenceService serves and
canaries, its deployment mode, and where its versions answer (``probe_url``).

What KServe does that this relies on, as its source has it (kserve/kserve):

- Knative mode: ``status.observedGeneration`` is the Knative Service's, which advances with
  each spec it is given (``PropagateStatus``,
  pkg/apis/serving/v1beta1/inference_service_status.go).
- Standard mode: ``status.observedGeneration`` is the stable predictor Deployment's
  (``PropagateRawStatus``, pkg/apis/serving/v1beta1/inference_service_status.go), a counter of
  its own, so readiness is judged on the predictor Deployments themselves (generation,
  observedGeneration, updated and available replicas, as ``kubectl rollout status`` does), on
  their pods (an image that cannot be pulled or a crashing container fails at once), and on the
  InferenceService's conditions. Their pods carry the predictor's annotations, ctloop's version
  among them (``buildPredictorResources``/``buildObjectMeta``,
  pkg/controller/v1beta1/inferenceservice/components/predictor.go). Canaries report in
  ``status.canaryStatuses[]`` (``name``, ``ready``, ``trafficPercent``) and a
  ``CanaryPredictorReady`` condition; a canary gets its ``trafficPercent`` of requests only
  through Gateway API HTTPRoutes (``ingress.enableGatewayApi``); without them it is a dark
  launch that answers only requests sent to its own Service, which is what the probe does.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ctloop.errors import ConfigError
from ctloop.kserve.manifests import (
    MODE_ANNOTATION,
    STOP_ANNOTATION,
    VERSION_ANNOTATION,
    Mode,
    ServiceConfig,
    deployment_name,
)

# Labels and annotations KServe puts on what it creates (pkg/constants/constants.go).
ISVC_LABEL = "serving.kserve.io/inferenceservice"
POD_APP_LABEL = "app"  # "isvc.<deployment name>" on each predictor Deployment's pods
STORAGE_INITIALIZER = "storage-initializer"
# Status reasons no amount of waiting fixes: a bad image, a crashing or unloadable model, a spec
# KServe refuses, a Deployment past its progress deadline.
TERMINAL_REASONS = frozenset({
    "RevisionFailed", "RevisionMissing", "ContainerMissing", "ContainerCannotRun",
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
    "CreateContainerConfigError", "ProgressDeadlineExceeded", "FailedCreate", "Stopped",
})
_TERMINAL_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
# A pod's container waiting for one of these will not start by waiting longer: no image (kind
# pulls nothing it was not given), a container that keeps crashing, a bad spec. ErrImagePull is
# left out: kubelet reports it for a pull that fails once, then ImagePullBackOff.
TERMINAL_POD_REASONS = frozenset({
    "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError",
})
# What Kubernetes' own rollout status checks say a Deployment cannot get past.
_DEPLOYMENT_FAILURES = {("Progressing", "False"): "ProgressDeadlineExceeded",
                        ("ReplicaFailure", "True"): None}
# KServe's deployment mode names (0.21's and the legacy ones) in status and annotation.
_MODE_NAMES = {"Standard": Mode.STANDARD, "RawDeployment": Mode.STANDARD,
               "Knative": Mode.KNATIVE, "Serverless": Mode.KNATIVE}


# KServe's Standard mode routes a canary's trafficPercent only through Gateway API HTTPRoutes
# (applyCanaryWeights, pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
# httproute_reconciler.go); its Ingress and the InferenceService's own Service send everything
# to the stable predictor.
STANDARD_CANARY_TRAFFIC = (
    "dark launch unless the cluster routes through Gateway API HTTPRoutes: KServe's Standard "
    "mode gives a canary its share of requests only there (on the kind cluster of `make "
    "kind-up` there are none), so it was judged on the probe's requests to its own Service")


class State(str, enum.Enum):
    """Readiness states."""

    READY = "READY"
    PENDING = "PENDING"
    FAILED = "FAILED"


@dataclasses.dataclass(frozen=True)
class Readiness:
    """Where an InferenceService is, for the generation written: READY, PENDING or FAILED."""

    state: State
    reason: str = ""


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` (a message from the cluster or a server) on one line, cut to ``limit``."""
    text = " ".join(str(text or "").split())  # container messages span lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(condition: dict[str, Any]) -> str:
    parts = [condition.get("reason") or "", condition.get("message") or ""]
    return one_line(": ".join(part for part in parts if part))


def mode_of(isvc: dict[str, Any]) -> Mode | None:
    """The deployment mode KServe runs ``isvc`` in (status first, then the annotation)."""
    name = ((isvc.get("status") or {}).get("deploymentMode")
            or ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION))
    return _MODE_NAMES.get(name or "")


def check_mode(existing: dict[str, Any] | None, config: ServiceConfig) -> None:
    """Raises ConfigError if ``existing`` runs in another mode: KServe refuses to change it."""
    mode = mode_of(existing) if existing else None
    if mode is not None and mode is not config.mode:
        raise ConfigError(
            f"InferenceService {config.namespace}/{config.name} runs in {mode.value} mode, not "
            f"{config.mode.value}: KServe cannot change an existing service's mode; pass mode "
            f"{mode.value!r} or delete the InferenceService first")


def serves_nothing(isvc: dict[str, Any] | None) -> bool:
    """Whether ``isvc`` serves no traffic: absent, or stopped (KServe's stop annotation)."""
    annotations = ((isvc or {}).get("metadata") or {}).get("annotations") or {}
    return isvc is None or annotations.get(STOP_ANNOTATION) == "true"


def _annotated_version(meta: dict[str, Any] | None) -> int | None:
    """The registry version in ``meta``'s annotations (a predictor spec's, or a pod template's
    metadata), or None."""
    value = ((meta or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
    return int(value) if value and str(value).isdigit() else None


def _template_version(deployment: dict[str, Any]) -> int | None:
    return _annotated_version(
        ((deployment.get("spec") or {}).get("template") or {}).get("metadata"))


def serving_version(isvc: dict[str, Any] | None) -> int | None:
    """The registry version ``isvc`` serves to its stable traffic, as its spec says; None if
    unknown. A Knative canary in progress (0 < ``canaryTrafficPercent`` < 100) leaves the rest
    to the last rolled-out revision, whose spec the object no longer holds."""
    spec = ((isvc or {}).get("spec") or {}).get("predictor") or {}
    if 0 < (spec.get("canaryTrafficPercent") or 0) < 100:
        return None
    return _annotated_version(spec)


def canary_version(isvc: dict[str, Any] | None) -> int | None:
    """The registry version of ``isvc``'s canary, if it has one."""
    spec = (isvc or {}).get("spec") or {}
    if spec.get("canary"):
        return _annotated_version(spec["canary"][0].get("predictor"))
    if (spec.get("predictor") or {}).get("canaryTrafficPercent") is not None:
        return _annotated_version(spec["predictor"])
    return None


def readiness(isvc: dict[str, Any], written_generation: int) -> Readiness:
    """Knative mode: how far ``isvc`` (as the API returns it) is in serving the generation
    written.

    READY needs the ``Ready`` condition True **and** ``status.observedGeneration`` >= the
    generation written: a Ready status from before the write says nothing about it. (KServe
    copies the Knative Service's observedGeneration, which advances with each spec it is given;
    ``PropagateStatus``, pkg/apis/serving/v1beta1/inference_service_status.go. Standard mode
    copies a Deployment's instead: see ``standard_readiness``.)

    FAILED: the status is for the generation written and says waiting will not help: the model
    failed to load (``modelStatus.transitionStatus``, with ``lastFailureInfo``), or a condition
    is False for a reason in ``TERMINAL_REASONS``.
    """
    status = isvc.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if not conditions:
        return Readiness(State.PENDING, "no status yet: KServe has not reconciled it")
    observed = status.get("observedGeneration") or 0
    if observed < written_generation:
        return Readiness(State.PENDING, f"status is for generation {observed}, waiting for "
                         f"{written_generation}")
    failed = _isvc_failure(status, conditions)
    if failed:
        return failed
    return _ready_condition(conditions)


def _isvc_failure(status: dict[str, Any], conditions: dict[str, Any]) -> Readiness | None:
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in _TERMINAL_TRANSITIONS:
        failure = model.get("lastFailureInfo") or {}
        exit_code = f" (exit code {failure['exitCode']})" if failure.get("exitCode") else ""
        return Readiness(State.FAILED, one_line(
            f"model {model['transitionStatus']}: {failure.get('reason') or 'no reason given'}"
            f"{exit_code}: {failure.get('message') or 'no message'}"))
    for kind in ("Ready", "PredictorReady", "CanaryPredictorReady"):
        condition = conditions.get(kind) or {}
        if condition.get("status") == "False" and condition.get("reason") in TERMINAL_REASONS:
            return Readiness(State.FAILED, f"{kind} False: {_describe(condition)}")
    return None


def _ready_condition(conditions: dict[str, Any]) -> Readiness:
    ready = conditions.get("Ready") or {}
    if ready.get("status") != "True":
        return Readiness(State.PENDING, f"Ready {ready.get('status', 'not reported')}: "
                         f"{_describe(ready) or 'no reason given yet'}")
    return Readiness(State.READY)


def expected_deployments(manifest: dict[str, Any]) -> dict[str, int | None]:
    """Standard mode: the predictor Deployments KServe runs for ``manifest``, by name, each with
    the registry version its pods must serve (None: not annotated, e.g. a candidate)."""
    name, spec = manifest["metadata"]["name"], manifest["spec"]
    stable = spec["predictor"]
    wanted = {deployment_name(name, stable.get("name")): _annotated_version(stable)}
    for entry in spec.get("canary") or []:
        wanted[deployment_name(name, entry["predictor"]["name"])] = _annotated_version(
            entry["predictor"])
    return wanted


def pod_failure(pods: list[dict[str, Any]]) -> str | None:
    """Why ``pods`` will not become ready by waiting, or None: a container (the storage
    initializer included) waiting for a reason in ``TERMINAL_POD_REASONS``, or the storage
    initializer ended with an error (KServe's ``PropagateModelStatus`` reads the same states as
    a model that failed to load)."""
    for pod in pods:
        status = pod.get("status") or {}
        where = (pod.get("metadata") or {}).get("name", "a pod")
        for container in [*(status.get("initContainerStatuses") or []),
                          *(status.get("containerStatuses") or [])]:
            state = container.get("state") or {}
            waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
            last = ((container.get("lastState") or {}).get("terminated") or {})
            stuck = waiting.get("reason") in TERMINAL_POD_REASONS
            if container.get("name") == STORAGE_INITIALIZER and (
                    ended.get("reason") == "Error" or stuck):
                how = (f"exit code {ended.get('exitCode')}" if ended else waiting["reason"])
                detail = ended.get("message") or last.get("message") or "no message"
                return one_line(f"pod {where}: the model could not be downloaded "
                                 f"({STORAGE_INITIALIZER} {how}): {detail}")
            if waiting.get("reason") in TERMINAL_POD_REASONS:
                detail = last.get("message") or waiting.get("message") or ""
                return one_line(f"pod {where}: container {container.get('name')} "
                                 f"{waiting['reason']}" + (f": {detail}" if detail else ""))
    return None


def _rollout_progress(name: str, deployment: dict[str, Any]) -> Readiness | None:
    """What ``kubectl rollout status`` would say of a Deployment: None once rolled out."""
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    status = deployment.get("status") or {}
    for condition in status.get("conditions") or []:
        key = (condition.get("type"), condition.get("status"))
        if key in _DEPLOYMENT_FAILURES and _DEPLOYMENT_FAILURES[key] in (
                None, condition.get("reason")):
            return Readiness(State.FAILED, f"Deployment {name} {condition['type']} "
                             f"{condition['status']}: {_describe(condition)}")
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return Readiness(State.PENDING, f"Deployment {name}: its controller has not seen "
                         f"generation {meta.get('generation')} yet")
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    if updated < wanted:
        return Readiness(State.PENDING, f"Deployment {name}: {updated} of {wanted} new pods "
                         "updated")
    if (status.get("replicas") or 0) > updated:
        return Readiness(State.PENDING, f"Deployment {name}: "
                         f"{status['replicas'] - updated} old pods still terminating")
    if (status.get("availableReplicas") or 0) < updated:
        return Readiness(State.PENDING, f"Deployment {name}: "
                         f"{status.get('availableReplicas') or 0} of {updated} new pods "
                         "available")
    return None


def standard_readiness(isvc: dict[str, Any], expected: dict[str, int | None],
                       deployments: dict[str, dict[str, Any]], pods: list[dict[str, Any]]
                       ) -> Readiness:
    """Standard mode: how far ``isvc`` is in serving what was written, judged on what KServe
    really reports there.

    ``status.observedGeneration`` is not compared: KServe copies it from the stable predictor
    Deployment (``PropagateRawStatus``, pkg/apis/serving/v1beta1/inference_service_status.go),
    whose counter has nothing to do with the InferenceService's. Instead every Deployment in
    ``expected`` (``expected_deployments`` of the manifest written) must exist with pods of the
    version written (``VERSION_ANNOTATION``, copied into the pod template from the predictor's
    annotations) and be rolled out (generation observed, every replica updated and available,
    no old pod left); then the InferenceService's ``Ready`` and, with canaries,
    ``CanaryPredictorReady`` and each ``canaryStatuses`` entry must say so too.

    FAILED: a pod of the version written is stuck (``pod_failure``: no image, a crashing
    container, a model that cannot be downloaded), a Deployment is past its progress deadline
    or cannot create pods, or the InferenceService reports a terminal failure.

    Args:
        isvc: The InferenceService as read.
        expected: Deployment name -> registry version its pods must serve.
        deployments: The InferenceService's Deployments as read, by name.
        pods: Its pods as read (label ``serving.kserve.io/inferenceservice``).
    """
    status = isvc.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if not conditions:
        return Readiness(State.PENDING, "no status yet: KServe has not reconciled it")
    for name, version in expected.items():
        deployment = deployments.get(name)
        if deployment is None:
            return Readiness(State.PENDING, f"Deployment {name} not created yet")
        if version is not None and _template_version(deployment) != version:
            return Readiness(State.PENDING, f"Deployment {name} still runs version "
                             f"{_template_version(deployment)}, waiting for {version}")
        mine = [p for p in pods
                if ((p.get("metadata") or {}).get("labels") or {}).get(POD_APP_LABEL)
                == f"isvc.{name}"
                and (version is None or str(version) == ((p.get("metadata") or {}).get(
                    "annotations") or {}).get(VERSION_ANNOTATION))]
        stuck = pod_failure(mine)
        if stuck:
            return Readiness(State.FAILED, stuck)
        progress = _rollout_progress(name, deployment)
        if progress:
            return progress
    failed = _isvc_failure(status, conditions)
    if failed:
        return failed
    ready = _ready_condition(conditions)
    if ready.state is not State.READY:
        return ready
    canaries = [name for name in expected if name != next(iter(expected))]
    if canaries:
        canary_ready = conditions.get("CanaryPredictorReady") or {}
        ready_names = {deployment_name(isvc["metadata"]["name"], s.get("name"))
                       for s in status.get("canaryStatuses") or [] if s.get("ready")}
        waiting = [name for name in canaries if name not in ready_names]
        if canary_ready.get("status") != "True" or waiting:
            who = f"canary {', '.join(waiting)}" if waiting else "canaries"
            return Readiness(State.PENDING, f"{who} not ready: "
                             f"{_describe(canary_ready) or 'not reported yet'}")
    return Readiness(State.READY)


def probe_url(isvc: dict[str, Any], canary: bool) -> str | None:
    """Where to send the probe: the canary alone, or the whole service (None: not known yet).

    Standard canary: its own Service (``<isvc>-<name>-predictor``, port 80), so the probe sees
    only the canary whatever the traffic split. Knative canary: the ``latest`` tag's URL (tag
    routing is on in ctloop's manifests). Otherwise ``status.address.url`` (in-cluster), else
    ``status.url``.
    """
    status = isvc.get("status") or {}
    if canary and mode_of(isvc) is Mode.STANDARD:
        canaries = (isvc.get("spec") or {}).get("canary") or []
        if not canaries:
            return None
        meta = isvc["metadata"]
        service = deployment_name(meta["name"], canaries[0]["predictor"]["name"])
        return f"http://{service}.{meta['namespace']}.svc.cluster.local"
    if canary:
        traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
        return next((t.get("url") for t in traffic if t.get("tag") == "latest"), None)
    return (status.get("address") or {}).get("url") or status.get("url")
