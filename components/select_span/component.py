"""KFP component: choose the span(s) to read and fingerprint their files, without reading them."""

from typing import List, NamedTuple, Optional

from kfp import dsl

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def select_span(
    data_uri: str,
    spans: int,
    s3_endpoint_url: Optional[str] = None,
) -> NamedTuple(
    "SelectSpanOutputs",
    [("span", int), ("spans_read", List[int]), ("files", List[str]), ("fingerprint", str)],
):
    """Lists the files of the latest span(s) under a path or pattern and fingerprints them.

    Run it uncached (``set_caching_options(False)``): it must look at the data on every run.
    Its ``files`` and ``fingerprint`` feed ``ingest``, whose cache key then changes exactly when
    the data does.

    Args:
        data_uri: A pattern with ``{SPAN}`` (and optionally ``{VERSION}``) placeholders, which
            match digits, and ``*`` globs (e.g. ``data/span-{SPAN}/*.csv``); or a CSV/Parquet
            file, a folder of them, or a folder of ``span-<N>/`` folders. Local, gs:// or s3://.
            The highest span wins, and within it the highest version.
        spans: How many of the latest spans to read (a rolling range).
        s3_endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS); None: boto3's default.
            Credentials come from boto3's standard chain only.

    Returns:
        span: The latest span read (0 when the path has no span).
        spans_read: Every span read, oldest first.
        files: The URIs of the files to read, oldest span first.
        fingerprint: SHA-256 over each file's URI, size and content hash.
    """
    from collections import namedtuple

    from ctloop.components.select_span import logic
    from ctloop.local import task_exit

    task_exit.install()

    # ct_pipeline passes "" for "boto3's default": kfp 2.13's local runner cannot pass None.
    result = logic.run(data_uri, spans, s3_endpoint_url or None)
    outputs = namedtuple("SelectSpanOutputs", ["span", "spans_read", "files", "fingerprint"])
    return outputs(result.span, result.spans, result.files, result.fingerprint)
