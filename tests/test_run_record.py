"""Run-record digests: the same code or environment gives the same digest, wherever it ran."""

from ctloop.registry import record as run_record


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_code_digest_is_the_same_for_a_checkout_and_an_installed_wheel(tmp_path):
    # A checkout maps ctloop.components to components/ beside ctloop/; a wheel nests it.
    _write(tmp_path / "checkout", {"ctloop/cli.py": "cli", "components/train/logic.py": "train",
                                   "components/train/tests/test_train.py": "a test"})
    _write(tmp_path / "wheel", {"ctloop/cli.py": "cli",
                                "ctloop/components/train/logic.py": "train"})
    checkout = run_record.code_digest({"ctloop": tmp_path / "checkout" / "ctloop",
                                       "ctloop.components": tmp_path / "checkout" / "components"})
    wheel = run_record.code_digest({"ctloop": tmp_path / "wheel" / "ctloop",
                                    "ctloop.components": tmp_path / "wheel" / "ctloop" /
                                    "components"})
    assert checkout == wheel
    (tmp_path / "wheel" / "ctloop" / "components" / "train" / "logic.py").write_text("train!")
    changed = run_record.code_digest({"ctloop": tmp_path / "wheel" / "ctloop"})
    assert changed != wheel


def test_lock_digest_reads_pins_and_matches_the_same_environment(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# generated\nTensorflow_Data.Validation==1.16.1\n    # via x\n"
                    "absl-py==1.4.0 ; python_version >= '3.9'\n")
    assert run_record.lock_digest(lock) == run_record.requirements_digest(
        {"absl-py": "1.4.0", "tensorflow-data-validation": "1.16.1", "ctloop": "0.1.0"})
    assert run_record.lock_digest(lock) != run_record.requirements_digest(
        {"absl-py": "1.4.1", "tensorflow-data-validation": "1.16.1"})


def test_provenance_names_the_code_and_the_key_packages():
    record = run_record.provenance()
    assert len(record["code"]["digest"]) == 64 and record["code"]["ctloop_version"]
    assert record["environment"]["packages"]["tensorflow"].startswith("2.16")


def test_installed_reads_each_distributions_name_and_version_as_its_metadata_has_them():
    import importlib.metadata

    parsed = {run_record.normalize(d.metadata["Name"]): d.version
              for d in importlib.metadata.distributions() if d.metadata["Name"]}
    assert run_record.installed() == parsed
    assert parsed["tensorflow"] and parsed["kfp"]
