"""The compiled pipeline: golden IR, the gates and caching a cluster runs, the settings it needs,
components compile alone."""

import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components

from ctloop.components.evaluate.component import evaluate
from ctloop.components.infra_validate.component import infra_validate
from ctloop.components.ingest.component import ingest
from ctloop.components.load_baseline.component import load_baseline
from ctloop.components.resolve_baseline.component import resolve_baseline
from ctloop.components.rollout.component import rollout
from ctloop.components.run_report.component import run_report
from ctloop.components.select_span.component import select_span
from ctloop.components.train.component import train
from ctloop.components.validate_data.component import validate_data
from ctloop.kfp import compiling
from ctloop.kfp.images import PIPELINE_IMAGE

GOLDEN = Path(__file__).resolve().parent.parent / "pipelines" / "ct_pipeline.yaml"
GOLDEN_GPU = GOLDEN.with_name("ct_pipeline_gpu.yaml")
COMPONENTS = [select_span, resolve_baseline, load_baseline, ingest, validate_data, train,
              evaluate, infra_validate, rollout, run_report]


def all_tasks(spec: dict) -> dict[str, tuple[dict, list[str]]]:
    """Every task of the IR at any depth: name -> (its spec, the condition tasks around it,
    outermost first)."""
    found = {}

    def walk(dag: dict, around: list[str]) -> None:
        for name, task in dag["tasks"].items():
            found[name] = (task, around)
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], [*around, name])

    walk(spec["root"]["dag"], [])
    return found


def producing_task(spec: dict, task: str, key: str) -> dict:
    """The task output an input artifact of a task is, followed out through the conditions
    around the task (they pass it on under one channel name)."""
    tasks = all_tasks(spec)
    found, around = tasks[task]
    source = found["inputs"]["artifacts"][key]
    for outer in reversed(around):
        if "taskOutputArtifact" in source:
            break
        source = tasks[outer][0]["inputs"]["artifacts"][source["componentInputArtifact"]]
    return source["taskOutputArtifact"]


def pipeline_parameter(spec: dict, task: str, key: str) -> str | None:
    """The pipeline parameter a task's input parameter is, followed out through the conditions
    around the task (None: another task's output, or a constant)."""
    tasks = all_tasks(spec)
    found, around = tasks[task]
    name = found["inputs"]["parameters"][key].get("componentInputParameter")
    for outer in reversed(around):
        if name is None:
            return None
        name = tasks[outer][0]["inputs"]["parameters"][name].get("componentInputParameter")
    return name


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("ir") / "ct_pipeline.yaml"
    compiling.compile_pipeline(path)
    spec, platform = yaml.safe_load_all(path.read_text())
    return {"text": path.read_text(), "spec": spec, "platform": platform, "path": str(path)}


@pytest.fixture(scope="module")
def gpu_ir(tmp_path_factory) -> dict:
    from ctloop.pipelines.gpu import GpuSettings

    path = tmp_path_factory.mktemp("ir") / "ct_pipeline_gpu.yaml"
    compiling.compile_pipeline(path, gpu=GpuSettings())
    spec, platform = yaml.safe_load_all(path.read_text())
    return {"text": path.read_text(), "spec": spec, "platform": platform}


def test_compiled_pipeline_matches_golden_file(ir):
    assert ir["text"] == GOLDEN.read_text(), (
        "pipelines/ct_pipeline.yaml is stale: run `make compile` and review the diff"
    )


def test_compiled_gpu_variant_matches_golden_file(gpu_ir):
    assert gpu_ir["text"] == GOLDEN_GPU.read_text(), (
        "pipelines/ct_pipeline_gpu.yaml is stale: run `make compile` and review the diff"
    )


def test_compiled_multi_worker_variant_matches_golden_file(tmp_path):
    from ctloop.kfp import compiling
    from ctloop.pipelines.distributed import WorkerSettings

    path = tmp_path / "ct_pipeline_workers.yaml"
    compiling.compile_pipeline(path, workers=WorkerSettings(workers=2))
    assert path.read_text() == compiling.PIPELINE_WORKERS_YAML.read_text(), (
        "pipelines/ct_pipeline_workers.yaml is stale: run `make compile` and review the diff")
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = all_tasks(spec)
    assert "train-job" in tasks and "train" not in tasks
    assert tasks["evaluate"][0]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "train-job", "outputArtifactKey": "model"}


def test_gpu_variant_schedules_the_train_task_on_gpu_nodes(gpu_ir, ir):
    executors = gpu_ir["spec"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"].startswith("ctloop-pipeline-gpu:")
    assert {e["container"]["image"] for n, e in executors.items() if n != "exec-train"} == {
        PIPELINE_IMAGE}
    defaults = gpu_ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["gpu_count"]["defaultValue"] == "1"
    train = gpu_ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train"]
    assert train["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert train["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm",
                                        "medium": "Memory", "sizeLimit": "2Gi"}]
    # The CPU pipeline is the same graph, without GPU scheduling.
    assert gpu_ir["spec"]["root"]["dag"] == ir["spec"]["root"]["dag"]
    cpu = ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert set(cpu) == {"secretAsEnv"}


def test_train_task_requests_accelerators_from_pipeline_parameters(ir):
    resources = ir["spec"]["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "accelerator_type" in resources["accelerator"]["resourceType"]
    assert "gpu_count" in resources["accelerator"]["resourceCount"]
    assert pipeline_parameter(ir["spec"], "train", "pipelinechannel--gpu_count") == "gpu_count"
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["gpu_count"]["defaultValue"] == "0"
    assert defaults["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"


def driver_accelerator(ir: dict, task: str, arguments: dict) -> tuple[str, str]:
    """The accelerator (type, count) KFP's driver puts on ``task``'s pod for a run with
    ``arguments``, as backend/src/v2/driver/resolve.go's resolvePodSpecInputRuntimeParameter
    does: a channel resolves to the executor input's value read with GetStringValue(), which is
    "" for anything but a string (a NUMBER parameter arrives as a number_value)."""
    executor = all_tasks(ir["spec"])[task][0]["componentRef"]["name"].replace("comp-", "exec-")
    accelerator = ir["spec"]["deploymentSpec"]["executors"][executor]["container"][
        "resources"]["accelerator"]
    root = ir["spec"]["root"]["inputDefinitions"]["parameters"]

    def resolve(value: str) -> str:
        match = re.fullmatch(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}", value)
        if not match:
            return value  # a constant
        # The channel carries the pipeline parameter's value with the parameter's type.
        pipeline_param = pipeline_parameter(ir["spec"], task, match.group(1))
        given = arguments.get(pipeline_param, root[pipeline_param].get("defaultValue"))
        return given if root[pipeline_param]["parameterType"] == "STRING" else ""

    return resolve(accelerator["resourceType"]), resolve(accelerator["resourceCount"])


def test_kfps_driver_resolves_the_gpu_count_of_the_gpu_variant(gpu_ir, ir):
    assert driver_accelerator(gpu_ir, "train", {}) == ("nvidia.com/gpu", "1")
    assert driver_accelerator(gpu_ir, "train", {"gpu_count": "4"}) == ("nvidia.com/gpu", "4")
    assert gpu_ir["spec"]["root"]["inputDefinitions"]["parameters"]["gpu_count"][
        "parameterType"] == "STRING"
    assert driver_accelerator(ir, "train", {}) == ("nvidia.com/gpu", "0")


# Task -> whether KFP may serve it from its cache. Never the tasks that look at state outside
# their inputs (the data, the registry), nor infra validation (the serving runtime's verdict at
# the time), nor rollout (it writes and deploys); every task decided by its inputs is.
CACHED = {"select-span": False, "resolve-baseline": False, "load-baseline": True,
          "ingest": True, "validate-data": True, "train": True, "evaluate": True,
          "infra-validate": False, "rollout": False,
          # The search: decided by its inputs; tune_plan stamps when the search starts, from
          # which its trials count their budget.
          "tune": True, "tune-2": True, "tune-plan": False, "tune-trial": False,
          # The run's page notifies: a cache hit would send nothing.
          "run-report": False, "run-report-2": False, "run-report-3": False,
          "run-report-4": False,
          # The exit handler's task reports a failed or cancelled run, every time.
          "notify-failure": False}
# The exit handler around every task but its own exit task.
EXIT_HANDLER = "exit-handler-1"
# The run's page takes the notification settings from the pipeline's parameters of those names.
NOTIFIED = {"notify_email_to", "notify_email_from", "notify_smtp_host", "notify_smtp_port",
            "notify_smtp_starttls", "notify_on"}
# The gates: condition task name -> (the gate task whose bool output it tests).
GATES = {"data-valid": "validate-data", "blessed": "evaluate", "infra-blessed": "infra-validate"}
# The search's branches, on the tune_trials parameter rather than a gate.
TUNING_BRANCHES = {"tuning", "no-tuning"}
# Each gate's dsl.Else branch: condition task name -> the gate it negates.
ELSE = {"data-invalid": "data-valid", "not-blessed": "blessed",
        "not-infra-blessed": "infra-blessed"}
# Task -> the gates (and Else branches) it runs inside, outermost first.
GUARDED = {"train": ["data-valid"], "evaluate": ["data-valid"],
           **{task: ["data-valid"] for task in ("tune", "tune-2", "tune-plan", "tune-trial",
                                                  "for-loop-4")},
           "infra-validate": ["data-valid", "blessed"],
           "rollout": ["data-valid", "blessed", "infra-blessed"],
           "run-report": ["data-valid", "blessed", "infra-blessed"],
           "run-report-2": ["data-valid", "blessed", "not-infra-blessed"],
           "run-report-3": ["data-valid", "not-blessed"],
           "run-report-4": ["data-invalid"]}
# The run's page takes what the tasks outside the conditions wrote, and what the tasks of the
# conditions it runs in wrote: its input -> the task output it is.
REPORTED = {"spans_read": ("select-span", "spans_read"),
            "baseline_schema": ("load-baseline", "schema"),
            "train_data": ("ingest", "train_data"), "eval_data": ("ingest", "eval_data"),
            "data_valid": ("validate-data", "Output"),
            "anomalies": ("validate-data", "anomalies"), "schema": ("validate-data", "schema"),
            "drift_metrics": ("validate-data", "drift_metrics"),
            "anomalies_report": ("validate-data", "anomalies_report")}
JUDGED = {"blessing": ("evaluate", "blessing"),
          "classification_metrics": ("evaluate", "classification_metrics"),
          "evaluation_report": ("evaluate", "report"),
          # The search's best, from whichever of its branches ran (dsl.OneOf); locally tune's.
          "tuning": ("condition-branches-3", "pipelinechannel--condition-branches-3-oneof-1")}
SERVED = {"infra_blessing": ("infra-validate", "infra_blessing"),
          "infra_report": ("infra-validate", "report")}
PUSHED = {"pushed_model": ("rollout", "pushed_model"), "rollout_report": ("rollout", "report")}
REPORT_INPUTS = {"run-report": {**REPORTED, **JUDGED, **SERVED, **PUSHED},
                 "run-report-2": {**REPORTED, **JUDGED, **SERVED},
                 "run-report-3": {**REPORTED, **JUDGED}, "run-report-4": REPORTED}


@pytest.mark.parametrize("fixture", ["ir", "gpu_ir"])
def test_each_tasks_caching_is_as_designed(fixture, request):
    spec = request.getfixturevalue(fixture)["spec"]
    tasks = {name: task for name, (task, _) in all_tasks(spec).items()
             if not name.startswith(("condition-", "for-loop-", "exit-handler-"))}
    assert {name: task["cachingOptions"].get("enableCache", False) is True
            for name, task in tasks.items()} == CACHED


@pytest.mark.parametrize("fixture", ["ir", "gpu_ir"])
def test_tasks_after_a_failed_gate_do_not_run_on_a_cluster(fixture, request):
    spec = request.getfixturevalue(fixture)["spec"]
    tasks = all_tasks(spec)
    names = {name: task["taskInfo"]["name"] for name, (task, _) in tasks.items()}
    conditions = {name for name in tasks if name.startswith("condition-")
                  and not name.startswith("condition-branches-")
                  and names[name] not in TUNING_BRANCHES}
    assert {names[name] for name in conditions} == {*GATES, *ELSE}
    for condition in conditions:
        task = tasks[condition][0]
        gate = GATES[names[condition]] if names[condition] in GATES else GATES[
            ELSE[names[condition]]]
        test = f"inputs.parameter_values['pipelinechannel--{gate}-Output'] == true"
        assert task["triggerPolicy"]["condition"] == (
            test if names[condition] in GATES else f"!({test})")
        assert _producing_parameter(spec, condition, f"pipelinechannel--{gate}-Output") == {
            "producerTask": gate, "outputParameterKey": "Output"}
    guarded = {name: [names[outer] for outer in around if outer in conditions]
               for name, (_, around) in tasks.items() if not name.startswith("condition-")}
    assert {name: gates for name, gates in guarded.items() if gates} == GUARDED
    # Every task runs inside the exit handler, whose task reports a run that failed.
    assert {name for name, (_, around) in tasks.items() if not around} == {
        EXIT_HANDLER, "notify-failure"}
    # The gate tasks' outputs are booleans.
    for gate in GATES.values():
        component = spec["components"][tasks[gate][0]["componentRef"]["name"]]
        assert component["outputDefinitions"]["parameters"]["Output"]["parameterType"] == (
            "BOOLEAN")


@pytest.mark.parametrize("fixture", ["ir", "gpu_ir"])
def test_exactly_one_report_runs_however_the_run_ends_with_what_ran_before(fixture, request):
    """A task outside a condition cannot take outputs from inside it: one report task in each
    gate's Else branch, one after rollout; each takes the artifacts of the tasks that ran."""
    spec = request.getfixturevalue(fixture)["spec"]
    tasks = all_tasks(spec)
    for name, inputs in REPORT_INPUTS.items():
        task = tasks[name][0]
        assert re.fullmatch(r"comp-run-report(-\d)?", task["componentRef"]["name"])
        given = {**task["inputs"].get("artifacts", {}), **task["inputs"]["parameters"]}
        assert set(given) == set(inputs) | NOTIFIED, name
        assert {key: pipeline_parameter(spec, name, key) for key in NOTIFIED} == {
            key: key for key in NOTIFIED}
        for key, (producer, output) in inputs.items():
            if key in task["inputs"].get("artifacts", {}):
                assert producing_task(spec, name, key) == {
                    "producerTask": producer, "outputArtifactKey": output}, (name, key)
            else:
                assert _producing_parameter(spec, name, key) == {
                    "producerTask": producer, "outputParameterKey": output}, (name, key)
        # What a branch may lack is optional; what runs before every gate is not.
        definitions = spec["components"][task["componentRef"]["name"]]["inputDefinitions"]
        optional = {key for side in ("artifacts", "parameters")
                    for key, item in definitions.get(side, {}).items() if item.get("isOptional")}
        assert optional == {*JUDGED, *SERVED, *PUSHED}


def _producing_parameter(spec: dict, task: str, key: str) -> dict:
    """The task output an input parameter of a task is, followed out through the conditions."""
    tasks = all_tasks(spec)
    found, around = tasks[task]
    source = found["inputs"]["parameters"][key]
    for outer in reversed(around):
        if "taskOutputParameter" in source:
            break
        source = tasks[outer][0]["inputs"]["parameters"][source["componentInputParameter"]]
    return source["taskOutputParameter"]


@pytest.mark.parametrize("fixture", ["ir", "gpu_ir"])
def test_the_search_fans_out_trials_and_train_reads_its_best(fixture, request):
    """With tune_trials > 0: tune_plan, a ParallelFor of tune_trial tasks (parallelism from
    settings), tune picking among their collected results; otherwise tune in the Else branch,
    which skips; train reads the best of whichever branch ran (dsl.OneOf)."""
    from ctloop.settings import Tune

    spec = request.getfixturevalue(fixture)["spec"]
    tasks = all_tasks(spec)
    named = {task["taskInfo"]["name"]: (name, task) for name, (task, _) in tasks.items()}
    trials = "int(inputs.parameter_values['pipelinechannel--tune_trials']) > 0"
    tuning, no_tuning = named["tuning"][1], named["no-tuning"][1]
    assert tuning["triggerPolicy"]["condition"] == trials
    assert no_tuning["triggerPolicy"]["condition"] == f"!({trials})"
    loop_name, loop = named["trials"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": Tune.cluster_parallelism}
    assert loop["inputs"]["parameters"][loop["parameterIterator"]["items"]["inputParameter"]] == {
        "taskOutputParameter": {"producerTask": "tune-plan", "outputParameterKey": "trials"}}
    assert tasks["tune-trial"][1][-1] == loop_name
    assert tasks["tune"][0]["inputs"]["parameters"]["results"] == {"taskOutputParameter": {
        "producerTask": loop_name, "outputParameterKey": "pipelinechannel--tune-trial-Output"}}
    assert tasks["tune"][1][-1] == named["tuning"][0]
    assert tasks["tune-2"][1][-1] == named["no-tuning"][0]
    assert pipeline_parameter(spec, "tune-2", "trials") == "tune_trials"
    source = tasks["train"][0]["inputs"]["artifacts"]["tuned"]["taskOutputArtifact"]
    branches = spec["components"][tasks[source["producerTask"]][0]["componentRef"]["name"]]
    assert [(s["producerSubtask"], s["outputArtifactKey"]) for s in branches["dag"]["outputs"][
        "artifacts"][source["outputArtifactKey"]]["artifactSelectors"]] == [
        (named["tuning"][0], "pipelinechannel--tune-best"),
        (named["no-tuning"][0], "pipelinechannel--tune-2-best")]


def test_the_fan_outs_parallelism_is_set_at_compile_time(cli, tmp_path):
    result = cli("compile", "--output", tmp_path / "ct.yaml", "--tune-parallelism", 2)
    assert result.exit_code == 0, result.output
    spec = next(yaml.safe_load_all((tmp_path / "ct.yaml").read_text()))
    (loop,) = [task for task, _ in all_tasks(spec).values() if task["taskInfo"]["name"] == "trials"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    assert cli("compile", "--tune-parallelism", -1).exit_code == 2


def test_the_local_variant_has_the_same_tasks_without_conditions(ir):
    """kfp.local cannot run dsl.If: local runs build the pipeline without conditions, and the
    tasks after a gate get the gate's value as an input instead."""
    from kfp.compiler import Compiler

    from ctloop.pipelines.ct_pipeline import build

    path = Path(ir["path"]).with_name("local.yaml")
    Compiler().compile(build(conditions=False), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {*GATES.values(), "select-span", "resolve-baseline", "load-baseline",
                          "ingest", "tune", "train", "rollout", "run-report"}
    # One tune task runs the whole search (kfp.local has no ParallelFor); train reads its best.
    assert tasks["train"]["inputs"]["artifacts"]["tuned"]["taskOutputArtifact"] == {
        "producerTask": "tune", "outputArtifactKey": "best"}
    assert not any("triggerPolicy" in t for t in tasks.values())
    # One page at the end, from every task's artifacts.
    assert {key: (source.get("taskOutputArtifact") or source["taskOutputParameter"])[
        "producerTask"] for side in ("artifacts", "parameters")
        for key, source in tasks["run-report"]["inputs"][side].items() if key not in NOTIFIED} == {
        key: producer for key, (producer, _) in REPORT_INPUTS["run-report"].items()} | {
        "tuning": "tune"}
    gate_inputs = {"train": ("data_valid", "validate-data"),
                   "evaluate": ("data_valid", "validate-data"),
                   "infra-validate": ("blessed", "evaluate"),
                   "rollout": ("data_valid", "validate-data")}
    for name, (key, producer) in gate_inputs.items():
        assert tasks[name]["inputs"]["parameters"][key]["taskOutputParameter"] == {
            "producerTask": producer, "outputParameterKey": "Output"}
    assert spec["root"]["inputDefinitions"] == ir["spec"]["root"]["inputDefinitions"]


def test_one_baseline_is_resolved_and_every_later_task_consumes_it(ir):
    tasks = {name: task for name, (task, _) in all_tasks(ir["spec"]).items()}
    assert tasks["resolve-baseline"]["inputs"]["parameters"]["span"]["taskOutputParameter"] == {
        "producerTask": "select-span", "outputParameterKey": "span"}
    # load_baseline's cache key holds what the resolver found: a new serving version or new
    # statistics is a miss, an unchanged baseline a hit (and its consumers keep their keys).
    assert tasks["load-baseline"]["inputs"]["parameters"]["fingerprint"][
        "taskOutputParameter"] == {"producerTask": "resolve-baseline",
                                   "outputParameterKey": "fingerprint"}
    consumers = {"validate-data": {"serving_schema": "schema",
                                   "reference_statistics": "statistics"},
                 "train": {"baseline": "model"}, "evaluate": {"baseline": "model"},
                 "rollout": {"baseline": "model"}}
    for name, inputs in consumers.items():
        for key, output in inputs.items():
            assert producing_task(ir["spec"], name, key) == {
                "producerTask": "load-baseline", "outputArtifactKey": output}
    # No task but the resolver, its loader and rollout is given the registry.
    assert {name for name, task in tasks.items() if "registry_uri" in task["inputs"].get(
        "parameters", {})} == {"resolve-baseline", "load-baseline", "rollout"}


def test_ingest_is_cached_under_a_key_that_holds_the_data_fingerprint(ir):
    ingest_task = all_tasks(ir["spec"])["ingest"][0]
    assert ingest_task["cachingOptions"]["enableCache"] is True
    # KFP's cache key covers a task's inputs: with select_span's fingerprint among them, a
    # changed byte of data is a cache miss, and unchanged data a hit.
    inputs = ingest_task["inputs"]["parameters"]
    for name in ("fingerprint", "files", "spans_read"):
        assert inputs[name]["taskOutputParameter"] == {
            "producerTask": "select-span", "outputParameterKey": name}
    assert "data_uri" not in inputs  # it reads the files it is given, nothing it looks up


def test_only_rollout_gets_the_record_uri_never_infra_validation(ir):
    """The serving predictor records (with the data's endpoint); the candidate's load test,
    synthetic traffic to a model that may never serve, must not reach the monitor."""
    tasks = {name: task for name, (task, _) in all_tasks(ir["spec"]).items()}
    assert {name for name, task in tasks.items() if "serving_record_uri" in task["inputs"].get(
        "parameters", {})} == {"rollout"}
    for key in ("serving_record_uri", "s3_endpoint_url"):
        assert pipeline_parameter(ir["spec"], "rollout", key) == key
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["serving_record_uri"]["defaultValue"] == ""


def test_tasks_that_read_storage_get_its_credentials_from_a_secret(ir):
    executors = ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # The data, the registry, a user module; the others read only their input artifacts.
    readers = {"exec-select-span", "exec-resolve-baseline", "exec-load-baseline", "exec-ingest",
               "exec-train", "exec-rollout", "exec-tune", "exec-tune-2", "exec-tune-trial"}
    notifiers = {"exec-notify-failure", *(f"exec-run-report{n}" for n in ("", "-2", "-3", "-4"))}
    assert set(executors) == readers | notifiers
    # The notifying tasks mount the notification Secret (optional: none, nothing is sent).
    for name in notifiers:
        (volume,) = executors[name]["secretAsVolume"]
        assert volume["secretNameParameter"] == {"componentInputParameter": "notify_secret"}
        assert volume["optional"] is True
        assert "secretAsEnv" not in executors[name]
    for name in readers:
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretNameParameter"] == {"componentInputParameter": "storage_secret"}
        assert secret["keyToEnv"] == [
            {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
            {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert defaults["storage_secret"]["defaultValue"] == "mlpipeline-minio-artifact"


def test_every_task_runs_on_the_pipeline_image(ir):
    executors = ir["spec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {PIPELINE_IMAGE}
    # Lightweight components on the project image: no pip install at container start.
    assert not any("pip install" in " ".join(e["container"]["command"])
                   for e in executors.values())


def test_image_override(tmp_path):
    path = tmp_path / "p.yaml"
    compiling.compile_pipeline(path, image="registry.example/ctloop-pipeline:abc")
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {
        "registry.example/ctloop-pipeline:abc"}
    assert "exec-rollout" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_component_compiles_and_loads_back(component, tmp_path):
    path = tmp_path / f"{component.name}.yaml"
    compiler.Compiler().compile(component, str(path))
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == component.name
    assert set(loaded.component_spec.inputs) == set(component.component_spec.inputs)
    assert set(loaded.component_spec.outputs) == set(component.component_spec.outputs)


def test_no_value_threshold_is_hand_set_by_default(ir):
    """No flag, no pipeline parameter: evaluate's no-skill check judges every task, and only the
    exact off sentinel travels as "none"."""
    from ctloop.cli import main
    from ctloop.settings import NO_THRESHOLD

    value_bounds = ("min_auc", "min_accuracy", "max_mae")
    defaults = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert {name: defaults[name]["defaultValue"] for name in value_bounds} == dict.fromkeys(
        value_bounds, NO_THRESHOLD)
    assert defaults["max_mae_increase"]["defaultValue"] == NO_THRESHOLD  # then 1% relative
    assert defaults["max_auc_decrease"]["defaultValue"] == 0.01
    parsed = main.commands["run"].make_context("run", [
        "--local", "--data", "data", "--label", "churned", "--workdir", "work",
        "--serving-python", "python"]).params
    assert {name: parsed[name] for name in value_bounds} == dict.fromkeys(value_bounds)


def test_a_run_releases_into_staging_judged_against_production_by_default(ir):
    """Production moves only by an approval (the ctloop-promote pipeline): a run deploys into
    ``release_stage``, staging unless the settings say otherwise, with ``release_strategy``."""
    spec = ir["spec"]
    for key, parameter in (("stage", "release_stage"), ("strategy", "release_strategy"),
                           ("shadow_min_agreement", "shadow_min_agreement")):
        assert pipeline_parameter(spec, "rollout", key) == parameter
    for task in ("resolve-baseline", "load-baseline"):
        assert pipeline_parameter(spec, task, "baseline_stage") == "baseline_stage"
    defaults = {name: p.get("defaultValue") for name, p in
                spec["root"]["inputDefinitions"]["parameters"].items()}
    assert (defaults["release_stage"], defaults["baseline_stage"],
            defaults["release_strategy"]) == ("staging", "production", "canary")
