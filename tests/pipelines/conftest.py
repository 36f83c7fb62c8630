"""Helpers for the pipelines tests: a loopback HTTP server with faulty modes and small clips."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipelines.atomic import atomic_path
from pipelines.encode import Mp4Writer


def make_clip(path: Path, seconds: float = 3.0, size: int = 64, fps: int = 10,
              audio_rate: int | None = 16000, tone_hz: float = 440.0) -> Path:
    """Encode a small real h264 (+ AAC) clip whose frame i has brightness 2*i (mod 256)."""
    n = int(round(seconds * fps))
    with atomic_path(path) as tmp:
        with Mp4Writer(tmp, size, size, fps, audio_rate=audio_rate) as w:
            for i in range(n):
                w.write_frame(np.full((size, size, 3), (2 * i) % 256, dtype=np.uint8))
            if audio_rate:
                t = np.arange(int(seconds * audio_rate)) / audio_rate
                w.write_audio((0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def clip_maker():
    """The :func:`make_clip` function (fixtures are how test modules share helpers here)."""
    return make_clip


@dataclass
class LoopbackServer:
    """Files served on 127.0.0.1 with optional faults.

    ``files`` maps a URL path ("/a.zip") to bytes. ``faults`` maps a URL path to a list of
    faults consumed one per request: ``"drop"`` (send half the body, then close the
    connection), ``"wrong"`` (send other bytes of the same length), ``"norange"`` (ignore Range).
    ``requests`` records (path, Range header) of every request.
    """

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(state: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _serve(self, head_only: bool) -> None:
            path = self.path.split("?", 1)[0]
            rng = self.headers.get("Range")
            state.requests.append((path, rng))
            body = state.files.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            queue = state.faults.get(path, [])
            fault = queue.pop(0) if queue and not head_only else None
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'  # a strong validator; If-Range honoured below
            if fault == "wrong":
                body = bytes((b + 1) % 256 for b in body)
            start = 0
            if rng and fault != "norange" and rng.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
                start = int(rng[6:].split("-", 1)[0])
            if start >= len(body) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            chunk = body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Content-Type", "video/mp4" if path.endswith(".mp4") else "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if head_only:
                return
            if fault == "drop":
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(chunk)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head_only=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head_only=True)

    return Handler


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A threaded HTTP server on 127.0.0.1 (random port) for the duration of one test."""
    state = LoopbackServer(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="loopback-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
