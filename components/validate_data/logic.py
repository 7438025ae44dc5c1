"""Validate data: TFDV statistics per split, a schema, anomalies, drift and skew, and the views.

Schema precedence: a curated schema file given by the user, else the schema stored with the
serving model (so new data is judged by what the serving model was trained on), else one
inferred from this span's train statistics (cold start). An inferred schema gets two
environments, TRAINING and SERVING, with the label absent from SERVING, so that serving data
(no label) validates against the same schema.

An inferred schema is made to generalise from one span to the next (``infer_schema``): presence
is judged by the drift and skew tests (whose bins include "missing"), not by TFDV's presence
constraints, and a categorical domain tolerates a small share of unseen values.

Drift and skew are measured and judged by ``drift`` on shared bins, with a stated false-alarm
rate; TFDV judges only a curated schema's own comparators.

Every anomaly blocks deployment unless the anomaly policy says ``warn`` for all of its types.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from ctloop import beam_options, drift, drift_report
from ctloop.components.validate_data import changes
from ctloop.data import splits
from ctloop.errors import ConfigError
from ctloop.settings import BLOCK, WARN, check_policy

SPLITS = ("train", "eval")
STATS_FILE = "{split}.stats.tfrecord"
TRAINING, SERVING = "TRAINING", "SERVING"


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
    previous_note: str | None = None  # why no drift was measured against the previous span
    beam: dict | None = None  # the Beam options statistics ran with (beam_options.describe)

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


def generate_statistics(
    paths: dict[str, str],
    stats_dir: str,
    beam_pipeline_args: list[str] | None = None,
    sample_rate: float | None = None,
    schema=None,
    exclude: list[str] | tuple[str, ...] = (),
) -> dict:
    """Computes TFDV statistics of each split's Parquet file in one Beam pipeline.

    The ``exclude`` columns are not read. They are not features (IDs, keys, timestamps), and
    TFDV's exact top-k and unique counts keep a count per distinct value: an ID column's
    memory and time grow with the rows (on 1M rows of the built-in data, 20 of the 24 s and
    300 MB of the peak). TFDV's sketch-based option would bound them, but which of an ID's
    values it keeps depends on the order Beam merges its sketches, so its statistics would
    differ between identical runs.

    Args:
        paths: Split name -> Parquet file, or a folder of Parquet files (ingest's).
        stats_dir: Folder to write ``<split>.stats.tfrecord`` files into.
        beam_pipeline_args: Beam options (runner, workers, ...), as ctloop.beam_options
            resolves them.
        sample_rate: Share of rows to compute statistics on (None: all rows).
        schema: A schema whose categorical integer features get value counts (top values).
        exclude: Columns to leave out.

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
    outputs = {s: str(Path(stats_dir) / STATS_FILE.format(split=s)) for s in paths}
    with beam.Pipeline(options=PipelineOptions(beam_options.resolve(beam_pipeline_args))) as p:
        for split, path in paths.items():
            columns = [name for name in splits.columns(path) if name not in set(exclude)]
            batches = p | f"Read[{split}]" >> ParquetTFXIO(
                splits.shards(path), column_names=columns).BeamSource()
            if sample_rate is not None and sample_rate < 1.0:
                batches |= f"Sample[{split}]" >> beam.Map(sample_rows, sample_rate)
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


def without(schema, exclude: list[str]):
    """``schema`` without the excluded columns: they are not profiled, so not validated either
    (a curated schema that requires an ID column would otherwise find it missing)."""
    if not set(exclude) & {f.name for f in schema.feature}:
        return schema
    kept = [f for f in schema.feature if f.name not in set(exclude)]
    schema = type(schema).FromString(schema.SerializeToString())
    del schema.feature[:]
    schema.feature.extend(kept)
    return schema


def infer_schema(train_stats, label: str):
    """TFDV's inferred schema, with environments, made to generalise from one span to the next.

    - Presence: TFDV infers "present in every row" (or in at least one) from the one span it
      sees, so a column with no missing value in span 1 and one in span 2, or a mostly-empty
      column empty in a small eval split, would block. The missing share is a bin of every drift
      and skew test instead, judged with the rows it rests on.
    - Categorical domains: none. TFDV's domain check flags any unseen value, however rare (and
      misstates its share); the share of new values is judged by its mass instead
      (``drift.unseen``).
    - Numeric ranges: none is inferred (TFDV infers none for floats, and ingest writes every
      numeric feature as a float): a range seen in one span says nothing of the next; a moved
      distribution is drift.
    """
    import tensorflow_data_validation as tfdv

    # No shapes: a shape asserts one value in every row, presence again.
    schema = tfdv.infer_schema(train_stats, infer_feature_shape=False)
    schema.default_environment.extend([TRAINING, SERVING])
    tfdv.get_feature(schema, label).not_in_environment.append(SERVING)
    for feature in schema.feature:
        feature.ClearField("presence")
        if feature.name == label:  # every training row has one (ingest refuses missing labels)
            feature.presence.min_fraction, feature.presence.min_count = 1.0, 1
        if feature.WhichOneof("domain_info") == "domain":
            feature.ClearField("domain")
    del schema.string_domain[:]
    return schema


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
            measured = drift.tfdv_measurements(anomalies)
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


def change_anomalies(measured: list[drift.Measurement], policy: dict[str, str]) -> list[Anomaly]:
    """An anomaly per breach judged here (TFDV reports its own comparators' breaches)."""
    found = []
    for m in measured:
        split = "train" if m.kind == drift.DRIFT else "eval"
        if m.too_new:
            what = ("categories never seen" if m.feature_kind == drift.CATEGORICAL
                    else "numbers beyond its minimum or maximum")
            found.append(Anomaly(
                m.feature, split, "New values",
                f"{m.new_share:.1%} of the values are outside what "
                f"{'the previous span' if m.kind == drift.DRIFT else 'the train split'} saw "
                f"({what}; {m.new_expected:.2%} expected by chance, p-value "
                f"{m.new_p_value:.2g} < {m.alpha:.2g})",
                (drift.NEW_VALUES_TYPE,),
                WARN if policy.get(drift.NEW_VALUES_TYPE) == WARN else BLOCK))
        if m.source != drift.CTLOOP or not m.breached:
            continue
        anomaly_type = drift.DRIFT_TYPE if m.kind == drift.DRIFT else drift.SKEW_TYPE
        against = "the previous span's train split" if m.kind == drift.DRIFT else \
            "the train split"
        found.append(Anomaly(
            m.feature, split, "Drift" if m.kind == drift.DRIFT else "Skew",
            f"{m.kind} from {against}: Jensen-Shannon divergence {m.value:.3f} >= {m.threshold:g}"
            f" and significant (p-value {m.p_value:.2g} < {m.alpha:.2g}, rows {m.rows[0]} vs "
            f"{m.rows[1]}); largest move {m.moved}",
            (anomaly_type,), WARN if policy.get(anomaly_type) == WARN else BLOCK))
    return found


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
    lines += ["", drift_report.markdown(result.measurements, result.previous_span,
                                 result.previous_note)]
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
        train_path: The train split (a Parquet file, or ingest's folder of them).
        eval_path: The eval split (the same).
        span: The span number, for the views.
        label: The label column (absent from the SERVING environment of an inferred schema).
        exclude: Columns that are not features: not profiled, validated or measured for
            drift and skew.
        curated_schema: A curated schema file, or None.
        serving_schema: The serving model's schema file, or None.
        previous: (span, statistics file) of the latest earlier span, or None.
        outputs: Where to write.
        thresholds: Drift and skew thresholds and the false-alarm rate (``drift.Thresholds``).
        policy: Anomaly type -> "block" or "warn" (default: block).
        beam_pipeline_args: Beam options for TFDV; with none, ``beam_options.resolve`` picks
            them for the splits' row count.
        sample_rate: Share of rows statistics are computed on.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.utils import display_util

    policy = check_policy(policy or {})
    thresholds = thresholds or drift.Thresholds()
    paths = {"train": train_path, "eval": eval_path}
    beam_pipeline_args = beam_options.resolve(
        beam_pipeline_args, sum(splits.rows(path) for path in paths.values()))
    schema, source = load_schema(curated_schema, serving_schema)
    if schema is None:  # cold start
        stats = generate_statistics(paths, outputs.stats_dir, beam_pipeline_args, sample_rate,
                                    exclude=exclude)
        schema = infer_schema(stats["train"], label)
        source = "inferred from this span's train split"
    else:
        schema = without(schema, exclude)
        stats = generate_statistics(paths, outputs.stats_dir, beam_pipeline_args, sample_rate,
                                    schema, exclude)
    previous_stats = tfdv.load_stats_binary(previous[1]) if previous else None
    anomalies, tfdv_measured = find_anomalies(stats, schema, policy, outputs.anomalies_dir,
                                              previous_stats)
    measured, profiles, note = changes.measure(schema, train_path, eval_path, label, exclude,
                                               previous_stats, thresholds)
    anomalies += change_anomalies(measured, policy)
    measured = sorted(measured + tfdv_measured, key=lambda m: (m.kind, m.feature))
    # The train statistics carry this span's profiles: the next span's drift reference.
    drift.write_profiles(stats["train"], profiles)
    Path(outputs.stats_dir, STATS_FILE.format(split="train")).write_bytes(
        stats["train"].SerializeToString())
    result = ValidationResult(source, anomalies, measured, previous[0] if previous else None,
                              note, beam_options.describe(beam_pipeline_args))

    Path(outputs.schema).parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, outputs.schema)
    # Side by side: this span against the previous one when there is one, else train vs eval.
    rhs, rhs_name = ((previous_stats, f"span {previous[0]} train") if previous
                     else (stats["eval"], f"span {span} eval"))
    Path(outputs.statistics_html).write_text(display_util.get_statistics_html(
        lhs_statistics=stats["train"], rhs_statistics=rhs,
        lhs_name=f"span {span} train", rhs_name=rhs_name,
    ))
    Path(outputs.drift_html).write_text(
        drift_report.html_table(measured, result.previous_span, span))
    Path(outputs.report_md).write_text(report_markdown(result, span))
    return result
