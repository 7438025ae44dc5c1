"""The monitoring pipeline against a real KFP API (``make kind-up`` gives one): uploaded, and a run
started with ``ctloop.kfp.api.start_run``, the call its ``trigger_run`` task makes in-cluster.
Without an API at ``$KFP_HOST`` (default http://localhost:8080) every test skips; it has not run
here (no KFP backend)."""

import uuid

import pytest

from ctloop.kfp import api as kfp_api
from ctloop.kfp import compiling
from ctloop.kfp import plan as kfp_plan

pytestmark = pytest.mark.e2e


def test_monitor_pipeline_uploads_and_start_run_types_its_parameters(kfp_client):
    suffix = uuid.uuid4().hex[:8]
    name, experiment = f"ctloop-monitor-e2e-{suffix}", f"ctloop-e2e-{suffix}"
    package = compiling.MONITOR_PIPELINE_YAML
    action = kfp_plan.plan_upload(name, None, [], kfp_plan.spec_hash(package.read_text()),
                                  "v1", True)
    pipeline_id, _, _ = kfp_api.upload(kfp_client, action, package)
    try:
        run, version = kfp_api.start_run(kfp_client, name, "latest", experiment, {
            "records_uri": "s3://mlpipeline/ctloop/records/churn",
            "registry_uri": "s3://mlpipeline/ctloop/registry",
            "s3_endpoint_url": "http://seaweedfs.kubeflow:9000", "ct_pipeline_name": "",
            "min_rows": 200}, f"e2e-{suffix}")
        assert run.run_id and version.pipeline_id == pipeline_id
        kfp_client.terminate_run(run.run_id)
        kfp_client.delete_run(run.run_id)
    finally:
        for item in kfp_api.list_versions(kfp_client, pipeline_id):
            kfp_client.delete_pipeline_version(pipeline_id, item.pipeline_version_id)
        kfp_client.delete_pipeline(pipeline_id)
        found = kfp_api.find_experiment(kfp_client, experiment)
        if found is not None:
            kfp_client.delete_experiment(found.experiment_id)
