"""``ctloop promote`` and ``ctloop rollback``: a person moves a registry's stages
(``ctloop.registry.stages``); each prints what moved, and a refusal is one line and a non-zero
exit (the group turns ``PromotionRefused`` into a click error)."""

from __future__ import annotations

import click

from ctloop.registry.base import PRODUCTION, STAGES

_REGISTRY = click.option("--registry", "registry_uri", required=True,
                         help="The registry: a folder or s3://BUCKET/PREFIX.")
_ENDPOINT = click.option("--s3-endpoint-url", help="S3-compatible endpoint for an s3:// registry.")
_REASON = click.option("--reason", required=True, help="Why (recorded on the version).")


@click.command()
@click.argument("model_name")
@click.argument("version", type=int)
@click.option("--to", "to", type=click.Choice([PRODUCTION]), default=PRODUCTION,
              show_default=True, help="The stage to promote to.")
@click.option("--approved-by", required=True, help="Who approves (recorded on the version).")
@_REASON
@_REGISTRY
@_ENDPOINT
def promote(model_name, version, to, approved_by, reason, registry_uri, s3_endpoint_url) -> None:
    """Promote staged VERSION of MODEL_NAME to production: the approval. Refused (nothing
    changes) unless staging holds it, it was blessed and production serves an older one."""
    from ctloop.registry import open_registry, stages

    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    before = registry.serving(to)
    promoted = stages.promote(registry, version, to=to, approved_by=approved_by, reason=reason)
    blessing = stages.blessing_of(promoted.record()) or {}
    was = f"version {before.number}" if before is not None else "no version"
    click.echo(f"{to} of {model_name} in {registry.uri}: version {promoted.number} (was {was}), "
               f"approved by {approved_by.strip()}: {reason.strip()}")
    if blessing.get("forced"):
        click.echo(f"note: version {promoted.number}'s blessing was forced: "
                   f"{blessing.get('force_reason') or 'no reason recorded'}")


@click.command()
@click.argument("model_name")
@click.option("--stage", type=click.Choice(STAGES), default=PRODUCTION, show_default=True,
              help="The stage to roll back.")
@click.option("--by", "by", required=True, help="Who rolls back (recorded on the version).")
@_REASON
@_REGISTRY
@_ENDPOINT
def rollback(model_name, stage, by, reason, registry_uri, s3_endpoint_url) -> None:
    """Roll a stage of MODEL_NAME back to the version it served before."""
    from ctloop.registry import open_registry, stages

    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    before = registry.serving(stage)
    now = stages.rollback(registry, stage, by=by, reason=reason)
    was = f"version {before.number}" if before is not None else "no version"
    click.echo(f"{stage} of {model_name} in {registry.uri}: version {now.number} (was {was}), "
               f"rolled back by {by.strip()}: {reason.strip()}")
