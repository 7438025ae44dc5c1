"""manifests/ builds offline with kustomize, every object validates against its schema, and the
objects grant and open no more than they must.

Core kinds are validated strictly (unknown fields fail) against the Kubernetes JSON schemas that
the kubernetes-validate package ships, for the Kubernetes version of kind-cluster.yaml's node
image. No registry package ships KServe's InferenceService CRD schema, so InferenceServices are
checked structurally: the predictor is a Kubernetes PodSpec plus the fields KServe 0.21 adds
(their names are compared with the kserve package's models in the serving environment), its
containers and model are Kubernetes Containers, each ``spec.canary`` entry holds a predictor of
the same shape, all under the same shipped schemas. It runs on the InferenceServices rollout's
KServe target keeps as golden files.
"""

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
NODE_IMAGE = yaml.safe_load((ROOT / "kind-cluster.yaml").read_text())["nodes"][0]["image"]
K8S_VERSION = re.search(r":v(\d+\.\d+\.\d+)", NODE_IMAGE).group(1)

# Fields KServe 0.21's v1beta1 API adds to a PodSpec (predictor) and to a Container (model).
PREDICTOR_FIELDS = {
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "autoScaling": {"type": "object"}, "batcher": {"type": "object"},
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "deploymentStrategy": {"type": "object"}, "logger": {"type": "object"},
    "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer"},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleMetricType": {"enum": ["Utilization", "AverageValue"]},
    "scaleTarget": {"type": "integer"}, "timeout": {"type": "integer"},
    "name": {"type": "string"}, "storageContainerName": {"type": "string"},
    "storageUris": {"type": "array"}, "workerSpec": {"type": "object"},
    **{framework: {"type": "object"} for framework in (
        "huggingface", "lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn", "tensorflow",
        "triton", "xgboost")},
}
MODEL_FIELDS = {
    "modelFormat": {"type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
    "runtime": {"type": "string"}, "runtimeVersion": {"type": "string"},
    "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
    "storageUri": {"type": "string"}, "storage": {"type": "object"},
    "confidential": {"type": "object"},
}


def _build(path: Path) -> list[dict]:
    built = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True,
                           text=True).stdout
    return [o for o in yaml.safe_load_all(built) if o]


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: it builds the kustomizations (kubectl kustomize)")
    return {name: _build(MANIFESTS / "overlays" / name) for name in OVERLAYS}


def _one(objects, kind, name):
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _schema_dir() -> Path:
    version = [v for v in kubernetes_validate.utils.all_versions()
               if kubernetes_validate.utils.major_minor(v)
               <= kubernetes_validate.utils.major_minor(K8S_VERSION)][-1]
    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / (
        f"v{version}-local-strict")


@functools.cache
def inferenceservice_validator() -> jsonschema.protocols.Validator:
    """A strict structural schema of a KServe v1beta1 InferenceService (see the module doc)."""
    definitions = json.loads((_schema_dir() / "_definitions.json").read_text())
    core = definitions["$defs"]
    predictor = copy.deepcopy(core["io.k8s.api.core.v1.PodSpec"])
    predictor.pop("required", None)  # a predictor may name a model instead of containers
    model = copy.deepcopy(core["io.k8s.api.core.v1.Container"])
    model.pop("required", None)  # KServe names the model's container itself
    model["properties"].update(MODEL_FIELDS)
    model["required"] = ["modelFormat"]
    predictor["properties"].update(PREDICTOR_FIELDS, model=model)
    # KServe's CRD (config/crd/full/serving.kserve.io_inferenceservices.yaml) is stricter
    # inside spec.canary[]: each entry needs trafficPercent, and a canary's model needs the
    # container's name as well as modelFormat.
    canary_predictor = copy.deepcopy(predictor)
    canary_predictor["properties"]["model"]["required"] = ["modelFormat", "name"]
    schema = {
        # The copied definitions refer to each other as #/$defs/<name>: keep them beside.
        "$defs": core,
        "type": "object", "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": {"type": "object", "required": ["predictor"], "additionalProperties": False,
                     "properties": {"predictor": predictor, "canary": {
                         "type": "array", "items": {
                             "type": "object", "required": ["predictor", "trafficPercent"],
                             "additionalProperties": False, "properties": {
                                 "predictor": canary_predictor,
                                 "trafficPercent": {"type": "integer", "minimum": 0,
                                                    "maximum": 100}}}},
                                    **{k: {"type": "object"} for k in (
                                        "transformer", "explainer", "tracing")}}},
        },
    }
    return jsonschema.Draft202012Validator(schema)


def validate(obj: dict) -> None:
    """Validates one object against its schema; raises jsonschema's ValidationError."""
    if obj["kind"] == "InferenceService":
        inferenceservice_validator().validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_overlay_builds(overlays):
    assert set(OVERLAYS) == {"kind", "generic", "multi-user"}
    for objects in overlays.values():
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
        assert {("Namespace", "ctloop-serving"), ("Role", "ctloop-rollout"),
                ("RoleBinding", "ctloop-rollout"), ("ServiceAccount", "ctloop-storage"),
                ("Secret", "ctloop-storage")} <= kinds


def test_every_object_validates_against_its_schema(overlays):
    for name, objects in overlays.items():
        for obj in objects:
            try:
                validate(obj)
            except Exception as exc:
                pytest.fail(f"overlay {name}: {obj['kind']}/{obj['metadata']['name']}: {exc}")


def test_inferenceservices_the_rollout_writes_validate():
    # Rollout's KServe target keeps the InferenceServices it writes as golden files.
    found = [(path, obj) for path in sorted(ROOT.glob("components/*/tests/golden/*.yaml"))
             for obj in yaml.safe_load_all(path.read_text())
             if obj and obj.get("kind") == "InferenceService"]
    if not found:
        pytest.skip("no InferenceService golden files in components/*/tests/golden/")
    for path, obj in found:
        try:
            validate(obj)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {exc.message} at {list(exc.absolute_path)}")
        assert obj["spec"]["predictor"]["serviceAccountName"] == "ctloop-storage", path
        assert obj["metadata"]["namespace"] == "ctloop-serving", path


def test_a_recording_predictor_reads_the_credentials_the_storage_secret_holds(overlays):
    """The recording predictor (rollout's golden file) takes boto3's variables from the Secret
    the storage initializer uses: the ServiceAccount's own, with the keys the kind overlay sets."""
    path = ROOT / "components/rollout/tests/golden/ctloop-standard-v1-recording.yaml"
    predictor = yaml.safe_load(path.read_text())["spec"]["predictor"]
    container = predictor["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    account = _one(overlays["kind"], "ServiceAccount", predictor["serviceAccountName"])
    secret = _one(overlays["kind"], "Secret", account["secrets"][0]["name"])
    assert refs == {key: {"name": secret["metadata"]["name"], "key": key}
                    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert set(refs) == set(secret["stringData"])
    assert container["args"][-4::2] == ["--record-dir", "--s3-endpoint-url"]


def test_a_misspelled_field_fails_validation():
    bad = {"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": "x", "namespace": "y"}, "secret": [{"name": "s"}]}
    with pytest.raises(kubernetes_validate.ValidationError, match="secret"):
        validate(bad)


def test_rollout_role_grants_inference_services_in_the_serving_namespace_only(overlays):
    for objects in overlays.values():
        role = _one(objects, "Role", "ctloop-rollout")
        assert role["metadata"]["namespace"] == "ctloop-serving"
        # What rollout (get, create/patch by server-side apply, watch) and infra validation
        # (delete its candidate) do, and what Standard-mode readiness reads (the predictor
        # Deployments and their pods); no wildcard, no writes beyond InferenceServices.
        assert role["rules"] == [
            {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices/status"],
             "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    for name in ("kind", "generic"):  # KFP standalone runs pipelines as pipeline-runner
        binding = _one(overlays[name], "RoleBinding", "ctloop-rollout")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    # Multi-user Kubeflow runs them as the profile's default-editor, in the profile namespace.
    binding = _one(overlays["multi-user"], "RoleBinding", "ctloop-rollout")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor",
                                    "namespace": "kubeflow-user-example-com"}]


def test_the_rollout_role_covers_what_the_kserve_target_reads():
    # Every API call of the rollout's cluster layer, against the Role's rules.
    import inspect

    from ctloop.kserve import api

    source = inspect.getsource(api)
    role = next(o for o in yaml.safe_load_all((MANIFESTS / "base/rbac.yaml").read_text())
                if o["kind"] == "Role")
    granted = {(group, resource, verb) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert '_list(api, "apps/v1", "Deployment"' in source
    assert '_list(api, "v1", "Pod"' in source
    assert {("apps", "deployments", "list"), ("", "pods", "list"),
            ("serving.kserve.io", "inferenceservices", "list")} <= granted


RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_rollout_gets_no_cluster_wide_grant(overlays):
    """ctloop's own objects, the ones manifests/ builds, grant rollout nothing cluster-wide: no
    ClusterRole, no ClusterRoleBinding, and its RoleBinding refers to its namespaced Role, not to
    a ClusterRole. KFP's, KServe's and cert-manager's cluster-scoped resources are not ctloop's:
    scripts/kind-up.sh applies them from upstream, no kustomization here refers to them, and
    this test does not check them."""
    for path in MANIFESTS.rglob("kustomization.yaml"):  # every resource is a file of ours
        for resource in yaml.safe_load(path.read_text()).get("resources", []):
            assert "://" not in resource and (path.parent / resource).exists(), (path, resource)
    for name, objects in overlays.items():
        rbac = sorted((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
                      for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")
                      or o["kind"] in RBAC_KINDS)
        # The multi-worker train task manages its TFJob in the run's namespace.
        runs_in = "kubeflow-user-example-com" if name == "multi-user" else "kubeflow"
        assert rbac == [("Role", "ctloop-serving", "ctloop-rollout"),
                        ("Role", runs_in, "ctloop-train"),
                        ("RoleBinding", "ctloop-serving", "ctloop-rollout"),
                        ("RoleBinding", runs_in, "ctloop-train")], name
        binding = _one(objects, "RoleBinding", "ctloop-rollout")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "ctloop-rollout"}, name


def test_storage_service_account_and_secret(overlays):
    for objects in overlays.values():
        account = _one(objects, "ServiceAccount", "ctloop-storage")
        assert account["secrets"] == [{"name": "ctloop-storage"}]
        assert account["metadata"]["namespace"] == "ctloop-serving"
        # Model pods run as it for the storage credentials only: no API token in them.
        assert account["automountServiceAccountToken"] is False
    kind = _one(overlays["kind"], "Secret", "ctloop-storage")["metadata"]["annotations"]
    assert kind["serving.kserve.io/s3-endpoint"] == "seaweedfs.kubeflow:9000"
    assert kind["serving.kserve.io/s3-usehttps"] == "0"
    assert set(_one(overlays["kind"], "Secret", "ctloop-storage")["stringData"]) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    generic = _one(overlays["generic"], "Secret", "ctloop-storage")
    assert generic["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "1"
    # No credentials in git for a real cluster: they are set on the cluster.
    assert "data" not in generic and "stringData" not in generic


def test_network_policy_opens_only_the_s3_port_to_the_serving_namespace(overlays):
    policy = _one(overlays["kind"], "NetworkPolicy", "ctloop-model-pull")
    assert policy["metadata"]["namespace"] == "kubeflow"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "seaweedfs"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ctloop-serving"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8333}]
    assert not [o for o in overlays["generic"] if o["kind"] == "NetworkPolicy"]
    assert not [o for o in overlays["multi-user"] if o["kind"] == "NetworkPolicy"]


# --- the InferenceService check itself -------------------------------------------------------

SERVICE = {
    "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
    "metadata": {"name": "churn", "namespace": "ctloop-serving",
                 "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
    "spec": {"predictor": {
        "serviceAccountName": "ctloop-storage", "minReplicas": 1, "canaryTrafficPercent": 20,
        "model": {"modelFormat": {"name": "tensorflow"}, "protocolVersion": "v2",
                  "storageUri": "s3://mlpipeline/ctloop/churn/1",
                  "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}},
    }},
}
CUSTOM = {**SERVICE, "spec": {"predictor": {"containers": [{
    "name": "kserve-container", "image": "ctloop-serving:0.1.0",
    "args": ["serve", "--model-dir", "/mnt/models", "--port", "8080"],
    "env": [{"name": "STORAGE_URI", "value": "s3://mlpipeline/ctloop/churn/1"}],
    "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}


@pytest.mark.parametrize("service", [SERVICE, CUSTOM], ids=["model", "custom-container"])
def test_valid_inferenceservices_pass(service):
    validate(service)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("spec", "predictor", "minReplica"), 1, "'minReplica' was unexpected"),
    (("spec", "predictor", "canaryTrafficPercent"), "20", "'20' is not of type 'integer'"),
    (("spec", "predictor", "model", "modelFormat"), {"version": "2"}, "'name' is a required"),
    (("spec", "predictor", "model", "storageURI"), "s3://x", "'storageURI' was unexpected"),
    (("spec", "predictor", "model", "resources"), {"limit": {}}, "'limit' was unexpected"),
    (("spec", "predictor", "model", "protocolVersion"), "v3", "'v3' is not one of"),
    (("spec", "predictors"), {}, "'predictors' was unexpected"),
    (("spec", "canary"), [{"predictor": {"name": "v2", "minReplica": 1}, "trafficPercent": 20}],
     "'minReplica' was unexpected"),
    (("spec", "canary"), [{"predictor": {"name": "v2"}, "trafficPercent": 120}],
     "120 is greater than the maximum of 100"),
    (("spec", "canary"), [{"predictor": {"name": "v2"}}], "'trafficPercent' is a required"),
    (("spec", "canary"), [{"trafficPercent": 20, "predictor": {"name": "v2", "model": {
        "modelFormat": {"name": "tensorflow"}, "storageUri": "s3://m/2"}}}],
     "'name' is a required property"),
    (("metadata", "labels"), {"a": 1}, "1 is not of type 'string'"),
    (("apiVersion",), "serving.kserve.io/v1alpha1", "'serving.kserve.io/v1beta1' was expected"),
])
def test_broken_inferenceservices_fail(path, value, message):
    service = copy.deepcopy(SERVICE)
    target = service
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        validate(service)


@pytest.mark.serving
def test_inferenceservice_fields_match_kserves_own_models(serving_python):
    probe = (
        "import json, kubernetes.client as k\n"
        "from kserve.models import V1beta1PredictorSpec as P, V1beta1ModelSpec as M\n"
        "print(json.dumps([sorted(set(P.attribute_map.values()) - set("
        "k.V1PodSpec.attribute_map.values())), sorted(set(M.attribute_map.values()) - set("
        "k.V1Container.attribute_map.values()))]))\n")
    out = subprocess.run([serving_python, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    predictor, model = json.loads(out)
    assert set(predictor) == set(PREDICTOR_FIELDS) | {"model"}
    assert set(model) == set(MODEL_FIELDS)
