"""``ctloop datagen`` and ``ctloop compile``: the built-in data, and the pipelines as KFP IR
YAML."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ctloop.cli.common import (
    _pairs,
)
from ctloop.kfp import compiling


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write span-<N>/data.<format> into.")
@click.option("--spans", default=3, show_default=True, help="How many spans to write.")
@click.option("--first-span", default=1, show_default=True, help="Number of the first span.")
@click.option("--rows", default=5000, show_default=True, help="Rows per span.")
@click.option("--seed", default=42, show_default=True, help="Seed: same seed, same bytes.")
@click.option("--drift", default=0.0, show_default=True,
              help="0..1: shift feature distributions (covariate drift).")
@click.option("--corrupt", default=0.0, show_default=True,
              help="0..1: share of rows with out-of-range numbers and unseen categories.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True)
def datagen(out_dir, spans, first_span, rows, seed, drift, corrupt, fmt) -> None:
    """Write deterministic subscription-churn spans (label: churned)."""
    from ctloop.data import datagen as generator

    for path in generator.write_spans(
        out_dir, spans, first_span=first_span, rows=rows, seed=seed, drift=drift,
        corrupt=corrupt, fmt=fmt,
    ):
        click.echo(str(path))


@click.command("compile")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Where to write the pipeline's IR YAML [default: pipelines/ct_pipeline.yaml, "
              "with --gpu pipelines/ct_pipeline_gpu.yaml].")
@click.option("--monitor-output", type=click.Path(dir_okay=False),
              help="Where to write the monitoring pipeline's IR YAML [default: "
              "monitor_pipeline.yaml beside --output].")
@click.option("--components-dir", type=click.Path(file_okay=False),
              help="Where to write each component of both pipelines as its own reusable "
              "component YAML, <name>.yaml [default: components/ beside --output].")
@click.option("--image", default=None,
              help="Pipeline image for every task (default: ctloop-pipeline:<version>).")
@click.option("--gpu", is_flag=True,
              help="The GPU variant: the train task requests gpu_count GPUs (default 1) on GPU "
              "nodes, tolerates their taint, gets a memory-backed /dev/shm and the GPU image.")
@click.option("--gpu-image", help="The GPU variant's train image [default: "
              "ctloop-pipeline-gpu:<version>].")
@click.option("--gpu-node-selector", "node_selector", multiple=True, metavar="LABEL=VALUE",
              help="A node label GPU nodes carry (repeatable) [default: "
              "nvidia.com/gpu.present=true, set by NVIDIA's GPU operator].")
@click.option("--gpu-toleration", "tolerations", multiple=True, metavar="KEY:EFFECT",
              help="A taint of GPU nodes to tolerate (repeatable) [default: "
              "nvidia.com/gpu:NoSchedule].")
@click.option("--shm-size", default="2Gi", show_default=True,
              help="Size of the GPU variant's memory-backed /dev/shm.")
@click.option("--train-workers", type=click.IntRange(min=2), default=None,
              help="The multi-worker variant: the train step runs as a TFJob (Kubeflow Training "
              "Operator) of N workers with MultiWorkerMirroredStrategy [default output: "
              "pipelines/ct_pipeline_workers.yaml].")
@click.option("--tune-parallelism", type=click.IntRange(min=0), default=None,
              help="Trial tasks at once in the hyperparameter search's fan-out (0: no limit) "
              "[default: ctloop.settings.Tune.cluster_parallelism].")
def compile_(output: str | None, monitor_output: str | None, components_dir: str | None,
             image: str | None, gpu: bool,
             gpu_image: str | None, node_selector: tuple[str, ...], tolerations: tuple[str, ...],
             shm_size: str, train_workers: int | None, tune_parallelism: int | None) -> None:
    """Compile the CT, monitoring and approval pipelines, and each of their components, to KFP IR
    YAML (the approval pipeline, promote_pipeline.yaml, beside --output)."""
    settings = None
    if gpu:
        settings = _gpu_settings(gpu_image, node_selector, tolerations, shm_size)
    elif gpu_image or node_selector or tolerations:
        raise click.UsageError("--gpu-image, --gpu-node-selector and --gpu-toleration need --gpu")
    workers = None
    if train_workers:
        from ctloop.pipelines.distributed import WorkerSettings

        workers = WorkerSettings(workers=train_workers)
        if gpu:
            raise click.UsageError("--train-workers and --gpu are separate variants: pick one")
    default = (compiling.PIPELINE_GPU_YAML if gpu else
               compiling.PIPELINE_WORKERS_YAML if workers else compiling.PIPELINE_YAML)
    output = output or str(default)
    compiling.compile_pipeline(Path(output), image, settings, tune_parallelism, workers)
    click.echo(f"wrote {output}")
    monitor_output = monitor_output or str(Path(output).with_name(
        compiling.MONITOR_PIPELINE_YAML.name))
    compiling.compile_monitor_pipeline(Path(monitor_output), image)
    click.echo(f"wrote {monitor_output}")
    promote_output = Path(output).with_name(compiling.PROMOTE_PIPELINE_YAML.name)
    compiling.compile_promote_pipeline(promote_output, image)
    click.echo(f"wrote {promote_output}")
    folder = Path(components_dir) if components_dir else Path(output).parent / "components"
    for path in compiling.compile_components(folder, image):
        click.echo(f"wrote {path}")


def _gpu_settings(image: str | None, node_selector: tuple[str, ...],
                  tolerations: tuple[str, ...], shm_size: str):
    from ctloop.pipelines.gpu import GpuSettings

    defaults = GpuSettings()
    taints = []
    for value in tolerations:
        key, sep, effect = value.rpartition(":")
        if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise click.BadParameter(
                f"{value!r} is not KEY:EFFECT with EFFECT NoSchedule, PreferNoSchedule or "
                "NoExecute (e.g. nvidia.com/gpu:NoSchedule)", param_hint="--gpu-toleration")
        taints.append((key, effect))
    if not re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?", shm_size):
        raise click.BadParameter(f"{shm_size!r} is not a Kubernetes quantity (e.g. 2Gi)",
                                 param_hint="--shm-size")
    return GpuSettings(
        image=image or defaults.image,
        node_selector=tuple(_pairs(node_selector, "--gpu-node-selector",
                                    "nvidia.com/gpu.present=true").items())
        or defaults.node_selector,
        tolerations=tuple(taints) or defaults.tolerations,
        shm_size=shm_size)
