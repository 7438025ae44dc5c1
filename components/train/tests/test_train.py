"""train logic with real TensorFlow: learns the signal, exports the contract, is reproducible."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import EXCLUDE, LABEL
from ctloop import contract
from ctloop.components.train import logic
from ctloop.errors import ConfigError, ModelError


def _predict(model_dir, frame, features):
    signature = tf.saved_model.load(str(model_dir)).signatures[contract.SERVING_SIGNATURE]
    inputs = {k: tf.constant(v) for k, v in contract.to_inputs(frame, features).items()}
    return signature(**inputs)[contract.OUTPUT_KEYS[contract.BINARY]].numpy()


def test_model_learns_and_exports_raw_feature_signature(prepared):
    evaluation = pd.read_parquet(prepared.eval)
    scores = _predict(prepared.model_dir, evaluation, prepared.features)
    assert scores.shape == (len(evaluation),)
    assert np.all((scores >= 0) & (scores <= 1))
    auc = tf.keras.metrics.AUC()
    auc.update_state(evaluation[LABEL].to_numpy(), scores)
    assert auc.result().numpy() > 0.72  # the generator's logistic signal is learnable

    signature = tf.saved_model.load(str(prepared.model_dir)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert set(inputs) == {f.name for f in prepared.features}
    assert EXCLUDE[0] not in inputs and LABEL not in inputs
    assert inputs["plan"].dtype == tf.string and inputs["income"].dtype == tf.float32
    described = json.loads((prepared.model_dir / contract.FEATURES_FILE).read_text())
    assert [f["name"] for f in described["features"]] == [f.name for f in prepared.features]


def test_missing_and_unseen_values_give_finite_scores(prepared):
    row = pd.read_parquet(prepared.eval).head(3).copy()
    row.loc[0, ["age", "income"]] = np.nan
    row.loc[1, "region"] = None
    row.loc[2, "plan"] = "never-seen-before"
    scores = _predict(prepared.model_dir, row, prepared.features)
    assert np.all(np.isfinite(scores))


def test_same_inputs_same_model(prepared, tmp_path):
    hp = logic.Hyperparameters(epochs=2, seed=7)
    results = [logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                         EXCLUDE, hp, str(tmp_path / name)) for name in ("a", "b")]
    assert results[0] == results[1]  # losses and eval AUC to the last bit
    frame = pd.read_parquet(prepared.eval).head(200)
    np.testing.assert_array_equal(_predict(tmp_path / "a", frame, prepared.features),
                                  _predict(tmp_path / "b", frame, prepared.features))


def test_mixed_precision_without_a_gpu_trains_in_float32_and_says_so(prepared, tmp_path,
                                                                     caplog):
    hp = logic.Hyperparameters(epochs=1, seed=7)
    with caplog.at_level("INFO"):
        result = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                           EXCLUDE, hp, str(tmp_path / "m"), mixed_precision=True)
    assert (result.devices, result.precision) == (["CPU"], "float32")
    assert "mixed precision needs a GPU and none is visible: training in float32" in caplog.text
    assert "no GPU visible: training on CPU, float32" in caplog.text
    assert 0.5 < result.eval_metrics["eval_auc"] <= 1.0


def test_early_stopping_on_the_eval_split_stops_before_the_epoch_budget(prepared, tmp_path):
    hp = logic.Hyperparameters(epochs=60, seed=7, early_stopping_patience=2,
                               learning_rate=0.05)
    result = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                       EXCLUDE, hp, str(tmp_path / "m"))
    assert 3 <= result.epochs_run < 60  # patience + 1 at least; long before the budget
    assert 0.7 < result.eval_metrics["eval_auc"] <= 1.0  # the best epoch's weights, restored


LOGISTIC = """
import keras
from keras import ops

from ctloop.components.train.logic import preprocess


def build_model(features, train, hp, task):
    inputs, encoded = preprocess(features, train)
    output = keras.layers.Dense(1, activation="sigmoid", name="logistic")(encoded)
    model = keras.Model(inputs, ops.squeeze(output, -1))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    return model
"""


def _train_with(prepared, tmp_path, module_text):
    module = tmp_path / "my_model.py"
    module.write_text(module_text)
    hp = logic.Hyperparameters(epochs=2, seed=7)
    return module, logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema),
                             LABEL, EXCLUDE, hp, str(tmp_path / "m"), user_module=str(module))


def test_a_user_module_replaces_the_model_and_keeps_the_contract(prepared, tmp_path):
    import hashlib

    module, result = _train_with(prepared, tmp_path, LOGISTIC)
    assert result.user_module_sha256 == hashlib.sha256(module.read_bytes()).hexdigest()
    # Logistic regression learns the logistic signal.
    assert 0.7 < result.eval_metrics["eval_auc"] <= 1.0
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    # One dense layer (kernel + bias) beside the lookups, not the default's three.
    assert [v.name for v in loaded.variables if "kernel" in v.name] == ["logistic/kernel:0"]
    frame = pd.read_parquet(prepared.eval).head(50)
    scores = _predict(tmp_path / "m", frame, prepared.features)
    assert scores.shape == (50,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize(("text", "error", "message"), [
    ("1 / 0\n", ConfigError, "failed to import: ZeroDivisionError: division by zero"),
    ("def build(features, train, hp, task):\n    pass\n", ConfigError, "defines no build_model"),
    ("def build_model(features, train, hp, task):\n    raise ValueError('no GPU budget')\n",
     ModelError, "build_model raised ValueError: no GPU budget; fix the module"),
    (LOGISTIC.replace("    model.compile(optimizer=keras.optimizers.Adam(0.05), "
                      "loss=\"binary_crossentropy\")\n", ""),
     ModelError, "returned an uncompiled model"),
    ("def build_model(:\n", ConfigError, "failed to import: SyntaxError"),
    (LOGISTIC.replace("Dense(1, activation=\"sigmoid\"", "Dense(3, activation=\"softmax\"")
     .replace("ops.squeeze(output, -1)", "output"),
     ModelError, "the model answers shape (8, 3), not one probability in [0, 1] per row (8,)"),
])
def test_a_broken_user_module_is_a_one_line_error_naming_it(prepared, tmp_path, text, error,
                                                           message):
    with pytest.raises(error) as caught:
        _train_with(prepared, tmp_path, text)
    assert message in str(caught.value) and "my_model.py" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "m").exists()  # nothing exported


def test_a_missing_user_module_is_a_config_error(prepared, tmp_path):
    with pytest.raises(ConfigError, match="user module .*nope.py does not exist"):
        logic.load_user_module(str(tmp_path / "nope.py"))


def test_values_the_schema_cannot_hold_become_missing_with_a_warning(prepared, caplog):
    frame = pd.read_parquet(prepared.eval).head(2).astype({"age": object}).drop(columns=["region"])
    frame.loc[0, "age"] = "forty"
    inputs = contract.to_inputs(frame, prepared.features)
    assert np.isnan(inputs["age"][0]) and inputs["age"][1] == frame["age"][1]
    assert list(inputs["region"]) == ["", ""]
    assert "feature 'age' is numeric in the schema but has 1 non-numeric values such as " \
           "'forty': treated as missing" in caplog.text
    assert "feature 'region' of the schema is not in the data" in caplog.text


def test_invalid_hyperparameters():
    with pytest.raises(ConfigError, match="early_stopping_patience -1 is invalid"):
        logic.Hyperparameters(early_stopping_patience=-1)
    with pytest.raises(ConfigError, match="learning_rate 2.0 is out of range"):
        logic.Hyperparameters(learning_rate=2.0)
    with pytest.raises(ConfigError, match="epochs 0 is invalid: use at least 1"):
        logic.Hyperparameters(epochs=0)
    with pytest.raises(ConfigError, match="batch_size 0 is invalid: use at least 1"):
        logic.Hyperparameters(batch_size=0)
    with pytest.raises(ConfigError, match=r"hidden_units \[64, 0\] is invalid"):
        logic.Hyperparameters(hidden_units=(64, 0))
    with pytest.raises(ConfigError, match=r"hidden_units \[\] is invalid"):
        logic.Hyperparameters(hidden_units=())
    with pytest.raises(ConfigError, match="seed 4294967296 is out of range"):
        logic.Hyperparameters(seed=2**32)


def test_schema_without_features(prepared):
    with pytest.raises(ConfigError, match="leaves no feature"):
        everything = [f.name for f in prepared.features] + EXCLUDE
        contract.features_from_schema(str(prepared.schema), LABEL, everything)


def _signature_output(data, frame):
    signature = tf.saved_model.load(str(data.model_dir)).signatures[contract.SERVING_SIGNATURE]
    inputs = {k: tf.constant(v) for k, v in contract.to_inputs(frame, data.result.features).items()}
    return signature(**inputs)[contract.OUTPUT_KEYS[data.task]].numpy()


def test_multiclass_model_answers_a_probability_per_class(task_data):
    data = task_data["multiclass"]
    frame = pd.read_parquet(data.eval)
    probabilities = _signature_output(data, frame)
    assert data.classes == ["basic", "premium", "standard"]
    assert probabilities.shape == (len(frame), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == frame["plan"].to_numpy()))
    assert accuracy > 0.85  # the charge tells the plan; a constant guess gets about 0.45
    assert data.result.eval_metrics == {"eval_accuracy": pytest.approx(accuracy, abs=1e-6)}
    assert contract.read_task(data.model_dir) == ("multiclass", data.classes)


def test_regression_model_answers_a_value(task_data):
    # The charge is the plan's base plus noise of sd 8: the best MAE is about 6.4; guessing the
    # mean gives about 22.
    data = task_data["regression"]
    frame = pd.read_parquet(data.eval)
    predicted = _signature_output(data, frame)
    assert predicted.shape == (len(frame),)
    mae = float(np.mean(np.abs(predicted - frame["monthly_charges"].to_numpy())))
    assert mae < 9.0
    assert data.result.eval_metrics["eval_mae"] == pytest.approx(mae, rel=1e-4)
    assert data.result.eval_metrics["eval_rmse"] >= data.result.eval_metrics["eval_mae"]
    assert data.classes == [] and contract.read_task(data.model_dir) == ("regression", [])


def test_warm_start_starts_from_the_baseline_weights(prepared, tmp_path):
    def train(name, **options):
        hp = options.pop("hp", logic.Hyperparameters(epochs=2, seed=7))
        return logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                         EXCLUDE, hp, str(tmp_path / name), **options)

    train("baseline")
    # A learning rate this small leaves the weights where they start: at the baseline's.
    still = logic.Hyperparameters(epochs=1, seed=8, learning_rate=1e-9)
    warm = train("warm", hp=still, warm_start_from=str(tmp_path / "baseline"))
    cold = train("cold", hp=still)
    assert warm.warm_start == "started from its weights" and cold.warm_start is None
    frame = pd.read_parquet(prepared.eval).head(100)
    baseline = _predict(tmp_path / "baseline", frame, prepared.features)
    np.testing.assert_allclose(_predict(tmp_path / "warm", frame, prepared.features), baseline,
                               atol=1e-5)
    assert np.abs(_predict(tmp_path / "cold", frame, prepared.features) - baseline).max() > 0.01


def test_warm_start_skips_a_baseline_whose_weights_do_not_fit(prepared, tmp_path, caplog):
    hp = logic.Hyperparameters(epochs=1, seed=7)
    logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL, EXCLUDE, hp,
              str(tmp_path / "baseline"))
    wider = logic.Hyperparameters(epochs=1, seed=7, hidden_units=(16,))
    result = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                       EXCLUDE, wider, str(tmp_path / "m"),
                       warm_start_from=str(tmp_path / "baseline"))
    assert result.warm_start == ("skipped: different layer shapes (6 weight tensors, this model "
                                 "has 4)")
    assert "training from the initial weights" in caplog.text
    fewer = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                      [*EXCLUDE, "plan"], hp, str(tmp_path / "n"),
                      warm_start_from=str(tmp_path / "baseline"))
    assert fewer.warm_start == "skipped: different features, vocabularies"


def test_component_trains_nothing_after_a_failed_data_validation(tmp_path):
    """The local pipeline (no dsl.If) runs train after a failed gate: nothing is trained, and
    the model's and the metrics' metadata say why."""
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    from ctloop.components.train.component import train
    from ctloop.settings import Hyperparameters

    anomalies = Artifact(uri=str(tmp_path / "anomalies"))
    anomalies.metadata["summary"] = "1 blocking anomaly: plan (Drift)"
    model = Model(uri=str(tmp_path / "model"))
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    train.python_func(
        train_data=Dataset(uri=str(tmp_path / "missing.parquet")),
        eval_data=Dataset(uri=str(tmp_path / "missing.parquet")),
        schema=Artifact(uri=str(tmp_path / "schema")), baseline=Model(uri=str(tmp_path / "b")),
        anomalies=anomalies, data_valid=False, label=LABEL, model=model,
        training_metrics=metrics, epochs=Hyperparameters.epochs,
        batch_size=Hyperparameters.batch_size, learning_rate=Hyperparameters.learning_rate,
        hidden_units=list(Hyperparameters.hidden_units), seed=Hyperparameters.seed,
        early_stopping_patience=0, task=contract.BINARY, warm_start=False,
        mixed_precision=False, gpu_count="0", gpu_type="nvidia.com/gpu")
    reason = "data validation blocked: 1 blocking anomaly: plan (Drift)"
    assert model.metadata == {"skipped": reason} and metrics.metadata == {"skipped": reason}
    assert (tmp_path / "model").is_dir() and not any((tmp_path / "model").iterdir())
