"""Validate data: TFDV statistics per split, a schema, anomalies, and the views a person reads.

Schema precedence: a curated schema file given by the user, else the schema stored with the
serving model (so new data is judged by what the serving model was trained on), else one
inferred from this span's train statistics (cold start).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from ctloop import beam_options
from ctloop.errors import ConfigError

SPLITS = ("train", "eval")
STATS_FILE = "{split}.stats.tfrecord"


@dataclasses.dataclass(frozen=True)
class Anomaly:
    feature: str
    split: str
    short: str
    description: str


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    schema_source: str
    anomalies: list[Anomaly]

    @property
    def valid(self) -> bool:
        return not self.anomalies


def as_list_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Wraps each flat column in a list column, as TFDV expects; nulls become missing features."""
    columns = []
    for array in batch.columns:
        valid = np.asarray(array.is_valid())
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid)]).astype(np.int32))
        columns.append(pa.ListArray.from_arrays(offsets, array.drop_null(), mask=pa.array(~valid)))
    return pa.RecordBatch.from_arrays(columns, batch.schema.names)


def generate_statistics(
    splits: dict[str, str], stats_dir: str, beam_pipeline_args: list[str] | None = None
) -> dict:
    """Computes TFDV statistics of each split's Parquet file in one Beam pipeline.

    Args:
        splits: Split name -> Parquet file.
        stats_dir: Folder to write ``<split>.stats.tfrecord`` files into.
        beam_pipeline_args: Beam options (runner, workers, ...); see ctloop.beam_options.

    Returns:
        Split name -> DatasetFeatureStatisticsList.
    """
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.tfxio.parquet_tfxio import ParquetTFXIO

    Path(stats_dir).mkdir(parents=True, exist_ok=True)
    outputs = {s: str(Path(stats_dir) / STATS_FILE.format(split=s)) for s in splits}
    options = PipelineOptions(beam_options.resolve(beam_pipeline_args))
    with beam.Pipeline(options=options) as pipeline:
        for split, path in splits.items():
            _ = (
                pipeline
                | f"Read[{split}]" >> ParquetTFXIO(path).BeamSource()
                | f"ToLists[{split}]" >> beam.Map(as_list_batch)
                | f"Stats[{split}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                | f"Write[{split}]" >> tfdv.WriteStatisticsToBinaryFile(outputs[split])
            )
    return {s: tfdv.load_stats_binary(p) for s, p in outputs.items()}


def choose_schema(train_stats, curated_schema: str | None, serving_schema: str | None):
    """Returns (schema, source) following the precedence in the module docstring."""
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
    return tfdv.infer_schema(train_stats), "inferred from this span's train split"


def find_anomalies(stats: dict, schema, anomalies_dir: str) -> list[Anomaly]:
    """Validates each split against the schema; writes ``<split>.anomalies.pbtxt`` files."""
    import tensorflow_data_validation as tfdv

    Path(anomalies_dir).mkdir(parents=True, exist_ok=True)
    found = []
    for split, split_stats in stats.items():
        anomalies = tfdv.validate_statistics(split_stats, schema)
        tfdv.write_anomalies_text(anomalies, str(Path(anomalies_dir) / f"{split}.anomalies.pbtxt"))
        for feature, info in sorted(anomalies.anomaly_info.items()):
            found.append(Anomaly(feature, split, info.short_description, info.description))
        # Anomalies of the whole dataset (e.g. too few examples) are keyed by no feature.
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            found.append(Anomaly("(dataset)", split, info.short_description, info.description))
        if anomalies.data_missing:
            found.append(Anomaly("(dataset)", split, "No data", "The split has no examples."))
    return found


def anomalies_markdown(result: ValidationResult, span: int) -> str:
    """The anomalies report in Markdown, as the KFP UI renders it."""
    lines = [f"# Data validation: span {span}", "", f"Schema: {result.schema_source}.", ""]
    if result.valid:
        lines.append("No anomalies: the data matches the schema in every split.")
        return "\n".join(lines) + "\n"
    lines += [
        f"**{len(result.anomalies)} anomalies: deployment is blocked.**",
        "",
        "| feature | split | anomaly | description |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{a.feature}` | {a.split} | {a.short} | {a.description.replace('|', '/')} |"
        for a in result.anomalies
    ]
    lines += [
        "",
        "Fix: correct the data at its source, or, if the change is legitimate, update the curated "
        "schema (pass it as `schema_uri`) so that it accepts the new data.",
    ]
    return "\n".join(lines) + "\n"


def run(
    train_path: str,
    eval_path: str,
    span: int,
    curated_schema: str | None,
    serving_schema: str | None,
    stats_dir: str,
    schema_out: str,
    anomalies_dir: str,
    statistics_html: str,
    anomalies_md: str,
    beam_pipeline_args: list[str] | None = None,
) -> ValidationResult:
    """Computes statistics, picks the schema, finds anomalies and writes every output file."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.utils import display_util

    stats = generate_statistics({"train": train_path, "eval": eval_path}, stats_dir,
                                beam_pipeline_args)
    schema, source = choose_schema(stats["train"], curated_schema, serving_schema)
    result = ValidationResult(source, find_anomalies(stats, schema, anomalies_dir))
    Path(schema_out).parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, schema_out)
    Path(statistics_html).write_text(
        display_util.get_statistics_html(
            lhs_statistics=stats["train"], rhs_statistics=stats["eval"],
            lhs_name=f"span {span} train", rhs_name=f"span {span} eval",
        )
    )
    Path(anomalies_md).write_text(anomalies_markdown(result, span))
    return result
