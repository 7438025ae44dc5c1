"""upload, submit and schedule against a real KFP API (``make kind-up`` gives one).

Each test works on its own pipeline and experiment names and removes what it created in fixture
teardown. Without an API at ``$KFP_HOST`` (default http://localhost:8080) every test skips.
"""

import uuid

import pytest
import yaml
from click.testing import CliRunner

from conftest import KFP_HOST
from ctloop.cli import main
from ctloop.kfp import api as kfp_api
from ctloop.kfp import compiling

pytestmark = pytest.mark.e2e

REQUIRED = {"data_uri": "s3://mlpipeline/ctloop/data", "label": "churned",
            "registry_uri": "/mnt/ctloop/registry"}


@pytest.fixture
def names(kfp_client):
    suffix = uuid.uuid4().hex[:8]
    created = {"pipeline": f"ctloop-e2e-{suffix}", "experiment": f"ctloop-e2e-{suffix}"}
    yield created
    experiment = kfp_api.find_experiment(kfp_client, created["experiment"])
    if experiment is not None:
        for run in kfp_api.list_recurring_runs(kfp_client, experiment.experiment_id):
            kfp_client.delete_recurring_run(run.recurring_run_id)
        for run in kfp_client.list_runs(experiment_id=experiment.experiment_id,
                                        page_size=100).runs or []:
            if run.state not in kfp_api.FINISHED:
                kfp_client.terminate_run(run.run_id)
            kfp_client.delete_run(run.run_id)
        kfp_client.delete_experiment(experiment.experiment_id)
    pipeline = kfp_api.find_pipeline(kfp_client, created["pipeline"])
    if pipeline is not None:
        for version in kfp_api.list_versions(kfp_client, pipeline.pipeline_id):
            kfp_client.delete_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id)
        kfp_client.delete_pipeline(pipeline.pipeline_id)


def _ctloop(kfp_client, *args):
    result = CliRunner().invoke(main, [str(a) for a in args], obj={"kfp_client": kfp_client})
    assert result.exit_code == 0, result.output
    return result.output


def test_upload_then_same_spec_uploads_nothing_then_new_spec_is_a_version(
        kfp_client, names, tmp_path):
    package = tmp_path / "p.yaml"
    compiling.compile_pipeline(package)
    common = ["upload", "--host", KFP_HOST, "--package", package, "--pipeline-name",
              names["pipeline"]]
    assert _ctloop(kfp_client, *common).startswith("uploaded ")
    assert _ctloop(kfp_client, *common).startswith("unchanged: ")
    compiling.set_image(package, "ctloop-pipeline:e2e")
    assert "uploaded" in _ctloop(kfp_client, *common, "--version-name", "e2e")
    pipeline = kfp_api.find_pipeline(kfp_client, names["pipeline"])
    versions = kfp_api.list_versions(kfp_client, pipeline.pipeline_id)
    assert sorted(v.display_name for v in versions) == sorted([names["pipeline"], "e2e"])


def test_schedules_apply_idempotently_and_switch(kfp_client, names, tmp_path):
    package = tmp_path / "p.yaml"
    compiling.compile_pipeline(package)
    _ctloop(kfp_client, "upload", "--host", KFP_HOST, "--package", package, "--pipeline-name",
            names["pipeline"])
    path = tmp_path / "s.yaml"
    declared = {"name": "e2e", "cron": "0 3 1 1 *", "enabled": False, "parameters": REQUIRED}
    path.write_text(yaml.safe_dump({"experiment": names["experiment"],
                                    "pipeline": names["pipeline"], "schedules": [declared]}))
    apply = ["schedule", "apply", "--host", KFP_HOST, "--file", path]
    assert _ctloop(kfp_client, *apply).splitlines()[-1].endswith("1 change(s) applied")
    assert _ctloop(kfp_client, *apply).splitlines()[-1].endswith("0 change(s) applied")
    listed = _ctloop(kfp_client, "schedule", "list", "--host", KFP_HOST, "--experiment",
                     names["experiment"])
    assert listed.startswith("e2e\tDISABLED\tcron 0 3 1 1 *\t")
    _ctloop(kfp_client, "schedule", "resume", "e2e", "--host", KFP_HOST, "--experiment",
            names["experiment"])
    assert "e2e\tENABLED" in _ctloop(kfp_client, "schedule", "list", "--host", KFP_HOST,
                                     "--experiment", names["experiment"])
    assert "pause e2e" in _ctloop(kfp_client, *apply)  # the file says disabled
    declared["cron"] = "0 4 1 1 *"
    path.write_text(yaml.safe_dump({"experiment": names["experiment"],
                                    "pipeline": names["pipeline"], "schedules": [declared]}))
    out = _ctloop(kfp_client, *apply)
    assert "delete e2e (changed" in out and "create e2e (cron 0 4 1 1 *" in out


def test_submit_starts_a_run(kfp_client, names, tmp_path):
    package = tmp_path / "p.yaml"
    compiling.compile_pipeline(package)
    _ctloop(kfp_client, "upload", "--host", KFP_HOST, "--package", package, "--pipeline-name",
            names["pipeline"])
    params = [item for key, value in REQUIRED.items() for item in ("--param", f"{key}={value}")]
    out = _ctloop(kfp_client, "submit", "--host", KFP_HOST, "--pipeline-name", names["pipeline"],
                  "--experiment", names["experiment"], *params)
    run_id = out.split()[1]
    assert kfp_client.get_run(run_id).runtime_config.parameters["label"] == "churned"
