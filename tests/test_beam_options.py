"""Beam options: what ``beam_options.resolve`` picks, and what the TFDV and TFMA steps received on
each path: ``ctloop run`` in-process and under kfp.local's SubprocessRunner (the options the steps
recorded in their output metadata), and on a cluster (the compiled IR and ``ctloop submit``'s
run parameters)."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import EXCLUDE, LABEL
from ctloop import beam_options
from ctloop.cli import main
from ctloop.data import datagen

BEAM_STEPS = {"validate-data": ("statistics", "anomalies"), "evaluate": ("blessing", "evaluation")}


def test_no_options_run_in_process():
    assert beam_options.resolve(None) == ["--runner=FnApiRunner"]
    assert beam_options.resolve([], rows=10**9) == ["--runner=FnApiRunner"]
    assert beam_options.describe(beam_options.resolve(None)) == {
        "runner": "FnApiRunner", "workers": 1, "running_mode": "in_memory",
        "args": ["--runner=FnApiRunner"]}


def test_a_users_runner_is_kept_as_given():
    flink = ["--runner=PortableRunner", "--job_endpoint=flink-beam-jobserver:8099",
             "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    assert beam_options.resolve(flink, rows=10**9, min_rows=1) == flink
    assert beam_options.describe(flink)["runner"] == "PortableRunner"
    # A remote runner decides its workers itself.
    assert beam_options.describe(flink)["workers"] is None
    assert beam_options.summary(beam_options.describe(flink)) == "PortableRunner"


def test_options_without_a_runner_get_the_in_process_one():
    # Beam's own default (DirectRunner) would first try to download PrismRunner.
    resolved = beam_options.resolve(["--direct_num_workers=1", "--job_name=x"], rows=10**9,
                                    min_rows=1, cores=2)
    assert resolved == ["--runner=FnApiRunner", "--direct_num_workers=1", "--job_name=x"]
    assert beam_options.resolve(resolved) == resolved  # resolving again changes nothing


def test_multi_process_from_the_row_threshold():
    multi = ["--runner=FnApiRunner", "--direct_num_workers=2",
             "--direct_running_mode=multi_processing"]
    assert beam_options.resolve(None, rows=999, min_rows=1000, cores=2) == \
        ["--runner=FnApiRunner"]
    assert beam_options.resolve(None, rows=1000, min_rows=1000, cores=2) == multi
    assert beam_options.resolve(None, rows=10**6, min_rows=1000, cores=1) == \
        ["--runner=FnApiRunner"]  # one core: nothing to gain
    assert beam_options.resolve(None, rows=None, min_rows=1000, cores=2) == \
        ["--runner=FnApiRunner"]
    described = beam_options.describe(multi)
    assert (described["workers"], described["running_mode"]) == (2, "multi_processing")
    assert beam_options.summary(described) == "FnApiRunner, 2 workers (multi_processing)"
    # Measured on 2 cores: never faster, so off by default (see MULTI_PROCESS_MIN_ROWS).
    assert beam_options.MULTI_PROCESS_MIN_ROWS is None


def test_space_separated_options_are_read_too():
    described = beam_options.describe(["--runner", "DirectRunner", "--direct_num_workers", "3"])
    assert (described["runner"], described["workers"]) == ("DirectRunner", 3)


# --- what the steps received -----------------------------------------------------------------


def _recorded(run_dir: Path) -> dict[tuple[str, str], dict]:
    """(task, output) -> the ``beam`` metadata the Beam steps wrote."""
    found = {}
    for task, artifacts in BEAM_STEPS.items():
        output = json.loads((run_dir / task / "executor_output.json").read_text())
        for name in artifacts:
            found[(task, name)] = output["artifacts"][name]["artifacts"][0]["metadata"]["beam"]
    return found


@pytest.mark.local
@pytest.mark.parametrize("runner", ["in-process", "kfp-local"])
def test_ctloop_run_steps_record_the_beam_options_they_received(runner, serving_python,
                                                                 tmp_path):
    datagen.write_spans(tmp_path / "data", 1, rows=600)
    # A settings file's options, overridden by the flags.
    config = tmp_path / "ctloop.yaml"
    config.write_text(yaml.safe_dump({"beam_pipeline_args": ["--direct_num_workers=2"]}))
    job = f"ctloop-beam-{runner}"  # harmless for the local runner, and visible in the record
    result = CliRunner().invoke(main, [
        "run", "-c", str(config), "--data", str(tmp_path / "data"), "--label", LABEL,
        "--exclude", EXCLUDE[0], "--epochs", "1", "--workdir", str(tmp_path / "work"),
        "--serving-python", serving_python, "--runner", runner,
        "--summary", str(tmp_path / "summary.json"),
        "--beam-arg=--direct_num_workers=1", f"--beam-arg=--job_name={job}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    expected = {"runner": "FnApiRunner", "workers": 1, "running_mode": "in_memory",
                "args": ["--runner=FnApiRunner", "--direct_num_workers=1", f"--job_name={job}"]}
    recorded = _recorded(Path(summary["run_dir"]))
    assert recorded == {key: expected for key in recorded}
    assert set(recorded) == {(t, a) for t, artifacts in BEAM_STEPS.items() for a in artifacts}
    assert summary["beam"] == {"validate-data": expected, "evaluate": expected}
    assert ("beam: validate-data FnApiRunner, 1 worker (in_memory); evaluate FnApiRunner, "
            "1 worker (in_memory)") in result.output.splitlines()


def _task_parameter(ir: dict, task: str, parameter: str) -> str:
    """The root parameter that reaches ``task``'s ``parameter``, through any sub-DAGs."""
    dags = {"root": ir["root"], **ir["components"]}
    for name, component in dags.items():
        found = component.get("dag", {}).get("tasks", {}).get(task)
        if found is None:
            continue
        source = found["inputs"]["parameters"][parameter]["componentInputParameter"]
        while name != "root":  # up to the task that runs this sub-DAG
            name, outer = next((n, t) for n, c in dags.items()
                               for t in c.get("dag", {}).get("tasks", {}).values()
                               if t["componentRef"]["name"] == name)
            source = outer["inputs"]["parameters"][source]["componentInputParameter"]
        return source
    raise AssertionError(f"no task {task} in the IR")


def test_compiled_ir_passes_beam_pipeline_args_to_both_steps(tmp_path):
    from kfp import compiler

    from ctloop.pipelines.ct_pipeline import build

    dataflow = ["--runner=DataflowRunner", "--project=p", "--region=europe-west1",
                "--temp_location=gs://b/tmp", "--sdk_container_image=ctloop-pipeline:1"]
    path = tmp_path / "ct.yaml"
    compiler.Compiler().compile(build(), str(path),
                                pipeline_parameters={"beam_pipeline_args": dataflow})
    ir = next(yaml.safe_load_all(path.read_text()))
    assert ir["root"]["inputDefinitions"]["parameters"]["beam_pipeline_args"][
        "defaultValue"] == dataflow
    for task in BEAM_STEPS:
        assert _task_parameter(ir, task, "beam_pipeline_args") == "beam_pipeline_args"


def test_submit_beam_args_override_the_settings_file(tmp_path, monkeypatch):
    from ctloop.kfp import api as kfp_api

    started = []

    class Run:
        run_id = "r1"

    class Version:
        display_name = "v1"

    monkeypatch.setattr(kfp_api, "start_run",
                        lambda client, name, version, experiment, values, run_name:
                        started.append(values) or (Run(), Version()))
    config = tmp_path / "ctloop.yaml"
    config.write_text(yaml.safe_dump({"label": "churned",
                                      "beam_pipeline_args": ["--runner=SparkRunner"]}))
    runner = CliRunner()
    args = ["submit", "--host", "http://kfp.test:8080", "-c", str(config)]
    result = runner.invoke(main, [*args, "--beam-arg=--runner=PortableRunner",
                                  "--beam-arg=--job_endpoint=flink-jobserver:8099"],
                           obj={"kfp_client": object()})
    assert result.exit_code == 0, result.output
    assert started[-1] == {"label": "churned", "beam_pipeline_args": [
        "--runner=PortableRunner", "--job_endpoint=flink-jobserver:8099"]}
    result = runner.invoke(main, args, obj={"kfp_client": object()})
    assert started[-1]["beam_pipeline_args"] == ["--runner=SparkRunner"]
    result = runner.invoke(main, [*args, "--beam-arg=--runner=X", "--param",
                                  'beam_pipeline_args=["--runner=Y"]'],
                           obj={"kfp_client": object()})
    assert result.exit_code == 2 and "use one of them" in result.output
