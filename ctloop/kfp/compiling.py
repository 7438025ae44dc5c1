"""Compiling the CT, monitoring and approval pipelines, and each of their components, to KFP IR
YAML."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import yaml

# Where the pipelines package is, found without importing it (it imports kfp): pipelines/ in a
# checkout, ctloop/pipelines/ in an installed wheel.
PIPELINE_YAML = Path(next(iter(importlib.util.find_spec(
    "ctloop.pipelines").submodule_search_locations))) / "ct_pipeline.yaml"
PIPELINE_GPU_YAML = PIPELINE_YAML.with_name("ct_pipeline_gpu.yaml")
PIPELINE_WORKERS_YAML = PIPELINE_YAML.with_name("ct_pipeline_workers.yaml")
MONITOR_PIPELINE_YAML = PIPELINE_YAML.with_name("monitor_pipeline.yaml")
PROMOTE_PIPELINE_YAML = PIPELINE_YAML.with_name("promote_pipeline.yaml")
# Beside the pipeline's IR: the components it is made of, each reusable on its own.
COMPONENTS_DIR = PIPELINE_YAML.parent / "components"


def compile_pipeline(output: Path, image: str | None = None, gpu=None,
                     tune_fan_out: int | None = None, workers=None) -> None:
    """Writes the CT pipeline's IR YAML.

    Args:
        output: The IR YAML to write.
        image: Replaces the pipeline image of every task.
        gpu: A ``GpuSettings``: compile the GPU variant, whose train task runs on ``gpu.image``.
        tune_fan_out: Trial tasks at once in the search's ParallelFor (None: the settings').
        workers: A ``WorkerSettings``: compile the multi-worker variant, whose train step is a
            TFJob of ``workers.workers`` workers.
    """
    from kfp import compiler

    from ctloop.pipelines.ct_pipeline import build

    output.parent.mkdir(parents=True, exist_ok=True)
    fan_out = {} if tune_fan_out is None else {"tune_fan_out": tune_fan_out}
    compiler.Compiler().compile(build(gpu, workers=workers, **fan_out), str(output))
    if image:
        set_image(output, image)
    if gpu:
        set_image(output, gpu.image, executors=("exec-train",))


def compile_monitor_pipeline(output: Path, image: str | None = None) -> None:
    """Writes the monitoring pipeline's IR YAML (``image``: every task's image)."""
    _compile_module("monitor_pipeline", output, image)


def compile_promote_pipeline(output: Path, image: str | None = None) -> None:
    """Writes the approval pipeline's IR YAML (``image``: its task's image)."""
    _compile_module("promote_pipeline", output, image)


def _compile_module(name: str, output: Path, image: str | None) -> None:
    """Compiles the pipeline ``ctloop.pipelines.<name>.<name>`` to ``output``."""
    from kfp import compiler

    pipeline = getattr(importlib.import_module(f"ctloop.pipelines.{name}"), name)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(output))
    if image:
        set_image(output, image)


def all_components() -> dict:
    """Every component of the CT pipeline, then of the monitoring and approval pipelines: its
    name -> the ``@dsl.component``, in pipeline order (a component two use, once)."""
    from ctloop.pipelines.ct_pipeline import COMPONENTS
    from ctloop.pipelines.monitor_pipeline import COMPONENTS as MONITOR_COMPONENTS
    from ctloop.pipelines.promote_pipeline import COMPONENTS as PROMOTE_COMPONENTS

    found: dict = {}
    for component in (*COMPONENTS, *MONITOR_COMPONENTS, *PROMOTE_COMPONENTS):
        found.setdefault(component.python_func.__name__, component)
    return found


def compile_components(out_dir: Path, image: str | None = None) -> list[Path]:
    """Writes each component as a reusable component YAML, ``<out_dir>/<name>.yaml``.

    Returns:
        The files written, sorted by name.
    """
    from kfp import compiler

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, component in all_components().items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        if image:
            set_image(path, image)
        written.append(path)
    return written


def set_image(ir_path: Path, image: str, executors: tuple[str, ...] | None = None) -> None:
    """Points the executors (default: every one) of a compiled pipeline at ``image`` (e.g. your
    registry's copy)."""
    # The pipeline spec, then (if any task has Kubernetes settings) its platform spec.
    spec, *platform = yaml.safe_load_all(ir_path.read_text())
    for name, executor in spec["deploymentSpec"]["executors"].items():
        if executors is None or name in executors:
            executor["container"]["image"] = image
    ir_path.write_text(yaml.safe_dump_all([spec, *platform], sort_keys=False))
