"""train streams its splits: one Parquet file or a folder of part-*.parquet shards, read in
batches; preprocessing adapted on a bounded seeded sample; reproducible with the seed; and, with a
TF_CONFIG naming two workers, MultiWorkerMirroredStrategy in two processes, only the chief
writing the model."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import EXCLUDE, LABEL
from ctloop import contract
from ctloop.components.train import logic
from ctloop.data import splits
from ctloop.errors import ConfigError, DataError
from ctloop.training import Cluster


def _shard(source: Path, folder: Path, parts: int) -> Path:
    """``source``'s rows as ``parts`` part-*.parquet files, as sharded ingest writes them."""
    frame = pd.read_parquet(source)
    folder.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[rows].to_parquet(folder / f"part-{index:05d}.parquet", index=False)
    return folder


@dataclasses.dataclass(frozen=True)
class Data:
    train: Path  # one Parquet file each, as ingest wrote them before it sharded
    eval: Path
    schema: Path
    features: list


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Data:
    """Generated rows split 80/20 into single Parquet files, and validate_data's schema of them
    (built here, not by ingest: these tests hold for either of ingest's layouts)."""
    from conftest import validate_outputs
    from ctloop.components.validate_data import logic as validate
    from ctloop.data import datagen

    work = tmp_path_factory.mktemp("stream")
    frame = datagen.generate_span(datagen.SpanSpec(1, rows=3000))
    evaluation = np.arange(len(frame)) % 5 == 0
    frame[~evaluation].to_parquet(work / "train.parquet", index=False)
    frame[evaluation].to_parquet(work / "eval.parquet", index=False)
    validate.run(str(work / "train.parquet"), str(work / "eval.parquet"), 1, LABEL, EXCLUDE,
                 None, None, None, validate_outputs(work))
    schema = work / "schema.pbtxt"
    return Data(work / "train.parquet", work / "eval.parquet", schema,
                contract.features_from_schema(str(schema), LABEL, EXCLUDE))


@pytest.fixture(scope="module")
def sharded(prepared, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    return {"train": _shard(prepared.train, root / "train", 3),
            "eval": _shard(prepared.eval, root / "eval", 2)}


def _split(path, features, **options) -> splits.Split:
    return splits.Split.of(str(path), features, LABEL, **options)


def test_a_folder_of_shards_has_the_files_columns_rows_and_columns_values(prepared, sharded):
    whole = pd.read_parquet(prepared.train)
    assert splits.rows(str(sharded["train"])) == len(whole) == splits.rows(str(prepared.train))
    assert splits.columns(str(sharded["train"])) == list(whole.columns)
    plan = splits.column(str(sharded["train"]), "plan")
    # Text dictionary-encoded: one small integer per row, the same values in the same order.
    assert isinstance(plan.dtype, pd.CategoricalDtype)
    assert plan.astype(object).fillna("").tolist() == whole["plan"].fillna("").tolist()
    income = splits.column(str(sharded["train"]), "income")
    np.testing.assert_array_equal(income.to_numpy(), whole["income"].to_numpy())
    assert splits.column(str(sharded["train"]), "no_such_column") is None


def test_a_folder_of_shards_reads_as_the_single_file(prepared, sharded):
    single, folder = (_split(p, prepared.features) for p in (prepared.train, sharded["train"]))
    assert len(folder.files) == 3 and folder.rows == single.rows
    one, labels_one = single.sample(splits.SAMPLE_ROWS, seed=1)
    many, labels_many = folder.sample(splits.SAMPLE_ROWS, seed=1)
    # Fewer rows than the sample bound: the sample is the split, in file order, either way.
    assert len(labels_one) == single.rows
    np.testing.assert_array_equal(labels_one, labels_many)
    for name in one:
        assert list(one[name].astype(str)) == list(many[name].astype(str)), name


def test_a_split_that_is_not_there_names_itself(tmp_path, prepared):
    with pytest.raises(DataError, match="neither a Parquet file nor a folder of part-"):
        _split(tmp_path, prepared.features)


def test_an_epoch_takes_every_row_once_in_a_new_order(prepared, sharded, monkeypatch):
    # Small pools and reads: several pools per epoch, as on a large split.
    monkeypatch.setattr(splits, "SHUFFLE_ROWS", 300)
    monkeypatch.setattr(splits, "READ_ROWS", 128)
    split = _split(sharded["train"], [contract.FeatureSpec("customer_id", contract.CATEGORICAL)])
    everyone = sorted(pd.read_parquet(prepared.train)["customer_id"].astype(str))
    orders = []
    for epoch in range(2):
        rng = np.random.default_rng([7, epoch])
        batches = list(split.batches(64, rng))
        assert all(len(labels) == 64 for _, labels in batches[:-1])
        orders.append([i for inputs, _ in batches for i in inputs["customer_id"]])
        assert sorted(orders[-1]) == everyone
    assert orders[0] != orders[1]
    again = [i for inputs, _ in split.batches(64, np.random.default_rng([7, 0]))
             for i in inputs["customer_id"]]
    assert again == orders[0]  # the seed decides the order


def test_workers_take_disjoint_rows_in_as_many_steps(prepared, sharded):
    split = _split(sharded["train"], [contract.FeatureSpec("customer_id", contract.CATEGORICAL)])
    steps = split.rows // 100
    seen = []
    for worker in (0, 1):
        batches = list(split.batches(50, np.random.default_rng(3), worker, 2, steps=steps))
        assert len(batches) == steps and all(len(labels) == 50 for _, labels in batches)
        seen.append({i for inputs, _ in batches for i in inputs["customer_id"]})
    assert not seen[0] & seen[1]


def test_the_sample_is_bounded_seeded_and_uniform(prepared, sharded):
    split = _split(sharded["train"], prepared.features)
    first, labels = split.sample(500, seed=5)
    again, _ = split.sample(500, seed=5)
    other, _ = split.sample(500, seed=6)
    assert len(labels) == 500 and all(len(values) == 500 for values in first.values())
    np.testing.assert_array_equal(first["income"], again["income"])
    assert not np.array_equal(first["income"], other["income"])
    # Drawn from the whole split, not its first rows: rows of the last shard are in it.
    ids = _split(sharded["train"], [contract.FeatureSpec("customer_id", contract.CATEGORICAL)])
    drawn = set(ids.sample(500, seed=5)[0]["customer_id"])
    assert drawn & set(pd.read_parquet(split.files[-1])["customer_id"].astype(str))


def test_training_on_shards_learns_and_is_reproducible(prepared, sharded, tmp_path):
    hp = logic.Hyperparameters(epochs=2, seed=7)
    results = [logic.run(str(sharded["train"]), str(sharded["eval"]), str(prepared.schema),
                         LABEL, EXCLUDE, hp, str(tmp_path / name)) for name in ("a", "b")]
    assert results[0] == results[1]
    assert results[0].eval_metrics["eval_auc"] > 0.72
    with np.load(tmp_path / "a" / logic.WEIGHTS_FILE) as a, \
            np.load(tmp_path / "b" / logic.WEIGHTS_FILE) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])  # same seed, same data: same weights
    other = logic.run(str(sharded["train"]), str(sharded["eval"]), str(prepared.schema), LABEL,
                      EXCLUDE, logic.Hyperparameters(epochs=2, seed=8), str(tmp_path / "c"))
    assert other.train_loss != results[0].train_loss
    # The vocabularies come from the same rows whether the split is one file or shards.
    logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL, EXCLUDE, hp,
              str(tmp_path / "single"))
    single = json.loads((tmp_path / "single" / contract.FEATURES_FILE).read_text())
    sharded_model = json.loads((tmp_path / "a" / contract.FEATURES_FILE).read_text())
    assert sharded_model["vocabularies"] == single["vocabularies"]


def test_a_bounded_sample_adapts_the_preprocessing(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(splits, "SAMPLE_ROWS", 400)
    monkeypatch.setattr(splits, "SHUFFLE_ROWS", 500)
    result = logic.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
                       EXCLUDE, logic.Hyperparameters(epochs=2, seed=7), str(tmp_path / "m"))
    assert result.eval_metrics["eval_auc"] > 0.7


@pytest.mark.parametrize(("value", "workers", "chief"), [
    (None, 1, True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', 2, True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', 2, False),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", '
     '"index": 0}}', 2, False),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", '
     '"index": 0}}', 2, True),
])
def test_tf_config_names_the_workers_and_the_chief(value, workers, chief):
    cluster = Cluster.of(value)
    assert (cluster.workers, cluster.is_chief) == (workers, chief)


def test_a_malformed_tf_config_is_a_config_error():
    with pytest.raises(ConfigError, match="TF_CONFIG .* is not of the form"):
        Cluster.of('{"cluster": []}')


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_one_model_and_only_the_chief_writes_it(prepared, sharded, tmp_path):
    """Two processes on this machine with the TF_CONFIG a TFJob's operator would set: they
    train together (MultiWorkerMirroredStrategy over gRPC on 127.0.0.1), the chief publishes the
    model and the result, the other worker nothing."""
    schema = tmp_path / "schema"
    schema.mkdir()
    (schema / "schema.pbtxt").write_text(prepared.schema.read_text())
    hp = logic.Hyperparameters(epochs=2, seed=7, early_stopping_patience=1)
    spec = {"train_uri": str(sharded["train"]), "eval_uri": str(sharded["eval"]),
            "schema_uri": str(schema), "label": LABEL, "exclude": EXCLUDE,
            "hp": {**hp.__dict__, "hidden_units": list(hp.hidden_units)}, "task": "binary"}
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in (0, 1):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "ctloop.components.train.worker",
             json.dumps({**spec, "output_uri": str(tmp_path / f"out-{index}")})],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "training on 2 workers with MultiWorkerMirroredStrategy" in outputs[0]
    assert "train worker worker 1 of 2: done" in outputs[1]
    # The loss is the job's, summed across workers: both see the same, and stop together.
    losses = [[line for line in out.splitlines() if ": loss " in line] for out in outputs]
    assert len(losses[0]) >= 1 and losses[0] == losses[1]
    result = json.loads((tmp_path / "out-0" / "result.json").read_text())
    assert result["eval_metrics"]["eval_auc"] > 0.7 and result["epochs_run"] >= 1
    assert contract.read_features(tmp_path / "out-0" / "model")
    assert not (tmp_path / "out-1").exists()  # the other worker wrote nothing
