"""Downloads against a real loopback HTTP server with faults."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pipelines.download import ChecksumError, DownloadError, download, record_path

BODY = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(BODY).hexdigest()


def test_plain_download_is_verified_and_placed(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    dest = download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "f.bin.part").exists()
    # a second call finds the verified file and does not fetch again
    n = len(http_server.requests)
    download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA)
    assert len(http_server.requests) == n


def test_dropped_connection_resumes_with_range(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    http_server.faults["/f.bin"] = ["drop", "drop"]
    dest = download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, backoff_s=0.01, chunk_bytes=65536)
    assert dest.read_bytes() == BODY
    ranges = [r for p, r in http_server.requests if p == "/f.bin"]
    assert ranges[0] is None and len(ranges) == 3
    # each retry asked only for the bytes still missing: every byte received before a drop was kept
    first, second = (int(r[len("bytes="):-1]) for r in ranges[1:])
    assert first == len(BODY) // 2
    assert second == first + (len(BODY) - first) // 2


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    http_server.faults["/f.bin"] = ["drop", "norange"]
    dest = download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, backoff_s=0.01)
    assert dest.read_bytes() == BODY


def test_part_file_from_a_crashed_run_is_resumed_with_if_range(http_server, tmp_path) -> None:
    import requests

    http_server.files["/f.bin"] = BODY
    etag = requests.head(http_server.url("/f.bin"), timeout=5).headers["ETag"]
    # what a run killed after 1000 bytes leaves: the part file and its record of the server's validator
    (tmp_path / "f.bin.part").write_bytes(BODY[:1000])
    (tmp_path / "f.bin.part.json").write_text(json.dumps(
        {"url": http_server.url("/f.bin"), "total": len(BODY), "etag": etag, "last_modified": None}))
    download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA)
    assert http_server.requests[1:] == [("/f.bin", "bytes=1000-")]
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert sorted(os.listdir(tmp_path)) == ["f.bin", "f.bin.download.json"]


def test_part_file_without_its_record_is_not_trusted(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)  # not the start of BODY: resuming would splice it in
    download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA)
    assert http_server.requests == [("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_without_a_sha256_the_file_is_recorded_as_unverified(http_server, tmp_path, caplog) -> None:
    http_server.files["/f.bin"] = BODY
    dest = download(http_server.url("/f.bin"), tmp_path / "f.bin")
    record = json.loads(record_path(dest).read_text())
    assert record["sha256"] == SHA and record["verified"] is False and record["bytes"] == len(BODY)
    assert any("unverified" in r.getMessage() and SHA in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_wrong_body_is_a_checksum_error_that_leaves_nothing(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    http_server.faults["/f.bin"] = ["wrong"]
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as exc:
        download(http_server.url("/f.bin"), dest, sha256=SHA)
    assert SHA in str(exc.value) and str(dest) in str(exc.value)
    assert sorted(os.listdir(tmp_path)) == []
    # the server is fine again: a retry succeeds
    assert download(http_server.url("/f.bin"), dest, sha256=SHA).read_bytes() == BODY


def test_existing_wrong_file_is_replaced(http_server, tmp_path) -> None:
    http_server.files["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    assert download(http_server.url("/f.bin"), dest, sha256=SHA).read_bytes() == BODY
    dest.write_bytes(b"stale")  # without a sha256 the stale file is not in the record: replaced too
    assert download(http_server.url("/f.bin"), dest).read_bytes() == BODY


def test_http_404_fails_fast_with_the_url(http_server, tmp_path) -> None:
    with pytest.raises(DownloadError) as exc:
        download(http_server.url("/missing.bin"), tmp_path / "x", retries=3, backoff_s=0.01)
    assert "404" in str(exc.value) and "/missing.bin" in str(exc.value)
    assert len(http_server.requests) == 1
    assert not (tmp_path / "x").exists()


def test_unreachable_server_gives_up_after_retries(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as exc:
        download(f"http://127.0.0.1:{port}/f", tmp_path / "f", retries=2, backoff_s=0.01, timeout_s=2)
    assert "after 3 attempts" in str(exc.value)
