"""One-line answers of the CLI where a raw traceback used to end it: a second `ctloop run` on a
workdir another run is using, and `ctloop predict` given a file it cannot read as rows."""

from __future__ import annotations

import fcntl
import time

import pytest

from ctloop.data import datagen


def error_line(result) -> str:
    """The one ``Error:`` line a failed command printed (and no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_second_run_on_a_workdir_in_use_ends_at_once_naming_it(cli, tmp_path, monkeypatch):
    datagen.write_spans(tmp_path / "data", 1, rows=50)
    workdir = tmp_path / "work"
    workdir.mkdir()
    from kfp import local

    def started(*args, **kwargs):
        raise AssertionError("a run started on a workdir another run holds")

    monkeypatch.setattr(local, "init", started)
    with open(workdir / ".lock", "a") as held:  # the other run, holding its workdir
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        began = time.monotonic()
        result = cli("run", "--data", tmp_path / "data", "--label", datagen.LABEL,
                     "--workdir", workdir)
        took = time.monotonic() - began
    line = error_line(result)
    assert line == (f"Error: workdir {workdir} is in use by another `ctloop run` (it holds "
                    f"{workdir / '.lock'}); wait for that run to finish, or pass another "
                    "--workdir"), line
    assert took < 30
    assert not (workdir / "pipeline_root").exists()


# --- ctloop predict with a file it cannot read as rows --------------------------------------------

UNREACHABLE = "http://127.0.0.1:9"  # never asked: the file is read first


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("junk.csv", bytes(range(256)) * 8, "is not a readable CSV file"),
    ("junk.parquet", b"PAR1" + bytes(range(200)), "is not a readable Parquet file"),
    ("empty.csv", b"", "is empty"),
    ("header-only.csv", b"age,plan\n", "has no rows"),
    ("blank-lines.csv", b"\n\n\n", "is empty"),
    ("notes.txt", b"just a sentence, not a table\n", "has no rows"),
])
def test_predict_with_an_unreadable_file_is_one_line(cli, tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    line = error_line(cli("predict", "--url", UNREACHABLE, "--data", path))
    assert line.startswith(f"Error: --data {path} {problem}"), line
    assert "; pass a CSV file with a header row" in line, line


def test_predict_with_every_column_dropped_is_one_line(cli, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("age,plan\n31,basic\n")
    line = error_line(cli("predict", "--url", UNREACHABLE, "--data", path, "--drop", "age",
                          "--drop", "plan"))
    assert line.startswith(f"Error: --data {path} has no column left to send after --drop"), line


@pytest.mark.serving
def test_predict_with_columns_the_model_lacks_or_does_not_take_names_the_file(
        cli, served_registry, prepared, tmp_path):
    import pandas as pd

    features = [f.name for f in prepared.features]
    rows = pd.read_parquet(prepared.eval).head(3)
    missing = tmp_path / "missing.csv"
    rows[features[1:]].to_csv(missing, index=False)
    line = error_line(cli("predict", "--url", served_registry.url, "--model-name", "churn",
                          "--data", missing, "--requests", 0))
    assert line.startswith(f"Error: --data {missing} lacks the model's feature(s) "
                           f"{features[0]}"), line
    assert "add those columns" in line
    extra = tmp_path / "extra.csv"
    rows[[*features, datagen.LABEL]].to_csv(extra, index=False)
    line = error_line(cli("predict", "--url", served_registry.url, "--model-name", "churn",
                          "--data", extra, "--requests", 0))
    assert line.startswith(f"Error: --data {extra} has column(s) the model does not take: "
                           f"{datagen.LABEL}; leave them out with --drop {datagen.LABEL}"), line
    # Those columns dropped, it answers.
    result = cli("predict", "--url", served_registry.url, "--model-name", "churn", "--data",
                 extra, "--drop", datagen.LABEL, "--requests", 2)
    assert result.exit_code == 0, result.output
    assert "served predictions by version 1" in result.output
    served_registry.assert_answers_as_before()
