"""Downloads against a faulty loopback server (issue 15): right bytes or a clear error, never a wrong file.

Every case names its expected outcome. The server is real (``http.server`` on 127.0.0.1), the
client is :func:`pipelines.download.download` unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from fault_http import FaultyServer, running
from pipelines.download import ChecksumError, DownloadError, download, record_path

SIZE = 1536 * 1024 + 77
BODY = random.Random(0).randbytes(SIZE)
BODY2 = random.Random(1).randbytes(SIZE)
SHA, SHA2 = hashlib.sha256(BODY).hexdigest(), hashlib.sha256(BODY2).hexdigest()
FAST = {"backoff_s": 0.002, "retries": 3}


def _server(**kw: object) -> FaultyServer:
    s = FaultyServer(**kw)  # type: ignore[arg-type]
    s.put("/a.tar", BODY)
    s.files["v2"] = BODY2
    return s


def _left(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_drop_after_200kb_resumes_keeping_every_byte(validator: str, tmp_path: Path) -> None:
    """Expected: complete, right bytes; each resume starts exactly where the last response stopped.

    Eight responses with three retries: an attempt that brought new bytes does not use up a retry.
    """
    with running(_server(drop_after=200_000, etag=validator == "etag", last_modified=validator == "last_modified")) as srv:
        dest = download(srv.url("/a.tar"), tmp_path / "a.tar", **FAST)
    assert dest.read_bytes() == BODY
    starts = [0 if r is None else int(r[6:-1]) for _, r, _, _ in srv.log]
    assert starts == list(range(0, SIZE, 200_000))  # 8 requests; nothing re-fetched
    assert all(ir is not None for _, r, ir, _ in srv.log if r)  # every resume was conditional (If-Range)
    record = json.loads(record_path(dest).read_text())
    assert record["sha256"] == SHA and record["verified"] is False
    assert _left(tmp_path) == ["a.tar", "a.tar.download.json"]


def test_drop_without_any_validator_never_splices_and_fails_clearly(tmp_path: Path) -> None:
    """Expected: DownloadError; with no ETag/Last-Modified a resume could splice versions, so none is tried."""
    with running(_server(drop_after=200_000, etag=False, last_modified=False)) as srv:
        with pytest.raises(DownloadError, match="after 4 attempts"):
            download(srv.url("/a.tar"), tmp_path / "a.tar", backoff_s=0.01, retries=3)
    assert [r for _, r, _, _ in srv.log] == [None] * 4
    assert not (tmp_path / "a.tar").exists()


def test_no_validator_but_no_drop_completes(tmp_path: Path) -> None:
    """Expected: complete, right bytes (recorded as unverified)."""
    with running(_server(etag=False, last_modified=False)) as srv:
        assert download(srv.url("/a.tar"), tmp_path / "a.tar").read_bytes() == BODY


def test_file_changed_between_resumes_is_fetched_whole_not_spliced(tmp_path: Path) -> None:
    """Expected: the new version, complete; the If-Range of the resume no longer matches, so a 200 restarts it."""
    srv = _server(drop_after=200_000)
    srv.queue["/a.tar"] = ["swap:v2"]
    with running(srv):
        dest = download(srv.url("/a.tar"), tmp_path / "a.tar", **FAST)
        assert srv.log[1][1] == "bytes=200000-" and srv.log[1][3] == 200  # the resume was answered with the whole file
    assert dest.read_bytes() == BODY2
    assert json.loads(record_path(dest).read_text())["sha256"] == SHA2


@pytest.mark.parametrize("fault", ["norange", "shift", "total"])
def test_bad_resume_replies_restart_from_zero(fault: str, tmp_path: Path) -> None:
    """Expected: complete, right bytes (the 200 / off-by-one 206 / changed length is not appended)."""
    srv = _server(drop_after=600_000)
    srv.queue["/a.tar"] = ["", fault]
    with running(srv):
        dest = download(srv.url("/a.tar"), tmp_path / "a.tar", **FAST)
    assert dest.read_bytes() == BODY


def test_stale_part_files_are_not_trusted(tmp_path: Path) -> None:
    """Expected: right bytes, whether the stale part has no record or a record of an older version."""
    dest = tmp_path / "a.tar"
    with running(_server()) as srv:
        dest.with_name("a.tar.part").write_bytes(b"\0" * 300_000)
        assert download(srv.url("/a.tar"), dest).read_bytes() == BODY
        dest.unlink()
        # a part of the old version with its record; the server now has v2
        dest.with_name("a.tar.part").write_bytes(BODY[:300_000])
        etag, modified = srv.validators("/a.tar")
        dest.with_name("a.tar.part.json").write_text(json.dumps(
            {"url": srv.url("/a.tar"), "total": SIZE, "etag": etag, "last_modified": modified}))
        srv.put("/a.tar", BODY2)
        assert download(srv.url("/a.tar"), dest).read_bytes() == BODY2
    assert _left(tmp_path) == ["a.tar", "a.tar.download.json"]


def test_wrong_body_with_a_sha256_leaves_nothing(tmp_path: Path) -> None:
    """Expected: ChecksumError naming both digests; nothing at dest, no part file; a clean retry succeeds."""
    srv = _server(drop_after=800_000)
    srv.queue["/a.tar"] = ["", "wrong"]  # the second half of the file comes back wrong
    with running(srv):
        with pytest.raises(ChecksumError, match=SHA):
            download(srv.url("/a.tar"), tmp_path / "a.tar", sha256=SHA, **FAST)
        assert _left(tmp_path) == []
        assert download(srv.url("/a.tar"), tmp_path / "a.tar", sha256=SHA, **FAST).read_bytes() == BODY


def test_trickle_past_the_deadline_fails_and_keeps_the_part_for_the_next_run(tmp_path: Path) -> None:
    """Expected: DownloadError naming the deadline; nothing at dest; the next run resumes the part."""
    srv = _server(trickle_bps=100_000)
    with running(srv):
        with pytest.raises(DownloadError, match="deadline"):
            download(srv.url("/a.tar"), tmp_path / "a.tar", deadline_s=0.5, **FAST)
        assert not (tmp_path / "a.tar").exists()
        have = (tmp_path / "a.tar.part").stat().st_size
        assert 0 < have < SIZE
        srv.trickle_bps = None
        assert download(srv.url("/a.tar"), tmp_path / "a.tar", sha256=SHA).read_bytes() == BODY
        assert srv.log[-1][1] == f"bytes={have}-"


def test_file_already_at_dest_is_verified_or_replaced(tmp_path: Path) -> None:
    """Expected: a recorded, unchanged file is kept after a 304; a changed or unrecorded one is replaced."""
    dest = tmp_path / "a.tar"
    with running(_server()) as srv:
        download(srv.url("/a.tar"), dest)
        n = len(srv.log)
        download(srv.url("/a.tar"), dest)
        assert [s for *_, s in srv.log[n:]] == [304] and dest.read_bytes() == BODY
        srv.put("/a.tar", BODY2)  # the server's file changed: the old one is not kept
        assert download(srv.url("/a.tar"), dest).read_bytes() == BODY2
        dest.write_bytes(BODY)  # replaced behind the record's back: not trusted
        assert download(srv.url("/a.tar"), dest).read_bytes() == BODY2
        dest.write_bytes(b"junk")  # with an expected sha256: checked, removed, downloaded again
        assert download(srv.url("/a.tar"), dest, sha256=SHA2).read_bytes() == BODY2
