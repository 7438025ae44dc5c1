"""A server following the registry switches versions under load without failing a request:
a canary takes a share of requests, then is promoted, or rolled back."""

from __future__ import annotations

import collections
import json
import threading
import time

import pandas as pd
import pytest

from ctloop.registry import LocalRegistry, Registry
from ctloop.serving import client
from ctloop.serving import process as server_process

pytestmark = pytest.mark.serving
DEADLINE_S = 60.0


class Traffic:
    """Clients sending single-row requests until stopped; counts answers per model version."""

    def __init__(self, url: str, rows: list[dict], clients: int = 3):
        self.url, self.rows = url, rows
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,)) for i in range(clients)]

    def _send(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set() and len(self.versions) < 5000:  # bounded
            try:
                body = client.predict_raw(self.url, "churn", [self.rows[i % len(self.rows)]])
                self.versions.append(body["model_version"])
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                self.errors.append(repr(exc))
            i += 1

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if predicate(self.versions[-30:]):
                return
            time.sleep(0.2)
        pytest.fail(f"not seen within {DEADLINE_S:.0f} s: {what}; last {self.versions[-30:]}")


@pytest.fixture
def registry_with_two_versions(prepared, tmp_path) -> Registry:
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=1, serve=False)
    return registry


@pytest.fixture
def rows(prepared) -> list[dict]:
    frame = pd.read_parquet(prepared.eval).head(50)
    return json.loads(frame[[f.name for f in prepared.features]].to_json(orient="records"))


@pytest.mark.parametrize("promote", [True, False], ids=["promote", "roll-back"])
def test_switch_under_load_fails_no_request(registry_with_two_versions, rows, serving_python,
                                            promote):
    registry = registry_with_two_versions
    with server_process.serve(serving_python, "churn", registry=str(registry.root)) as server:
        server.wait_ready("churn", 120)
        with Traffic(server.url, rows) as traffic:
            traffic.wait_for(lambda last: last and set(last) == {"1"}, "version 1 serving")
            registry.start_canary(2, 50, expected_serving=1)
            traffic.wait_for(lambda last: {"1", "2"} <= set(last), "a 50% canary of version 2")
            canary_phase = collections.Counter(traffic.versions[-30:])
            registry.end_canary(promote=promote)
            final = "2" if promote else "1"
            traffic.wait_for(lambda last: len(last) == 30 and set(last) == {final},
                             f"version {final} alone")
    assert traffic.errors == []
    assert len(traffic.versions) > 60
    assert canary_phase["1"] and canary_phase["2"]
    assert registry.serving().number == (2 if promote else 1) and registry.canary() is None
