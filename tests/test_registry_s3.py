"""The registry on S3 (moto's S3 server on 127.0.0.1, through real boto3), beyond what every
registry promises (tests/test_registry_contract.py): versions visible only when complete, the
conditional-write lock, its renewal, its takeover after expiry and what a holder that lost it
may no longer write, the clean-up of versions a killed push left incomplete, and the local
copies of what is read."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import boto3
import pytest

from ctloop.errors import ConfigError, RegistryError
from ctloop.registry import LocalRegistry, open_registry
from ctloop.registry import s3 as registry_s3
from ctloop.registry.s3 import S3Registry


@pytest.fixture
def model(tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "variables").mkdir(parents=True)
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (model_dir / "variables" / "variables.index").write_bytes(b"index")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return model_dir, tmp_path / "schema.pbtxt"


@pytest.fixture
def s3(s3_bucket, tmp_path):
    def open_one(name="reader"):
        return S3Registry(f"{s3_bucket.uri}/registry", "churn", s3_bucket.endpoint_url,
                          cache_dir=tmp_path / name)

    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    return open_one, client, s3_bucket.uri[5:]


def test_open_registry_by_scheme(tmp_path, s3_bucket):
    assert isinstance(open_registry(str(tmp_path), "churn"), LocalRegistry)
    assert isinstance(open_registry(f"{s3_bucket.uri}/r", "churn", s3_bucket.endpoint_url),
                      S3Registry)
    with pytest.raises(ConfigError, match="registry URI 'gs://b/r' is not supported: use a "
                                          "local folder or s3://BUCKET/PREFIX"):
        open_registry("gs://b/r", "churn")


def test_push_and_read_back_from_another_pod(s3, model):
    open_one, client, bucket = s3
    writer = open_one("writer")
    assert writer.serving() is None and writer.versions() == []
    writer.push(*model, {"span": 1}, expected_serving=None)
    writer.push(*model, {"span": 2}, expected_serving=1, serve=False)
    reader = open_one("reader")  # another task: nothing cached
    assert [v.number for v in reader.versions()] == [1, 2]
    serving = reader.serving()
    assert serving.number == 1 and serving.record() == {"span": 1, "version": 1}
    assert (serving.model_dir / "variables" / "variables.index").read_bytes() == b"index"
    assert serving.schema_path.read_text() == "feature {}"
    assert reader.set_serving(2).number == 2 and open_one("third").serving().number == 2
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "registry/churn/versions/2/model/saved_model.pb" in keys
    assert "registry/churn/.lock" not in keys  # released


def test_a_push_killed_before_its_record_is_invisible_and_its_number_not_reused(s3, model):
    open_one, client, bucket = s3
    registry = open_one()
    registry.push(*model, {}, expected_serving=None)
    # What a push killed after uploading the model and before record.json leaves behind.
    client.put_object(Bucket=bucket, Key="registry/churn/versions/2/model/saved_model.pb",
                      Body=b"half")
    assert [v.number for v in registry.versions()] == [1]
    with pytest.raises(RegistryError, match="version 2 does not exist"):
        registry.set_serving(2)
    assert registry.push(*model, {}, expected_serving=1).number == 3
    assert open_one("other").serving().number == 3


def test_pointer_to_an_incomplete_version_is_an_error(s3, model):
    open_one, client, bucket = s3
    open_one().push(*model, {}, expected_serving=None)
    client.put_object(Bucket=bucket, Key="registry/churn/SERVING", Body=b'{"version": 7}')
    with pytest.raises(RegistryError, match="names version 7, which is not complete"):
        open_one("other").serving()


def test_lock_held_by_another_run_makes_the_loser_wait_then_fail(s3, model):
    open_one, _, _ = s3
    holder, loser = open_one("a"), open_one("b")
    held, release = threading.Event(), threading.Event()

    def hold():
        with holder.lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(RegistryError, match=r"is locked by another run for over 1s .*"
                                                r"wait for that run to finish, then rerun"):
            loser.push(*model, {}, expected_serving=None, lock_timeout_s=1)
    finally:
        release.set()
        thread.join()
    assert loser.push(*model, {}, expected_serving=None).number == 1


def test_expired_lock_of_a_killed_run_is_taken_over(s3, model):
    open_one, client, bucket = s3
    client.put_object(Bucket=bucket, Key="registry/churn/.lock",
                      Body=json.dumps({"owner": "dead", "expires_unix": time.time() - 1}))
    assert open_one().push(*model, {}, expected_serving=None, lock_timeout_s=5).number == 1
    # A live one is respected.
    client.put_object(Bucket=bucket, Key="registry/churn/.lock",
                      Body=json.dumps({"owner": "alive", "expires_unix": time.time() + 3600}))
    with pytest.raises(RegistryError, match="locked by another run"):
        open_one().push(*model, {}, expected_serving=1, lock_timeout_s=1)


@pytest.fixture
def short_lease(monkeypatch):
    """A lease of 1 s renewed every 0.1 s, so tests outlive leases in seconds, not minutes."""
    monkeypatch.setattr(registry_s3, "LOCK_LEASE_S", 1.0)
    monkeypatch.setattr(registry_s3, "LOCK_RENEW_S", 0.1)


def test_a_holder_keeps_its_lock_for_longer_than_a_lease(s3, model, short_lease):
    open_one, client, bucket = s3
    holder, other = open_one("a"), open_one("b")
    with holder.lock() as lease:
        time.sleep(2.5)  # 2.5 leases: without renewal, the other run would take the lock over
        with pytest.raises(RegistryError, match="locked by another run for over 0.5s"):
            other.push(*model, {}, expected_serving=None, lock_timeout_s=0.5)
        lock = json.loads(client.get_object(Bucket=bucket, Key="registry/churn/.lock")
                          ["Body"].read())
        assert 0 < lock["expires_unix"] - time.time() <= 1.0
        lease.check("anything")  # still held
    assert other.push(*model, {}, expected_serving=None).number == 1


def test_a_holder_whose_lock_was_taken_over_stops_before_completing(s3, model, short_lease,
                                                                     monkeypatch):
    open_one, client, bucket = s3
    registry = open_one("a")
    upload = S3Registry._put_file

    def taken_over_during_upload(self, path, key):
        upload(self, path, key)
        if key.endswith("schema.pbtxt"):  # e.g. the process froze past its lease meanwhile
            client.put_object(Bucket=bucket, Key="registry/churn/.lock",
                              Body=json.dumps({"owner": "other", "expires_unix": 0}))
            time.sleep(0.5)

    monkeypatch.setattr(S3Registry, "_put_file", taken_over_during_upload)
    with pytest.raises(RegistryError, match=r"registry s3://.*/registry/churn/ lost its push "
                                            r"lock before making version 1 complete \(taken "
                                            r"over by another run\); nothing more was written"):
        registry.push(*model, {}, expected_serving=None)
    reader = open_one("reader")
    assert reader.versions() == [] and reader.serving() is None
    # The other run's lock is left alone.
    lock = client.get_object(Bucket=bucket, Key="registry/churn/.lock")["Body"].read()
    assert json.loads(lock)["owner"] == "other"


def test_a_holder_whose_lease_ran_out_unrenewed_stops_before_completing(s3, model, short_lease,
                                                                       monkeypatch):
    """A holder frozen past its lease (its renewal thread had no chance to fail yet) stops on
    its own clock, and leaves the lock of the run that took it over alone."""
    open_one, client, bucket = s3
    registry = open_one("a")
    upload = S3Registry._put_file

    def frozen_during_upload(self, path, key):
        upload(self, path, key)
        if key.endswith("schema.pbtxt"):
            time.sleep(1.2)  # past the 1 s lease, then another run takes the lock over
            client.put_object(Bucket=bucket, Key="registry/churn/.lock",
                              Body=json.dumps({"owner": "other", "expires_unix": 0}))

    monkeypatch.setattr(registry_s3._Lease, "_renew", lambda self: None)  # as if frozen
    monkeypatch.setattr(S3Registry, "_put_file", frozen_during_upload)
    with pytest.raises(RegistryError, match=r"registry s3://.*/registry/churn/ lost its push "
                                            r"lock before making version 1 complete \(its "
                                            r"lease, until .* UTC, was not renewed 0.1s before "
                                            r"it ends\); nothing more was written.*: rerun$"):
        registry.push(*model, {}, expected_serving=None)
    assert open_one("reader").versions() == []
    lock = client.get_object(Bucket=bucket, Key="registry/churn/.lock")["Body"].read()
    assert json.loads(lock)["owner"] == "other"


def test_a_push_deletes_what_killed_pushes_left_incomplete(s3, model):
    open_one, client, bucket = s3
    registry = open_one()
    registry.push(*model, {"span": 1}, expected_serving=None)
    for key in ("versions/2/model/saved_model.pb", "versions/2/schema.pbtxt",
                "versions/3/model/variables/variables.index"):
        client.put_object(Bucket=bucket, Key=f"registry/churn/{key}", Body=b"half-written")
    assert registry.push(*model, {"span": 2}, expected_serving=1).number == 4  # none reused
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    numbers = {k.split("/")[3] for k in keys if k.startswith("registry/churn/versions/")}
    assert numbers == {"1", "4"}
    assert [v.number for v in open_one("reader").versions()] == [1, 4]
    assert open_one("other").serving().record() == {"span": 2, "version": 4}
    assert {k for k in keys if k.startswith("registry/churn/versions/1/")} == {
        f"registry/churn/versions/1/{name}" for name in (
            "model/saved_model.pb", "model/variables/variables.index", "schema.pbtxt",
            "record.json")}  # the complete version intact


def test_a_failed_clean_up_does_not_fail_the_push_it_follows(s3, model, monkeypatch, caplog):
    open_one, client, bucket = s3
    registry = open_one()
    client.put_object(Bucket=bucket, Key="registry/churn/versions/1/schema.pbtxt", Body=b"half")
    delete = registry._client.delete_object

    def refuse_version_deletes(**kwargs):
        if "/versions/" in kwargs["Key"]:
            raise client_error("AccessDenied")
        return delete(**kwargs)

    monkeypatch.setattr(registry._client, "delete_object", refuse_version_deletes)
    assert registry.push(*model, {}, expected_serving=None).number == 2
    assert "cannot delete registry/churn/versions/1/schema.pbtxt (" in caplog.text
    assert open_one("other").serving().number == 2
    monkeypatch.undo()
    assert open_one("third").push(*model, {}, expected_serving=2).number == 3
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert not any(k.startswith("registry/churn/versions/1/") for k in keys)


def client_error(code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "DeleteObject")


def test_unreachable_store_is_a_one_line_error(tmp_path, model, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    registry = S3Registry("s3://bucket/registry", "churn", "http://127.0.0.1:9",
                          cache_dir=tmp_path / "c")
    with pytest.raises(RegistryError) as caught:
        registry.versions()
    message = str(caught.value)
    assert message.startswith("registry s3://bucket/registry/churn/: cannot list")
    assert "http://127.0.0.1:9" in message and "\n" not in message


def test_a_holder_frozen_past_its_lease_cannot_overwrite_the_next_holders_version(
        s3, model, tmp_path, short_lease, monkeypatch):
    """A holder that picked its version number, then froze past its lease while another run
    took the lock over and pushed that same number: it must not write a single object of that
    version, and fails with one line saying why."""
    open_one, client, bucket = s3
    frozen, other = open_one("frozen"), open_one("other")
    other_model = tmp_path / "other-model"
    shutil.copytree(model[0], other_model)
    (other_model / "saved_model.pb").write_bytes(b"the other run's pb")
    monkeypatch.setattr(registry_s3._Lease, "_renew", lambda self: None)  # frozen: no renewals
    numbers = S3Registry._numbers

    def freeze_once_numbered(self, complete=True):
        found = numbers(self, complete)
        if self is frozen and not complete:
            time.sleep(1.2)  # past the 1 s lease: the next run takes the lock over and pushes
            assert other.push(other_model, model[1], {"by": "other"}, expected_serving=None,
                              lock_timeout_s=5).number == 1
        return found

    monkeypatch.setattr(S3Registry, "_numbers", freeze_once_numbered)
    with pytest.raises(RegistryError) as caught:
        frozen.push(*model, {"by": "frozen"}, expected_serving=None)
    reader = open_one("reader")
    assert [v.number for v in reader.versions()] == [1]
    version = reader.serving()
    assert version.record() == {"by": "other", "version": 1}
    assert (version.model_dir / "saved_model.pb").read_bytes() == b"the other run's pb"
    stored = client.list_objects_v2(Bucket=bucket, Prefix="registry/churn/versions/")
    etags = {o["Key"]: o["ETag"] for o in stored["Contents"]}
    assert etags["registry/churn/versions/1/model/saved_model.pb"].strip('"') == hashlib.md5(
        b"the other run's pb").hexdigest()
    message = str(caught.value)
    assert "\n" not in message
    assert re.fullmatch(r"registry s3://.*/registry/churn/ lost its push lock before writing "
                        r"model/saved_model\.pb of version 1 \(its lease, until .* UTC, was not "
                        r"renewed 0\.1s before it ends\); nothing more was written, another run "
                        r"may hold the lock now: rerun", message), message


def test_no_temporary_folder_until_a_file_is_read_and_none_left_after(s3_bucket, model,
                                                                       tmp_path, monkeypatch):
    """Opening the registry and reading its pointers writes nothing locally; a Version fetches
    only the files asked for (the schema without the model); the local copies go on close(),
    at the end of a with block, or when the process exits."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    uri, endpoint = f"{s3_bucket.uri}/registry", s3_bucket.endpoint_url
    writer = S3Registry(uri, "churn", endpoint, cache_dir=tmp_path / "writer")
    writer.push(*model, {"span": 1}, expected_serving=None)
    writer.push(*model, {"span": 2}, expected_serving=1, serve=False)

    def opened() -> tuple[S3Registry, list[str]]:
        """A registry with no cache_dir, and the version objects it GETs (boto3's downloads
        GET through the client's get_object too)."""
        registry, fetched = S3Registry(uri, "churn", endpoint), []
        get = registry._client.get_object

        def get_object(**kwargs):
            if "/versions/" in kwargs["Key"]:
                fetched.append(kwargs["Key"].split("/churn/", 1)[1])
            return get(**kwargs)

        registry._client.get_object = get_object
        return registry, fetched

    registry, fetched = opened()
    serving = registry.serving()
    assert [v.number for v in registry.versions()] == [1, 2] and serving.number == 1
    assert list(temp.iterdir()) == [] and fetched == []
    assert serving.schema_path.read_text() == "feature {}"
    assert fetched == ["versions/1/schema.pbtxt"]
    (folder,) = temp.iterdir()
    assert (serving.model_dir / "saved_model.pb").read_bytes() == b"pb"
    assert sorted(fetched) == ["versions/1/model/saved_model.pb",
                               "versions/1/model/variables/variables.index",
                               "versions/1/schema.pbtxt"]
    assert serving.model_dir.is_dir() and len(fetched) == 3  # fetched once
    registry.close()
    assert not folder.exists() and list(temp.iterdir()) == []

    with S3Registry(uri, "churn", endpoint) as registry:
        assert registry.versions()[1].record() == {"span": 2, "version": 2}
        assert len(list(temp.iterdir())) == 1
    assert list(temp.iterdir()) == []

    # Not closed: the folder stays while the process runs (a path handed out stays valid, even
    # once the registry is collected), and goes when it exits.
    script = ("import sys; from ctloop.registry import S3Registry; "
              "r = S3Registry(*sys.argv[1:4]); print(r.serving().schema_path); del r; "
              "import gc, os; gc.collect(); print(os.listdir(sys.argv[4]))")
    env = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run([sys.executable, "-c", script, uri, "churn", endpoint, str(temp)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    schema, listed = done.stdout.splitlines()
    assert schema.startswith(str(temp)) and listed != "[]"  # there until exit
    assert list(temp.iterdir()) == []


def test_a_holder_that_lost_its_lock_unnoticed_never_completes_another_runs_version(
        s3, model, tmp_path, short_lease, monkeypatch):
    """The last guard, for a holder frozen right after a lease check passed: record.json is
    created only if absent, so it cannot complete the version the next holder completed."""
    open_one, client, bucket = s3
    frozen, other = open_one("frozen"), open_one("other")
    monkeypatch.setattr(registry_s3._Lease, "_renew", lambda self: None)
    numbers, check = S3Registry._numbers, registry_s3._Lease.check

    def freeze_once_numbered(self, complete=True):
        found = numbers(self, complete)
        if self is frozen and not complete:
            time.sleep(1.2)
            other.push(*model, {"by": "other"}, expected_serving=None, lock_timeout_s=5)
            monkeypatch.setattr(registry_s3._Lease, "check", lambda lease, before: None)
        return found

    monkeypatch.setattr(S3Registry, "_numbers", freeze_once_numbered)
    with pytest.raises(RegistryError, match=r"version 1 was made complete by another run while "
                                            r"this one wrote it \(this run lost its push lock\); "
                                            r"rerun$"):
        frozen.push(*model, {"by": "frozen"}, expected_serving=None)
    monkeypatch.setattr(registry_s3._Lease, "check", check)
    reader = open_one("reader")
    assert [v.number for v in reader.versions()] == [1]
    assert reader.serving().record() == {"by": "other", "version": 1}
