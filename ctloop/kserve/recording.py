"""The ``ctloop`` predictor recording its served requests to the object store.

``ServiceConfig.record_uri`` (the CT pipeline's ``serving_record_uri``) turns it on: the
predictor runs ``ctloop serve ... --record-dir <record_uri>`` (``ctloop/serving/record_sink.py``:
each rotated JSON Lines file uploaded with one PUT), so the monitoring pipeline reads the same
URI as its ``records_uri``. The URI is used as given, not extended by the model's name: the
monitor reads exactly one prefix, and a URI that is the same string in both settings is one
there is no way to get wrong (the example schedules already name the model in it,
``s3://mlpipeline/ctloop/records/churn``). Replicas and canaries of one service share it: object
names carry the pod's name, and each record its model version.

Wiring, and why:

- Credentials: boto3's standard variables from the Secret KServe's storage initializer already
  uses for the predictor's ServiceAccount (``manifests/base/storage.yaml``: the ServiceAccount
  ``ctloop-storage`` lists the Secret of the same name, keys ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY``, which are KServe's S3 credential keys too). Records go to the store
  the model comes from, so the one Secret that reaches it serves both and no second copy of the
  credentials exists; the Secret is named like the ServiceAccount, as in ctloop's manifests.
- Endpoint: the pipeline's ``s3_endpoint_url``, with which every task reaches the registry and
  the monitoring pipeline reads the records, passed as ``--s3-endpoint-url``. Not the Secret's
  ``serving.kserve.io/s3-endpoint`` annotation: a container cannot read another object's
  annotations (a ``secretKeyRef`` reads data keys only), reading the Secret at rollout would
  need a grant on Secrets the rollout's Role deliberately lacks, and the annotation is a bare
  ``host:port`` whose scheme lives in a second annotation. The serving namespace already reaches
  the store (the ``ctloop-model-pull`` NetworkPolicy opens its S3 port to it).

Infra validation's short-lived candidate never records (``candidate_service`` drops the URI):
its load test is synthetic traffic to a model that may never serve, which would pollute the
windows the monitor compares.
"""

from __future__ import annotations

from typing import Any

from ctloop.errors import ConfigError
from ctloop.serving import record_sink

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # the Secret's keys = boto3's


def check_uri(uri: str | None, *, ctloop_runtime: bool = True) -> str | None:
    """``uri`` if it is an ``s3://BUCKET[/PREFIX]`` record location, None if empty (KFP passes
    "" for none).

    Raises:
        ConfigError: Another scheme, no bucket, or a runtime other than ``ctloop``'s (KServe's
            TensorFlow Serving runtime records nothing).
    """
    if not uri:
        return None
    if not record_sink.is_object_store(uri) or not uri[len(record_sink.SCHEME):].split("/")[0] \
            or any(c.isspace() for c in uri):
        raise ConfigError(f"record URI {uri!r} is not an object-store location: the predictor "
                          "records to s3://BUCKET/PREFIX only (the monitoring pipeline's "
                          "records_uri)")
    if not ctloop_runtime:
        raise ConfigError(f"record URI {uri!r} needs the 'ctloop' runtime: KServe's TensorFlow "
                          "runtime does not record requests")
    return uri


def check_endpoint(url: str | None) -> str | None:
    """``url`` if it is an ``http(s)://`` endpoint, None if empty.

    Raises:
        ConfigError: A URL without the scheme boto3 needs.
    """
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"S3 endpoint {url!r} is not a URL: use e.g. "
                          "http://seaweedfs.kubeflow:9000")
    return url


def args(record_uri: str | None, s3_endpoint_url: str | None) -> list[str]:
    """``ctloop serve``'s record flags (none without a record URI)."""
    if not record_uri:
        return []
    endpoint = ["--s3-endpoint-url", s3_endpoint_url] if s3_endpoint_url else []
    return ["--record-dir", record_uri, *endpoint]


def env(record_uri: str | None, secret: str) -> list[dict[str, Any]]:
    """The predictor container's credential variables from Secret ``secret`` (none without a
    record URI)."""
    if not record_uri:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key in CREDENTIAL_KEYS]
