"""The monitoring pipeline's compiled IR (golden, and what a cluster would run: the monitor task,
the trigger behind drift and a new episode, caching off, storage credentials from the Secret),
and the monitor component under kfp.local. A KFP backend is not here: the in-cluster submit is
checked through its IR and its logic against an in-memory KFP (tests/test_cli_kfp.py)."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.kfp import compiling
from ctloop.monitor import CT_PIPELINE_NAME, MONITOR_PIPELINE_NAME


def _compiled(tmp_path) -> list[dict]:
    out = tmp_path / "monitor_pipeline.yaml"
    compiling.compile_monitor_pipeline(out)
    return list(yaml.safe_load_all(out.read_text())), out


def test_committed_monitor_pipeline_is_current(tmp_path):
    _, fresh = _compiled(tmp_path)
    assert compiling.MONITOR_PIPELINE_YAML.read_text() == fresh.read_text(), (
        "pipelines/monitor_pipeline.yaml is stale: run `make compile` and review the diff")


def test_compile_writes_both_pipelines_and_every_component(tmp_path):
    ran = CliRunner().invoke(main, ["compile", "--output", str(tmp_path / "ct.yaml")])
    assert ran.exit_code == 0, ran.output
    assert f"wrote {tmp_path / 'monitor_pipeline.yaml'}" in ran.output.splitlines()
    names = {p.stem for p in (tmp_path / "components").glob("*.yaml")}
    assert {"monitor", "trigger_run", "select_span", "train"} <= names


def test_the_trigger_runs_only_on_drift_in_a_new_episode_uncached_with_credentials(tmp_path):
    (spec, platform), _ = _compiled(tmp_path)
    assert spec["pipelineInfo"]["name"] == MONITOR_PIPELINE_NAME
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"monitor", "condition-1"}
    assert root["condition-1"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--monitor-drift'] == true")
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert inner["condition-2"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--monitor-start_run'] == true")
    trigger = spec["components"]["comp-condition-2"]["dag"]["tasks"]["trigger-run"]
    # The state the monitor claimed the episode in is the one the run is recorded in.
    assert trigger["inputs"]["parameters"]["state_uri"]["componentInputParameter"] == (
        "pipelinechannel--monitor-trigger_state")
    assert not root["monitor"].get("cachingOptions", {}).get("enableCache")
    assert not trigger.get("cachingOptions", {}).get("enableCache")
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-monitor", "exec-trigger-run"):
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretNameParameter"] == {"componentInputParameter": "storage_secret"}
        assert {k["envVar"] for k in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID",
                                                               "AWS_SECRET_ACCESS_KEY"}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert {"records_uri", "registry_uri", "model_name", "window", "drift_threshold",
            "skew_threshold", "false_alarm_rate", "s3_endpoint_url", "storage_secret",
            "ct_pipeline_name", "ct_parameters", "kfp_host"} <= set(parameters)
    assert parameters["ct_pipeline_name"]["defaultValue"] == CT_PIPELINE_NAME
    outputs = spec["components"]["comp-monitor"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs.items()} == {
        "report": "system.Markdown", "metrics": "system.Metrics", "decision": "system.Artifact"}


def test_the_ct_pipeline_name_is_the_ct_pipelines():
    from ctloop.pipelines.ct_pipeline import PIPELINE_NAME

    assert CT_PIPELINE_NAME == PIPELINE_NAME
