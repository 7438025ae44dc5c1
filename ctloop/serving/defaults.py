"""The model server's defaults, defined once: the server modules use them and `ctloop serve`'s
options show them. Standard library only (no imports at all), so the CLI reads them in either
environment without importing kserve or TensorFlow."""

DEFAULT_PORT = 8080  # HTTP: V1, V2, health and /metrics
DEFAULT_MAX_BATCH = 1024  # the most rows one request may carry; more is a 400
DEFAULT_POLL_S = 1.0  # how often a server following a registry reads its pointers
DEFAULT_RECORD_SAMPLE_RATE = 1.0  # the share of requests a recording server records
DEFAULT_ROTATE_ROWS = 100_000  # a recording server starts a new file after this many rows...
DEFAULT_ROTATE_S = 600.0  # ...or after this many seconds
DEFAULT_WARM_S = 600.0  # the previous version stays loaded this long after a switch (rollback)
DEFAULT_SHADOW_QUEUE = 256  # requests waiting for the shadow model; more are dropped and counted
