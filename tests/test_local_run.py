"""The whole CT pipeline under kfp.local: three spans, one registry, real libraries."""

import json
from pathlib import Path

import pytest
import tensorflow_data_validation as tfdv

from conftest import EXCLUDE, LABEL
from ctloop.local import runner as local_run
from ctloop.registry import LocalRegistry
from ctloop.registry import record as run_record

pytestmark = pytest.mark.local
LOCK = Path(__file__).resolve().parent.parent / "locks" / "pipeline.txt"


def _params(spans_dir, span, serving_python):
    # Straight into production: these runs test the gates and the baseline; staging and the
    # approval: test_a_default_run_lands_in_staging_and_waits_for_an_approval, test_stages.
    return {"data_uri": str(spans_dir / f"span-{span}"), "label": LABEL, "exclude": EXCLUDE,
            "model_name": "churn", "epochs": 4, "serving_python": serving_python,
            "release_stage": "production"}


@pytest.fixture(scope="module")
def runs(spans_dir, serving_python, tmp_path_factory):
    """Span 1 (cold start), span 2 (vs version 1), span 3 (corrupt) into one workdir."""
    workdir = tmp_path_factory.mktemp("ct")
    summaries = [local_run.run(_params(spans_dir, span, serving_python), workdir)
                 for span in (1, 2, 3)]
    return workdir, summaries


def test_cold_start_is_validated_blessed_and_pushed(runs):
    _, (first, _, _) = runs
    assert first["span"] == 1 and first["rows"]["train"] + first["rows"]["eval"] == 3000
    assert first["data_valid"] and first["anomaly_count"] == 0
    assert first["schema_source"].startswith("inferred")
    assert first["baseline_version"] is None and first["baseline_metrics"] == {}
    assert 0.72 < first["metrics"]["auc"] <= 1.0
    assert first["blessed"] and first["pushed"] and first["pushed_version"] == 1
    # The candidate served in the real KServe server and answered like the model, in the SLO.
    assert first["infra_blessed"], first["infra_reason"]
    assert first["infra"]["max_abs_diff"] <= 1e-4 and first["infra"]["p99_ms"] <= 250
    assert set(first["timings_s"]) == {*local_run.TASKS, "total"}


def test_summary_reports_what_select_span_chose(runs, spans_dir):
    from ctloop.components.select_span import logic as select_span

    _, (first, _, _) = runs
    assert first["spans"] == [1] and first["files"] == [str(spans_dir / "span-1" / "data.csv")]
    assert first["data_fingerprint"] == select_span.run(str(spans_dir / "span-1")).fingerprint
    assert local_run.describe(first).startswith("span 1: ")


def test_second_span_is_judged_against_the_serving_model(runs):
    workdir, (first, second, _) = runs
    assert second["span"] == 2
    assert second["schema_source"].startswith("serving model")
    assert second["baseline_version"] == 1
    assert 0.5 < second["baseline_metrics"]["auc"] <= 1.0
    assert second["blessed"] == (
        second["metrics"]["auc"] >= second["baseline_metrics"]["auc"] - 0.01
        and second["metrics"]["auc"] >= 0.7
    )
    # Drift is measured against span 1's statistics, stored by the first run; both spans are
    # drawn from the same distribution, so every distance stays under the 0.1 threshold.
    assert second["previous_span"] == 1 and first["previous_span"] is None
    assert {"drift.income", "drift.plan", "skew.income"} <= set(second["drift"])
    assert max(second["drift"].values()) < 0.1
    assert not any(k.startswith("drift.") for k in first["drift"])
    record = LocalRegistry(workdir / "registry", "churn").versions()[0].record()
    assert record["span"] == 1 and record["data_fingerprint"] == first["data_fingerprint"]


def test_each_version_records_what_it_was_made_from(runs):
    workdir, (first, _, _) = runs
    record = LocalRegistry(workdir / "registry", "churn").versions()[0].record()
    assert record["parameters"] == {
        "label": LABEL, "exclude": EXCLUDE, "epochs": 4, "batch_size": 256,
        "learning_rate": 0.001, "hidden_units": [64, 32], "seed": 42, "mixed_precision": False,
        "early_stopping_patience": 0, "user_module": None, "user_module_sha256": None,
        "task": "binary", "warm_start": "off"}
    assert record["files"] == first["files"] and record["devices"] == ["CPU"]
    assert record["metrics"] == first["metrics"] and record["baseline_version"] is None
    # The one baseline the run was judged against: none (a cold start), no drift reference.
    assert record["baseline"] == {"version": None, "fingerprint": first["baseline_fingerprint"],
                                  "drift_reference_span": None}
    assert record["infra"]["p99_ms"] == first["infra"]["p99_ms"]
    # The code and environment that ran: the same digests as this checkout and its lock file.
    assert record["code"]["digest"] == run_record.code_digest()
    assert record["environment"]["digest"] == run_record.lock_digest(LOCK)
    assert record["environment"]["packages"]["tensorflow-data-validation"] == "1.16.1"


def test_rerun_on_the_same_inputs_gives_the_same_metrics(runs, spans_dir, serving_python,
                                                         tmp_path):
    _, (first, _, _) = runs
    again = local_run.run(_params(spans_dir, 1, serving_python), tmp_path)
    assert again["data_fingerprint"] == first["data_fingerprint"]
    assert again["rows"] == first["rows"]
    assert again["training"] == first["training"]
    assert again["metrics"] == first["metrics"]  # TFMA's, to the last bit


def test_every_training_and_blessing_option_passes_through_kfp(spans_dir, serving_python,
                                                               tmp_path):
    """One run with the options KFP hands over as parameters (lists, strings, booleans): a
    user module, a cold start that requires a baseline, bootstrapped by an audited force-bless."""
    module = tmp_path / "small_model.py"
    module.write_text(
        "import keras\nfrom keras import ops\n"
        "from ctloop.components.train.logic import preprocess\n\n\n"
        "def build_model(features, train, hp, task):\n"
        "    inputs, encoded = preprocess(features, train)\n"
        "    hidden = encoded\n"
        "    for units in hp.hidden_units:\n"
        "        hidden = keras.layers.Dense(units, activation='relu')(hidden)\n"
        "    output = keras.layers.Dense(1, activation='sigmoid')(hidden)\n"
        "    model = keras.Model(inputs, ops.squeeze(output, -1))\n"
        "    model.compile(optimizer='adam', loss='binary_crossentropy')\n"
        "    return model\n")
    params = {**_params(spans_dir, 1, serving_python), "user_module": str(module),
              "hidden_units": [8], "batch_size": 512, "learning_rate": 0.005, "seed": 7,
              "early_stopping_patience": 1, "mixed_precision": True,
              "positive_label": "1", "slice_features": ["plan"],
              "cold_start": "require_baseline", "force_bless_reason": "bootstrap: first model",
              "task": "binary", "warm_start": True}
    summary = local_run.run(params, tmp_path / "work")
    assert summary["blessed"] and summary["blessing_reason"].startswith(
        "FORCE-BLESSED: bootstrap: first model")
    assert summary["pushed"] and summary["promoted"]
    record = LocalRegistry(tmp_path / "work" / "registry", "churn").serving().record()
    assert record["parameters"]["hidden_units"] == [8]
    assert (record["parameters"]["batch_size"], record["parameters"]["learning_rate"],
            record["parameters"]["seed"]) == (512, 0.005, 7)
    assert record["parameters"]["user_module"] == str(module)
    assert len(record["parameters"]["user_module_sha256"]) == 64
    assert record["parameters"]["task"] == "binary"
    assert record["parameters"]["warm_start"] == "no serving model: initial weights"
    assert record["blessing"]["forced"] is True
    assert record["blessing"]["force_reason"] == "bootstrap: first model"


def test_corrupt_span_is_blocked_and_serving_model_unchanged(runs):
    workdir, (_, second, third) = runs
    assert not third["data_valid"] and third["anomaly_count"] >= 1
    assert not third["pushed"] and "data validation did not pass" in third["push_reason"]
    serving = LocalRegistry(workdir / "registry", "churn").serving()
    assert serving.number == (second["pushed_version"] or 1)
    report = open(third["reports"]["anomalies_md"]).read()
    assert "deployment is blocked" in report and "`plan`" in report
    # Judged against the serving version; nothing after the failed gate did its work: no model
    # trained, none evaluated, no server started, and the summary says why nothing was pushed.
    assert third["baseline_version"] == serving.number
    assert set(third["skipped"]) == {"train", "evaluate", "infra-validate"}
    assert all(why.startswith("data validation blocked: ") for why in third["skipped"].values())
    assert third["metrics"] == {} and third["blessed"] is None and third["infra_blessed"] is None
    run_dir = Path(third["run_dir"])
    assert not any((run_dir / "train" / "model").iterdir())
    assert (run_dir / "infra-validate" / "server_log").read_text() == "no server started\n"
    described = local_run.describe(third)
    assert "candidate: not trained (data validation blocked: " in described
    assert f"rollout: {third['push_reason']}" in described.splitlines()
    # A blocked span never becomes the drift reference: only pushed spans' statistics are kept.
    stored = {p.name for p in (workdir / "registry" / "churn" / "statistics").iterdir()}
    assert "span-3.stats.tfrecord" not in stored and "span-1.stats.tfrecord" in stored


def test_run_outputs_are_on_disk(runs):
    _, (first, _, _) = runs
    schema = tfdv.load_schema_text(f"{first['run_dir']}/validate-data/schema/schema.pbtxt")
    assert {f.name for f in schema.feature} >= {"age", "plan", LABEL}
    assert "**BLESSED**" in open(first["reports"]["evaluation_md"]).read()
    assert "**INFRA-BLESSED**" in open(first["reports"]["infra_md"]).read()
    assert "facets-overview" in open(first["reports"]["statistics_html"]).read()
    json.dumps(first)  # the summary is plain JSON


def test_a_task_failing_on_bad_data_ends_the_output_with_its_own_reason(serving_python,
                                                                        tmp_path):
    """Preflight reads the first rows only; ingest finds the missing labels, and its message (the
    column and the fix) is the last line, with no traceback on the terminal."""
    from click.testing import CliRunner

    from ctloop.cli import main
    from ctloop.data import datagen

    rows = datagen.generate_span(datagen.SpanSpec(1, rows=400))
    rows.loc[350:, LABEL] = None
    (tmp_path / "data" / "span-1").mkdir(parents=True)
    rows.to_csv(tmp_path / "data" / "span-1" / "data.csv", index=False)
    result = CliRunner().invoke(main, [
        "run", "--local", "--data", str(tmp_path / "data"), "--label", LABEL,
        "--exclude", EXCLUDE[0], "--workdir", str(tmp_path / "work"),
        "--serving-python", serving_python])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1] == (f"Error: task ingest failed: label column '{LABEL}' has 50 missing "
                         "values; drop or fill those rows")
    assert "Traceback" not in result.output
    (log,) = (tmp_path / "work" / "logs").iterdir()
    assert f"task logs: {log}" in lines[-2]
    assert "Traceback" in log.read_text() and "DataError" in log.read_text()


def test_a_default_run_lands_in_staging_and_waits_for_an_approval(spans_dir, serving_python,
                                                                  tmp_path):
    """Nothing reaches production without an approval unless the settings say so: by default a
    run's version serves in staging, and ``stages.promote`` moves production, recorded."""
    from ctloop.registry import PRODUCTION, STAGING, LocalRegistry, stages

    # The release is under test, not the latency SLO (a busy machine must not block it).
    params = {**_params(spans_dir, 1, serving_python), "max_p99_ms": 5000.0, "min_rps": 1.0}
    del params["release_stage"]
    summary = local_run.run(params, tmp_path)
    assert summary["pushed_version"] == 1, summary["push_reason"]
    assert summary["push_reason"] == (
        "pushed as version 1; staging: promoted into staging (no running server to release on); "
        "awaiting approval to production (ctloop promote)")
    registry = LocalRegistry(tmp_path / "registry", "churn")
    assert registry.serving(stage=STAGING).number == 1
    assert registry.serving(stage=PRODUCTION) is None
    stages.promote(registry, 1, approved_by="ana", reason="looked at the run's page")
    assert registry.serving().number == 1
    decisions = registry.serving().record()["decisions"]
    assert [(d["action"], d["stage"]) for d in decisions] == [("deploy", STAGING),
                                                               ("promote", PRODUCTION)]
    assert decisions[1]["approved_by"] == "ana"
