"""Validate data: TFDV statistics per split, a schema, anomalies, drift and skew, and the views.

Schema precedence: a curated schema file given by the user, else the schema stored with the
serving model (so new data is judged by what the serving model was trained on), else one
inferred from this span's train statistics (cold start). An inferred schema gets two
environments, TRAINING and SERVING, with the label absent from SERVING, so that serving data
(no label) validates against the same schema.

Every anomaly blocks deployment unless the anomaly policy says ``warn`` for all of its types.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from ctloop import beam_options
from ctloop.components.validate_data import drift
from ctloop.errors import ConfigError

SPLITS = ("train", "eval")
STATS_FILE = "{split}.stats.tfrecord"
TRAINING, SERVING = "TRAINING", "SERVING"
MAX_CATEGORICAL_INT_RANGE = 20
# The name of an integer column's categorical copy in a cold start's single statistics pass.
COPY = "{} [ctloop categorical copy]"
BLOCK, WARN = "block", "warn"


@dataclasses.dataclass(frozen=True)
class Anomaly:
    feature: str
    split: str
    short: str
    description: str
    types: tuple[str, ...]  # TFDV AnomalyInfo.Type names
    action: str  # BLOCK or WARN


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    schema_source: str
    anomalies: list[Anomaly]
    measurements: list[drift.Measurement]
    previous_span: int | None

    @property
    def blocking(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.action == BLOCK]

    @property
    def valid(self) -> bool:
        return not self.blocking


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """Where ``run`` writes: statistics folder, schema file, anomalies folder and the views."""

    stats_dir: str
    schema: str
    anomalies_dir: str
    statistics_html: str
    drift_html: str
    report_md: str


def anomaly_types() -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    return list(anomalies_pb2.AnomalyInfo.Type.keys())


def check_policy(policy: dict[str, str]) -> dict[str, str]:
    """Returns ``policy`` if every key is a TFDV anomaly type and every value block/warn."""
    known = set(anomaly_types())
    for anomaly_type, action in policy.items():
        if anomaly_type not in known:
            close = sorted(k for k in known if anomaly_type.upper() in k or k in anomaly_type)
            raise ConfigError(
                f"anomaly policy key {anomaly_type!r} is not a TFDV anomaly type; use names like "
                f"{', '.join(close[:3]) or 'COMPARATOR_L_INFTY_HIGH, SCHEMA_NEW_COLUMN'}"
            )
        if action not in (BLOCK, WARN):
            raise ConfigError(
                f"anomaly policy for {anomaly_type} is {action!r}; use 'block' or 'warn'"
            )
    return policy


def as_list_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Wraps each flat column in a list column, as TFDV expects; nulls become missing features."""
    columns = []
    for array in batch.columns:
        valid = np.asarray(array.is_valid())
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid)]).astype(np.int32))
        columns.append(pa.ListArray.from_arrays(offsets, array.drop_null(), mask=pa.array(~valid)))
    return pa.RecordBatch.from_arrays(columns, batch.schema.names)


def sample_rows(batch: pa.RecordBatch, rate: float) -> pa.RecordBatch:
    """Keeps a ``rate`` share of rows, chosen by a hash of each row's content.

    The same rows are kept in every run and whatever the batching, so sampled statistics are
    reproducible. (TFDV 1.16's ``StatsOptions.sample_rate`` only samples semantic-domain stats.)
    """
    import pandas as pd

    hashes = pd.util.hash_pandas_object(batch.to_pandas(), index=False).to_numpy()
    # Bits above those ingest's train/eval split uses (hash % 100), so the two are independent.
    keep = (hashes // 100) % 10_000 < rate * 10_000
    return batch.filter(pa.array(keep))


def with_copies(batch: pa.RecordBatch, columns: tuple[str, ...]) -> pa.RecordBatch:
    """Adds a copy of each of ``columns`` that the batch has, named ``COPY.format(name)``."""
    present = [name for name in columns if name in batch.schema.names]
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *(batch.column(name) for name in present)],
        [*batch.schema.names, *(COPY.format(name) for name in present)],
    )


def generate_statistics(
    splits: dict[str, str],
    stats_dir: str,
    beam_pipeline_args: list[str] | None = None,
    sample_rate: float | None = None,
    schema=None,
    categorical_copies: tuple[str, ...] = (),
) -> dict:
    """Computes TFDV statistics of each split's Parquet file in one Beam pipeline.

    Args:
        splits: Split name -> Parquet file.
        stats_dir: Folder to write ``<split>.stats.tfrecord`` files into.
        beam_pipeline_args: Beam options (runner, workers, ...); see ctloop.beam_options.
        sample_rate: Share of rows to compute statistics on (None: all rows).
        schema: A schema whose categorical integer features get value counts (top values),
            which their L-infinity distances need.
        categorical_copies: Integer columns to also compute as categorical, under the name
            ``COPY.format(name)`` (see ``cold_start_statistics``); ``schema`` must mark the
            copies categorical.

    Returns:
        Split name -> DatasetFeatureStatisticsList.
    """
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.tfxio.parquet_tfxio import ParquetTFXIO

    if sample_rate is not None and not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate {sample_rate} is out of range: use a value in (0, 1]")
    Path(stats_dir).mkdir(parents=True, exist_ok=True)
    outputs = {s: str(Path(stats_dir) / STATS_FILE.format(split=s)) for s in splits}
    with beam.Pipeline(options=PipelineOptions(beam_options.resolve(beam_pipeline_args))) as p:
        for split, path in splits.items():
            batches = p | f"Read[{split}]" >> ParquetTFXIO(path).BeamSource()
            if sample_rate is not None and sample_rate < 1.0:
                batches |= f"Sample[{split}]" >> beam.Map(sample_rows, sample_rate)
            if categorical_copies:
                batches |= f"Copy[{split}]" >> beam.Map(with_copies, categorical_copies)
            _ = (
                batches
                | f"ToLists[{split}]" >> beam.Map(as_list_batch)
                | f"Stats[{split}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions(schema=schema))
                | f"Write[{split}]" >> tfdv.WriteStatisticsToBinaryFile(outputs[split])
            )
    return {s: tfdv.load_stats_binary(p) for s, p in outputs.items()}


def load_schema(curated_schema: str | None, serving_schema: str | None):
    """Returns (schema, source) for the first schema file given, or (None, None)."""
    import tensorflow_data_validation as tfdv

    for source, path in (("curated", curated_schema), ("serving model", serving_schema)):
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"schema file {path} does not exist; fix the schema path")
            try:
                return tfdv.load_schema_text(path), f"{source}: {path}"
            except Exception as exc:  # text_format raises a bare ParseError subclass of Exception
                raise ConfigError(
                    f"schema file {path} is not a TFDV schema in text format ({exc}); "
                    "write it with tfdv.write_schema_text"
                ) from exc
    return None, None


def infer_schema(train_stats, label: str):
    """TFDV's inferred schema, with environments and small integer features made categorical.

    Counts such as "support calls" (a handful of integer values) get an L-infinity distance over
    their value frequencies: TFDV's approximate Jensen-Shannon divergence rebuckets histograms
    assuming values spread evenly within buckets, which integer-valued data violates (measured:
    0.29 between train and eval of one distribution, against 0.01-0.04 for continuous features).
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = tfdv.infer_schema(train_stats)
    schema.default_environment.extend([TRAINING, SERVING])
    tfdv.get_feature(schema, label).not_in_environment.append(SERVING)
    numbers = {".".join(f.path.step): f.num_stats for f in train_stats.datasets[0].features}
    for feature in schema.feature:
        stats = numbers.get(feature.name)
        if (feature.type == schema_pb2.INT and feature.name != label and stats is not None
                and stats.max - stats.min < MAX_CATEGORICAL_INT_RANGE):
            feature.int_domain.is_categorical = True
    return schema


def cold_start_statistics(splits: dict[str, str], stats_dir: str, label: str,
                          beam_pipeline_args: list[str] | None = None,
                          sample_rate: float | None = None) -> tuple[dict, object]:
    """Statistics and an inferred schema for a cold start (no schema given), in one pass.

    An integer feature's statistics depend on the schema: a categorical one gets value counts
    (string statistics) instead of numeric ones, and which integers are categorical is only
    known once the schema is inferred from the statistics. So the one pass computes every
    integer column both ways: as itself, and as a copy that the pass's schema marks
    categorical. The schema is inferred from the statistics without the copies; then each
    integer feature that schema makes categorical (``infer_schema``'s small integers, and
    TFDV's 0/1 features with a bool domain) takes its copy's statistics. The result equals a
    pass without schema followed by a pass with the inferred schema.

    Args:
        splits: Split name -> Parquet file.
        stats_dir: Folder to write ``<split>.stats.tfrecord`` files into.
        label: The label column (see ``infer_schema``).
        beam_pipeline_args: Beam options; see ctloop.beam_options.
        sample_rate: Share of rows to compute statistics on (None: all rows).

    Returns:
        (split name -> DatasetFeatureStatisticsList, the inferred schema)
    """
    import pyarrow.parquet as pq
    from tensorflow_data_validation.utils import schema_util
    from tensorflow_metadata.proto.v0 import schema_pb2

    integers = tuple(dict.fromkeys(
        field.name for path in splits.values() for field in pq.read_schema(path)
        if pa.types.is_integer(field.type)))
    copies = schema_pb2.Schema()
    for name in integers:
        copies.feature.add(name=COPY.format(name), type=schema_pb2.INT,
                           int_domain=schema_pb2.IntDomain(is_categorical=True))
    both = generate_statistics(splits, stats_dir, beam_pipeline_args, sample_rate, copies,
                               integers)
    copied = {split: _take_copies(stats) for split, stats in both.items()}
    schema = infer_schema(both["train"], label)
    categorical = {f.name for f in schema.feature
                   if f.type == schema_pb2.INT and schema_util.is_categorical_feature(f)}
    for split, stats in both.items():
        for feature in stats.datasets[0].features:
            name = ".".join(feature.path.step)
            if name in categorical and name in copied[split]:
                feature.CopyFrom(copied[split][name])
        Path(stats_dir, STATS_FILE.format(split=split)).write_bytes(stats.SerializeToString())
    return both, schema


def _take_copies(stats) -> dict:
    """Removes the categorical copies from ``stats``; returns original name -> the copy's
    statistics, named as the original."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    dataset = stats.datasets[0]
    suffix = COPY.format("")
    copies = {}
    for i in reversed(range(len(dataset.features))):
        name = ".".join(dataset.features[i].path.step)
        if name.endswith(suffix):
            copy = copies[name.removesuffix(suffix)] = statistics_pb2.FeatureNameStatistics()
            copy.CopyFrom(dataset.features[i])
            copy.path.step[:] = [name.removesuffix(suffix)]
            del dataset.features[i]
    return copies


def find_anomalies(stats: dict, schema, policy: dict[str, str], anomalies_dir: str,
                   previous_stats=None) -> tuple[list[Anomaly], list[drift.Measurement]]:
    """Validates each split; the train split also against the eval split (skew) and the
    previous span (drift). Writes ``<split>.anomalies.pbtxt`` files."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    type_name = anomalies_pb2.AnomalyInfo.Type.Name
    environment = TRAINING if TRAINING in schema.default_environment else None
    Path(anomalies_dir).mkdir(parents=True, exist_ok=True)
    found, measured = [], []
    for split, split_stats in stats.items():
        extra = {}
        if split == "train":
            extra = {"serving_statistics": stats["eval"], "previous_statistics": previous_stats}
        anomalies = tfdv.validate_statistics(split_stats, schema, environment=environment,
                                             **extra)
        tfdv.write_anomalies_text(anomalies, str(Path(anomalies_dir) / f"{split}.anomalies.pbtxt"))
        if split == "train":
            measured = drift.measurements(anomalies)
        infos = sorted(anomalies.anomaly_info.items())
        # Anomalies of the whole dataset (e.g. too few examples) are keyed by no feature.
        if anomalies.HasField("dataset_anomaly_info"):
            infos.append(("(dataset)", anomalies.dataset_anomaly_info))
        for feature, info in infos:
            types = tuple(type_name(r.type) for r in info.reason) or ("UNKNOWN_TYPE",)
            # Block unless the policy downgrades every one of the anomaly's types.
            action = WARN if all(policy.get(t) == WARN for t in types) else BLOCK
            found.append(Anomaly(feature, split, info.short_description, info.description,
                                 types, action))
        if anomalies.data_missing:
            found.append(Anomaly("(dataset)", split, "No data", "The split has no examples.",
                                 ("DATASET_LOW_NUM_EXAMPLES",), BLOCK))
    return found, measured


def report_markdown(result: ValidationResult, span: int) -> str:
    """The anomalies, drift and skew report in Markdown, as the KFP UI renders it."""
    lines = [f"# Data validation: span {span}", "", f"Schema: {result.schema_source}.", ""]
    if not result.anomalies:
        lines.append("No anomalies: the data matches the schema in every split.")
    else:
        verdict = (f"**{len(result.blocking)} blocking anomalies: deployment is blocked.**"
                   if result.blocking else "Only warnings: deployment is not blocked.")
        lines += [
            verdict, "",
            "| feature | split | anomaly | description | policy |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{a.feature}` | {a.split} | {a.short} | {a.description.replace('|', '/')} | "
            f"{a.action} |"
            for a in result.anomalies
        ]
        lines += [
            "",
            "Fix: correct the data at its source; or, if the change is legitimate, update the "
            "curated schema (pass it as `schema_uri`), raise the drift/skew thresholds, or set "
            "the anomaly type to `warn` in the anomaly policy.",
        ]
    lines += ["", drift.markdown(result.measurements, result.previous_span)]
    return "\n".join(lines)


def run(
    train_path: str,
    eval_path: str,
    span: int,
    label: str,
    exclude: list[str],
    curated_schema: str | None,
    serving_schema: str | None,
    previous: tuple[int, str] | None,
    outputs: OutputPaths,
    thresholds: drift.Thresholds | None = None,
    policy: dict[str, str] | None = None,
    beam_pipeline_args: list[str] | None = None,
    sample_rate: float | None = None,
) -> ValidationResult:
    """Computes statistics, picks the schema, finds anomalies, drift and skew; writes outputs.

    Args:
        train_path: The train split (Parquet).
        eval_path: The eval split (Parquet).
        span: The span number, for the views.
        label: The label column (absent from the SERVING environment of an inferred schema).
        exclude: Columns that are not features: no drift or skew is measured on them.
        curated_schema: A curated schema file, or None.
        serving_schema: The serving model's schema file, or None.
        previous: (span, statistics file) of the latest earlier span, or None.
        outputs: Where to write.
        thresholds: Drift and skew thresholds (defaults: 0.1 each).
        policy: Anomaly type -> "block" or "warn" (default: block).
        beam_pipeline_args: Beam options for TFDV.
        sample_rate: Share of rows statistics are computed on.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.utils import display_util
    from tensorflow_metadata.proto.v0 import schema_pb2

    policy = check_policy(policy or {})
    thresholds = thresholds or drift.Thresholds()
    splits = {"train": train_path, "eval": eval_path}
    schema, source = load_schema(curated_schema, serving_schema)
    if schema is None:  # cold start
        stats, schema = cold_start_statistics(splits, outputs.stats_dir, label,
                                              beam_pipeline_args, sample_rate)
        source = "inferred from this span's train split"
    else:
        stats = generate_statistics(splits, outputs.stats_dir, beam_pipeline_args, sample_rate,
                                    schema)
    # Comparators are added to a copy: the stored schema stays as chosen, so changed thresholds
    # take effect on the next run instead of being frozen into the model's schema.
    judged = schema_pb2.Schema()
    judged.CopyFrom(schema)
    drift.add_comparators(judged, thresholds, skip=set(exclude))
    previous_stats = tfdv.load_stats_binary(previous[1]) if previous else None
    anomalies, measured = find_anomalies(stats, judged, policy, outputs.anomalies_dir,
                                         previous_stats)
    result = ValidationResult(source, anomalies, measured, previous[0] if previous else None)

    Path(outputs.schema).parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, outputs.schema)
    # Side by side: this span against the previous one when there is one, else train vs eval.
    rhs, rhs_name = ((previous_stats, f"span {previous[0]} train") if previous
                     else (stats["eval"], f"span {span} eval"))
    Path(outputs.statistics_html).write_text(display_util.get_statistics_html(
        lhs_statistics=stats["train"], rhs_statistics=rhs,
        lhs_name=f"span {span} train", rhs_name=rhs_name,
    ))
    Path(outputs.drift_html).write_text(drift.html_table(measured, result.previous_span, span))
    Path(outputs.report_md).write_text(report_markdown(result, span))
    return result
