"""The monitor component under kfp.local (a subprocess, as a pipeline task runs it) on records in
S3 (moto's server): the report, the metrics, decision.json, and the drift episode it claims."""

from __future__ import annotations

import json
import math
import time

from kfp import local

from ctloop.components.monitor.component import monitor
from ctloop.data import datagen
from ctloop.monitor import store
from ctloop.registry import LocalRegistry


def _records(frame, features, start: float) -> bytes:
    """``frame``'s feature rows as the server records them: 50 rows a request, version 1."""
    lines = []
    for n, first in enumerate(range(0, len(frame), 50)):
        part = frame.iloc[first:first + 50]
        inputs = {name: [None if isinstance(v, float) and math.isnan(v) else v
                         for v in part[name].tolist()] for name in features}
        lines.append(json.dumps({"id": f"{start}-{n}", "time": start + n * 0.01, "version": "1",
                                 "latency_ms": 2.0, "inputs": inputs,
                                 "outputs": [0.3] * len(part)}))
    return ("\n".join(lines) + "\n").encode()


def test_monitor_component_under_kfp_local_on_s3_records(prepared, s3_bucket, tmp_path):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    registry.save_statistics(1, prepared.train.parent / "stats" / "train.stats.tfrecord")
    features = [f.name for f in prepared.features]
    clean = datagen.generate_span(datagen.SpanSpec(7, rows=600))
    shifted = datagen.generate_span(datagen.SpanSpec(8, rows=600, drift=0.8))
    now = time.time()
    s3_bucket.put("rec/requests-1.jsonl", _records(clean, features, now - 100))
    s3_bucket.put("rec/requests-2.jsonl", _records(shifted, features, now - 50))
    records = f"{s3_bucket.uri}/rec"

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = monitor(records_uri=records, registry_uri=str(registry.root), model_name="churn",
                   window="500", min_rows=200, drift_threshold=0.03, skew_threshold=0.03,
                   false_alarm_rate=0.01, trigger_pipeline="ctloop-continuous-training",
                   cooldown_minutes=60.0, s3_endpoint_url=s3_bucket.endpoint_url)
    assert task.outputs["drift"] is True and task.outputs["start_run"] is True
    assert task.outputs["trigger_state"] == f"{records}/monitor/trigger-state.json"
    report = task.outputs["report"]
    with open(report.path) as handle:
        assert "**drift**" in handle.read()
    metrics = task.outputs["metrics"].metadata
    assert metrics["drift"] == 1.0 and metrics["drift_monthly_charges"] > 0.03
    with open(f"{task.outputs['decision'].path}/decision.json") as handle:
        decision = json.load(handle)
    assert decision["trigger"]["started"] and "income" in decision["features"]
    state = json.loads(store.read_text(task.outputs["trigger_state"], s3_bucket.endpoint_url))
    assert state["episode"]["version"] == 1
