"""Model serving: a ctloop model behind KServe's ModelServer (serving environment only).

``ctloop.serving.server`` imports kserve and tensorflow; import it only where they are installed.
Run it with ``ctloop serve``.
"""
