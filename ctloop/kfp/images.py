"""The container images components run in (built from the lock files by the Dockerfiles).

Components are lightweight KFP components on the pipeline image: their bodies import ctloop, which
the image has installed. Override the tag at compile time with ``ctloop compile --image``.
"""

from ctloop import __version__

PIPELINE_IMAGE = f"ctloop-pipeline:{__version__}"
SERVING_IMAGE = f"ctloop-serving:{__version__}"
PIPELINE_GPU_IMAGE = f"ctloop-pipeline-gpu:{__version__}"
