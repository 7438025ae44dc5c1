"""manifests/ builds offline with kustomize, and RBAC grants rollout no more than it needs."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture(scope="module")
def objects():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: it builds the kustomizations (kubectl kustomize)")
    built = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "base")], check=True,
                           capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(built) if o]


def test_base_builds_with_named_objects(objects):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert kinds == {("Namespace", "ctloop-serving"), ("Role", "ctloop-rollout"),
                     ("RoleBinding", "ctloop-rollout")}


def test_rollout_role_cannot_delete_or_wildcard(objects):
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "ctloop-serving"
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["serving.kserve.io"]
        assert "*" not in rule["verbs"] and "delete" not in rule["verbs"]
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
