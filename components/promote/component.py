"""KFP component: the approval of a staged version: production serves it from now on, and who
approved it, when and why is recorded on the version."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Markdown, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def promote(
    model_name: str,
    version: int,
    approved_by: str,
    reason: str,
    registry_uri: str,
    report: Output[Markdown],
    s3_endpoint_url: Optional[str] = None,
) -> int:
    """Promotes the version staging holds to production on a person's approval, and records the
    decision (who, when, why, the evidence) on the version.

    Refused, in one line and with nothing changed, unless staging holds ``version``, it was
    blessed (a forced blessing counts, and the report shows it) and production serves an older
    version; then the task fails with that line. Run it uncached: each run is one approval.

    Args:
        model_name: The model's name in the registry.
        version: The staged version to promote.
        approved_by: Who approves (recorded on the version).
        reason: Why (recorded on the version).
        registry_uri: The model registry root: a local folder, or ``s3://BUCKET/PREFIX``.
        report: Output: the decision as Markdown (what moved, who, why, the evidence).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None or "":
            boto3's).

    Returns:
        The version production serves now.
    """
    from ctloop.components.promote import logic
    from ctloop.local import task_exit

    task_exit.install()

    decision = logic.run(model_name, version, approved_by, reason, registry_uri,
                         s3_endpoint_url or None)
    print(f"promoted version {decision['version']} of {model_name} to production, approved by "
          f"{decision['approved_by']}: {decision['reason']}")
    with open(report.path, "w") as handle:
        handle.write(logic.report_markdown(decision, model_name))
    return decision["version"]
