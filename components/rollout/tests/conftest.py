"""The simulated KServe cluster (``kserve_double``) for the rollout's cluster code."""

import pytest

from ctloop.components.rollout.tests import kserve_double


@pytest.fixture
def kserve_cluster(tmp_path):
    """A KServe cluster simulated after KServe's controllers, and a dynamic client on it."""
    cluster, api = kserve_double.start(tmp_path)
    yield cluster, api
    kserve_double.stop(cluster)
