"""train logic with real TensorFlow: learns the signal, exports the contract, is reproducible."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import EXCLUDE, LABEL
from ctloop import contract
from ctloop.components.train import logic
from ctloop.errors import ConfigError


def _predict(model_dir, frame, features):
    signature = tf.saved_model.load(str(model_dir)).signatures[contract.SERVING_SIGNATURE]
    inputs = {k: tf.constant(v) for k, v in logic.to_inputs(frame, features).items()}
    return signature(**inputs)[contract.OUTPUT_KEY].numpy()


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
    assert 0.5 < result.eval_auc <= 1.0


def test_early_stopping_on_the_eval_split_stops_before_the_epoch_budget(prepared, tmp_path):
    hp = logic.Hyperparameters(epochs=60, seed=7, early_stopping_patience=2,
                               learning_rate=0.05)
    result = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                       EXCLUDE, hp, str(tmp_path / "m"))
    assert 3 <= result.epochs_run < 60  # patience + 1 at least; long before the budget
    assert 0.7 < result.eval_auc <= 1.0  # the best epoch's weights, restored


def test_values_the_schema_cannot_hold_become_missing_with_a_warning(prepared, caplog):
    frame = pd.read_parquet(prepared.eval).head(2).astype({"age": object}).drop(columns=["region"])
    frame.loc[0, "age"] = "forty"
    inputs = logic.to_inputs(frame, prepared.features)
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
    with pytest.raises(ConfigError, match="epochs, batch_size"):
        logic.Hyperparameters(epochs=0)
    with pytest.raises(ConfigError, match="every hidden layer"):
        logic.Hyperparameters(hidden_units=(64, 0))


def test_schema_without_features(prepared):
    with pytest.raises(ConfigError, match="leaves no feature"):
        everything = [f.name for f in prepared.features] + EXCLUDE
        logic.features_from_schema(str(prepared.schema), LABEL, everything)
