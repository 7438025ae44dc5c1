"""Benchmark child, run by the serving environment's python (the TensorFlow the server runs): the
latency of calling the SavedModel's serving signature in-process, with the input tensors already
built, for one row and for a batch. Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

WARMUP_CALLS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rows", required=True, type=Path, help="JSON list of row objects.")
    parser.add_argument("--batch-rows", required=True, type=int)
    parser.add_argument("--calls", required=True, type=int)
    args = parser.parse_args()

    import pandas as pd
    import tensorflow as tf

    from bench.report import latency_summary
    from ctloop import contract
    from ctloop.contract import FeatureSpec, to_inputs

    signature = tf.saved_model.load(args.model_dir).signatures[contract.SERVING_SIGNATURE]
    features = [FeatureSpec(n, d) for n, d in contract.read_features(args.model_dir).items()]
    frame = pd.DataFrame(json.loads(args.rows.read_text()))
    results = {}
    for mode, rows in (("single", 1), ("batch", args.batch_rows)):
        inputs = [{k: tf.constant(v) for k, v in to_inputs(frame.iloc[i:i + rows], features)
                   .items()} for i in range(0, len(frame) - rows + 1, rows)]
        for i in range(WARMUP_CALLS):
            signature(**inputs[i % len(inputs)])
        latencies = []
        started = time.perf_counter()
        for i in range(args.calls):
            call_started = time.perf_counter()
            signature(**inputs[i % len(inputs)])[contract.OUTPUT_KEYS[contract.BINARY]].numpy()
            latencies.append((time.perf_counter() - call_started) * 1000)
        results[mode] = latency_summary(latencies, time.perf_counter() - started, rows)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
