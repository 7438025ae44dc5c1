"""train and sensitive features: evaluated for fairness, not trained on unless configured."""

import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from conftest import EXCLUDE, LABEL
from ctloop import contract
from ctloop.components.train.component import train
from ctloop.settings import Hyperparameters


@pytest.mark.parametrize("train_on", [None, False, True])
def test_a_sensitive_feature_is_a_feature_only_when_configured(prepared, tmp_path, train_on):
    model = Model(uri=str(tmp_path / "model"))
    baseline = Model(uri=str(tmp_path / "no-baseline"))
    baseline.metadata["version"] = None
    schema = tmp_path / "schema"
    schema.mkdir()
    (schema / "schema.pbtxt").write_text(prepared.schema.read_text())
    train.python_func(
        train_data=Dataset(uri=str(prepared.train)), eval_data=Dataset(uri=str(prepared.eval)),
        schema=Artifact(uri=str(schema)), baseline=baseline,
        anomalies=Artifact(uri=str(tmp_path / "anomalies")), data_valid=True, label=LABEL,
        model=model, training_metrics=Metrics(uri=str(tmp_path / "metrics")), epochs=1,
        batch_size=Hyperparameters.batch_size, learning_rate=Hyperparameters.learning_rate,
        hidden_units=[8], seed=Hyperparameters.seed, early_stopping_patience=0,
        task=contract.BINARY, warm_start=False, mixed_precision=False, gpu_count="0",
        gpu_type="nvidia.com/gpu", exclude=EXCLUDE, sensitive_features=["contract"],
        train_on_sensitive_features=train_on)
    features = model.metadata["features"]
    assert ("contract" in features) is bool(train_on)
    assert "plan" in features and EXCLUDE[0] not in features
    assert set(contract.read_features(str(tmp_path / "model"))) == set(features)
    parameters = model.metadata["parameters"]
    assert parameters["exclude"] == EXCLUDE  # as configured; the sensitive columns beside it
    assert (parameters["sensitive_features"], parameters["train_on_sensitive_features"]) == (
        ["contract"], bool(train_on))
