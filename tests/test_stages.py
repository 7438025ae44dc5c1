"""Promotion to production on a person's approval, and rollback (``ctloop.registry.stages``), on
both registries (a folder, and S3 on moto's server): what moves, what is recorded, and every
refusal in one line with nothing changed; then ``ctloop promote``/``rollback``/``versions``."""

from __future__ import annotations

import json

import boto3
import pytest

from ctloop.errors import ConfigError, PromotionRefused
from ctloop.registry import (
    POINTER_FILE,
    PRODUCTION,
    STAGING,
    LocalRegistry,
    S3Registry,
    stages,
)
from ctloop.registry.base import POINTER_FILES

BLESSED = {"metrics": {"auc": 0.91}, "infra": {"p99_ms": 12.0},
           "blessing": {"reason": "auc 0.91 >= 0.90", "forced": False, "force_reason": None}}
DEPLOYED = {"action": "deploy", "stage": STAGING, "strategy": "shadow", "outcome": "passed"}


class Store:
    def __init__(self, open_, names):
        self.open, self.names = open_, names

    def snapshot(self) -> dict[str, bytes | None]:
        """Every pointer and record, as bytes: what a refusal must leave as it was."""
        return self.names()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        folder = tmp_path / "registry" / "churn"

        def files():
            return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                    if p.is_file() and p.name != ".lock" and (
                        p.name in POINTER_FILES or p.name == "record.json")}

        return Store(lambda: LocalRegistry(tmp_path / "registry", "churn"), files)
    bucket = request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=bucket.endpoint_url)
    name = bucket.uri[5:]

    def objects():
        listed = client.list_objects_v2(Bucket=name, Prefix="registry/churn/").get(
            "Contents", [])
        return {o["Key"]: client.get_object(Bucket=name, Key=o["Key"])["Body"].read()
                for o in listed if o["Key"].rsplit("/", 1)[-1] in (*POINTER_FILES,
                                                                    "record.json")}

    count = iter(range(1000))
    return Store(lambda: S3Registry(f"{bucket.uri}/registry", "churn", bucket.endpoint_url,
                                    cache_dir=tmp_path / f"cache-{next(count)}"), objects)


@pytest.fixture
def model(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return tmp_path / "model", tmp_path / "schema.pbtxt"


@pytest.fixture
def staged(store, model):
    """Production serves version 1; version 2, blessed and shadowed in staging, awaits
    approval."""
    registry = store.open()
    registry.push(*model, BLESSED, expected_serving=None)
    registry.push(*model, BLESSED, expected_serving=None, stage=STAGING)
    registry.record_decision(2, DEPLOYED)
    return registry


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message, message
    return message


def test_promote_moves_production_and_records_who_when_why(store, staged):
    version = stages.promote(staged, 2, approved_by=" ana ", reason="shadow ran clean for 2 days")
    assert version.number == 2
    reader = store.open()
    assert (reader.serving().number, reader.serving(STAGING).number) == (2, 2)
    assert reader.history() == [1]
    decision = reader.read_record(2)["decisions"][-1]
    at = decision.pop("at_unix")
    assert isinstance(at, float)
    assert decision == {
        "action": "promote", "stage": "production", "from_stage": "staging",
        "approved_by": "ana", "reason": "shadow ran clean for 2 days", "previous_version": 1,
        "blessing": BLESSED["blessing"],
        "evidence": {"metrics": {"auc": 0.91}, "infra": {"p99_ms": 12.0},
                     "staging_deployment": {**DEPLOYED, "at_unix": decision["evidence"][
                         "staging_deployment"]["at_unix"]}}}


def test_evidence_given_is_recorded_as_given(store, staged):
    stages.promote(staged, 2, approved_by="ana", reason="ok", evidence={"ticket": "CT-12"})
    assert store.open().read_record(2)["decisions"][-1]["evidence"] == {"ticket": "CT-12"}


def test_a_cold_start_promotes_over_no_version(store, model):
    registry = store.open()
    registry.push(*model, BLESSED, expected_serving=None, stage=STAGING)
    assert stages.promote(registry, 1, approved_by="ana", reason="first").number == 1
    record = store.open().read_record(1)
    assert record["decisions"][-1]["previous_version"] is None
    assert record["decisions"][-1]["evidence"]["staging_deployment"] is None
    assert store.open().history() == []


REFUSALS = {
    "no approver": (dict(number=2, approved_by=" ", reason="ok"),
                    "cannot promote version 2: approved_by is empty; say who approves "
                    "(--approved-by on the command line)"),
    "no reason": (dict(number=2, approved_by="ana", reason=""),
                  "cannot promote version 2: reason is empty; say why (--reason on the command "
                  "line)"),
    "missing": (dict(number=9, approved_by="ana", reason="ok"),
                "version 9 of {uri} was not promoted: it does not exist; versions: [1, 2, 3]"),
    "not staged": (dict(number=1, approved_by="ana", reason="ok"),
                   "version 1 of {uri} was not promoted: it is not in staging, which holds "
                   "version 3; a version is staged by a CT run whose rollout targets staging, "
                   "or by hand with set_serving(1, stage=\"staging\"), and promoted from there"),
    "not blessed": (dict(number=3, approved_by="ana", reason="ok"),
                    "version 3 of {uri} was not promoted: its record has no blessing (evaluate's "
                    "verdict, which rollout stores under \"blessing\" for the versions it "
                    "pushes), so nothing says it was judged; promote a version a CT run blessed"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_each_refusal_is_one_line_and_changes_nothing(store, staged, model, name):
    # Version 3, pushed into staging by hand (no evaluation, no blessing), now awaits approval.
    staged.push(*model, {"metrics": {}}, expected_serving=2, stage=STAGING)
    arguments, expected = dict(REFUSALS[name][0]), REFUSALS[name][1]
    before = store.snapshot()
    with pytest.raises(PromotionRefused) as caught:
        stages.promote(staged, arguments.pop("number"), **arguments)
    assert one_line(caught) == expected.format(uri=staged.uri)
    assert store.snapshot() == before
    assert store.open().serving().number == 1


def test_a_version_production_serves_already_or_a_newer_one_is_superseded(store, staged,
                                                                          model):
    stages.promote(staged, 2, approved_by="ana", reason="ok")
    before = store.snapshot()
    with pytest.raises(PromotionRefused) as caught:
        stages.promote(staged, 2, approved_by="bob", reason="again")
    assert one_line(caught) == (
        f"version 2 of {staged.uri} was not promoted: production serves it already (see "
        "`ctloop versions`); to return to an older version, roll production back "
        "(`ctloop rollback`)")
    staged.push(*model, BLESSED, expected_serving=2)  # 3, straight into production
    staged.set_serving(2, stage=STAGING)
    before = store.snapshot()
    with pytest.raises(PromotionRefused, match="production serves version 3, newer,"):
        stages.promote(staged, 2, approved_by="bob", reason="late")
    assert store.snapshot() == before


def test_two_approvals_at_once_one_lands_the_other_is_refused(store, staged):
    import threading

    outcomes, start = {}, threading.Barrier(2)

    def approve(name: str) -> None:
        start.wait()
        try:
            outcomes[name] = stages.promote(store.open(), 2, approved_by=name, reason="go").number
        except PromotionRefused as exc:
            outcomes[name] = str(exc)

    threads = [threading.Thread(target=approve, args=(name,)) for name in ("ana", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes.values()))[0] == "2", outcomes
    assert sum("production serves it already" in str(o) for o in outcomes.values()) == 1
    decisions = [d for d in store.open().read_record(2)["decisions"] if d["action"] == "promote"]
    assert len(decisions) == 1 and store.open().history() == [1]


def test_a_blessing_recorded_false_or_staging_empty_is_refused(store, model):
    registry = store.open()
    registry.push(*model, {"blessing": {"blessed": False, "reason": "auc 0.6 < 0.9"}},
                  expected_serving=None, serve=False)
    with pytest.raises(PromotionRefused) as caught:
        stages.promote(registry, 1, approved_by="ana", reason="ok")
    assert "it is not in staging, which holds no version" in one_line(caught)
    registry.set_serving(1, stage=STAGING)
    before = store.snapshot()
    with pytest.raises(PromotionRefused) as caught:
        stages.promote(registry, 1, approved_by="ana", reason="ok")
    assert one_line(caught).endswith("it was not blessed (auc 0.6 < 0.9); promote a version a "
                                     "CT run blessed")
    assert store.snapshot() == before
    with pytest.raises(ConfigError, match="promote moves a staged version to production"):
        stages.promote(registry, 1, to=STAGING, approved_by="ana", reason="ok")
    with pytest.raises(ConfigError, match="stage 'prod' is unknown"):
        stages.promote(registry, 1, to="prod", approved_by="ana", reason="ok")


def test_a_forced_blessing_counts_and_is_recorded(store, model):
    registry = store.open()
    forced = {"blessing": {"reason": "forced", "forced": True, "force_reason": "hotfix"}}
    registry.push(*model, forced, expected_serving=None, stage=STAGING)
    stages.promote(registry, 1, approved_by="ana", reason="hotfix needed now")
    decision = store.open().read_record(1)["decisions"][-1]
    assert decision["blessing"] == {"reason": "forced", "forced": True, "force_reason": "hotfix"}


def test_rollback_returns_to_the_previous_version_and_records_it(store, staged):
    stages.promote(staged, 2, approved_by="ana", reason="ok")
    assert stages.rollback(staged, PRODUCTION, by="bob", reason="p99 doubled").number == 1
    reader = store.open()
    assert reader.serving().number == 1 and reader.history() == []
    decision = reader.read_record(2)["decisions"][-1]
    assert {k: v for k, v in decision.items() if k != "at_unix"} == {
        "action": "rollback", "stage": "production", "to_version": 1, "by": "bob",
        "reason": "p99 doubled"}
    assert "decisions" not in reader.read_record(1)
    before = store.snapshot()
    with pytest.raises(PromotionRefused) as caught:  # nothing earlier to return to
        stages.rollback(staged, PRODUCTION, by="bob", reason="again")
    assert one_line(caught) == (
        f"production of {staged.uri} was not rolled back: its pointer remembers no version "
        "before version 1; point it at one with set_serving(N, stage=\"production\")")
    with pytest.raises(PromotionRefused, match="by is empty"):
        stages.rollback(staged, STAGING, by="", reason="x")
    assert store.snapshot() == before


def test_rollback_of_a_stage_that_serves_nothing_is_refused(store, model):
    registry = store.open()
    registry.push(*model, BLESSED, expected_serving=None)
    with pytest.raises(PromotionRefused) as caught:
        stages.rollback(registry, STAGING, by="bob", reason="x")
    assert one_line(caught) == (f"staging of {registry.uri} was not rolled back: it serves no "
                                "version")


def test_describe_says_what_each_stage_serves(store, staged):
    staged.start_shadow(1, expected_serving=2, stage=STAGING)
    staged.start_canary(2, 10, expected_serving=1)
    assert stages.describe(store.open()) == {
        "staging": {"version": 2, "previous": [], "canary": None, "shadow": 1},
        "production": {"version": 1, "previous": [], "canary": {"version": 2, "percent": 10},
                       "shadow": None}}


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def local_staged(tmp_path, model):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(*model, BLESSED, expected_serving=None)
    registry.push(*model, {**BLESSED, "blessing": {"reason": "forced", "forced": True,
                                                   "force_reason": "hotfix"}},
                  expected_serving=None, stage=STAGING)
    return registry


def test_ctloop_promote_then_rollback(cli, tmp_path, local_staged):
    root = tmp_path / "registry"
    result = cli("promote", "churn", 2, "--approved-by", "ana", "--reason", "shadow clean",
                 "--registry", root)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"production of churn in {local_staged.uri}: version 2 (was version 1), approved by "
        "ana: shadow clean",
        "note: version 2's blessing was forced: hotfix"]
    assert json.loads((root / "churn" / POINTER_FILE).read_text())["version"] == 2
    listed = cli("versions", "--registry", root, "--model-name", "churn")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].split()[:2] == ["v1", "-"] and lines[2].split()[:2] == ["v2",
                                                                          "serving,staging"]
    assert lines[4] == "decisions:"
    assert lines[5].startswith("  v2  ") and lines[5].endswith(
        "promote to production  by ana  because: shadow clean")
    result = cli("rollback", "churn", "--stage", "production", "--by", "bob", "--reason",
                 "errors up", "--registry", root)
    assert result.exit_code == 0, result.output
    assert result.output == (f"production of churn in {local_staged.uri}: version 1 (was "
                             "version 2), rolled back by bob: errors up\n")
    assert "rollback of production to v1  by bob  because: errors up" in cli(
        "versions", "--registry", root, "--model-name", "churn").output


def test_ctloop_promote_refused_exits_non_zero_with_one_line(cli, tmp_path, local_staged):
    root = tmp_path / "registry"
    before = (root / "churn" / POINTER_FILE).read_bytes()
    result = cli("promote", "churn", 1, "--approved-by", "ana", "--reason", "x",
                 "--registry", root)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: version 1 of {local_staged.uri} was not promoted: it is not in staging, which "
        "holds version 2; a version is staged by a CT run whose rollout targets staging, or by "
        "hand with set_serving(1, stage=\"staging\"), and promoted from there"]
    assert (root / "churn" / POINTER_FILE).read_bytes() == before
    missing = cli("promote", "churn", 2, "--reason", "x", "--registry", root)
    assert missing.exit_code == 2 and "Missing option '--approved-by'" in missing.output
    result = cli("rollback", "churn", "--stage", "staging", "--by", "bob", "--reason", "x",
                 "--registry", root)
    assert result.exit_code == 1 and "remembers no version before version 2" in result.output


# --- the approval pipeline -----------------------------------------------------------------------


def test_the_promote_pipeline_compiles_to_one_uncached_task_with_the_storage_secret(tmp_path):
    import yaml

    from ctloop.kfp import compiling
    from ctloop.pipelines.promote_pipeline import PIPELINE_NAME

    out = tmp_path / "promote_pipeline.yaml"
    compiling.compile_promote_pipeline(out)
    assert compiling.PROMOTE_PIPELINE_YAML.read_text() == out.read_text(), (
        "pipelines/promote_pipeline.yaml is stale: run `make compile` and review the diff")
    spec, platform = yaml.safe_load_all(out.read_text())
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME == "ctloop-promote"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert {"version", "approved_by", "reason", "registry_uri"} <= {
        name for name, p in parameters.items() if not p.get("isOptional")}
    assert parameters["version"]["parameterType"] == "NUMBER_INTEGER"
    tasks = spec["root"]["dag"]["tasks"]
    assert list(tasks) == ["promote"]
    assert tasks["promote"]["cachingOptions"] == {}  # enableCache false is left out of the IR
    secret = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-promote"]["secretAsEnv"][0]
    assert [(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]] == [
        ("accesskey", "AWS_ACCESS_KEY_ID"), ("secretkey", "AWS_SECRET_ACCESS_KEY")]
