"""The CI/CD templates validate against GitHub's workflow schema (vendored by check-jsonschema,
so offline) and do what they say: CI tests and checks the golden IR, CD pushes and uploads."""

import subprocess
import sys
from pathlib import Path

import yaml

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / ".github" / "workflows").glob("*.yml"))


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_workflows_validate_against_the_github_workflow_schema():
    assert [p.name for p in WORKFLOWS] == ["cd.yml", "ci.yml"]
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actions_are_pinned_to_a_major_version():
    for path in WORKFLOWS:
        for step in _steps(yaml.safe_load(path.read_text())):
            if "uses" in step:
                assert step["uses"].rsplit("@", 1)[1].startswith("v"), step["uses"]


def test_ci_tests_and_checks_the_compiled_pipeline():
    runs = " ".join(s.get("run", "") for s in _steps(yaml.safe_load(WORKFLOWS[1].read_text())))
    assert "make lint" in runs and "make test" in runs
    assert "make compile" in runs and "git diff --exit-code -- pipelines/" in runs


def test_cd_pushes_images_then_uploads_and_schedules_against_them():
    cd = yaml.safe_load(WORKFLOWS[0].read_text())
    assert cd["jobs"]["deploy"]["needs"] == "images"
    assert set(cd["jobs"]["images"]["strategy"]["matrix"]["image"]) == {"pipeline", "serving"}
    runs = " ".join(s.get("run", "") for s in cd["jobs"]["deploy"]["steps"])
    assert '--image "$REGISTRY/ctloop-pipeline:$GITHUB_SHA"' in runs
    assert "ctloop upload" in runs and "ctloop schedule apply" in runs
    # Credentials come from secrets into the environment, never onto a command line.
    assert cd["jobs"]["deploy"]["env"]["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert "KFP_TOKEN" not in runs
