"""``fer-store serve``: a read-only HTTP server for one store directory, with Range requests.

Sharded Zarr stores are read with byte ranges, including suffix ranges (``bytes=-N``, a shard's
index at its end), which Python's own ``http.server`` ignores. This server answers ``GET`` and
``HEAD`` for the store's own files only (:func:`is_store_file`: the nodes' ``zarr.json`` and the
arrays' chunk files; nothing else a folder may hold, no hidden file, no directory listing, no
path outside the root) and never writes. A connection gets :data:`REQUEST_DEADLINE` seconds in
all to send each request's line and headers, however slowly it drips them. It is for quick
sharing on a lab network; for anything lasting, publish the directory on the lab's web server or
a bucket (docs/sharing.md).
"""

from __future__ import annotations

import os
import re
import resource
import socket
import sys
import threading
import time
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# A byte position has at most 19 digits (2**63); longer numbers are refused, not parsed.
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
# Seconds a connection has for each request's line and headers (and an idle keep-alive for its
# next request), in all: the socket timeout alone restarts with every byte a client drips.
REQUEST_DEADLINE = 60.0
# A connection's state: waiting for a request, reading its head, answering it.
IDLE, HEAD, ANSWERING = "idle", "head", "answering"


def is_store_file(root: Path, relative: str) -> bool:
    """Whether ``relative`` (a ``/``-separated path under the store directory ``root``) names one
    of the store's own files: a node's ``zarr.json`` (in the root or in a folder that is itself a
    node), or a chunk file ``<array>/c/<i>/<j>/...`` (decimal indices) of an array whose folder
    holds a ``zarr.json``. Hidden names are never store files."""
    parts = relative.split("/")
    if not parts or any(not part or part.startswith(".") for part in parts):
        return False
    if parts[-1] == "zarr.json":
        return all((root.joinpath(*parts[:depth]) / "zarr.json").is_file() for depth in range(len(parts) - 1))
    if "c" not in parts:
        return False
    at = parts.index("c")
    indices = parts[at + 1 :]
    return (
        at > 0
        and bool(indices)
        and all(index.isdecimal() for index in indices)
        and (root.joinpath(*parts[:at]) / "zarr.json").is_file()
    )


class StoreRequestHandler(BaseHTTPRequestHandler):
    """Serves the files under ``root``; see the module docstring."""

    server_version = "fer-store-serve"
    # Keep-alive: a reader fetches many small ranges (a shard index, then one inner chunk), each
    # over a new connection under HTTP/1.0. Every response carries Content-Length.
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle's algorithm on, the body waited for the
    # client's delayed ACK. With both changes one random sample takes about 7 ms, not 14.5.
    disable_nagle_algorithm = True
    # A connection that sends nothing for this long is closed (an idle keep-alive, a stalled client).
    timeout = 30
    server: StoreServer

    def __init__(self, *args, root: Path, quiet: bool = True, **kwargs):
        self.root, self.quiet = root, quiet
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def refuse(self, status: HTTPStatus, why: str) -> None:
        """Answer a request that cannot be served, and say so on stderr (even when quiet)."""
        sys.stderr.write(f"{self.address_string()} {status.value} {why}: {self.requestline[:200]!r}\n")
        self.send_error(status)

    def parse_request(self) -> bool:
        self.server.mark(self.request, HEAD)
        parsed = super().parse_request()
        self.server.mark(self.request, ANSWERING)
        return parsed

    def _file(self) -> Path | None:
        relative = unquote(urlparse(self.path).path).lstrip("/")
        if "\x00" in relative:
            raise ValueError("a NUL in the path")
        if not is_store_file(self.root, relative):
            return None
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            return None
        return target if target.is_file() else None

    def do_HEAD(self) -> None:
        self._respond_or_refuse(body=False)

    def do_GET(self) -> None:
        self._respond_or_refuse(body=True)

    def _respond_or_refuse(self, body: bool) -> None:
        try:
            self._respond(body)
        except ValueError as error:  # a NUL in the path, a number too long to be a position
            self.refuse(HTTPStatus.BAD_REQUEST, str(error))
        except OSError as error:  # a name too long for the file system, a file gone meanwhile
            if isinstance(error, BrokenPipeError | ConnectionResetError):
                return
            self.refuse(HTTPStatus.NOT_FOUND, error.strerror or str(error))
        finally:
            self.server.mark(self.request, IDLE)

    def _respond(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        start, stop = 0, size  # [start, stop)
        header = self.headers.get("Range")
        status = HTTPStatus.OK
        if header:
            match = _RANGE.match(header.strip())
            if not match or (not match.group(1) and not match.group(2)):
                self.refuse(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "malformed Range")
                return
            first, last = match.groups()
            if not first:  # suffix: the last N bytes
                start = max(0, size - int(last))
            else:
                start = int(first)
                stop = min(size, int(last) + 1) if last else size
            if start >= size or start >= stop:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if path.name == "zarr.json" else "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        if body:
            with path.open("rb") as handle:
                self.connection.sendfile(handle, start, stop - start)  # the kernel copies the bytes


class StoreServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them. At the bound, a new
    connection closes the one that has waited longest for its next request (an idle keep-alive,
    a client that connected and sent nothing, one dripping its request line), so that idle
    sockets cannot lock other clients out; if every connection is busy, the new one gets 503.
    The bound stays under the process's file-descriptor limit, so accepting never fails for
    want of descriptors. A connection idle or in its request's head for more than
    ``request_deadline`` seconds is closed (by a thread that looks every quarter of it, at most
    every second)."""

    # Readers fetch many files at once (every array's metadata on opening, a window of shards
    # while training). socketserver's backlog of 5 drops the connections past it, and each
    # dropped one waits a second for its SYN to be sent again: opening took 1.2 s instead of 0.05 s.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, *args, max_connections: int | None = None, request_deadline: float = REQUEST_DEADLINE, **kwargs):
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max_connections or max(8, min(512, (descriptors - 64) // 2))
        self.request_deadline = request_deadline
        self._connections: dict[socket.socket, tuple[str, float]] = {}  # -> (state, since)
        self._connections_lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(*args, **kwargs)
        threading.Thread(target=self._close_late_connections, name="request-deadline", daemon=True).start()

    def mark(self, request: socket.socket, state: str) -> None:
        with self._connections_lock:
            if request in self._connections:
                self._connections[request] = (state, time.monotonic())

    def _close_late_connections(self) -> None:
        """Close the connections idle, or in a request's head, for longer than the deadline;
        their threads read the end and finish."""
        while not self._closing.wait(min(1.0, self.request_deadline / 4)):
            late = time.monotonic() - self.request_deadline
            with self._connections_lock:
                overdue = [
                    request
                    for request, (state, since) in self._connections.items()
                    if state != ANSWERING and since < late
                ]
            for request in overdue:
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()

    def process_request(self, request, client_address) -> None:
        refused = False
        with self._connections_lock:  # decided under the lock; answered after it is released
            if len(self._connections) >= self.max_connections:
                idle = [(since, other) for other, (state, since) in self._connections.items() if state == IDLE]
                refused = not idle
                if idle:
                    oldest = min(idle, key=lambda entry: entry[0])[1]
                    del self._connections[oldest]
                    try:
                        oldest.shutdown(socket.SHUT_RDWR)  # its thread reads the end and finishes
                    except OSError:
                        pass
            if not refused:
                self._connections[request] = (IDLE, time.monotonic())
        if refused:  # shutdown_request takes the lock: it once deadlocked the server here for good
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)


def make_server(
    store: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    quiet: bool = True,
    request_deadline: float = REQUEST_DEADLINE,
) -> StoreServer:
    """A server for the store directory ``store`` (not started; call ``serve_forever``).
    ``port`` 0 picks a free port (``server.server_address[1]``)."""
    root = Path(store).resolve()
    handler = partial(StoreRequestHandler, root=root, quiet=quiet)
    return StoreServer((host, port), handler, request_deadline=request_deadline)
