"""``fer-store serve``: a read-only HTTP server for one store (a directory or a ``.zarr.zip``), with
Range requests.

Sharded Zarr stores are read with byte ranges, including suffix ranges (``bytes=-N``, a shard's
index at its end), which Python's own ``http.server`` ignores. This server answers ``GET`` and
``HEAD`` for the store's own files only (:func:`is_store_file`: the nodes' ``zarr.json`` and the
arrays' chunk files; nothing else a folder may hold, no hidden file, no directory listing, no
path outside the root) and never writes. A zipped store (``fer-store pack``) is served as the
directory it packs: each member's bytes are sent from where they lie in the archive, so a reader
sees the same URLs either way. ``/`` answers a browser with a page describing the store (its
counts, arrays and provenance, and how to open it). A connection gets :data:`REQUEST_DEADLINE` seconds in
all to send each request's line and headers, however slowly it drips them. It is for quick
sharing on a lab network; for anything lasting, publish the directory on the lab's web server or
a bucket (docs/sharing.md).
"""

from __future__ import annotations

import functools
import html
import os
import re
import resource
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# A byte position has at most 19 digits (2**63); longer numbers are refused, not parsed.
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
# Seconds a connection has for each request's line and headers (and an idle keep-alive for its
# next request), in all: the socket timeout alone restarts with every byte a client drips.
REQUEST_DEADLINE = 60.0
# A connection's state: waiting for a request, reading its head, answering it.
IDLE, HEAD, ANSWERING = "idle", "head", "answering"


def is_store_file(has_file: Callable[[str], bool], relative: str) -> bool:
    """Whether ``relative`` (a ``/``-separated path in the store) names one of the store's own
    files: a node's ``zarr.json`` (in the root or in a folder that is itself a node), or a chunk
    file ``<array>/c/<i>/<j>/...`` (decimal indices) of an array whose folder holds a
    ``zarr.json``. Hidden names are never store files. ``has_file(path)`` says whether the store
    holds a file at a ``/``-separated path."""
    parts = relative.split("/")
    if not parts or any(not part or part.startswith(".") for part in parts):
        return False
    if parts[-1] == "zarr.json":
        return all(has_file("/".join([*parts[:depth], "zarr.json"])) for depth in range(len(parts) - 1))
    if "c" not in parts:
        return False
    at = parts.index("c")
    indices = parts[at + 1 :]
    return (
        at > 0
        and bool(indices)
        and all(index.isdecimal() for index in indices)
        and has_file("/".join([*parts[:at], "zarr.json"]))
    )


@dataclass(frozen=True)
class Located:
    """Where a store file's bytes lie: ``size`` bytes of ``path`` from ``offset``."""

    path: Path
    offset: int
    size: int


class DirectoryFiles:
    """The files of a store directory."""

    def __init__(self, root: Path):
        self.root = root

    def has_file(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def locate(self, relative: str) -> Located | None:
        """The store file at ``relative`` (a store file by :func:`is_store_file`), else None."""
        if not is_store_file(self.has_file, relative):
            return None
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            return None
        return Located(target, 0, target.stat().st_size) if target.is_file() else None


class ZipFiles:
    """The files of a zipped store, each a stored (uncompressed) member served from its bytes in
    the archive (``fer-store pack`` writes them so).

    Raises:
        StoreError: a zip that is not a store's (:func:`~pipeline.store.zip_archive.check_zip_members`),
            or that compresses its members.
    """

    def __init__(self, archive: Path):
        from pipeline.errors import StoreError
        from pipeline.store.zip_archive import check_zip_members, member_data_offset

        check_zip_members(str(archive))
        self.archive, self.members = archive, {}
        with zipfile.ZipFile(archive) as opened, archive.open("rb") as raw:
            for member in opened.infolist():
                if member.is_dir():
                    continue
                if member.compress_type != zipfile.ZIP_STORED:
                    raise StoreError(
                        f"{archive}: {member.filename!r} is compressed; serve reads stored members, as "
                        "`fer-store pack` writes them (or serve the unpacked directory)"
                    )
                self.members[member.filename] = (member_data_offset(raw, member), member.file_size)

    def has_file(self, relative: str) -> bool:
        return relative in self.members

    def locate(self, relative: str) -> Located | None:
        if not is_store_file(self.has_file, relative):
            return None
        offset, size = self.members[relative]
        return Located(self.archive, offset, size)


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

    def __init__(
        self,
        *args: Any,
        files: DirectoryFiles | ZipFiles,
        describe: Callable[[], str],
        quiet: bool = True,
        **kwargs: Any,
    ) -> None:
        self.files, self.describe, self.quiet = files, describe, quiet
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
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

    def _relative(self) -> str:
        relative = unquote(urlparse(self.path).path).lstrip("/")
        if "\x00" in relative:
            raise ValueError("a NUL in the path")
        return relative

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
        relative = self._relative()
        if relative in ("", "index.html"):
            self._send_page(body)
            return
        located = self.files.locate(relative)
        if located is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = located.size
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
        json_file = relative.rsplit("/", 1)[-1] == "zarr.json"
        self.send_header("Content-Type", "application/json" if json_file else "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        if body:
            with located.path.open("rb") as handle:  # the kernel copies the bytes
                self.connection.sendfile(handle, located.offset + start, stop - start)

    def _send_page(self, body: bool) -> None:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        page = index_page(self.describe(), f"http://{host}/")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)


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

    def __init__(
        self,
        *args: Any,
        max_connections: int | None = None,
        request_deadline: float = REQUEST_DEADLINE,
        **kwargs: Any,
    ) -> None:
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

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        request = _tcp_socket(request)
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

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._connections_lock:
            self._connections.pop(_tcp_socket(request), None)
        super().shutdown_request(request)


def _tcp_socket(request: socket.socket | tuple[bytes, socket.socket]) -> socket.socket:
    """The connection of a request (socketserver's type also covers UDP's (data, socket))."""
    return request if isinstance(request, socket.socket) else request[1]


def make_server(
    store: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    quiet: bool = True,
    request_deadline: float = REQUEST_DEADLINE,
) -> StoreServer:
    """A server for the store ``store``, a directory or a ``.zarr.zip`` (not started; call
    ``serve_forever``). ``port`` 0 picks a free port (``server.server_address[1]``).

    Raises:
        StoreError: a zip that cannot be served (see :class:`ZipFiles`), or a store that cannot be read.
    """
    root = Path(store).resolve()
    files = ZipFiles(root) if root.is_file() else DirectoryFiles(root)
    handler = partial(StoreRequestHandler, files=files, describe=functools.cache(partial(describe, root)), quiet=quiet)
    return StoreServer((host, port), handler, request_deadline=request_deadline)


def describe(store: Path) -> str:
    """The store described for the root page, or why it cannot be (the files are served anyway:
    each reader judges the store itself)."""
    from pipeline.errors import StoreError
    from pipeline.tools.describe import describe_store

    try:
        return describe_store(str(store))
    except StoreError as error:
        return f"store     {store}\n\nthis store cannot be described: {error}"


def index_page(description: str, address: str) -> bytes:
    """The page ``/`` answers with: the commands that open the store at ``address``, and its
    ``description`` (:func:`~pipeline.tools.describe.describe_store`: counts, arrays, provenance)."""
    name = description.splitlines()[0].removeprefix("store").strip().rsplit("/", 1)[-1]
    commands = "\n".join(
        (
            f"fer-store info {address}",
            f"fer-store verify {address}",
            f"fer-train --store {address} --model cnn --out runs/cnn",
            f"python -c \"from pipeline.store import open_store; print(open_store('{address}'))\"",
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(name)}: a FER guidance store</title></head><body>"
        f"<h1>{html.escape(name)}</h1><p>A FER guidance store, served read-only by <code>fer-store serve</code>. "
        f"Open it with:</p><pre>{html.escape(commands)}</pre>"
        f"<h2>What it holds</h2><pre>{html.escape(description)}</pre></body></html>"
    ).encode()
