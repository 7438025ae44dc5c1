"""Compiling the CT pipeline to KFP IR YAML."""

from __future__ import annotations

from pathlib import Path

import yaml


def compile_pipeline(output: Path, image: str | None = None) -> None:
    """Writes the CT pipeline's IR YAML; ``image`` replaces the pipeline image of every task."""
    from kfp import compiler

    from ctloop.pipelines.ct_pipeline import ct_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(ct_pipeline, str(output))
    if image:
        set_image(output, image)


def set_image(ir_path: Path, image: str) -> None:
    """Points every executor of a compiled pipeline at ``image`` (e.g. your registry's copy)."""
    spec = yaml.safe_load(ir_path.read_text())
    for executor in spec["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = image
    ir_path.write_text(yaml.safe_dump(spec, sort_keys=False))
