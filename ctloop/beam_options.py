"""Beam options shared by the TFDV and TFMA steps."""

from __future__ import annotations

# The in-process runner. Beam's DirectRunner would first try PrismRunner, which downloads a binary
# from the internet (and fails offline) before falling back to this same runner.
DEFAULT_ARGS = ("--runner=FnApiRunner",)


def resolve(beam_pipeline_args: list[str] | None) -> list[str]:
    """The user's Beam arguments (runner, workers, ...), or DEFAULT_ARGS when none are given."""
    return list(beam_pipeline_args or DEFAULT_ARGS)
