"""Benchmark child, the floor: the same CT iteration as the pipeline in one process, without
orchestration.

It calls the component logic modules directly, in the order and with the settings the pipeline's
components use them (the CLI's defaults), on a fresh registry (a cold start, as the pipeline run
it is compared with): the same TFDV, Keras, TFMA and model-server calls on the same data, paying
the library imports once instead of once per task. Writes each step's time window
(``time.time()`` instants), CPU time and disk reads (this process's and its children's, e.g. the
model server's), and the steps' verdicts, as JSON.
"""

from __future__ import annotations

import contextlib
import functools
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from bench.pipeline import BLOCK_BYTES, EXCLUDE, LABEL, MB, MODEL_NAME, child_args

EVAL_PERCENT = 20  # ct_pipeline's default


def main() -> None:
    args = child_args(__doc__)
    args.out.write_text(json.dumps(run(args.data, args.workdir, args.serving_python), indent=2))


def run(data: str, workdir: Path, serving_python: str) -> dict:
    """Runs the iteration; returns step windows, statistics passes, verdicts and file paths."""
    windows: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        started, (cpu, read) = time.time(), _usage()
        yield
        cpu_after, read_after = _usage()
        windows[name] = {"start": started, "end": time.time(), "cpu_s": cpu_after - cpu,
                         "read_mb": read_after - read}

    with step("imports"):
        import apache_beam  # noqa: F401 - imported here so that no step pays for it
        import tensorflow  # noqa: F401
        import tensorflow_data_validation  # noqa: F401
        import tensorflow_model_analysis  # noqa: F401

        from ctloop import drift
        from ctloop.components.evaluate import logic as evaluate
        from ctloop.components.infra_validate import logic as infra_validate
        from ctloop.components.ingest import logic as ingest
        from ctloop.components.rollout import logic as rollout
        from ctloop.components.select_span import logic as select_span
        from ctloop.components.train import logic as train
        from ctloop.components.validate_data import logic as validate_data
        from ctloop.registry import LocalRegistry

    # Time each statistics pass of validate_data (one Beam pipeline; a cold start makes one).
    stats_passes: list[float] = []
    generate = validate_data.generate_statistics

    @functools.wraps(generate)
    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            stats_passes.append(time.perf_counter() - started)

    validate_data.generate_statistics = timed_generate

    out = workdir / "outputs"
    registry = LocalRegistry(workdir / "registry", MODEL_NAME)
    train_path, eval_path = str(out / "train.parquet"), str(out / "eval.parquet")
    model_dir = str(out / "model")
    out.mkdir(parents=True, exist_ok=True)

    with step("select-span"):
        selected = select_span.run(data)
    with step("ingest"):
        ingested = ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL,
                              EXCLUDE, EVAL_PERCENT, train_path, eval_path)
    with step("validate-data"):
        serving = registry.serving()
        previous = registry.previous_statistics(ingested.span)
        validation = validate_data.run(
            train_path=train_path, eval_path=eval_path, span=ingested.span, label=LABEL,
            exclude=EXCLUDE, curated_schema=None,
            serving_schema=str(serving.schema_path) if serving else None,
            previous=(previous[0], str(previous[1])) if previous else None,
            outputs=validate_data.OutputPaths(
                stats_dir=str(out / "statistics"), schema=str(out / "schema" / "schema.pbtxt"),
                anomalies_dir=str(out / "anomalies"),
                statistics_html=str(out / "statistics.html"),
                drift_html=str(out / "drift.html"), report_md=str(out / "anomalies.md")),
            thresholds=drift.Thresholds(), policy={}, beam_pipeline_args=None, sample_rate=1.0,
        )
        registry.save_statistics(ingested.span, out / "statistics" / "train.stats.tfrecord")
    with step("train"):
        train.run(
            train_path=train_path, eval_path=eval_path,
            schema_path=str(out / "schema" / "schema.pbtxt"), label=LABEL, exclude=EXCLUDE,
            hp=train.Hyperparameters(), model_dir=model_dir,
            label_classes=ingested.label_classes)
    with step("evaluate"):
        baseline = registry.serving()
        evaluation = evaluate.run(
            model_dir=model_dir, eval_path=eval_path, label=LABEL,
            baseline_dir=str(baseline.model_dir) if baseline else None,
            thresholds=evaluate.Thresholds(), output_dir=str(out / "evaluation"))
    with step("infra-validate"):
        slo = infra_validate.SLO()
        infra = infra_validate.run(model_dir, eval_path, slo, infra_validate.local_server(
            model_dir, MODEL_NAME, serving_python, slo.startup_timeout_s,
            str(out / "server.log")))
    with step("rollout"):
        pushed = rollout.run(
            model_dir=model_dir, schema_path=str(out / "schema" / "schema.pbtxt"),
            data_valid=validation.valid, anomaly_count=len(validation.blocking),
            blessed=evaluation.blessed, blessing_reason=evaluation.reason,
            infra_blessed=infra.blessed, infra_reason=infra.reason,
            baseline_version=baseline.number if baseline else None,
            registry_uri=str(registry.root), model_name=MODEL_NAME,
            record={"span": ingested.span, "data_fingerprint": ingested.fingerprint,
                    "metrics": evaluation.metrics, "target": "local"})

    return {
        "windows": windows,
        "stats_passes_s": stats_passes,
        "rows": {"train": ingested.train_rows, "eval": ingested.eval_rows},
        "data_valid": validation.valid,
        "auc": evaluation.metrics.get("auc"),
        "blessed": evaluation.blessed,
        "infra_blessed": infra.blessed,
        "infra": infra.metrics,
        "pushed_version": pushed.version,
        "train_path": train_path,
        "eval_path": eval_path,
        "model_dir": model_dir,
    }


def _usage() -> tuple[float, float]:
    """CPU seconds and MB read from disk by this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
            (own.ru_inblock + children.ru_inblock) * BLOCK_BYTES / MB)


if __name__ == "__main__":
    main()
