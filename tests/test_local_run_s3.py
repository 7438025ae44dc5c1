"""The CT pipeline configured as on a cluster: data and registry on S3 (moto's S3 server on
127.0.0.1, through real boto3), every task reading the registry from the object store."""

import json

import boto3
import pytest

from conftest import EXCLUDE, LABEL, S3_TEST_KEY_ID, S3_TEST_SECRET
from ctloop.local import runner as local_run
from ctloop.registry.s3 import S3Registry

pytestmark = pytest.mark.local


def test_two_runs_share_a_registry_on_s3(spans_dir, serving_python, s3_bucket, tmp_path,
                                          capfd):
    for span in (1, 2):
        path = spans_dir / f"span-{span}" / "data.csv"
        s3_bucket.put(f"data/span-{span}/data.csv", path.read_bytes())
    registry_uri = f"{s3_bucket.uri}/registry"
    summaries = []
    # The first run sees span 1 only; the second, span 2 as the latest.
    for run, data_uri in enumerate((f"{s3_bucket.uri}/data/span-1", f"{s3_bucket.uri}/data")):
        params = {"data_uri": data_uri, "s3_endpoint_url": s3_bucket.endpoint_url,
                  "registry_uri": registry_uri, "label": LABEL, "exclude": EXCLUDE,
                  "model_name": "churn", "epochs": 4, "serving_python": serving_python,
                  "release_stage": "production"}  # the second run judged against the first
        summaries.append(local_run.run(params, tmp_path / f"run-{run}"))
    first, second = summaries
    assert first["pushed_version"] == 1 and first["baseline_version"] is None
    # The second run's tasks found what the first left on S3: the serving model as the
    # baseline, span 1's statistics for drift, the serving schema.
    assert second["span"] == 2 and second["previous_span"] == 1
    assert second["baseline_version"] == 1 and second["baseline_metrics"]
    assert second["schema_source"].startswith("serving")
    assert second["pushed"] and second["promoted"] and second["pushed_version"] == 2

    registry = S3Registry(registry_uri, "churn", s3_bucket.endpoint_url,
                          cache_dir=tmp_path / "check")
    assert [v.number for v in registry.versions()] == [1, 2]
    serving = registry.serving()
    assert serving.number == 2 and (serving.model_dir / "saved_model.pb").is_file()
    assert serving.record()["data_fingerprint"] == second["data_fingerprint"]
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket.uri[5:]) for o in page["Contents"]}
    assert {"registry/churn/statistics/span-1.stats.tfrecord",
            "registry/churn/statistics/span-2.stats.tfrecord"} <= keys
    assert any(k.startswith("registry/churn/") and k.endswith("saved_model.pb") for k in keys)
    # Nothing under the workdirs (task outputs, summaries), in the logs or in what the runs
    # wrote to the bucket names the secret key or the access key id.
    logs = capfd.readouterr()
    scanned = {"logs": (logs.out + logs.err).encode(), "summaries": json.dumps(summaries).encode()}
    scanned.update({str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()})
    scanned.update({f"s3 object {k}": k.encode() + b"\0" + s3.get_object(
        Bucket=s3_bucket.uri[5:], Key=k)["Body"].read() for k in keys})
    for secret in (S3_TEST_SECRET, S3_TEST_KEY_ID):
        assert [where for where, content in scanned.items() if secret.encode() in content] == [], (
            secret)
