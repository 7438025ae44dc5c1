"""The benchmark's arithmetic and tables, on given numbers (no timing here: bench/ measures)."""


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
