"""select_span logic, in-process: span/version patterns, rolling range, fingerprint, remote stores
(S3 and GCS servers on 127.0.0.1), bad input."""

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import google_crc32c
import pytest

from ctloop.components.select_span import logic
from ctloop.data import storage
from ctloop.errors import ConfigError, DataError

ROWS = b"a,churned\n1,0\n2,1\n"


def _write(root: Path, *relative: str) -> None:
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ROWS)


def test_plain_paths_keep_todays_behaviour(spans_dir, tmp_path):
    latest = logic.run(str(spans_dir))
    assert (latest.span, latest.spans) == (3, [3])
    assert latest.files == [str(spans_dir / "span-3" / "data.csv")]
    assert logic.run(str(spans_dir / "span-2")).spans == [2]

    _write(tmp_path, "flat/b.csv", "flat/a.parquet", "flat/notes.txt")
    flat = logic.run(str(tmp_path / "flat") + "/")
    assert flat.spans == [0]
    assert flat.files == [str(tmp_path / "flat" / n) for n in ("a.parquet", "b.csv")]
    assert logic.run(str(tmp_path / "flat" / "b.csv")).files == [str(tmp_path / "flat/b.csv")]


def test_pattern_picks_highest_span_then_highest_version(tmp_path):
    _write(tmp_path, "span-1/v1/part-0.csv", "span-9/v3/part-0.csv", "span-10/v1/part-0.csv",
           "span-10/v2/part-0.csv", "span-10/v2/part-1.csv", "span-10/v2/notes.txt",
           "span-10/v2/other-0.csv", "span-10/v10/extra/part-0.csv", "span-11/x/part-0.csv")
    result = logic.run(str(tmp_path / "span-{SPAN}/v{VERSION}/part-*.csv"))
    # Numbers, not strings: span 10 after 9, and within it v2 (v10's file is one segment deeper
    # than part-*.csv; span 11 has no version folder): only the files matching the pattern.
    assert (result.span, result.spans) == (10, [10])
    assert result.files == [str(tmp_path / f"span-10/v2/part-{i}.csv") for i in (0, 1)]


def test_pattern_naming_folders_takes_every_file_under_them(tmp_path):
    _write(tmp_path, "exports/span-3/day=1/a.csv", "exports/span-3/day=2/b.parquet",
           "exports/span-2/a.csv", "exports/span-3.csv")
    result = logic.run(str(tmp_path / "exports/span-{SPAN}"))
    assert result.spans == [3]
    assert result.files == [str(tmp_path / "exports/span-3/day=1/a.csv"),
                            str(tmp_path / "exports/span-3/day=2/b.parquet")]


def test_glob_stays_within_one_path_segment(tmp_path):
    _write(tmp_path, "d/top.csv", "d/sub/deep.csv")
    assert logic.run(str(tmp_path / "d/*.csv")).files == [str(tmp_path / "d/top.csv")]


def test_rolling_range_reads_the_last_spans_present(tmp_path):
    _write(tmp_path, "span-1/v1/a.csv", "span-2/v1/a.csv", "span-2/v3/a.csv", "span-2/v3/b.csv",
           "span-5/v1/a.csv")
    pattern = str(tmp_path / "span-{SPAN}/v{VERSION}/*.csv")
    two = logic.run(pattern, spans=2)
    assert (two.span, two.spans) == (5, [2, 5])
    assert two.files == [str(tmp_path / p) for p in ("span-2/v3/a.csv", "span-2/v3/b.csv",
                                                    "span-5/v1/a.csv")]
    # Fewer spans than asked for: every span there is, and the list says which.
    assert logic.run(pattern, spans=9).spans == [1, 2, 5]


def test_fingerprint_is_stable_and_changes_with_one_byte(tmp_path):
    _write(tmp_path, "span-1/a.csv", "span-1/b.csv")
    first = logic.run(str(tmp_path))
    assert logic.run(str(tmp_path)).fingerprint == first.fingerprint
    path = tmp_path / "span-1" / "b.csv"
    path.write_bytes(ROWS.replace(b"2,1", b"3,1"))  # same size, one byte different
    assert logic.run(str(tmp_path)).fingerprint != first.fingerprint


def test_no_match_is_a_one_line_error_naming_the_pattern(tmp_path):
    _write(tmp_path, "span-1/a.csv")
    pattern = str(tmp_path / "span-{SPAN}/v{VERSION}/*.csv")
    with pytest.raises(DataError, match="matches no .csv or .parquet file") as caught:
        logic.run(pattern)
    message = str(caught.value)
    assert pattern in message and "fix the pattern" in message and "\n" not in message


@pytest.mark.parametrize(
    ("data_uri", "spans", "message"),
    [
        ("data/v{VERSION}/*.csv", 1, "has {VERSION} without {SPAN}"),
        ("data/span-{SPAN}/{SPAN}.csv", 1, "has {SPAN} more than once"),
        ("data/span-{span}/*.csv", 1, "unknown placeholder {span}"),
        ("s3://exports-{SPAN}/a.csv", 1, "in the bucket name"),
        ("data", 0, "spans 0 is invalid"),
    ],
)
def test_bad_patterns_and_spans_are_config_errors(data_uri, spans, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        logic.run(data_uri, spans)


def test_s3_pattern_is_fingerprinted_from_etags_without_download(s3_bucket):
    keys = ["exports/span-2/v1/part-0.parquet", "exports/span-2/v2/part-0.parquet",
            "exports/span-2/v2/part-1.parquet", "exports/span-10/v1/part-0.parquet",
            "exports/span-10/v1/_SUCCESS"]
    for i, key in enumerate(keys):
        s3_bucket.put(key, ROWS + str(i).encode())
    pattern = f"{s3_bucket.uri}/exports/span-{{SPAN}}/v{{VERSION}}/part-*.parquet"
    result = logic.run(pattern, spans=2, s3_endpoint_url=s3_bucket.endpoint_url)
    assert (result.span, result.spans) == (10, [2, 10])
    assert result.files == [f"{s3_bucket.uri}/{k}" for k in keys[1:4]]
    # The ETag of a single-part upload is the MD5 of its bytes: the store's own content hash.
    expected = storage.fingerprint(
        storage.StoredFile(f"{s3_bucket.uri}/{keys[i]}", len(ROWS) + 1,
                           "etag:" + hashlib.md5(ROWS + str(i).encode()).hexdigest())
        for i in (1, 2, 3)
    )
    assert result.fingerprint == expected
    assert logic.run(pattern, 2, s3_bucket.endpoint_url).fingerprint == expected

    s3_bucket.put(keys[2], ROWS + b"X")
    assert logic.run(pattern, 2, s3_bucket.endpoint_url).fingerprint != expected


def test_s3_errors_are_one_line(s3_bucket):
    with pytest.raises(DataError, match="matches no .csv or .parquet file"):
        logic.run(f"{s3_bucket.uri}/none/span-{{SPAN}}/*.csv", 1, s3_bucket.endpoint_url)
    with pytest.raises(DataError, match=r"cannot list s3://ctloop-no-such-bucket/d .*"
                                        r"NoSuchBucket.*check the bucket") as caught:
        logic.run("s3://ctloop-no-such-bucket/d", 1, s3_bucket.endpoint_url)
    assert "\n" not in str(caught.value)


def test_gcs_pattern_is_fingerprinted_from_object_hashes(gcs_bucket):
    gcs_bucket.put("data/span-1/a.csv", ROWS)
    gcs_bucket.put("data/span-2/a.csv", ROWS + b"3,0\n")
    result = logic.run(f"{gcs_bucket.uri}/data/span-{{SPAN}}/*.csv")
    assert (result.span, result.files) == (2, [f"{gcs_bucket.uri}/data/span-2/a.csv"])
    content = ROWS + b"3,0\n"
    md5 = base64.b64encode(hashlib.md5(content).digest()).decode()
    crc32c = base64.b64encode(google_crc32c.Checksum(content).digest()).decode()
    assert result.fingerprint == storage.fingerprint([storage.StoredFile(
        result.files[0], len(content), f"md5:{md5},crc32c:{crc32c}")])


def test_select_span_stays_cheap(spans_dir):
    # It runs uncached on every pipeline run: no pandas, no TensorFlow in its process.
    code = (
        "import sys\n"
        "from ctloop.components.select_span import component, logic\n"
        f"assert logic.run({str(spans_dir)!r}).span == 3\n"
        "heavy = sorted({'pandas', 'tensorflow', 'pyarrow'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
