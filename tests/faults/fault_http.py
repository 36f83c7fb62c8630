"""A faulty HTTP server on 127.0.0.1 for the download fault suite (issue 15).

Each file has a version; ``put`` replaces it (a new ETag and Last-Modified). Faults are set per
server (applied to every response) or queued per request:

* ``drop_after``: send at most this many body bytes per response, then cut the connection;
* ``trickle_bps``: send the body at this many bytes per second (1 KiB pieces);
* ``etag`` / ``last_modified``: whether the server sends those validators (both off = none);
* ``queue[path]``: one-shot faults, one per request: ``"wrong"`` (other bytes, same length),
  ``"norange"`` (ignore Range, send 200 and the whole file), ``"shift"`` (a 206 starting one
  byte early), ``"total"`` (a 206 whose Content-Range announces one byte more than the file),
  ``"swap:<key>"`` (after this reply, serve ``files[key]`` as a new version: the file changed).

``log`` records (path, Range, If-Range, status) of every request.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FaultyServer:
    """What the server serves and how it misbehaves (see the module docstring)."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    version: dict[str, int] = field(default_factory=dict)
    drop_after: int | None = None
    trickle_bps: int | None = None
    etag: bool = True
    last_modified: bool = True
    queue: dict[str, list[str]] = field(default_factory=dict)
    log: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)

    def put(self, path: str, body: bytes) -> None:
        """Serve ``body`` at ``path`` as a new version."""
        self.files[path] = body
        self.version[path] = self.version.get(path, 0) + 1

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def validators(self, path: str) -> tuple[str, str]:
        body = self.files[path]
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        return etag, formatdate(1_700_000_000 + 60 * self.version[path], usegmt=True)


def handler_for(state: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes, cut: int | None) -> None:
            path = self.path.split("?", 1)[0]
            state.log.append((path, self.headers.get("Range"), self.headers.get("If-Range"), status))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            sent = body if cut is None else body[:cut]
            try:
                if state.trickle_bps:
                    for i in range(0, len(sent), 1024):
                        self.wfile.write(sent[i : i + 1024])
                        self.wfile.flush()
                        time.sleep(1024 / state.trickle_bps)
                else:
                    self.wfile.write(sent)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if cut is not None and cut < len(body):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path not in state.files:
                self._reply(404, {"Content-Length": "0"}, b"", None)
                return
            q = state.queue.get(path, [])
            fault = q.pop(0) if q else None
            body = state.files[path]
            etag, modified = state.validators(path)
            headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            if state.etag:
                headers["ETag"] = etag
            if state.last_modified:
                headers["Last-Modified"] = modified
            inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
            if (inm and state.etag and inm == etag) or (not inm and ims and state.last_modified and ims == modified):
                self._reply(304, {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")}, b"", None)
                return
            if fault == "wrong":
                body = bytes((b + 1) % 256 for b in body)
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            validator_ok = if_range is None or if_range in ((etag if state.etag else None), (modified if state.last_modified else None))
            start = int(rng[6:].split("-", 1)[0]) if rng and rng.startswith("bytes=") and fault != "norange" and validator_ok else 0
            if fault == "shift" and start:
                start -= 1
            if start >= len(body) and start:
                self._reply(416, {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"}, b"", None)
                return
            chunk = body[start:]
            if start:
                total = len(body) + (1 if fault == "total" else 0)
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{total}"
            headers["Content-Length"] = str(len(chunk))
            self._reply(206 if start else 200, headers, chunk, state.drop_after)
            if fault and fault.startswith("swap:"):
                state.put(path, state.files[fault[5:]])

    return Handler


class running:
    """Context manager: serve ``state`` on 127.0.0.1 in a thread."""

    def __init__(self, state: FaultyServer) -> None:
        self.state = state
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
        self.server.daemon_threads = True
        state.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="faulty-http", daemon=True)

    def __enter__(self) -> FaultyServer:
        self.thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
