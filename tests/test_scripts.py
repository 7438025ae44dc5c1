"""The kind path's scripts and Makefile targets, statically: they cannot run here (no Docker)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
CLUSTER_TARGETS = ["kind-up", "images", "e2e", "kind-down"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.name != "lib.sh"],
                         ids=lambda p: p.name)
def test_strict_mode(script):
    assert "\nset -euo pipefail\n" in script.read_text()


def test_shellcheck_finds_nothing():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "-x", *[str(s.relative_to(ROOT)) for s in SCRIPTS]],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_versions_are_pinned_with_overridable_defaults():
    text = (ROOT / "scripts/kind-up.sh").read_text()
    pins = dict(re.findall(r"^(\w+_VERSION)=\$\{\1:-([^}]+)\}$", text, re.M))
    assert set(pins) == {"KIND_VERSION", "KFP_VERSION", "CERT_MANAGER_VERSION", "KSERVE_VERSION"}
    assert all(re.fullmatch(r"v?\d+\.\d+\.\d+", version) for version in pins.values()), pins
    for name in ("KFP_VERSION", "KSERVE_VERSION", "CERT_MANAGER_VERSION"):
        assert f"${name}" in text.split(f"{name}=", 1)[1], f"{name} is set but never used"


def test_kind_node_image_is_pinned_by_digest_and_matches_the_schemas_used():
    config = yaml.safe_load((ROOT / "kind-cluster.yaml").read_text())
    (node,) = config["nodes"]
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"])
    mapping = node["extraPortMappings"][0]
    assert (mapping["containerPort"], mapping["hostPort"]) == (30080, 8880)
    assert '"nodePort":30080' in (ROOT / "scripts/kind-up.sh").read_text()


def _make_default(name: str) -> str:
    return re.search(rf"^{name} \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def test_kfp_host_port_is_the_one_kind_maps_and_not_make_runs():
    config = yaml.safe_load((ROOT / "kind-cluster.yaml").read_text())
    host_port = config["nodes"][0]["extraPortMappings"][0]["hostPort"]
    assert _make_default("KFP_HOST") == f"http://localhost:{host_port}"
    assert f"KFP_HOST=${{KFP_HOST:-http://localhost:{host_port}}}" in (
        ROOT / "scripts/e2e.sh").read_text()
    assert f"KFP_PORT=${{KFP_PORT:-{host_port}}}" in (ROOT / "scripts/kind-up.sh").read_text()
    assert int(_make_default("PORT")) != host_port  # make run's model server


def _lines(script: str) -> list[str]:
    return [line.strip() for line in (ROOT / "scripts" / script).read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_kind_up_creates_the_kserve_namespace_before_applying_kserve():
    # Since KServe 0.20 the release kserve.yaml has no Namespace object (hack/release/
    # generate-install.sh: yq 'select(.kind != "Namespace")').
    lines = _lines("kind-up.sh")
    create = next(i for i, line in enumerate(lines) if "create namespace kserve" in line)
    apply = next(i for i, line in enumerate(lines) if '"$kserve/kserve.yaml"' in line)
    assert create < apply and "| k apply -f -" in lines[create]  # idempotent


def test_kind_up_waits_for_every_kserve_controller_before_its_cluster_resources():
    # kserve-cluster-resources.yaml holds LLMInferenceServiceConfigs, checked by the
    # llmisvc-controller-manager's webhook with failurePolicy Fail.
    lines = _lines("kind-up.sh")
    wait = next(i for i, line in enumerate(lines)
                if "-n kserve wait --for=condition=Available deployment --all" in line)
    resources = next(i for i, line in enumerate(lines) if "kserve-cluster-resources.yaml" in line)
    assert wait < resources


def test_scripts_require_every_tool_they_call():
    for script, tools in (("kind-up.sh", {"docker", "kind", "kubectl", "curl", "git",
                                          "python3"}),
                          ("images.sh", {"docker", "kind", "kubectl", "python3"}),
                          ("e2e.sh", {"kubectl", "curl"})):
        (require,) = [line for line in _lines(script) if line.startswith("require ")]
        assert tools <= set(require.split()[1:]), script


def test_images_preloads_the_storage_initializer_and_refuses_other_architectures():
    text = (ROOT / "scripts/images.sh").read_text()
    assert "storageInitializer" in text and 'kind load docker-image "$initializer"' in text
    assert "docker info --format '{{.Architecture}}'" in text and "x86_64" in text


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_make_targets_run_their_script(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "--no-print-directory", target],
                         cwd=ROOT, capture_output=True, text=True)
    assert f"scripts/{target}.sh" in dry.stdout, dry.stdout + dry.stderr
    assert (ROOT / "scripts" / f"{target}.sh").stat().st_mode & 0o111
