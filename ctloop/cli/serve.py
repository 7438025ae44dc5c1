"""``ctloop serve`` and ``ctloop predict``: the KServe model server and a client of it."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--registry", "registry_uri", type=click.Path(file_okay=False),
              help="Registry root: serve the model's serving version and follow it (a new "
              "version or a canary is picked up without a restart), or serve --version.")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="Serve this model folder instead of a registry version.")
@click.option("--model-name", default="ctloop-model", show_default=True,
              help="The model's name, in the registry and in request paths.")
@click.option("--version", type=click.IntRange(min=1), help="Registry version [default: serving].")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="HTTP port (V1, V2, health, /metrics).")
@click.option("--grpc-port", type=click.IntRange(1, 65535),
              help="Also serve V2 over gRPC on this port [default: off].")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most rows per request; more is a 400.")
@click.option("--request-log", is_flag=True,
              help="Log a line per request (access and latency); /metrics counts them anyway.")
@click.option("--record-dir", type=click.Path(file_okay=False),
              help="Record sampled requests here (inputs, answers, version, latency, request "
              "id) as JSON Lines, off the request path, for `ctloop monitor` [default: off].")
@click.option("--record-sample-rate", type=float, default=1.0, show_default=True,
              help="The share of requests recorded, in (0, 1].")
@click.option("--record-rotate-rows", type=click.IntRange(min=1), default=100_000,
              show_default=True, help="Start a new record file after this many rows...")
@click.option("--record-rotate-minutes", type=float, default=10.0, show_default=True,
              help="...or after this many minutes.")
def serve(registry_uri, model_dir, model_name, version, port, grpc_port, max_batch,
          request_log, record_dir, record_sample_rate, record_rotate_rows,
          record_rotate_minutes) -> None:
    """Serve a model with the KServe model server (serving environment)."""
    if (registry_uri is None) == (model_dir is None):
        raise click.UsageError("pass exactly one of --registry or --model-dir")
    if version is not None and registry_uri is None:
        raise click.UsageError("--version selects a registry version: pass --registry too")
    from ctloop.serving import server
    from ctloop.serving.recorder import Recorder

    recorder = None
    if record_dir:
        recorder = Recorder(record_dir, record_sample_rate, rotate_rows=record_rotate_rows,
                            rotate_s=record_rotate_minutes * 60)
    if registry_uri and version is None:
        # Follows the registry: a new serving version or a canary is picked up while serving.
        model = server.RegistryModel(model_name, registry_uri, max_batch)
    else:
        path = Path(model_dir) if model_dir else server.resolve_model_dir(
            registry_uri, model_name, version)
        model = server.CtloopModel(model_name, path, max_batch, version=version and str(version))
    server.run_server(model, http_port=port, grpc_port=grpc_port, request_log=request_log,
                      recorder=recorder)


@click.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True,
              help="The model server's base URL.")
@click.option("--model-name", default="ctloop-model", show_default=True)
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A CSV/Parquet file of rows to send.")
@click.option("--rows", default=5, show_default=True, help="How many rows to send.")
@click.option("--drop", multiple=True, help="A column not to send, e.g. the label (repeatable).")
@click.option("--requests", "repeat", default=50, show_default=True,
              help="Single-row requests to time for the latency figures.")
def predict(url, model_name, data_path, rows, drop, repeat) -> None:
    """Send rows to a running model server; print predictions and latency."""
    from ctloop.serving import client

    result = client.predict_file(url, model_name, Path(data_path), rows, list(drop), repeat)
    click.echo(client.describe(result))
