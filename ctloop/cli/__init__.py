"""The ``ctloop`` command line: one command per noun.

Heavy libraries (TensorFlow, TFDV, kfp, kserve) are imported inside the commands that use them:
``ctloop serve`` runs in the serving environment, which has no kfp or TFDV at all.
"""

from __future__ import annotations

import logging

import click

from ctloop.errors import CtloopError


class _Group(click.Group):
    """Turns ctloop's domain errors into one-line usage errors instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CtloopError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Continuous training on Kubeflow Pipelines: TFDV, TF, TFMA and KServe."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    from ctloop.cli import build, kfp, monitor, records, run, serve, stages

    for command in (build.datagen, build.compile_, run.run, run.config_group, records.runs_,
                    records.report, records.versions, stages.promote, stages.rollback,
                    serve.serve, serve.predict, kfp.upload, kfp.submit, kfp.schedule,
                    monitor.monitor, monitor.feedback):
        main.add_command(command)


_register()
