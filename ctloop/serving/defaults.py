"""The model server's defaults, defined once: the server modules use them and `ctloop serve`'s
options show them. Standard library only (no imports at all), so the CLI reads them in either
environment without importing kserve or TensorFlow."""

DEFAULT_PORT = 8080  # HTTP: V1, V2, health and /metrics
DEFAULT_MAX_BATCH = 1024  # the most rows one request may carry; more is a 400
DEFAULT_POLL_S = 1.0  # how often a server following a registry reads its pointers
