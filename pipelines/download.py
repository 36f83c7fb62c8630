"""Streaming HTTP downloads that resume safely, verify what they can and never leave a wrong file.

Bytes stream into ``<dest>.part`` in small reads (each written as it arrives, so a dropped
connection loses nothing). Beside it, ``<dest>.part.json`` records the server's validator (ETag or
Last-Modified) and the announced length. A retry resumes with ``Range`` *and* ``If-Range``, and
appends only when the server answers 206 for the same validator, start and length; anything else
(a 200, a changed ETag or length, no validator at all, a part file without its record) restarts
from byte 0. A body longer than announced is an error; a shorter one is resumed. Attempts back off
exponentially, and ``deadline_s`` bounds the whole download (a trickling server is given up on,
with the part file kept for the next run).

When the file is complete its sha256 is checked when one is given; on a mismatch the part file is
deleted and :class:`ChecksumError` raised. Then it is fsynced and renamed onto ``dest``, and
``<dest>.download.json`` records the URL, size, sha256 and validator. Without an expected sha256
the computed one is recorded there and a warning says the file is unverified.

A file already at ``dest`` is never simply trusted: with an expected sha256 it is checked; without
one it is kept only if its record matches its bytes and the server confirms (304 to a conditional
request) that it has not changed; otherwise it is downloaded again (the old file stays until the
new one is complete).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import requests
import urllib3

from pipelines.atomic import atomic_write_text, fsync_dir
from pipelines.runtime import file_sha256

__all__ = ["download", "DownloadError", "ChecksumError", "record_path"]

log = logging.getLogger(__name__)

_RETRYABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)


class DownloadError(RuntimeError):
    """A download that did not complete (after all retries, past the deadline, or on a non-retryable reply)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


class _Restart(Exception):
    """Internal: the part file cannot be resumed; start again from byte 0 (message says why)."""


def record_path(dest: str | os.PathLike[str]) -> Path:
    """``<dest>.download.json``: URL, bytes, sha256, validator and whether the sha256 was checked."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".download.json")


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _validator(resp: requests.Response) -> dict[str, str | None]:
    etag = resp.headers.get("ETag")
    return {"etag": None if etag is None or etag.startswith("W/") else etag,  # If-Range needs a strong ETag
            "last_modified": resp.headers.get("Last-Modified")}


def _int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _parse_content_range(value: str) -> tuple[int, int, int] | None:
    """``bytes a-b/total`` -> (a, b, total), or None."""
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        start, end = span.split("-", 1)
        return (int(start), int(end), int(total)) if unit == "bytes" else None
    except ValueError:
        return None


def _resume_offset(url: str, part: Path, state_path: Path) -> tuple[int, dict[str, Any] | None]:
    """Bytes of ``part`` that may be resumed and their record; a part file that may not is deleted."""
    if not part.is_file():
        state_path.unlink(missing_ok=True)
        return 0, None
    state = _read_json(state_path)
    size = part.stat().st_size
    why = None
    if state is None:
        why = "has no record of the server's validator (stale or from another program)"
    elif state.get("url") != url:
        why = f"was downloaded from {state.get('url')}"
    elif not (state.get("etag") or state.get("last_modified")):
        why = "came from a server that sent no ETag or Last-Modified, so a resume could splice two versions"
    elif not isinstance(state.get("total"), int) or size >= state["total"]:
        why = f"has {size} bytes of an announced {state.get('total')}"
    if why is not None:
        log.info("%s %s; downloading from byte 0", part, why)
        part.unlink()
        state_path.unlink(missing_ok=True)
        return 0, None
    return size, state


def _resume_state_ok(url: str, part: Path, state_path: Path) -> bool:
    """Whether the part file has a record that allows resuming it (same URL, a validator, a known length)."""
    state = _read_json(state_path)
    return (part.is_file() and state is not None and state.get("url") == url
            and bool(state.get("etag") or state.get("last_modified")) and isinstance(state.get("total"), int))


def _check_resume_reply(resp: requests.Response, offset: int, state: dict[str, Any]) -> int:
    """Validate a 206 answer to a resume; return the total length or raise :class:`_Restart`."""
    cr = _parse_content_range(resp.headers.get("Content-Range", ""))
    if cr is None or cr[0] != offset:
        raise _Restart(f"answered Range {offset}- with Content-Range {resp.headers.get('Content-Range')!r}")
    if cr[2] != state["total"]:
        raise _Restart(f"now announces {cr[2]} bytes instead of {state['total']} (the file changed)")
    now = _validator(resp)
    for key in ("etag", "last_modified"):
        if state.get(key) and now[key] and now[key] != state[key]:
            raise _Restart(f"changed its {key} from {state[key]} to {now[key]}")
    length = _int_header(resp, "Content-Length")
    if length is not None and length != cr[2] - offset:
        raise _Restart(f"sent Content-Length {length} for the range {offset}-{cr[1]} of {cr[2]}")
    return int(cr[2])


def _stream(resp: requests.Response, part: Path, mode: str, chunk_bytes: int, deadline: float, url: str,
            total: int | None) -> int:
    """Append or write the body to ``part``, each read as it arrives; return the part's final size."""
    with open(part, mode) as fh:
        try:
            while True:
                block = resp.raw.read1(chunk_bytes, decode_content=False)
                if not block:
                    break
                fh.write(block)
                if time.monotonic() > deadline:
                    raise DownloadError(f"{url}: the download did not finish within its deadline ({fh.tell()} of "
                                        f"{total if total is not None else '?'} bytes); {part} is kept and the next run resumes from it")
        finally:
            fh.flush()
            os.fsync(fh.fileno())
    return part.stat().st_size


def _attempt(sess: requests.Session, url: str, part: Path, state_path: Path, timeout_s: float, chunk_bytes: int,
             deadline: float) -> None:
    """One request: resume or restart the part file. Raises on anything but a complete body."""
    offset, state = _resume_offset(url, part, state_path)
    headers = {"Accept-Encoding": "identity"}
    if offset and state is not None:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = state.get("etag") or state["last_modified"]
    wait = max(0.1, min(timeout_s, deadline - time.monotonic()))
    with sess.get(url, headers=headers, stream=True, timeout=(wait, wait)) as resp:
        code = resp.status_code
        if code >= 500 or code in (408, 429):
            raise requests.exceptions.ConnectionError(f"HTTP {code}")
        if code == 416:
            raise _Restart(f"refused the range {offset}- (HTTP 416)")
        if code >= 400:
            raise DownloadError(f"{url}: HTTP {code} {resp.reason}; check the URL")
        if code == 206 and offset and state is not None:
            total: int | None = _check_resume_reply(resp, offset, state)
            mode = "ab"
        elif code == 200:
            if offset:
                log.info("%s sent the whole file instead of bytes %d- (changed, or no Range support); restarting", url, offset)
            total = _int_header(resp, "Content-Length")
            atomic_write_text(state_path, json.dumps({"url": url, "total": total, **_validator(resp)}, sort_keys=True) + "\n")
            mode = "wb"
        else:
            raise _Restart(f"answered HTTP {code} to a request for bytes {offset}-")
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise DownloadError(f"{url}: the server compressed the body ({encoding}) although identity was asked for; "
                                "its bytes cannot be resumed or checked: use another URL")
        have = _stream(resp, part, mode, chunk_bytes, deadline, url, total)
    if total is not None and have > total:
        part.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server sent {have} bytes, more than the {total} it announced; nothing was "
                            "kept. The server is misbehaving: try again later or use another URL")
    if total is not None and have < total:
        raise requests.exceptions.ConnectionError(f"got {have} of {total} bytes")


def _existing_is_current(sess: requests.Session, url: str, dest: Path, expected: str | None, timeout_s: float) -> bool:
    """Whether the file already at ``dest`` can stay (see the module docstring)."""
    digest = file_sha256(dest)
    if expected is not None:
        if digest == expected:
            log.info("%s already present with the expected sha256; not downloading %s", dest, url)
            return True
        log.warning("%s exists but its sha256 %s is not the expected %s; removing it and downloading again", dest, digest, expected)
        dest.unlink()
        record_path(dest).unlink(missing_ok=True)
        return False
    record = _read_json(record_path(dest))
    if record is None or record.get("url") != url or record.get("sha256") != digest:
        log.warning("%s exists but is not the file recorded in %s for %s; downloading it again", dest, record_path(dest), url)
        return False
    cond = {k: v for k, v in (("If-None-Match", record.get("etag")), ("If-Modified-Since", record.get("last_modified"))) if v}
    if not cond:
        log.warning("%s: the server gave no validator, so the existing file cannot be checked; downloading it again", url)
        return False
    try:
        with sess.get(url, headers={"Accept-Encoding": "identity", **cond}, stream=True, timeout=timeout_s) as resp:
            if resp.status_code == 304:
                log.warning("%s is unverified (no expected sha256 given); the server says it is unchanged; sha256 %s", dest, digest)
                return True
    except _RETRYABLE as exc:
        log.warning("%s: could not ask the server whether %s is current (%s); downloading it again", url, dest, exc)
    return False


def _place(url: str, dest: Path, part: Path, state_path: Path, expected: str | None) -> Path:
    """Verify the complete part file, rename it onto ``dest`` and write its record."""
    got = file_sha256(part)
    state = _read_json(state_path) or {}
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: sha256 of the downloaded file is {got}, expected {expected}; nothing was written to {dest}. "
            "The server sent different bytes: check the URL and the checksum, then retry"
        )
    size = part.stat().st_size
    os.replace(part, dest)
    fsync_dir(dest.parent)
    record = {"url": url, "bytes": size, "sha256": got, "verified": expected is not None,
              "etag": state.get("etag"), "last_modified": state.get("last_modified")}
    atomic_write_text(record_path(dest), json.dumps(record, indent=2, sort_keys=True) + "\n")
    state_path.unlink(missing_ok=True)
    if expected is None:
        log.warning("%s is unverified: no expected sha256 was given for %s; its sha256 is %s (recorded in %s); "
                    "pass it as the expected sha256 to check later downloads", dest, url, got, record_path(dest))
    log.info("downloaded %s -> %s (%d bytes)", url, dest, size)
    return dest


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 30.0,
    deadline_s: float = 6 * 3600.0,
    chunk_bytes: int = 1 << 16,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` (see the module docstring).

    Args:
        url: http(s) URL.
        dest: final path; the file appears there only when complete (and verified, when ``sha256`` is given).
        sha256: expected hex digest, or None (the file is then recorded as unverified, with its computed digest).
        retries: extra attempts after a connection error, timeout, truncated body, unusable resume or 5xx reply.
        backoff_s: first wait between attempts; doubles each attempt.
        timeout_s: connect/read timeout of one request in seconds.
        deadline_s: the whole download (all attempts and waits) must finish within this many seconds.
        chunk_bytes: the most bytes read (and written) at once.
        session: a requests session to reuse (one is made otherwise).

    Raises:
        ChecksumError: the complete body does not match ``sha256`` (nothing is left at dest or dest.part).
        DownloadError: the download failed after all attempts, passed its deadline, or the server answered 4xx.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    deadline = time.monotonic() + deadline_s
    part, state_path = _part_paths(dest)
    sess = session or requests.Session()
    last_error: Exception | None = None
    try:
        if dest.is_file() and _existing_is_current(sess, url, dest, expected, timeout_s):
            return dest
        failed = 0  # attempts in a row that gained no resumable bytes; only these count against ``retries``
        attempts = 0
        while failed <= retries:
            if failed:
                wait = min(backoff_s * (2 ** (failed - 1)), max(0.0, deadline - time.monotonic()))
                log.info("retrying %s in %.2f s (retry %d/%d): %s", url, wait, failed, retries, last_error)
                time.sleep(wait)
            if time.monotonic() > deadline:
                raise DownloadError(f"{url}: the download did not finish within its deadline of {deadline_s:g} s "
                                    f"({last_error}); {part} is kept and the next run resumes from it where it can")
            before = part.stat().st_size if part.is_file() and state_path.is_file() else 0
            attempts += 1
            try:
                _attempt(sess, url, part, state_path, timeout_s, chunk_bytes, deadline)
            except _Restart as exc:
                log.warning("%s %s; restarting from byte 0", url, exc)
                part.unlink(missing_ok=True)
                state_path.unlink(missing_ok=True)
                last_error = DownloadError(f"{url} {exc}")
                failed += 1
                continue
            except _RETRYABLE as exc:
                last_error = exc
                resumable = _resume_state_ok(url, part, state_path)
                gained = resumable and part.stat().st_size > before
                failed = 0 if gained else failed + 1
                continue
            return _place(url, dest, part, state_path, expected)
    finally:
        if session is None:
            sess.close()
    raise DownloadError(
        f"{url}: download failed after {attempts} attempts, the last {retries + 1} without progress ({last_error}); "
        f"the partial file {part} is kept and the next run resumes from it where the server allows"
    )
