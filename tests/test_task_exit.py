"""A task's process ends once kfp has written its outputs; a failed task records its reason and
ends the usual way.

Each component runs under kfp.local as its own process. It registers an atexit handler that
leaves a file: the file appears only when the interpreter tore itself down.
"""

import logging
import sys

import pytest
from kfp import dsl, local

from ctloop.kfp.images import PIPELINE_IMAGE
from ctloop.local import task_exit


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def succeed(teardown_marker: str) -> str:
    import atexit
    import pathlib

    from ctloop.local import task_exit

    task_exit.install()
    atexit.register(pathlib.Path(teardown_marker).write_text, "teardown ran")
    return "outputs written"


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def fail(teardown_marker: str) -> str:
    import atexit
    import pathlib

    from ctloop.local import task_exit

    task_exit.install()
    atexit.register(pathlib.Path(teardown_marker).write_text, "teardown ran")
    raise ValueError("the task's own error")


@pytest.fixture
def runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"))


def test_a_successful_task_exits_once_its_outputs_are_written(runner, tmp_path):
    marker = tmp_path / "succeed-teardown"
    task = succeed(teardown_marker=str(marker))
    assert task.output == "outputs written"
    assert not marker.exists(), "the interpreter tore down after kfp wrote the outputs"


def test_a_failed_task_keeps_its_error_and_ends_the_usual_way(runner, tmp_path, capfd):
    marker = tmp_path / "fail-teardown"
    with pytest.raises(RuntimeError, match="FAILURE"):
        fail(teardown_marker=str(marker))
    assert "ValueError: the task's own error" in capfd.readouterr().out
    assert marker.read_text() == "teardown ran"
    # The one-line reason beside the task's executor output, for `ctloop run`'s last line.
    (recorded,) = (tmp_path / "root").rglob(task_exit.FAILURE_FILE)
    assert recorded.parent.name == "fail"
    assert recorded.read_text() == "ValueError: the task's own error\n"


def test_outside_kfp_executor_nothing_changes():
    before, hook = list(logging.getLogger().handlers), sys.excepthook
    task_exit.install()
    assert logging.getLogger().handlers == before and sys.excepthook is hook
