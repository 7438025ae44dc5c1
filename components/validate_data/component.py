"""KFP component: TFDV statistics, schema and anomalies of the train/eval splits."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from ctloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_data(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    registry_uri: str,
    model_name: str,
    statistics: Output[Artifact],
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    statistics_view: Output[HTML],
    anomalies_report: Output[Markdown],
    schema_uri: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> bool:
    """Computes statistics per split, picks a schema, and finds anomalies.

    Schema precedence: ``schema_uri`` (curated) > the serving model's schema in the registry >
    inferred from this span's train split (cold start).

    Args:
        train_data: The train split.
        eval_data: The eval split.
        registry_uri: The model registry root; its serving version's schema is used if present.
        model_name: The model's name in the registry.
        statistics: Output: ``<split>.stats.tfrecord`` files (DatasetFeatureStatisticsList).
        schema: Output: the schema used, ``schema.pbtxt``.
        anomalies: Output: ``<split>.anomalies.pbtxt`` files; metadata ``anomaly_count``.
        statistics_view: Output: TFDV's statistics view, train vs eval.
        anomalies_report: Output: the anomalies as a Markdown table with the fix.
        schema_uri: A curated schema (text proto) that wins over the others (None or empty:
            none).
        beam_pipeline_args: Beam options for TFDV (runner, workers, ...).

    Returns:
        True when no anomaly was found; False blocks deployment.
    """
    import os

    from ctloop.components.validate_data import logic
    from ctloop.registry import Registry

    serving = Registry(registry_uri, model_name).serving()
    os.makedirs(schema.path, exist_ok=True)
    result = logic.run(
        train_path=train_data.path,
        eval_path=eval_data.path,
        span=int(train_data.metadata.get("span", 0)),
        curated_schema=schema_uri or None,
        serving_schema=str(serving.schema_path) if serving else None,
        stats_dir=statistics.path,
        schema_out=os.path.join(schema.path, "schema.pbtxt"),
        anomalies_dir=anomalies.path,
        statistics_html=statistics_view.path,
        anomalies_md=anomalies_report.path,
        beam_pipeline_args=beam_pipeline_args,
    )
    anomalies.metadata.update(anomaly_count=len(result.anomalies), valid=result.valid)
    schema.metadata["source"] = result.schema_source
    return result.valid
