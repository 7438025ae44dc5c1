"""Upload and run-parameter decisions, on kfp_server_api models built by hand."""

import datetime

import pytest
from kfp_server_api import V2beta1Pipeline, V2beta1PipelineVersion

from ctloop.errors import ConfigError
from ctloop.kfp import plan as kfp_plan

DIGEST = "a" * 64
OTHER = "b" * 64


def _version(name, digest=None, day=1, version_id=None):
    return V2beta1PipelineVersion(
        pipeline_id="p1", pipeline_version_id=version_id or f"v-{name}", display_name=name,
        description=kfp_plan.tagged("CT", digest) if digest else "uploaded by hand",
        created_at=datetime.datetime(2026, 11, day, tzinfo=datetime.timezone.utc))


PIPELINE = V2beta1Pipeline(pipeline_id="p1", display_name="ct")


def test_spec_hash_ignores_formatting_and_comments_but_not_content():
    text = "# PIPELINE DEFINITION\npipelineInfo: {name: ct}\nroot: {dag: {tasks: {}}}\n"
    same = "pipelineInfo:\n  name: ct\nroot:\n  dag:\n    tasks: {}\n"
    assert kfp_plan.spec_hash(text) == kfp_plan.spec_hash(same)
    assert kfp_plan.spec_hash(text) != kfp_plan.spec_hash(same.replace("ct", "ct2"))
    assert len(kfp_plan.spec_hash(text)) == 64


def test_tag_round_trip():
    assert kfp_plan.tagged_hash(kfp_plan.tagged("Continuous training", DIGEST)) == DIGEST
    assert kfp_plan.tagged_hash(kfp_plan.tagged("", DIGEST)) == DIGEST
    assert kfp_plan.tagged_hash("uploaded by hand") is None
    assert kfp_plan.tagged_hash(None) is None


@pytest.mark.parametrize(("commit", "dirty", "name"), [
    ("abc1234", False, "abc1234"), ("abc1234", True, "abc1234-dirty"),
    (None, False, f"spec-{DIGEST[:12]}"), (None, True, f"spec-{DIGEST[:12]}")])
def test_default_version_name(commit, dirty, name):
    assert kfp_plan.default_version_name(commit, dirty, DIGEST) == name


def test_no_pipeline_of_that_name_creates_one_carrying_the_spec_hash():
    action = kfp_plan.plan_upload("ct", None, [], DIGEST, "abc1234", False, "CT pipeline")
    assert action == kfp_plan.CreatePipeline("ct", f"CT pipeline ({kfp_plan.SPEC_TAG}{DIGEST})")


def test_new_spec_becomes_a_new_version():
    action = kfp_plan.plan_upload("ct", PIPELINE, [_version("old", OTHER)], DIGEST, "abc1234",
                                  False)
    assert action == kfp_plan.CreateVersion("p1", "abc1234", kfp_plan.tagged("", DIGEST))


def test_unchanged_spec_uploads_nothing_and_names_the_oldest_version_holding_it():
    versions = [_version("second", DIGEST, day=3), _version("first", DIGEST, day=2),
                _version("other", OTHER, day=1)]
    action = kfp_plan.plan_upload("ct", PIPELINE, versions, DIGEST, "abc1234", False)
    assert action == kfp_plan.KeepVersion("p1", "v-first", "first")


def test_versions_uploaded_by_hand_never_count_as_the_same_spec():
    action = kfp_plan.plan_upload("ct", PIPELINE, [_version("abc1234")], DIGEST, "abc1234", False)
    # The name is taken by an untagged version: the hash tells the new one apart.
    assert action == kfp_plan.CreateVersion("p1", f"abc1234-{DIGEST[:8]}",
                                            kfp_plan.tagged("", DIGEST))


def test_derived_name_taken_by_another_spec_gets_the_hash_appended():
    versions = [_version("abc1234-dirty", OTHER)]
    action = kfp_plan.plan_upload("ct", PIPELINE, versions, DIGEST, "abc1234-dirty", False)
    assert action.version_name == f"abc1234-dirty-{DIGEST[:8]}"


def test_explicit_name_taken_by_another_spec_is_an_error():
    with pytest.raises(ConfigError, match="--version-name 'v1': pipeline 'ct' already has a "
                       "version of that name with another spec; pass a new --version-name"):
        kfp_plan.plan_upload("ct", PIPELINE, [_version("v1", OTHER)], DIGEST, "v1", True)


def test_resolve_latest_and_pinned_versions():
    versions = [_version("a", day=1), _version("c", day=3), _version("b", day=2)]
    assert kfp_plan.resolve_version("ct", versions, "latest").display_name == "c"
    assert kfp_plan.resolve_version("ct", versions, "a").pipeline_version_id == "v-a"
    with pytest.raises(ConfigError, match="version 'z' of 'ct' does not exist; use one of c, b, "
                       "a \\(newest first\\) or 'latest'"):
        kfp_plan.resolve_version("ct", versions, "z")
    with pytest.raises(ConfigError, match="has no versions on this KFP; run `ctloop upload`"):
        kfp_plan.resolve_version("ct", [], "latest")


PARAMETERS = {
    "data_uri": {"parameterType": "STRING"},
    "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": 10.0},
    "min_auc": {"parameterType": "NUMBER_DOUBLE", "defaultValue": 0.7},
    "exclude": {"parameterType": "LIST", "defaultValue": []},
    "policy": {"parameterType": "STRUCT", "defaultValue": {}},
    "dry": {"parameterType": "BOOLEAN", "defaultValue": False},
    "note": {"parameterType": "STRING", "isOptional": True},
}


def test_pipeline_parameters_with_and_without_a_platform_spec():
    spec = {"root": {"inputDefinitions": {"parameters": PARAMETERS}}}
    assert kfp_plan.pipeline_parameters(spec) == PARAMETERS
    assert kfp_plan.pipeline_parameters({"pipeline_spec": spec, "platform_spec": {}}) == PARAMETERS
    assert kfp_plan.pipeline_parameters(None) == {}


def test_strings_from_the_command_line_become_typed_values():
    values = {"data_uri": "s3://b/data", "epochs": "5", "min_auc": "1", "exclude": '["id"]',
              "policy": '{"SCHEMA_NEW_COLUMN": "warn"}', "dry": "true", "note": "5"}
    assert kfp_plan.coerce_parameters(PARAMETERS, values, "--param") == {
        "data_uri": "s3://b/data", "epochs": 5, "min_auc": 1.0, "exclude": ["id"],
        "policy": {"SCHEMA_NEW_COLUMN": "warn"}, "dry": True, "note": "5"}


def test_native_values_from_yaml_are_checked_not_parsed():
    values = {"data_uri": "s3://b", "epochs": 3, "min_auc": 0.75, "exclude": ["id"], "dry": False}
    assert kfp_plan.coerce_parameters(PARAMETERS, values, "schedule 'nightly'") == values


@pytest.mark.parametrize(("values", "message"), [
    ({"data_uri": "x", "epochz": "5"},
     "--param: epochz is not a parameter of this pipeline; its parameters are data_uri, dry, "),
    ({"epochs": "5"}, "--param: required parameter(s) data_uri missing; pass a value for each"),
    ({"data_uri": "x", "epochs": "five"},
     "--param: epochs='five' is not an integer such as 10; epochs is a NUMBER_INTEGER parameter"),
    ({"data_uri": "x", "epochs": "2.5"}, "epochs=2.5 is not an integer"),
    ({"data_uri": "x", "epochs": True}, "epochs=True is not an integer"),
    ({"data_uri": "x", "min_auc": "high"}, "min_auc='high' is not a number such as 0.7"),
    ({"data_uri": "x", "dry": "yes"}, "dry='yes' is not true or false"),
    ({"data_uri": "x", "exclude": "id"}, "exclude='id' is not a JSON list"),
    ({"data_uri": "x", "policy": "[]"}, "policy=[] is not a JSON object"),
    ({"data_uri": 5}, "data_uri=5 is not text; data_uri is a STRING parameter"),
])
def test_bad_parameters_are_one_line_errors(values, message):
    with pytest.raises(ConfigError) as caught:
        kfp_plan.coerce_parameters(PARAMETERS, values, "--param")
    assert message in str(caught.value) and "\n" not in str(caught.value)
