"""Rollout target ``kserve``: a model version as a KServe 0.21 InferenceService, canary first.

Decisions are pure functions over plain dicts, as the Kubernetes API returns them (the manifest,
readiness, the canary verdict, what an apply changes); a thin layer talks to the API server with
the real ``kubernetes`` client, and ``rollout`` strings them together. The removed KFP KServe
component reported success while pods failed, raced on status and "applied" by create-then-update
on any error; here an apply is one server-side apply, readiness counts only for the generation
written, and a version serves all traffic only after a probe of its own answers passed.

KServe's two deployment modes canary differently (kserve 0.21's Python models,
``kserve.models``):

- ``Knative`` (formerly Serverless): ``spec.predictor.canaryTrafficPercent`` sends that share to
  the latest revision; KServe keeps the last fully rolled-out revision for the rest
  (``V1beta1PredictorSpec.canary_traffic_percent``).
- ``Standard`` (formerly RawDeployment): ``spec.canary`` is a list of ``V1beta1CanarySpec``
  (``predictor``, required, a full ``V1beta1PredictorSpec`` whose ``name`` is required there, and
  ``trafficPercent``, 0-100); each runs as its own Deployment and Service
  ``<isvc>-<name>-predictor``. Promotion sets ``spec.predictor.name`` to the canary's name and
  drops the entry, so the canary's pods take over without a restart; status reports
  ``status.canaryStatuses[]`` (``name``, ``ready``, ``trafficPercent``) and a
  ``CanaryPredictorReady`` condition. A canary gets its ``trafficPercent`` of requests only
  through Gateway API HTTPRoutes (``ingress.enableGatewayApi``); without them it is a dark
  launch that answers only requests sent to its own Service, which is what the probe does.

What KServe does that this module relies on, as its source has it (kserve/kserve):

- Standard mode: ``status.observedGeneration`` is the stable predictor Deployment's
  (``PropagateRawStatus``, pkg/apis/serving/v1beta1/inference_service_status.go), a counter of
  its own, so readiness is judged on the predictor Deployments themselves (generation,
  observedGeneration, updated and available replicas, as ``kubectl rollout status`` does), on
  their pods (an image that cannot be pulled or a crashing container fails at once), and on the
  InferenceService's conditions.
- InferenceService labels and annotations (but for a short disallowed list) are copied into
  every predictor Deployment's pod template (``buildPredictorResources``/``buildObjectMeta``,
  pkg/controller/v1beta1/inferenceservice/components/predictor.go): a changed annotation
  restarts pods. ctloop's bookkeeping (which registry version a predictor serves) is therefore a
  ``spec.predictor.annotations`` entry, which reaches only that predictor's own Deployment and
  changes only when its model does.
- Deleting an InferenceService waits for KServe's finalizer (``inferenceservice.finalizers``,
  pkg/controller/v1beta1/inferenceservice/controller.go): the object lingers while it goes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import enum
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ctloop.errors import ClusterError, ConfigError, CtloopError
from ctloop.kfp.images import SERVING_IMAGE
from ctloop.registry import validate_model_name
from ctloop.serving import client
from ctloop.serving.canary import CanarySLO, ProbeStats, verdict

if TYPE_CHECKING:
    from kubernetes.dynamic import DynamicClient

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
FIELD_MANAGER = "ctloop"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "ctloop/role"
# The registry version a predictor serves, in that predictor's own ``annotations`` (never the
# InferenceService's, which KServe copies into every predictor's pods).
VERSION_ANNOTATION = "ctloop/model-version"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
STOP_ANNOTATION = "serving.kserve.io/stop"
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the model
CONTAINER_NAME = "kserve-container"  # the container KServe's custom predictor attaches storage to
SERVING_PORT = 8080
# Labels and annotations KServe puts on what it creates (pkg/constants/constants.go).
ISVC_LABEL = "serving.kserve.io/inferenceservice"
POD_APP_LABEL = "app"  # "isvc.<deployment name>" on each predictor Deployment's pods
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
STORAGE_INITIALIZER = "storage-initializer"
DNS_LABEL_MAX = 63  # a Deployment's and Service's name: "<isvc>[-<predictor name>]-predictor"
MAX_VERSION_DIGITS = 6  # canary predictors are named v<version>

# What ctloop writes to metadata: only these keys are compared, restored and owned.
_OWNED_LABELS = (MANAGED_BY_LABEL, NAME_LABEL)
_OWNED_ANNOTATIONS = (MODE_ANNOTATION, TAG_ROUTING_ANNOTATION, STOP_ANNOTATION)
# Fields ctloop sets in some applies and leaves out of others (server-side apply then removes
# them): on the cluster but not in the desired manifest is a difference, not a server default.
_DROPPABLE = (("spec", "canary"), ("spec", "predictor", "canaryTrafficPercent"),
              ("spec", "predictor", "name"))
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
_ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's IsvcNameFmt
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_STORAGE_SCHEMES = {"minio": "s3", "s3": "s3", "gs": "gs"}  # KFP's MinIO store speaks S3


# KServe's Standard mode routes a canary's trafficPercent only through Gateway API HTTPRoutes
# (applyCanaryWeights, pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
# httproute_reconciler.go); its Ingress and the InferenceService's own Service send everything
# to the stable predictor.
STANDARD_CANARY_TRAFFIC = (
    "dark launch unless the cluster routes through Gateway API HTTPRoutes: KServe's Standard "
    "mode gives a canary its share of requests only there (on the kind cluster of `make "
    "kind-up` there are none), so it was judged on the probe's requests to its own Service")


class Mode(str, enum.Enum):
    """KServe's deployment mode (0.21 names; the legacy names are read too)."""

    STANDARD = "Standard"
    KNATIVE = "Knative"


_MODE_NAMES = {"Standard": Mode.STANDARD, "RawDeployment": Mode.STANDARD,
               "Knative": Mode.KNATIVE, "Serverless": Mode.KNATIVE}


class Runtime(str, enum.Enum):
    """What runs the model: KServe's TensorFlow Serving runtime, or ``ctloop serve``."""

    TENSORFLOW = "tensorflow"
    CTLOOP = "ctloop"


def _enum(kind: type[enum.Enum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError as exc:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ConfigError(f"{what} {value!r} is not supported: use one of {choices}") from exc


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory of the predictor container, as Kubernetes quantities."""

    cpu_request: str = "500m"
    cpu_limit: str = "1"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _QUANTITY.match(str(value)):
                raise ConfigError(f"{field.name} {value!r} is not a Kubernetes quantity: use "
                                  "e.g. '500m' or '1' for CPU, '512Mi' or '2Gi' for memory")

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Where and how a model serves; the same for every version.

    Attributes:
        name: The InferenceService's name, also the model name in request paths
            (``/v1/models/<name>:predict``); a DNS-1123 label starting with a letter.
        namespace: Its namespace: not KFP's, where KServe injects no storage initializer.
        mode: ``Standard`` or ``Knative``; KServe cannot change it on an existing service.
        runtime: ``tensorflow`` (TF Serving, which loads ``<storageUri>/<number>/``, so the URI
            must name a folder of numbered SavedModel versions) or ``ctloop`` (``ctloop serve``
            on the model artifact as the train component writes it).
        service_account: The ServiceAccount whose Secret holds the object store's credentials
            and ``serving.kserve.io/s3-endpoint`` annotations (manifests/base/storage.yaml).
        resources: The predictor's CPU and memory.
        image: The serving image for the ``ctloop`` runtime.
    """

    name: str
    namespace: str = "ctloop-serving"
    service_account: str = "ctloop-storage"
    mode: Mode = Mode.STANDARD
    runtime: Runtime = Runtime.CTLOOP
    resources: Resources = Resources()
    image: str = SERVING_IMAGE

    def __post_init__(self):
        validate_model_name(self.name)
        if not _ISVC_NAME.match(self.name):
            raise ConfigError(f"InferenceService name {self.name!r} is invalid: KServe needs it "
                              "to start with a letter (e.g. 'churn-model')")
        longest = len(deployment_name(self.name, canary_name(10 ** MAX_VERSION_DIGITS - 1)))
        if longest > DNS_LABEL_MAX:
            raise ConfigError(
                f"InferenceService name {self.name!r} is too long ({len(self.name)} characters): "
                f"KServe names a canary's Deployment '<name>-v<version>-predictor', which must "
                f"fit {DNS_LABEL_MAX} characters; use at most "
                f"{len(self.name) - (longest - DNS_LABEL_MAX)}")
        for what, value in (("namespace", self.namespace),
                            ("service account", self.service_account)):
            if not _ISVC_NAME.match(value or "") or len(value) > 63:
                raise ConfigError(f"{what} {value!r} is invalid: use a DNS-1123 label "
                                  "(lowercase letters, digits, '-')")
        # KFP hands parameters over as strings.
        object.__setattr__(self, "mode", _enum(Mode, self.mode, "deployment mode"))
        object.__setattr__(self, "runtime", _enum(Runtime, self.runtime, "runtime"))
        if not self.image:
            raise ConfigError("serving image is empty: pass the ctloop serving image")


def storage_uri(artifact_uri: str) -> str:
    """The URI KServe's storage initializer downloads ``artifact_uri`` from.

    KFP's artifact store is MinIO (SeaweedFS from KFP 2.15) behind the S3 protocol, so
    ``minio://bucket/key`` becomes ``s3://bucket/key``; ``s3://`` and ``gs://`` stay as they are.

    Raises:
        ConfigError: Any other URI (a local path, ``file://``, no bucket).
    """
    scheme, sep, rest = (artifact_uri or "").partition("://")
    if not sep or scheme not in _STORAGE_SCHEMES or not rest.split("/", 1)[0]:
        raise ConfigError(
            f"model artifact URI {artifact_uri!r} cannot be served by KServe: use an object-store "
            "URI with a bucket (minio://, s3:// or gs://), e.g. the model artifact of a KFP run")
    return f"{_STORAGE_SCHEMES[scheme]}://{rest}"


def canary_name(version: int) -> str:
    """The predictor variant name of ``version`` in Standard mode (its Deployment's infix)."""
    return f"v{version}"


def deployment_name(isvc_name: str, predictor_name: str | None = None) -> str:
    """The name KServe gives a predictor's Deployment and Service in Standard mode
    (``constants.PredictorServiceName``)."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else (
        f"{isvc_name}-predictor")


def predictor(config: ServiceConfig, artifact_uri: str, version: int | None = None
              ) -> dict[str, Any]:
    """The predictor spec serving the model at ``artifact_uri`` with ``config``'s runtime;
    annotated with the registry ``version`` it serves, if given."""
    uri = storage_uri(artifact_uri)
    resources = config.resources.as_dict()
    spec: dict[str, Any] = {"serviceAccountName": config.service_account}
    if version is not None:
        spec["annotations"] = {VERSION_ANNOTATION: str(version)}
    if config.runtime is Runtime.TENSORFLOW:
        # KServe's CRD requires the model container's name inside spec.canary[] (not in
        # spec.predictor); the same name everywhere keeps promotion a plain move.
        return {**spec, "model": {"name": CONTAINER_NAME, "modelFormat": {"name": "tensorflow"},
                                  "storageUri": uri, "resources": resources}}
    return {
        **spec,
        "containers": [{
            "name": CONTAINER_NAME,
            "image": config.image,
            "command": ["ctloop", "serve"],
            "args": ["--model-dir", MODEL_MOUNT, "--model-name", config.name,
                     "--port", str(SERVING_PORT)],
            # KServe's custom predictor: STORAGE_URI makes the storage initializer download the
            # model into MODEL_MOUNT before the container starts.
            "env": [{"name": "STORAGE_URI", "value": uri}],
            "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}],
            "resources": resources,
        }],
    }


def _runtime_of(spec: dict[str, Any]) -> Runtime:
    return Runtime.CTLOOP if spec.get("containers") else Runtime.TENSORFLOW


def _predictor_version(spec: dict[str, Any] | None) -> int | None:
    value = ((spec or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
    return int(value) if value and str(value).isdigit() else None


def serving_version(isvc: dict[str, Any] | None) -> int | None:
    """The registry version ``isvc`` serves to its stable traffic, as its spec says; None if
    unknown. A Knative canary in progress (0 < ``canaryTrafficPercent`` < 100) leaves the rest
    to the last rolled-out revision, whose spec the object no longer holds."""
    spec = ((isvc or {}).get("spec") or {}).get("predictor") or {}
    if 0 < (spec.get("canaryTrafficPercent") or 0) < 100:
        return None
    return _predictor_version(spec)


def canary_version(isvc: dict[str, Any] | None) -> int | None:
    """The registry version of ``isvc``'s canary, if it has one."""
    spec = (isvc or {}).get("spec") or {}
    if spec.get("canary"):
        return _predictor_version(spec["canary"][0].get("predictor"))
    if (spec.get("predictor") or {}).get("canaryTrafficPercent") is not None:
        return _predictor_version(spec["predictor"])
    return None


def inference_service(config: ServiceConfig, version: int, artifact_uri: str, *,
                      canary_percent: int | None = None,
                      stable: dict[str, Any] | None = None) -> dict[str, Any]:
    """The InferenceService manifest serving registry ``version`` of the model.

    Args:
        config: Where and how the model serves.
        version: The registry version of the model (annotated, and the canary's name).
        artifact_uri: The model artifact (KFP's ``minio://``, or ``s3://``/``gs://``).
        canary_percent: None: ``version`` takes all traffic. 1-100: it takes this share as a
            canary next to ``stable`` (Knative: ``canaryTrafficPercent``, KServe keeps the last
            rolled-out revision; Standard: a ``spec.canary`` entry named ``v<version>`` beside
            ``stable``'s predictor, which keeps serving unchanged).
        stable: The InferenceService serving now, as read from the cluster; required for a
            canary. Without a canary, in Standard mode, its predictor name is kept: renaming
            it would make KServe delete the serving Deployment before the new one is ready,
            where keeping it makes the change a rolling update.

    Returns:
        The manifest as a dict (apiVersion, kind, metadata, spec).

    Raises:
        ConfigError: A bad version, percent, artifact URI, or a canary KServe cannot run (no
            stable service, a Standard-mode canary on another runtime than the stable one).
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"model version {version!r} is invalid: use the registry version (>= 1)")
    annotations = {MODE_ANNOTATION: config.mode.value}
    if config.mode is Mode.KNATIVE:
        # Tag routing gives the latest revision its own URL, so the canary can be probed alone.
        annotations[TAG_ROUTING_ANNOTATION] = "true"
    new = predictor(config, artifact_uri, version)
    stable_predictor = copy.deepcopy(((stable or {}).get("spec") or {}).get("predictor") or {})
    spec: dict[str, Any] = {"predictor": new}
    if canary_percent is not None:
        if isinstance(canary_percent, bool) or not 1 <= canary_percent <= 100:
            raise ConfigError(f"canary percent {canary_percent!r} is out of range: use 1..100")
        if not stable_predictor:
            raise ConfigError(
                f"a canary of {config.name!r} needs the InferenceService serving now (stable); "
                "deploy the first version without a canary")
        if config.mode is Mode.KNATIVE:
            new["canaryTrafficPercent"] = canary_percent
        else:
            if _runtime_of(stable_predictor) is not config.runtime:
                # KServe builds the canary by merging its predictor over the stable one, so two
                # runtimes would end up in one pod spec.
                raise ConfigError(
                    f"runtime {config.runtime.value!r} differs from the serving predictor's "
                    f"({_runtime_of(stable_predictor).value!r}): a Standard-mode canary must use "
                    "the same runtime; switch runtimes without a canary")
            if stable_predictor.get("name") == canary_name(version):
                # KServe's webhook refuses a canary named like the stable predictor.
                raise ConfigError(
                    f"the serving predictor of {config.name!r} is already named "
                    f"{canary_name(version)!r}: deploy version {version} without a canary")
            spec = {"predictor": stable_predictor,
                    "canary": [{"trafficPercent": canary_percent,
                                "predictor": {"name": canary_name(version), **new}}]}
    elif config.mode is Mode.STANDARD and stable_predictor.get("name"):
        spec = {"predictor": {"name": stable_predictor["name"], **new}}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": config.name,
            "namespace": config.namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER, NAME_LABEL: config.name},
            "annotations": annotations,
        },
        "spec": spec,
    }


CANDIDATE_ROLE = "infra-validation"
_TOKEN = re.compile(r"^[a-z0-9]{1,8}$")


def candidate_name(name: str, token: str) -> str:
    """The name of one run's short-lived infra-validation InferenceService of model ``name``:
    ``<name>-infra-<token>``, the model's name shortened so that it stays a valid serving name
    (``ServiceConfig``). Unique per run: two runs of one model never probe, replace or delete
    each other's candidate, and a run never waits on a predecessor's that is still going.

    Raises:
        ConfigError: ``token`` is not 1-8 lowercase letters or digits.
    """
    if not _TOKEN.match(token or ""):
        raise ConfigError(f"candidate token {token!r} is invalid: use 1-8 lowercase letters or "
                          "digits, e.g. a few hex digits of a UUID")
    keep = 45 - len(f"-infra-{token}")  # ServiceConfig's limit for a name that canaries
    return f"{name[:keep].rstrip('-')}-infra-{token}"


def candidate_service(config: ServiceConfig, artifact_uri: str, token: str) -> dict[str, Any]:
    """A short-lived InferenceService serving the candidate alone, for infra validation.

    Named ``candidate_name(config.name, token)`` (also its model name in request paths), beside
    the serving one and never taking its traffic; ``config``'s mode, runtime, resources and
    credentials, so it is tested as it would serve.

    Raises:
        ConfigError: A bad token or artifact URI.
    """
    candidate = dataclasses.replace(config, name=candidate_name(config.name, token))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": candidate.name,
            "namespace": candidate.namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER, NAME_LABEL: config.name,
                       ROLE_LABEL: CANDIDATE_ROLE},
            "annotations": {MODE_ANNOTATION: candidate.mode.value},
        },
        "spec": {"predictor": predictor(candidate, artifact_uri)},
    }


def promoted(canary_manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest after promoting the canary of ``canary_manifest`` to all traffic.

    Knative: ``canaryTrafficPercent`` goes (server-side apply removes it), so the latest
    revision takes 100%. Standard: the canary's predictor, with its name, becomes
    ``spec.predictor`` and the canary list goes, so its Deployment keeps running.
    """
    manifest = copy.deepcopy(canary_manifest)
    canaries = manifest["spec"].pop("canary", None)
    if canaries:
        manifest["spec"]["predictor"] = canaries[0]["predictor"]
    else:
        manifest["spec"]["predictor"].pop("canaryTrafficPercent", None)
    return manifest


def restore(previous: dict[str, Any], *, pin_traffic: bool = False) -> dict[str, Any]:
    """The manifest that puts ``previous`` (an InferenceService as read) back.

    Its whole spec, and the metadata keys ctloop writes; status and server bookkeeping are left
    out. ``pin_traffic`` (Knative, after a canary): ``canaryTrafficPercent: 0``, which routes all
    traffic to the last rolled-out revision at once. Without it Knative would send everything to
    its latest *ready* revision, the rejected canary, until the restored revision is ready.
    """
    meta = previous["metadata"]
    spec = copy.deepcopy(previous["spec"])
    if pin_traffic:
        spec["predictor"]["canaryTrafficPercent"] = 0
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": _pick(meta.get("labels"), _OWNED_LABELS),
            "annotations": _pick(meta.get("annotations"), _OWNED_ANNOTATIONS),
        },
        "spec": spec,
    }


def stopped(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with KServe's stop annotation: its pods go, the InferenceService stays."""
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["annotations"][STOP_ANNOTATION] = "true"
    return manifest


def _serves_nothing(isvc: dict[str, Any] | None) -> bool:
    annotations = ((isvc or {}).get("metadata") or {}).get("annotations") or {}
    return isvc is None or annotations.get(STOP_ANNOTATION) == "true"


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


# --- decisions over recorded objects -------------------------------------------------------


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


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text or "").split())  # container messages span lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(condition: dict[str, Any]) -> str:
    parts = [condition.get("reason") or "", condition.get("message") or ""]
    return _one_line(": ".join(part for part in parts if part))


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
        return Readiness(State.FAILED, _one_line(
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
    wanted = {deployment_name(name, stable.get("name")): _predictor_version(stable)}
    for entry in spec.get("canary") or []:
        wanted[deployment_name(name, entry["predictor"]["name"])] = _predictor_version(
            entry["predictor"])
    return wanted


def _template_version(deployment: dict[str, Any]) -> int | None:
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    value = (template.get("annotations") or {}).get(VERSION_ANNOTATION)
    return int(value) if value and str(value).isdigit() else None


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
                return _one_line(f"pod {where}: the model could not be downloaded "
                                 f"({STORAGE_INITIALIZER} {how}): {detail}")
            if waiting.get("reason") in TERMINAL_POD_REASONS:
                detail = last.get("message") or waiting.get("message") or ""
                return _one_line(f"pod {where}: container {container.get('name')} "
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


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Promote or roll back, and why."""

    promote: bool
    reason: str


def canary_verdict(probe: ProbeStats, slo: CanarySLO, version: str) -> Verdict:
    """Promote only if ``version`` answered at least ``slo.min_canary_requests`` requests, the
    error rate over all requests is <= ``slo.max_error_rate`` and its p99 <= ``slo.max_p99_ms``.

    Too little evidence rolls back (fail safe). The same rule as the local canary
    (``canary.verdict``), so one SLO means the same on both targets.
    """
    promote, reason = verdict(probe, version, slo)
    return Verdict(promote, reason)


class Action(str, enum.Enum):
    """What an apply does to the cluster, judged on the fields ctloop owns."""

    CREATE = "create"
    PATCH = "patch"
    UNCHANGED = "unchanged"


def _pick(mapping: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in (mapping or {}).items() if key in keys}


def _covers(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` holds everything ``wanted`` says; extra keys in ``actual`` are the
    server's defaults (KServe's webhook adds some), not differences."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(_covers(actual.get(k), v)
                                                for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(actual, list) and len(actual) == len(wanted)
                and all(_covers(a, w) for a, w in zip(actual, wanted, strict=True)))
    return actual == wanted


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def plan_apply(existing: dict[str, Any] | None, desired: dict[str, Any]) -> Action:
    """What applying ``desired`` over ``existing`` (None: absent) does, judged on ctloop's fields.

    Compared: the labels and annotations ctloop writes (exactly), the spec (everything
    ``desired`` sets; server defaults on top are no change), and fields ctloop drops between
    applies (a canary, ``canaryTrafficPercent``, a predictor name) that are still there.
    """
    if existing is None:
        return Action.CREATE
    meta, wanted_meta = existing.get("metadata") or {}, desired["metadata"]
    same = (_pick(meta.get("labels"), _OWNED_LABELS) == _pick(wanted_meta.get("labels"),
                                                              _OWNED_LABELS)
            and _pick(meta.get("annotations"), _OWNED_ANNOTATIONS)
            == _pick(wanted_meta.get("annotations"), _OWNED_ANNOTATIONS)
            and _covers(existing.get("spec"), desired["spec"])
            and not any(_at(existing, p) not in (None, []) and _at(desired, p) is None
                        for p in _DROPPABLE))
    return Action.UNCHANGED if same else Action.PATCH


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


# --- the thin layer over the API server -----------------------------------------------------


def connect(kubeconfig: str | None = None) -> DynamicClient:
    """A ``kubernetes.dynamic.DynamicClient`` on the cluster: in-cluster config (a KFP pod),
    else ``kubeconfig`` or ``~/.kube/config``.

    Raises:
        ClusterError: No configuration, or the API server does not answer.
    """
    import urllib3
    from kubernetes import client as k8s
    from kubernetes import config, dynamic

    where = kubeconfig or "in-cluster service account, then ~/.kube/config"
    try:
        if kubeconfig:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
                api_client = k8s.ApiClient()
            except config.ConfigException:
                api_client = config.new_client_from_config()
        return dynamic.DynamicClient(api_client)  # reads the API's discovery documents
    except (config.ConfigException, k8s.ApiException, urllib3.exceptions.HTTPError,
            OSError) as exc:
        raise ClusterError(f"no Kubernetes cluster reachable: {_one_line(exc)} (tried {where}); "
                           "check the kubeconfig or run inside the cluster") from exc


def _isvc_api(api: DynamicClient):
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        return api.resources.get(api_version=API_VERSION, kind=KIND)
    except ResourceNotFoundError as exc:
        raise ClusterError(f"the cluster has no {KIND} API ({API_VERSION}): install KServe "
                           "0.21 or point at a cluster that has it") from exc


def _cluster_error(what: str, exc: Exception) -> ClusterError:
    summary = exc.summary() if hasattr(exc, "summary") else exc
    return ClusterError(f"{what} failed: {_one_line(summary)}")


def get(api: DynamicClient, name: str, namespace: str) -> dict[str, Any] | None:
    """The InferenceService as a plain dict, or None if there is none.

    Raises:
        ClusterError: The API server refused (RBAC, no KServe) or is unreachable.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    try:
        return _isvc_api(api).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"reading InferenceService {namespace}/{name}", exc) from exc


def apply(api: DynamicClient, manifest: dict[str, Any]) -> int:
    """Server-side applies ``manifest`` as field manager ``ctloop``; returns the generation.

    One request creates or updates, atomically; fields ctloop applied before and leaves out now
    are removed (a canary, ``canaryTrafficPercent``); ``force`` takes over fields another
    manager set, since ctloop is the owner of record. An unchanged manifest keeps the
    generation.

    Raises:
        ClusterError: The API server or KServe's webhook refused it; the message is theirs.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError

    meta = manifest["metadata"]
    try:
        applied = api.server_side_apply(_isvc_api(api), body=manifest,
                                        field_manager=FIELD_MANAGER, force_conflicts=True)
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"applying InferenceService {meta['namespace']}/{meta['name']}",
                             exc) from exc
    return int(applied.metadata.generation)


def delete(api: DynamicClient, name: str, namespace: str, *, wait_s: float = 0.0,
           poll_s: float = 2.0) -> bool:
    """Deletes the InferenceService; one that is already gone is no error.

    The API server keeps the object (with a deletionTimestamp) until KServe's finalizer has
    run (pkg/controller/v1beta1/inferenceservice/controller.go); ``wait_s`` > 0 waits that long
    for it to be gone.

    Returns:
        Whether it is gone.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    try:
        _isvc_api(api).delete(name=name, namespace=namespace)
    except NotFoundError:
        return True
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"deleting InferenceService {namespace}/{name}", exc) from exc
    deadline = time.monotonic() + wait_s
    while True:
        if get(api, name, namespace) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def _list(api: DynamicClient, api_version: str, kind: str, namespace: str,
          selector: str) -> list[dict[str, Any]]:
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    try:
        listed = api.resources.get(api_version=api_version, kind=kind).get(
            namespace=namespace, label_selector=selector)
    except (DynamicApiError, ResourceNotFoundError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"listing {kind}s {selector} in {namespace} (the Role needs get "
                             f"and list on them)", exc) from exc
    return listed.to_dict().get("items") or []


def predictor_objects(api: DynamicClient, name: str, namespace: str
                      ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The Deployments (by name) and pods KServe runs for InferenceService ``name`` in
    Standard mode: both carry its ``serving.kserve.io/inferenceservice`` label.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    selector = f"{ISVC_LABEL}={name}"
    deployments = _list(api, "apps/v1", "Deployment", namespace, selector)
    pods = _list(api, "v1", "Pod", namespace, selector)
    return {d["metadata"]["name"]: d for d in deployments}, pods


def wait_ready(api: DynamicClient, manifest: dict[str, Any], generation: int, timeout_s: float,
               poll_s: float, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Polls until what ``manifest`` says serves: ``standard_readiness`` in Standard mode,
    ``readiness`` for ``generation`` in Knative mode; returns what it saw.

    Args:
        api: A client from ``connect``.
        manifest: The manifest applied.
        generation: The generation ``apply`` returned.
        timeout_s: How long to wait.
        poll_s: Seconds between reads.
        history: A list to append each change of state to (``elapsed_s``, ``state``,
            ``reason``), so a caller keeps it when this raises; a new list by default.

    Returns:
        ``history``.

    Raises:
        ClusterError: FAILED, gone, or not READY within ``timeout_s``; carries the status.
    """
    history = [] if history is None else history
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    standard = mode_of(manifest) is Mode.STANDARD
    expected = expected_deployments(manifest) if standard else {}
    started = time.monotonic()
    while True:
        isvc = get(api, name, namespace)
        if isvc is None or (isvc.get("metadata") or {}).get("deletionTimestamp"):
            raise ClusterError(f"InferenceService {namespace}/{name} disappeared while waiting "
                               "for it to become ready")
        if standard:
            now = standard_readiness(isvc, expected, *predictor_objects(api, name, namespace))
        else:
            now = readiness(isvc, generation)
        elapsed = round(time.monotonic() - started, 1)
        if not history or (history[-1]["state"], history[-1]["reason"]) != (now.state.value,
                                                                            now.reason):
            history.append({"elapsed_s": elapsed, "state": now.state.value, "reason": now.reason})
        if now.state is State.READY:
            return history
        if now.state is State.FAILED:
            raise ClusterError(f"InferenceService {namespace}/{name} generation {generation} "
                               f"failed: {now.reason}")
        if elapsed >= timeout_s:
            raise ClusterError(f"InferenceService {namespace}/{name} generation {generation} not "
                               f"ready after {timeout_s:g} s: {now.reason}")
        time.sleep(poll_s)


def probe(url: str, model_name: str, rows: list[dict[str, Any]], version: str, *,
          n_requests: int | None = None, window_s: float | None = None, concurrency: int = 2,
          timeout_s: float = 10.0) -> ProbeStats:
    """Sends single-row V1 predict requests to ``url``; counts answers and errors.

    Exactly one of ``n_requests`` (that many requests) or ``window_s`` (requests for that long)
    sets how much to send. ``url`` reaches one version alone (``probe_url``), so every answer
    is counted as ``version``'s unless it names another (``model_version``).

    Args:
        url: The server's base URL.
        model_name: The model's name in request paths.
        rows: Request rows (feature -> value), sent one per request, round robin.
        version: The version ``url`` serves.
        n_requests: How many requests to send.
        window_s: Or: send for this many seconds.
        concurrency: Clients sending at once.
        timeout_s: Per request; a slower answer is an error.
    """
    if (n_requests is None) == (window_s is None):
        raise ConfigError("probe needs exactly one of n_requests or window_s")
    if not rows:
        raise ConfigError("probe has no rows to send: pass eval rows with the model's features")
    stats, lock = ProbeStats(), threading.Lock()
    end = time.monotonic() + (window_s or 0.0)

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = client.predict_raw(url, model_name, [rows[i % len(rows)]], timeout_s)
            if not isinstance(answer, dict) or len(answer.get("predictions") or []) != 1:
                raise ValueError(f"answer without one prediction: {_one_line(answer, 120)}")
        # An unreachable server, a 4xx/5xx, a read timeout (OSError) or a malformed answer
        # (ValueError) all count against the version probed.
        except (CtloopError, OSError, ValueError) as exc:
            with lock:
                stats.errors += 1
                if len(stats.error_samples) < 3:
                    stats.error_samples.append(_one_line(exc, 160))
            return
        with lock:
            stats.add(answer.get("model_version") or version,
                      (time.perf_counter() - started) * 1000)

    def worker(first: int) -> None:
        i = first
        while time.monotonic() < end:
            one(i)
            i += concurrency

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        if n_requests is not None:
            list(pool.map(one, range(n_requests)))
        else:
            list(pool.map(worker, range(concurrency)))
    return stats


def _probe_summary(url: str, stats: ProbeStats, version: str) -> dict[str, Any]:
    answered = len(stats.answered.get(version, []))
    return {"url": url, "answered": answered, "errors": stats.errors,
            "p99_ms": round(stats.p99(version), 1) if answered else None}


def rollout(api: DynamicClient, config: ServiceConfig, version: int, artifact_uri: str,
            rows: list[dict[str, Any]], slo: CanarySLO, *, canary: bool = True,
            probe_window_s: float | None = None, ready_timeout_s: float = 600.0,
            poll_s: float = 5.0,
            url_for: Callable[[dict[str, Any], bool], str | None] = probe_url) -> dict[str, Any]:
    """Rolls registry ``version`` out as ``config``'s InferenceService, or rolls it back.

    1. Reads the service. None yet, or stopped: the version is deployed directly (nothing to
       canary against). Else, with ``canary``, it takes ``slo.percent`` % as a canary; without,
       it replaces the serving version at once. If it already serves all traffic, nothing is
       written ("unchanged").
    2. Applies, waits until ready for the generation written, then probes the new version
       alone (``url_for``) with ``rows``: ``slo.requests`` requests, or for ``probe_window_s``.
    3. Verdict (``canary_verdict``; not ready counts as a rollback): promote, a canary by a
       second apply (``promoted``) and a wait; or roll back by applying the previous spec
       (``restore``), or by stopping the service if nothing served before (``stopped``).

    The registry's serving pointer is not touched: the caller moves it to ``version`` only
    when the outcome's ``promoted`` is True, so registry and cluster agree on what serves.

    Args:
        api: A client from ``connect``.
        config: Where and how the model serves.
        version: The registry version being rolled out.
        artifact_uri: Its model artifact (``minio://``, ``s3://`` or ``gs://``).
        rows: Request rows for the probe (the model's features; no nulls for ``tensorflow``,
            which TF Serving rejects).
        slo: The canary's share and how it is judged (``percent``, ``requests``,
            ``min_canary_requests``, ``max_error_rate``, ``max_p99_ms``, ``concurrency``).
        canary: Canary first (needs a serving InferenceService); False: switch directly.
        probe_window_s: Probe for this many seconds instead of ``slo.requests`` requests.
        ready_timeout_s: Longest wait for each apply to become ready.
        poll_s: Seconds between status reads.
        url_for: ``(isvc, canary) -> base URL`` of the version to probe (default: in-cluster
            addresses, ``probe_url``).

    Returns:
        The outcome: ``action`` (promoted, rolled_back, unchanged), ``promoted``, ``reason``,
        ``strategy``, ``mode``, ``name``, ``namespace``, ``version``, ``previous_version``,
        ``canary_percent``, ``traffic`` (what share of real requests the canary saw, when that
        is not ``canary_percent``), ``verdict``, ``probe``, ``readiness`` (per phase:
        canary/deploy, promote, rollback) and ``generations``.

    Raises:
        ConfigError: Bad parameters, or a mode or canary KServe cannot run.
        ClusterError: The cluster refused an apply, or the rollback itself did not become
            ready (the service needs attention).
    """
    name, namespace = config.name, config.namespace
    existing = get(api, name, namespace)
    check_mode(existing, config)
    # A stopped service (a first version that failed) serves nothing: no canary against it, and
    # stopping it again is the way back.
    serving = None if _serves_nothing(existing) else existing
    # A version that already serves is not its own canary: the plain manifest then shows
    # whether anything is left to do.
    as_canary = canary and serving is not None and serving_version(serving) != version
    desired = inference_service(config, version, artifact_uri,
                                canary_percent=slo.percent if as_canary else None,
                                stable=existing)
    final = promoted(desired) if as_canary else desired
    phase = "canary" if as_canary else "deploy"
    outcome: dict[str, Any] = {
        "action": "unchanged", "promoted": False, "reason": "", "mode": config.mode.value,
        "strategy": "canary" if as_canary else "direct", "name": name, "namespace": namespace,
        "version": version, "previous_version": serving_version(serving),
        "canary_percent": slo.percent if as_canary else None,
        "traffic": (STANDARD_CANARY_TRAFFIC if as_canary and config.mode is Mode.STANDARD
                    else None),
        "verdict": None, "probe": None, "readiness": {phase: []}, "generations": {},
    }
    if existing is not None and plan_apply(existing, final) is Action.UNCHANGED:
        outcome.update(promoted=True, reason=f"version {version} already serves all traffic")
        return outcome

    generation = outcome["generations"][phase] = apply(api, desired)
    try:
        wait_ready(api, desired, generation, ready_timeout_s, poll_s,
                   outcome["readiness"][phase])
    except ClusterError as exc:
        judged = Verdict(False, f"not ready: {exc}")
    else:
        url = url_for(get(api, name, namespace) or {}, as_canary)
        if url is None:
            judged = Verdict(False, "no URL to probe the new version at in the status")
        else:
            stats = probe(url, name, rows, str(version), concurrency=slo.concurrency,
                          n_requests=None if probe_window_s else slo.requests,
                          window_s=probe_window_s)
            outcome["probe"] = _probe_summary(url, stats, str(version))
            judged = canary_verdict(stats, slo, str(version))
    if judged.promote and as_canary:
        outcome["readiness"]["promote"] = []
        generation = outcome["generations"]["promote"] = apply(api, final)
        try:
            wait_ready(api, final, generation, ready_timeout_s, poll_s,
                       outcome["readiness"]["promote"])
        except ClusterError as exc:
            judged = Verdict(False, f"canary passed ({judged.reason}) but its promotion was "
                             f"not ready: {exc}")
    outcome["verdict"] = dataclasses.asdict(judged)
    if judged.promote:
        outcome.update(action="promoted", promoted=True, reason=judged.reason)
        return outcome

    outcome.update(action="rolled_back", reason=judged.reason)
    if serving is None:
        # Nothing served before; stopping puts that back while the object keeps its status and
        # events to look at, and the next rollout's apply drops the annotation again.
        outcome["generations"]["rollback"] = apply(api, stopped(desired))
        outcome["reason"] += "; nothing served before, so the InferenceService is stopped"
        return outcome
    outcome["readiness"]["rollback"] = []
    back = restore(serving, pin_traffic=as_canary and config.mode is Mode.KNATIVE)
    generation = outcome["generations"]["rollback"] = apply(api, back)
    try:
        wait_ready(api, back, generation, ready_timeout_s, poll_s,
                   outcome["readiness"]["rollback"])
    except ClusterError as exc:
        raise ClusterError(f"rolled {namespace}/{name} back to version "
                           f"{outcome['previous_version']} after: {judged.reason}; but the "
                           f"restored spec is not ready: {exc}") from exc
    return outcome


# --- infra validation's short-lived candidate -----------------------------------------------


def delete_stale_candidates(api: DynamicClient, config: ServiceConfig,
                            older_than_s: float = 3600.0, now: float | None = None) -> list[str]:
    """Deletes the candidates of ``config.name`` that runs killed mid-validation left, those
    created more than ``older_than_s`` ago (a run's own lives minutes); returns their names.
    Younger ones may be another run's, still validating: they are left alone.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    import datetime

    now = time.time() if now is None else now
    selector = f"{NAME_LABEL}={config.name},{ROLE_LABEL}={CANDIDATE_ROLE}"
    stale = []
    for item in _list(api, API_VERSION, KIND, config.namespace, selector):
        meta = item["metadata"]
        created = datetime.datetime.fromisoformat(
            str(meta.get("creationTimestamp")).replace("Z", "+00:00")).timestamp()
        if now - created > older_than_s and not meta.get("deletionTimestamp"):
            delete(api, meta["name"], config.namespace)
            stale.append(meta["name"])
    return stale


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A ready candidate: its name (also the model name in request paths), its in-cluster
    address, and how long it took to become ready."""

    name: str
    namespace: str
    url: str
    startup_s: float


@contextlib.contextmanager
def candidate(api: DynamicClient, config: ServiceConfig, artifact_uri: str, token: str,
              startup_timeout_s: float, poll_s: float = 5.0,
              gone_timeout_s: float = 120.0) -> Iterator[Candidate]:
    """Runs the candidate as its own short-lived InferenceService until the block ends.

    Named per run (``candidate_name``), so no other run's candidate is ever waited on, probed or
    replaced. Ready means what ``wait_ready`` says, so a pod that cannot pull its image or keeps
    crashing fails at once instead of at the deadline. Afterwards it is deleted and waited for
    (KServe's finalizer) up to ``gone_timeout_s``.

    Raises:
        ConfigError: A bad token or artifact URI.
        ClusterError: Not ready within ``startup_timeout_s``, failed, or refused; carries the
            status.
    """
    manifest = candidate_service(config, artifact_uri, token)
    name, namespace = manifest["metadata"]["name"], config.namespace
    started = time.monotonic()
    try:
        generation = apply(api, manifest)
        wait_ready(api, manifest, generation, startup_timeout_s, poll_s)
        url = probe_url(get(api, name, namespace) or {}, canary=False)
        if url is None:
            raise ClusterError(f"InferenceService {namespace}/{name} is ready but reports no "
                               "address to send requests to")
        yield Candidate(name, namespace, url, time.monotonic() - started)
    finally:
        delete(api, name, namespace, wait_s=gone_timeout_s, poll_s=poll_s)
