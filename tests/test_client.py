"""Tests of ``ctloop.serving.client`` against real sockets: kept-alive connections shared by
threads, and a one-line CtloopError for each way a server can fail (dropped connection, silence,
refusal, an error status)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import struct
import threading

import pytest

from ctloop.errors import CtloopError
from ctloop.serving import client
from ctloop.serving import process as server_process

ROWS = [{"age": 31, "plan": "basic"}, {"age": None, "plan": "premium"}]


def read_request(connection: socket.socket) -> dict | None:
    """Reads one HTTP request; returns its JSON body, or None when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += connection.recv(65536)
    return json.loads(body)


def answer(connection: socket.socket, request: dict, status: str = "200 OK") -> None:
    """Answers a V1 request with one prediction per row, keeping the connection open."""
    payload = json.dumps({"predictions": [0.5] * len(request["instances"]),
                          "model_version": "1"}).encode()
    connection.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)


class Server:
    """A socket server on 127.0.0.1 that runs ``behave(connection)`` on each accepted
    connection, in a thread of its own; counts connections."""

    def __init__(self, behave):
        self.behave, self.connections = behave, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            self.behave(connection)


@contextlib.contextmanager
def serving(behave):
    server = Server(behave)
    try:
        yield server
    finally:
        server.listener.close()


def keep_answering(connection: socket.socket) -> None:
    while (request := read_request(connection)) is not None:
        answer(connection, request)


def assert_one_line_error(raised: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_one_connection_serves_many_requests():
    with serving(keep_answering) as server:
        for _ in range(20):
            assert client.predict(server.url, "churn", ROWS) == [0.5, 0.5]
        assert server.connections == 1


def test_threads_share_the_kept_connections():
    with serving(keep_answering) as server:
        def one(i: int) -> list[float]:
            return client.predict(server.url, "churn", ROWS[: 1 + i % 2])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(400)))
        assert answers == [[0.5] * (1 + i % 2) for i in range(400)]
        assert server.connections <= 8


def test_a_connection_the_server_closed_while_idle_is_replaced():
    def answer_once(connection: socket.socket) -> None:
        answer(connection, read_request(connection))  # keep-alive, then closed anyway

    with serving(answer_once) as server:
        for _ in range(3):
            assert client.predict_raw(server.url, "churn", ROWS)["model_version"] == "1"
        assert server.connections == 3


@pytest.mark.parametrize("requests_before", [0, 2])
def test_dropped_connection_is_one_line_error(requests_before):
    answered = []

    def drop_after_some(connection: socket.socket) -> None:
        while (request := read_request(connection)) is not None:
            if len(answered) == requests_before:
                return  # closes the connection without answering
            answered.append(request)
            answer(connection, request)

    with serving(drop_after_some) as server:
        for _ in range(requests_before):
            client.predict(server.url, "churn", ROWS)
        with pytest.raises(CtloopError) as raised:
            client.predict_raw(server.url, "churn", ROWS)
    assert_one_line_error(raised, server.url, "dropped the connection", "RemoteDisconnected",
                          "still running")


def test_connection_reset_is_one_line_error():
    def reset(connection: socket.socket) -> None:
        read_request(connection)
        # Linger 0: close() sends a TCP RST instead of a FIN.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with serving(reset) as server, pytest.raises(CtloopError) as raised:
        client.predict_raw(server.url, "churn", ROWS)
    assert_one_line_error(raised, server.url, "dropped the connection", "ConnectionResetError")


def test_silent_server_is_one_line_timeout():
    stop = threading.Event()

    def say_nothing(connection: socket.socket) -> None:
        read_request(connection)
        stop.wait(10)

    with serving(say_nothing) as server, pytest.raises(CtloopError) as raised:
        client.predict_raw(server.url, "churn", ROWS, timeout_s=0.3)
    stop.set()
    assert_one_line_error(raised, server.url, "did not answer within 0.3 s")


def test_error_status_is_one_line_error():
    def fail(connection: socket.socket) -> None:
        answer(connection, read_request(connection), status="500 Internal Server Error")

    with serving(fail) as server, pytest.raises(CtloopError) as raised:
        client.predict_raw(server.url, "churn", ROWS)
    assert_one_line_error(raised, server.url, "answered 500")


def test_unreachable_server_is_one_line_error():
    url = f"http://127.0.0.1:{server_process.free_port()}"
    with pytest.raises(CtloopError) as raised:
        client.predict_raw(url, "churn", ROWS)
    assert_one_line_error(raised, url, "is not reachable", "ctloop serve")


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://host:port"])
def test_url_that_is_not_http_is_one_line_error(url):
    with pytest.raises(CtloopError) as raised:
        client.predict_raw(url, "churn", ROWS)
    assert_one_line_error(raised, repr(url), "http://127.0.0.1:8080")


def test_percentile_is_one_definition_a_measured_value_by_nearest_rank():
    values = [float(v) for v in range(200, 0, -1)]  # 1..200, unsorted
    assert client.percentile(values, 50) == 100.0
    assert client.percentile(values, 99) == 198.0  # not 199 (int(n * 0.99)), not 198.01 (numpy)
    assert client.percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert client.percentile([7.0], 50) == 7.0
    with pytest.raises(ValueError):
        client.percentile([], 50)


def test_every_p99_is_the_nearest_rank_one():
    """Monitoring, the canary and the benchmarks report the same p99 for the same latencies
    (monitoring used numpy's interpolation, ``ctloop predict`` another rank)."""
    from bench import report
    from ctloop.monitor import measure
    from ctloop.serving import canary

    latencies = [float(v) for v in range(1, 201)]
    stats = canary.ProbeStats()
    for value in latencies:
        stats.add("2", value)
    assert measure.latency_ms(latencies) == {"p50": 100.0, "p99": 198.0}
    assert stats.p99("2") == 198.0
    assert report.latency_summary(latencies, 1.0, 1)["p99_ms"] == 198.0
