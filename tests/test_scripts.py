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
    assert (mapping["containerPort"], mapping["hostPort"]) == (30080, 8080)
    assert '"nodePort":30080' in (ROOT / "scripts/kind-up.sh").read_text()


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_make_targets_run_their_script(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "--no-print-directory", target],
                         cwd=ROOT, capture_output=True, text=True)
    assert f"scripts/{target}.sh" in dry.stdout, dry.stdout + dry.stderr
    assert (ROOT / "scripts" / f"{target}.sh").stat().st_mode & 0o111
