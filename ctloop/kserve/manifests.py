"""InferenceService manifests from ctloop's settings, for KServe 0.21: pure functions, no client.

``ServiceConfig`` says where and how a model serves; ``inference_service`` builds the manifest
of one registry version (canary first or not), ``promoted``, ``restore`` and ``stopped`` the
manifests that follow it, and ``plan_apply`` what applying one over the object on the cluster
would change. Infra validation's per-run service is ``ctloop.kserve.candidate``'s; the
predictor's request recording, ``ctloop.kserve.recording``'s.

KServe's two deployment modes canary differently (kserve 0.21's Python models,
``kserve.models``):

- ``Knative`` (formerly Serverless): ``spec.predictor.canaryTrafficPercent`` sends that share to
  the latest revision; KServe keeps the last fully rolled-out revision for the rest
  (``V1beta1PredictorSpec.canary_traffic_percent``).
- ``Standard`` (formerly RawDeployment): ``spec.canary`` is a list of ``V1beta1CanarySpec``
  (``predictor``, required, a full ``V1beta1PredictorSpec`` whose ``name`` is required there, and
  ``trafficPercent``, 0-100); each runs as its own Deployment and Service
  ``<isvc>-<name>-predictor``. Promotion sets ``spec.predictor.name`` to the canary's name and
  drops the entry, so the canary's pods take over without a restart.

InferenceService labels and annotations (but for a short disallowed list) are copied into every
predictor Deployment's pod template (``buildPredictorResources``/``buildObjectMeta``,
pkg/controller/v1beta1/inferenceservice/components/predictor.go in kserve/kserve): a changed
annotation restarts pods. ctloop's bookkeeping (which registry version a predictor serves) is
therefore a ``spec.predictor.annotations`` entry, which reaches only that predictor's own
Deployment and changes only when its model does.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
from typing import Any

from ctloop.errors import ConfigError
from ctloop.kfp.images import SERVING_IMAGE
from ctloop.kserve import recording
from ctloop.registry import validate_model_name

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
DNS_LABEL_MAX = 63  # a Deployment's and Service's name: "<isvc>[-<predictor name>]-predictor"
MAX_VERSION_DIGITS = 6  # canary predictors are named v<version>

# What ctloop writes to metadata: only these keys are compared, restored and owned.
_OWNED_LABELS = (MANAGED_BY_LABEL, NAME_LABEL)
_OWNED_ANNOTATIONS = (MODE_ANNOTATION, TAG_ROUTING_ANNOTATION, STOP_ANNOTATION)
# Fields ctloop sets in some applies and leaves out of others (server-side apply then removes
# them): on the cluster but not in the desired manifest is a difference, not a server default.
_DROPPABLE = (("spec", "canary"), ("spec", "predictor", "canaryTrafficPercent"),
              ("spec", "predictor", "name"))
_ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's IsvcNameFmt
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_STORAGE_SCHEMES = {"minio": "s3", "s3": "s3", "gs": "gs"}  # KFP's MinIO store speaks S3


class Mode(str, enum.Enum):
    """KServe's deployment mode (0.21 names; the legacy names are read too)."""

    STANDARD = "Standard"
    KNATIVE = "Knative"


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
        record_uri: ``s3://BUCKET/PREFIX`` the ``ctloop`` predictor records served requests to,
            as given (``ctloop.kserve.recording``: credentials from the ServiceAccount's Secret);
            None or "": no recording.
        s3_endpoint_url: The S3-compatible endpoint of ``record_uri`` (None: boto3's default).
    """

    name: str
    namespace: str = "ctloop-serving"
    service_account: str = "ctloop-storage"
    mode: Mode = Mode.STANDARD
    runtime: Runtime = Runtime.CTLOOP
    resources: Resources = Resources()
    image: str = SERVING_IMAGE
    record_uri: str | None = None
    s3_endpoint_url: str | None = None

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
        object.__setattr__(self, "record_uri", recording.check_uri(
            self.record_uri, ctloop_runtime=self.runtime is Runtime.CTLOOP))
        object.__setattr__(self, "s3_endpoint_url", recording.check_endpoint(self.s3_endpoint_url))


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
            # --version: answers and records carry the registry version this predictor serves
            # (ctloop monitor counts only the serving version's records).
            "args": ["--model-dir", MODEL_MOUNT, "--model-name", config.name,
                     "--port", str(SERVING_PORT),
                     *(["--version", str(version)] if version is not None else []),
                     *recording.args(config.record_uri, config.s3_endpoint_url)],
            # KServe's custom predictor: STORAGE_URI makes the storage initializer download the
            # model into MODEL_MOUNT before the container starts.
            "env": [{"name": "STORAGE_URI", "value": uri},
                    *recording.env(config.record_uri, config.service_account)],
            "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}],
            "resources": resources,
        }],
    }


def _runtime_of(spec: dict[str, Any]) -> Runtime:
    return Runtime.CTLOOP if spec.get("containers") else Runtime.TENSORFLOW


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


# --- what an apply changes, on the fields ctloop owns -----------------------------------


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
