"""The model server's request sink (ctloop/serving/recorder.py), in-process: it never blocks a
request, counts what it drops, rotates its files and writes what the model saw."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ctloop.serving.recorder import Recorder


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _columns(n: int = 1):
    import numpy as np

    return ({"age": np.full(n, 40.0, dtype=np.float32), "plan": np.array(["basic"] * n, object)},
            np.full(n, 0.25, dtype=np.float32))


def test_recorder_never_blocks_a_request_and_counts_what_it_drops(tmp_path):
    recorder = Recorder(tmp_path, max_queue=2)
    release, original = threading.Event(), recorder._write

    def slow_write(items):  # a disk that stalls until released
        release.wait(10)
        original(items)

    recorder._write = slow_write
    columns, answers = _columns()
    accepted = [recorder.record("r0", "1", 1.0, columns, answers)]
    _wait_for(lambda: recorder._queue.empty())  # r0 is with the stalled writer
    started = time.perf_counter()
    accepted += [recorder.record(f"r{i}", "1", 1.0, columns, answers) for i in range(1, 5)]
    elapsed = time.perf_counter() - started
    release.set()
    recorder.close()
    assert accepted == [True, True, True, False, False]
    assert elapsed < 0.05, elapsed  # a full queue drops at once, it never waits
    assert (recorder.written, recorder.dropped) == (3, 2)
    lines = (tmp_path.glob("requests-*.jsonl").__next__()).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r0", "r1", "r2"]


def test_recorder_rotates_files_and_writes_missing_values_as_null(tmp_path):
    import numpy as np

    recorder = Recorder(tmp_path, rotate_rows=2)
    for i in range(3):
        columns = {"age": np.array([np.nan, 30.0], dtype=np.float32),
                   "plan": np.array(["", "basic"], object)}
        recorder.record(f"r{i}", "1", 1.0, columns, np.array([0.5, 0.75], np.float32))
        _wait_for(lambda i=i: recorder.written == i + 1)
    recorder.close()
    files = sorted(tmp_path.glob("requests-*.jsonl"))
    assert len(files) == 3  # 2 rows a request, a new file every 2 rows
    first = json.loads(files[0].read_text().splitlines()[0])
    assert first["inputs"] == {"age": [None, 30.0], "plan": [None, "basic"]}
    assert first["outputs"] == [0.5, 0.75] and first["version"] == "1"


def test_recorder_rejects_a_sample_rate_out_of_range(tmp_path):
    from ctloop.errors import ConfigError

    with pytest.raises(ConfigError, match="sample rate 0"):
        Recorder(tmp_path, sample_rate=0.0)


def test_recorder_samples_the_share_of_requests_asked_for(tmp_path):
    recorder = Recorder(tmp_path, sample_rate=0.1, seed=3)
    sampled = sum(recorder.sampled() for _ in range(10_000))
    recorder.close()
    assert 900 <= sampled <= 1100  # 1000 expected; 3.3 standard deviations either side
