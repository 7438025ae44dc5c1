"""A user's model module: a Python file (local, gs:// or s3://) whose
``build_model(features, train, hp, task)`` replaces the default model. Loaded by the train task,
and by ``ctloop run`` before anything runs, so a broken module fails in a second."""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from pathlib import Path

from ctloop.data import storage
from ctloop.errors import ConfigError


def load_user_module(uri: str, s3_endpoint_url: str | None = None):
    """The ``build_model`` function of a user's Python file (a local path, gs:// or s3://), and
    the SHA-256 of the file, for the run record.

    Raises:
        ConfigError: The file is missing, does not import, or defines no ``build_model``.
    """
    try:
        source = storage.read(uri, s3_endpoint_url)[0]
    except FileNotFoundError as exc:
        raise ConfigError(f"user module {uri} does not exist; pass a Python file that defines "
                          "build_model(features, train, hp, task)") from exc
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ctloop_user_module.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("ctloop_user_module", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # any error in the user's code, named in the message
            raise ConfigError(f"user module {uri} failed to import: {type(exc).__name__}: "
                              f"{_first_line(exc)}; fix the module") from exc
    builder = getattr(module, "build_model", None)
    if not callable(builder):
        raise ConfigError(f"user module {uri} defines no build_model(features, train, hp, task); "
                          "add one returning a compiled Keras model")
    return builder, hashlib.sha256(source).hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else "no message"
