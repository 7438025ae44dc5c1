"""The benchmark's arithmetic and tables, on given numbers, and its measure of a child's memory
(no timing here: bench/ measures)."""


from bench import report


def test_latency_summary_counts_requests_and_rows_per_second():
    found = report.latency_summary([1.0, 2.0, 3.0, 4.0], wall_s=2.0, rows_per_request=64)
    assert found["requests"] == 4 and found["mean_ms"] == 2.5
    assert found["requests_per_s"] == 2.0 and found["rows_per_s"] == 128.0


def test_growth_compares_time_factor_with_row_factor():
    steps = report.growth({100_000: 50.0, 10_000: 40.0, 1_000_000: 600.0})
    assert [(s["from"], s["to"]) for s in steps] == [
        (10_000, 100_000), (100_000, 1_000_000), (10_000, 1_000_000)]
    assert steps[0]["rows_x"] == 10 and steps[0]["time_x"] == 1.25
    assert steps[0]["linear_or_better"]
    assert steps[1]["time_x"] == 12 and not steps[1]["linear_or_better"]  # superlinear
    assert steps[2]["time_x"] == 15 and steps[2]["linear_or_better"]


def test_targets_judge_ratios_growth_and_serving():
    sizes = {10_000: {"ratio": 1.02, "kfp_local_ratio": 0.55, "pipeline": {"wall_s": 40.0}},
             100_000: {"ratio": 1.2, "pipeline": {"wall_s": 60.0}},
             1_000_000: {"ratio": 1.1, "pipeline": {"wall_s": 500.0}}}
    serving = {"served": {"single": {1: {"p99_ms": 5.0}}},
               "in_process": {"single": {"p99_ms": 2.0}}}
    kfp_local, floor, grows, served = report.targets(sizes, serving)
    assert kfp_local["met"] is True and kfp_local["measured"] == "0.55x"
    assert "0.6x kfp.local at 10,000 rows" in kfp_local["target"]
    assert floor["met"] is False and floor["measured"] == "1.02x"
    assert grows["met"] is True and "time 12.50x" in grows["measured"]
    assert served["met"] is False and served["verdict"] == "MISSED"
    assert served["measured"].endswith("= 2.5x")


def test_targets_say_what_was_not_measured():
    sizes = {10_000: {"pipeline": {"wall_s": 40.0}}, 100_000: {"pipeline": {"wall_s": 60.0}}}
    kfp_local, floor, grows, served = report.targets(sizes, None)
    assert kfp_local["verdict"] == floor["verdict"] == "not measured"
    assert floor["met"] is None
    assert grows["met"] is None and "1,000,000 rows not run" in grows["measured"]
    assert served["verdict"] == "not measured"


def test_table_aligns_columns_and_formats_numbers():
    text = report.table(["task", "s", "rows/s"],
                        [["train", 8.254, 123456.7], ["rollout", None, 0.5], ["all", 12, True]])
    lines = text.splitlines()
    assert lines[0].split() == ["task", "s", "rows/s"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["train", "8.25", "123,457"]
    assert lines[3].split() == ["rollout", "-", "0.50"]
    assert lines[4].split() == ["all", "12", "True"]
    assert len({len(line) for line in lines[:3]}) == 1  # right-aligned to one width


def _run(peaks: dict[str, float | None], largest: float) -> dict:
    return {"tasks": {t: {"peak_tree_mb": mb} for t, mb in peaks.items()},
            "max_process_mb": largest}


def test_memory_shows_each_task_peak_growth_and_bound():
    sizes = {1_000_000: {"kfp_local": _run({"ingest": 220.0, "train": 700.0, "rollout": None},
                                           760.0),
                         "pipeline": _run({"train": 1500.0}, 900.0)},
             10_000: {"kfp_local": _run({"ingest": 200.0, "train": 650.0, "rollout": None},
                                        700.0),
                      "pipeline": _run({"train": 1400.0}, 880.0)}}
    found = report.memory(sizes)
    ingest = found["kfp_local"]["ingest"]
    assert ingest["peaks_mb"] == {10_000: 200.0, 1_000_000: 220.0}
    assert ingest["growth_mb"] == 20.0 and ingest["growth_x"] == 1.1
    assert ingest["bound_mb"] == report.MEMORY_BOUNDS_MB["ingest"] and ingest["within_bound"]
    assert found["kfp_local"]["rollout"]["growth_mb"] is None  # never sampled
    assert found["kfp_local"]["largest process"]["peaks_mb"][1_000_000] == 760.0
    # The default runner's tasks share one process: no per-task bound applies to them.
    assert found["pipeline"]["train"]["bound_mb"] is None
    assert found["pipeline"]["train"]["within_bound"] is None


def test_memory_targets_judge_the_largest_peak_at_any_size():
    bound = report.MEMORY_BOUNDS_MB["evaluate"]
    sizes = {10_000: {"kfp_local": _run({"ingest": 200.0, "evaluate": bound + 50.0}, 900.0)},
             3_000_000: {"kfp_local": _run({"ingest": 230.0, "evaluate": bound - 1.0}, 900.0)}}
    found = {t["target"].split()[0]: t for t in report.memory_targets(report.memory(sizes))}
    assert found["ingest"]["met"] is True and "max 230 MB (at 3,000,000 rows)" in \
        found["ingest"]["measured"]
    assert found["evaluate"]["met"] is False and "at 10,000 rows" in found["evaluate"]["measured"]
    assert found["train"]["verdict"] == "not measured"  # no train peak in these results
    # Without kfp.local nothing is judged.
    only_default = {10_000: {"pipeline": _run({"ingest": 200.0}, 900.0)}}
    assert {t["verdict"] for t in report.memory_targets(report.memory(only_default))} == {
        "not measured"}


def test_beam_table_compares_each_step_with_one_worker():
    from bench import beam

    def run(step_s: float, mode: str) -> dict:
        return {"wall_s": step_s + 5, "cpu_s": step_s, "others_cpu_s": 0.5,
                "peak_tree_mb": 800.0, "child": {"rows": 1000, "step_s": step_s,
                                                 "beam": {"running_mode": mode}}}

    found = {"rows": 1000, "split_rows": {"train": 800, "eval": 200}, "runs": {
        "statistics": {1: run(2.0, "in_memory"), 2: run(4.0, "multi_processing"),
                       "speedup": 0.5}}}
    lines = beam.table(found).splitlines()
    assert "1,000 rows (800 train / 200 eval)" in lines[1]
    assert lines[5].split()[:7] == ["statistics", "2", "multi_processing", "1,000", "4.00",
                                    "250.0", "0.50"]


def test_memory_judges_a_kfp_local_task_without_the_driver():
    sizes = {10_000: {"kfp_local": {
        "tasks": {"ingest": {"peak_tree_mb": 330.0, "task_peak_mb": 210.0}},
        "max_process_mb": 700.0}}}
    ingest = report.memory(sizes)["kfp_local"]["ingest"]
    assert ingest["peaks_mb"] == {10_000: 210.0} and ingest["within_bound"] is True


def test_peak_between_can_leave_the_measured_child_out():
    from bench.measure import Measured

    measured = Measured(1.0, 0, 500.0, [(1.0, 300.0, 120.0), (2.0, 450.0, 125.0),
                                        (3.0, 900.0, 130.0)], (0.0, 0.0), 1.0, 0.0, 0.0)
    assert measured.peak_tree_mb == 900.0
    assert measured.peak_between(0.5, 2.5) == 450.0
    assert measured.peak_between(0.5, 2.5, descendants_only=True) == 325.0


def test_the_largest_process_is_the_childs_own_not_this_process_copied_before_its_exec(tmp_path):
    import sys

    import numpy as np

    from bench import measure

    held = np.ones(400 * 1024 * 1024 // 8)  # this process: 400 MB more than its child
    grows = "import numpy as np, time; a = np.ones(100 * 1024 * 1024 // 8); time.sleep(0.6)"
    measured = measure.run([sys.executable, "-c", grows], tmp_path / "log", tmp_path)
    assert measured.returncode == 0 and held.size
    assert 100 < measured.max_process_mb < 300
