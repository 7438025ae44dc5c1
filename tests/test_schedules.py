"""Schedules as code: cron checks, the schedules file, and the plan over V2beta1RecurringRuns."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from kfp_server_api import (
    V2beta1CronSchedule,
    V2beta1PeriodicSchedule,
    V2beta1RecurringRun,
    V2beta1Trigger,
)

from ctloop.errors import ConfigError
from ctloop.kfp import schedules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "schedules.yaml"


@pytest.mark.parametrize(("cron", "kfp"), [
    ("0 3 * * *", "0 0 3 * * *"),
    ("*/15 * * * *", "0 */15 * * * *"),
    ("0 9-17/2 * * 1-5", "0 0 9-17/2 * * 1-5"),
    ("30 2 1,15 * *", "0 30 2 1,15 * *"),
    ("0 0 * jan,Jul sun", "0 0 0 * jan,Jul sun"),
    ("59 23 31 12 6", "0 59 23 31 12 6"),
    ("  0   3 * *  * ", "0 0 3 * * *"),
])
def test_cron_becomes_kfps_six_fields_with_seconds_first(cron, kfp):
    assert schedules.cron_to_kfp(cron) == kfp
    assert schedules.cron_from_kfp(kfp) == " ".join(cron.split())


@pytest.mark.parametrize(("cron", "message"), [
    ("", "has 0 fields, not 5"),
    ("   ", "has 0 fields, not 5"),
    ("0 3 * *", "has 4 fields, not 5; write 'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK'"),
    ("0 0 3 * * *", "has 6 fields, not 5 (KFP's own 6-field form starts with seconds: drop "
                    "them here)"),
    ("0 3 * * * * *", "has 7 fields"),
    ("60 3 * * *", "minute '60' is outside 0-59"),
    ("0 24 * * *", "hour '24' is outside 0-23"),
    ("0 3 0 * *", "day of month '0' is outside 1-31"),
    ("0 3 32 * *", "day of month '32' is outside 1-31"),
    ("0 3 * 13 *", "month '13' is outside 1-12"),
    ("0 3 * 0 *", "month '0' is outside 1-12"),
    ("0 3 * * 7", "day of week '7' is outside 0-6"),
    ("-1 3 * * *", "minute '-1' is empty"),
    ("0 3 * * mon-", "day of week 'mon-' is empty"),
    ("*/0 * * * *", "minute '*/0' has step 0, outside 1-60"),
    ("*/61 * * * *", "minute '*/61' has step 61, outside 1-60"),
    ("*/x * * * *", "minute '*/x' has step 'x', not a whole number"),
    ("*/ * * * *", "minute '*/' has step '', not a whole number"),
    ("5/15 * * * *", "minute '5/15' steps from a single value"),
    ("/5 * * * *", "minute '/5' steps from a single value"),
    ("0 17-9 * * *", "hour '17-9' is a range from 17 down to 9"),
    ("a 3 * * *", "minute 'a' is not a number"),
    ("0 3h * * *", "hour '3h' is not a number"),
    ("0 3 * foo *", "month 'foo' is not a number"),
    ("0 3 * * mon,funday", "day of week 'funday' is not a number"),
    ("0 3 * jan-sun *", "month 'jan-sun' is not a number"),
    ("0 3 ? * *", "day of month '?' is not a number"),
    ("0 3 L * *", "day of month 'L' is not a number"),
    ("0,,5 3 * * *", "minute '' is empty"),
    ("0 3 * * 1.5", "day of week '1.5' is not a number"),
    ("@daily", "has 1 fields, not 5"),
])
def test_bad_cron_is_a_one_line_error_naming_field_and_value(cron, message):
    with pytest.raises(ConfigError) as caught:
        schedules.cron_to_kfp(cron)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"cron {cron!r}") and message in text


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400), (3600, 3600)])
def test_intervals(value, seconds):
    assert schedules.interval_seconds(value) == seconds


@pytest.mark.parametrize("value", ["0s", "6 hours", "h", "-5m", "1.5h", 0, -60, True, "3600"])
def test_bad_intervals(value):
    with pytest.raises(ConfigError, match="is not a duration; write a positive number with a "
                       "unit, e.g. 90s, 30m, 6h or 1d"):
        schedules.interval_seconds(value)


def test_example_file_in_the_repository_is_valid():
    parsed = schedules.load(EXAMPLE, "ctloop-continuous-training")
    assert parsed.experiment == "ctloop"
    assert [s.name for s in parsed.schedules] == ["nightly", "weekly-full-retrain",
                                                  "monitor-hourly"]
    nightly, weekly, watch = parsed.schedules
    assert nightly.cron == "0 0 3 * * *" and nightly.pipeline_version == "latest"
    assert (nightly.max_concurrency, nightly.no_catchup, nightly.enabled) == (1, True, True)
    assert weekly.enabled is False and weekly.parameters["spans"] == 4
    # What `make kind-up` builds and `make e2e` runs: the registry in KFP's object store, where
    # every task of every run reaches it, and models infra-validated and served by KServe.
    e2e = (ROOT / "scripts/e2e.sh").read_text()
    # The monitor runs its own pipeline, on the same registry, and starts nightly's CT run.
    assert (watch.pipeline, nightly.pipeline) == ("ctloop-monitor", "ctloop-continuous-training")
    assert watch.enabled is False and watch.parameters["records_uri"].startswith("s3://")
    assert watch.parameters["ct_parameters"] == nightly.parameters
    assert watch.parameters["registry_uri"] == nightly.parameters["registry_uri"]
    for schedule in (nightly, weekly):
        assert schedule.parameters["registry_uri"] == "s3://mlpipeline/ctloop/registry"
        assert schedule.parameters["serving_target"] == "kserve"
        assert schedule.parameters["s3_endpoint_url"] == "http://seaweedfs.kubeflow:9000"
        for key in ("registry_uri", "serving_target", "s3_endpoint_url", "data_uri"):
            assert f"--param {key}={schedule.parameters[key]}" in e2e, key


@pytest.mark.parametrize(("parameters", "message"), [
    ({"registry_uri": "/mnt/ctloop/registry", "serving_target": "kserve"},
     "schedule 'n': registry_uri '/mnt/ctloop/registry' is a path inside one pod; use an "
     "object store"),
    ({"registry_uri": "s3://b/registry"},
     "schedule 'n': serving_target 'local' without serving_python never infra-blesses a model"),
])
def test_a_schedule_that_could_never_push_is_refused(parameters, message):
    # (the monitoring pipeline's schedules are checked in the test below)
    data = {"schedules": [{"name": "n", "cron": "0 3 * * *", "parameters": parameters}]}
    with pytest.raises(ConfigError, match=message):
        schedules.parse(data, "f.yaml", "ct")


def test_defaults():
    parsed = schedules.parse({"schedules": [{"name": "n", "interval": "6h"}]}, "f.yaml", "ct")
    assert parsed == schedules.SchedulesFile("ctloop", "ct", (schedules.Schedule(
        "n", None, 21600, "latest", {}, max_concurrency=1, no_catchup=True, enabled=True,
        pipeline="ct"),))


@pytest.mark.parametrize(("data", "message"), [
    ([], "f.yaml: expected a mapping with a 'schedules' list"),
    ({"schedule": []}, "f.yaml: expected a mapping with a 'schedules' list"),
    ({"schedules": [], "pipline": "x"}, "f.yaml: unknown key(s) pipline; allowed: experiment"),
    ({"schedules": ["nightly"]}, "f.yaml: schedule #1 is not a mapping"),
    ({"schedules": [{"cron": "0 3 * * *"}]}, "f.yaml: schedule #1: name None is invalid"),
    ({"schedules": [{"name": "has space", "cron": "0 3 * * *"}]}, "name 'has space' is invalid"),
    ({"schedules": [{"name": "n"}]}, "f.yaml: schedule 'n': give exactly one of cron: or "
                                     "interval:"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "interval": "1h"}]},
     "give exactly one of cron: or interval:"),
    ({"schedules": [{"name": "n", "cron": "0 25 * * *"}]},
     "f.yaml: schedule 'n': cron '0 25 * * *': hour '25' is outside 0-23"),
    ({"schedules": [{"name": "n", "interval": "soon"}]},
     "f.yaml: schedule 'n': interval 'soon' is not a duration"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "paused": True}]},
     "schedule 'n': unknown key(s) paused; allowed: config, cron, enabled, interval"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "parameters": ["a"]}]},
     "parameters must be a mapping of name: value"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "max_concurrency": 0}]},
     "max_concurrency 0 must be a whole number in 1-10 (KFP's limit)"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "max_concurrency": 11}]},
     "max_concurrency 11 must be"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "enabled": "yes"}]},
     "enabled 'yes' must be true or false"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *", "pipeline_version": ""}]},
     "pipeline_version '' must be a version name or 'latest'"),
    ({"schedules": [{"name": "n", "cron": "0 3 * * *"}, {"name": "n", "interval": "1h"}]},
     "f.yaml: schedule name(s) n declared twice"),
])
def test_bad_schedules_file_is_a_one_line_error(data, message):
    with pytest.raises(ConfigError) as caught:
        schedules.parse(data, "f.yaml", "ct")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it .*; pass --file with an existing file"):
        schedules.load(tmp_path / "none.yaml", "ct")
    (tmp_path / "bad.yaml").write_text("schedules: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML .*; fix its syntax"):
        schedules.load(tmp_path / "bad.yaml", "ct")


# --- the plan -------------------------------------------------------------------------------

NIGHTLY = schedules.Schedule("nightly", "0 0 3 * * *", None, "latest", {"label": "churned"})
TARGET = schedules.Target("p1", "v2", {"label": "churned"})


def _existing(schedule, version_id="v2", parameters=None, status="ENABLED", run_id=None,
              description=None):
    digest = schedules.fingerprint(schedule, version_id, parameters or TARGET.parameters)
    trigger = V2beta1Trigger(cron_schedule=V2beta1CronSchedule(cron=schedule.cron)) if (
        schedule.cron) else V2beta1Trigger(periodic_schedule=V2beta1PeriodicSchedule(
            interval_second=str(schedule.interval_second)))
    return V2beta1RecurringRun(
        recurring_run_id=run_id or f"rr-{schedule.name}", display_name=schedule.name,
        description=description if description is not None else
        f"managed by ctloop schedule apply; {schedules.SCHEDULE_TAG}{digest}",
        status=status, trigger=trigger, max_concurrency=str(schedule.max_concurrency),
        no_catchup=schedule.no_catchup)


def test_missing_schedule_is_created_with_its_fingerprint():
    (action,) = schedules.plan([NIGHTLY], {"nightly": TARGET}, [], prune=False)
    assert isinstance(action, schedules.Create)
    assert (action.pipeline_id, action.version_id, action.parameters) == ("p1", "v2",
                                                                          {"label": "churned"})
    assert schedules.tagged_fingerprint(action.description) == schedules.fingerprint(
        NIGHTLY, "v2", {"label": "churned"})


def test_unchanged_schedule_is_left_alone():
    actions = schedules.plan([NIGHTLY], {"nightly": TARGET}, [_existing(NIGHTLY)], prune=True)
    assert actions == [schedules.Unchanged("rr-nightly", "nightly")]


@pytest.mark.parametrize("change", [
    {"cron": "0 0 4 * * *"}, {"max_concurrency": 2}, {"no_catchup": False},
    {"cron": None, "interval_second": 3600}])
def test_changed_schedule_is_deleted_then_created(change):
    changed = dataclasses.replace(NIGHTLY, **change)
    actions = schedules.plan([changed], {"nightly": TARGET}, [_existing(NIGHTLY)], prune=False)
    assert [type(a) for a in actions] == [schedules.Delete, schedules.Create]
    assert actions[0] == schedules.Delete("rr-nightly", "nightly", "changed")
    assert actions[1].schedule == changed


def test_new_pipeline_version_or_parameters_count_as_a_change():
    new_version = schedules.Target("p1", "v3", TARGET.parameters)
    actions = schedules.plan([NIGHTLY], {"nightly": new_version}, [_existing(NIGHTLY)], False)
    assert [type(a) for a in actions] == [schedules.Delete, schedules.Create]
    assert actions[1].version_id == "v3"
    new_params = schedules.Target("p1", "v2", {"label": "churned", "epochs": 5})
    actions = schedules.plan([NIGHTLY], {"nightly": new_params}, [_existing(NIGHTLY)], False)
    assert [type(a) for a in actions] == [schedules.Delete, schedules.Create]


def test_enabled_flag_switches_in_place():
    paused = dataclasses.replace(NIGHTLY, enabled=False)
    assert schedules.plan([paused], {"nightly": TARGET}, [_existing(NIGHTLY)], False) == [
        schedules.SetEnabled("rr-nightly", "nightly", False)]
    assert schedules.plan([NIGHTLY], {"nightly": TARGET},
                          [_existing(NIGHTLY, status="DISABLED")], False) == [
        schedules.SetEnabled("rr-nightly", "nightly", True)]


def test_duplicates_of_one_schedule_are_reduced_to_the_matching_one():
    stale = _existing(dataclasses.replace(NIGHTLY, cron="0 0 1 * * *"), run_id="rr-a")
    current = _existing(NIGHTLY, run_id="rr-b")
    actions = schedules.plan([NIGHTLY], {"nightly": TARGET}, [stale, current], False)
    assert actions == [schedules.Delete("rr-a", "nightly", "changed"),
                       schedules.Unchanged("rr-b", "nightly")]
    twin = _existing(NIGHTLY, run_id="rr-c")
    actions = schedules.plan([NIGHTLY], {"nightly": TARGET}, [current, twin], False)
    assert actions == [schedules.Delete("rr-c", "nightly", "duplicate"),
                       schedules.Unchanged("rr-b", "nightly")]


def test_prune_deletes_only_what_ctloop_created():
    gone = _existing(dataclasses.replace(NIGHTLY, name="old"))
    by_hand = _existing(dataclasses.replace(NIGHTLY, name="by-hand"), description="mine")
    existing = [_existing(NIGHTLY), gone, by_hand]
    assert schedules.plan([NIGHTLY], {"nightly": TARGET}, existing, prune=False) == [
        schedules.Unchanged("rr-nightly", "nightly")]
    assert schedules.plan([NIGHTLY], {"nightly": TARGET}, existing, prune=True) == [
        schedules.Unchanged("rr-nightly", "nightly"),
        schedules.Delete("rr-old", "old", "not declared")]


def test_a_declared_name_held_by_a_foreign_recurring_run_is_an_error():
    foreign = _existing(NIGHTLY, description="created in the UI")
    with pytest.raises(ConfigError, match="schedule 'nightly': recurring run rr-nightly has that "
                       "name but was not created by ctloop; rename the schedule or delete"):
        schedules.plan([NIGHTLY], {"nightly": TARGET}, [foreign], prune=False)


def test_describe_trigger():
    assert schedules.describe_trigger(_existing(NIGHTLY)) == "cron 0 3 * * *"
    hourly = dataclasses.replace(NIGHTLY, cron=None, interval_second=3600)
    assert schedules.describe_trigger(_existing(hourly)) == "every 3600 s"
    assert schedules.describe_trigger(V2beta1RecurringRun(display_name="x")) == "no trigger"


def test_example_file_parses_as_plain_yaml_too():
    assert yaml.safe_load(EXAMPLE.read_text())["pipeline"] == "ctloop-continuous-training"


def test_a_config_file_gives_the_runs_parameters_and_a_schedule_overrides_it(tmp_path):
    (tmp_path / "ctloop.yaml").write_text(
        "data_uri: s3://b/data\nlabel: churned\nepochs: 3\nregistry_uri: s3://b/registry\n"
        "serving_target: kserve\n")
    (tmp_path / "other.yaml").write_text(
        "data_uri: s3://b/other\nlabel: y\nregistry_uri: s3://b/r2\nserving_target: kserve\n")
    path = tmp_path / "schedules.yaml"
    path.write_text("config: ctloop.yaml\nschedules:\n"
                    "  - {name: a, interval: 6h}\n"
                    "  - {name: b, interval: 6h, parameters: {epochs: 5}}\n"
                    "  - {name: c, interval: 6h, config: other.yaml}\n")
    a, b, c = schedules.load(path, "ct").schedules
    shared = {"data_uri": "s3://b/data", "label": "churned", "epochs": 3,
              "registry_uri": "s3://b/registry", "serving_target": "kserve"}
    assert a.parameters == shared
    assert b.parameters == {**shared, "epochs": 5}
    assert c.parameters == {"data_uri": "s3://b/other", "label": "y",
                            "registry_uri": "s3://b/r2", "serving_target": "kserve"}


def test_a_bad_config_file_of_a_schedule_is_one_line(tmp_path):
    (tmp_path / "ctloop.yaml").write_text("label: churned\nlearning_rat: 0.1\n")
    path = tmp_path / "schedules.yaml"
    path.write_text("config: ctloop.yaml\nschedules: [{name: a, interval: 6h}]\n")
    with pytest.raises(ConfigError, match=r"config file .*ctloop.yaml: 'learning_rat' is not a "
                       r"pipeline parameter; did you mean learning_rate\?"):
        schedules.load(path, "ct")
    path.write_text("config: nope.yaml\nschedules: [{name: a, interval: 6h}]\n")
    with pytest.raises(ConfigError, match="nope.yaml: cannot read it"):
        schedules.load(path, "ct")


def test_a_schedule_names_its_pipeline_and_the_monitors_are_checked_for_a_cluster():
    watch = {"name": "m", "cron": "15 * * * *", "pipeline": "ctloop-monitor",
             "parameters": {"records_uri": "s3://b/records", "registry_uri": "s3://b/registry"}}
    parsed = schedules.parse({"pipeline": "ct", "schedules": [
        watch, {"name": "n", "interval": "6h"}]}, "f.yaml", "default")
    assert [s.pipeline for s in parsed.schedules] == ["ctloop-monitor", "ct"]
    assert parsed.pipeline == "ct"
    # A monitor serves nothing: no serving target is asked of it; its records are in a store.
    with pytest.raises(ConfigError, match="schedule 'm': records_uri '/var/records' is a path "
                       "inside one pod"):
        schedules.parse({"schedules": [{**watch, "parameters": {
            **watch["parameters"], "records_uri": "/var/records"}}]}, "f.yaml", "ct")
    with pytest.raises(ConfigError, match="schedule 'm': pipeline 3 must be the name"):
        schedules.parse({"schedules": [{**watch, "pipeline": 3}]}, "f.yaml", "ct")
