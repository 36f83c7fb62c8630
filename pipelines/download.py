"""Streaming HTTP downloads with resume, retries, checksum verification and atomic placement.

Bytes stream into ``<dest>.part``. After an interruption the next attempt asks for the rest
with ``Range: bytes=<have>-`` (a 206 reply appends; a 200 reply means the server ignores ranges,
so the part file is restarted). Attempts back off exponentially. When the file is complete its
sha256 is checked (if given) and the part file is fsynced and renamed onto ``dest``; on a
mismatch the part file is deleted and :class:`ChecksumError` raised, so no partial or wrong
file is ever left where the good one would be.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import requests

from pipelines.atomic import fsync_dir
from pipelines.runtime import file_sha256

__all__ = ["download", "DownloadError", "ChecksumError"]

log = logging.getLogger(__name__)

_RETRYABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    requests.exceptions.ContentDecodingError,
)


class DownloadError(RuntimeError):
    """A download that did not complete (after all retries, or on a non-retryable HTTP error)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


def _total_from_headers(resp: requests.Response, offset: int) -> int | None:
    """Expected full size: from Content-Range on 206, Content-Length otherwise."""
    if resp.status_code == 206:
        cr = resp.headers.get("Content-Range", "")
        if "/" in cr and cr.rsplit("/", 1)[1].strip().isdigit():
            return int(cr.rsplit("/", 1)[1])
        cl = resp.headers.get("Content-Length")
        return offset + int(cl) if cl and cl.isdigit() else None
    cl = resp.headers.get("Content-Length")
    return int(cl) if cl and cl.isdigit() else None


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 30.0,
    chunk_bytes: int = 1 << 20,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Args:
        url: http(s) URL.
        dest: final path; the file appears there only when complete (and verified).
        sha256: expected hex digest, or None to skip verification.
        retries: extra attempts after a connection error, timeout, truncated body or 5xx reply.
        backoff_s: first wait between attempts; doubles each attempt.
        timeout_s: connect/read timeout of one request in seconds.
        chunk_bytes: streaming block size.
        session: a requests session to reuse (one is made otherwise).

    Raises:
        ChecksumError: the complete body does not match ``sha256`` (nothing is left at dest or dest.part).
        DownloadError: the download failed after all attempts, or the server answered 4xx.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        if expected is None or file_sha256(dest) == expected:
            log.info("%s already present; not downloading %s", dest, url)
            return dest
        log.warning("%s exists but its sha256 differs from the expected one; downloading again", dest)
    part = dest.with_name(dest.name + ".part")
    sess = session or requests.Session()
    last_error: Exception | None = None
    try:
        for attempt in range(retries + 1):
            if attempt:
                wait = backoff_s * (2 ** (attempt - 1))
                log.info("retrying %s in %.2f s (attempt %d/%d): %s", url, wait, attempt + 1, retries + 1, last_error)
                time.sleep(wait)
            offset = part.stat().st_size if part.is_file() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with sess.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
                    if resp.status_code == 416 and offset:
                        # the part file is already complete (or bigger than the file): check it below
                        total = offset
                    else:
                        if resp.status_code >= 500 or resp.status_code in (408, 429):
                            last_error = DownloadError(f"{url}: HTTP {resp.status_code}")
                            continue
                        if resp.status_code >= 400:
                            raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}; check the URL")
                        mode = "ab"
                        if offset and resp.status_code == 200:
                            log.info("%s ignores Range; restarting the download from byte 0", url)
                            offset, mode = 0, "wb"
                        elif resp.status_code == 206:
                            cr = resp.headers.get("Content-Range", "")
                            if not cr.startswith(f"bytes {offset}-"):
                                log.warning("%s answered Range %d- with %r; restarting", url, offset, cr)
                                part.unlink(missing_ok=True)
                                last_error = DownloadError(f"{url}: unexpected Content-Range {cr!r}")
                                continue
                        elif not offset:
                            mode = "wb"
                        total = _total_from_headers(resp, offset)
                        with open(part, mode) as fh:
                            for chunk in resp.iter_content(chunk_size=chunk_bytes):
                                fh.write(chunk)
                            fh.flush()
                            os.fsync(fh.fileno())
                have = part.stat().st_size
                if total is not None and have < total:
                    last_error = DownloadError(f"{url}: got {have} of {total} bytes")
                    continue
            except _RETRYABLE as exc:
                last_error = exc
                continue
            # complete: verify, then place atomically
            if expected is not None:
                got = file_sha256(part)
                if got != expected:
                    part.unlink(missing_ok=True)
                    raise ChecksumError(
                        f"{url}: sha256 of the downloaded file is {got}, expected {expected}; "
                        f"nothing was written to {dest}. The server sent different bytes: check the URL and the checksum, then retry"
                    )
            os.replace(part, dest)
            fsync_dir(dest.parent)
            log.info("downloaded %s -> %s (%d bytes)", url, dest, dest.stat().st_size)
            return dest
    finally:
        if session is None:
            sess.close()
    raise DownloadError(
        f"{url}: download failed after {retries + 1} attempts ({last_error}); the partial file {part} is kept "
        f"and the next run resumes from it"
    )
