"""The HTTP store against real servers on 127.0.0.1 that misbehave as web servers do: Python's own
``http.server`` (which ignores Range), one that answers 503, one that never answers."""

import contextlib
import functools
import http.server
import shutil
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline.errors import StoreError, StoreNetworkError
from pipeline.store import open_store
from pipeline.store.http_store import HttpStore
from pipeline.store.metadata import read_document
from pipeline.store.recorded_checksums import damaged_store_error
from pipeline.store.shard_format import ShardLayout
from pipeline.store.shard_reader import fetch_whole_files

SHARD = "image/c/0/0/0/0"


@contextlib.contextmanager
def served(handler) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def ignoring_range(directory: Path):
    """Python's file server: it answers every GET with 200 and the whole file."""
    return served(functools.partial(Quiet, directory=str(directory)))


def get(store: HttpStore, key: str, byte_range=None) -> bytes | None:
    buffer = sync(store.get(key, default_buffer_prototype(), byte_range))
    return None if buffer is None else buffer.to_bytes()


def test_a_server_ignoring_range_gives_the_bytes_asked_for_and_a_store_that_opens_and_reads(synthetic_store):
    data = (synthetic_store / SHARD).read_bytes()
    with ignoring_range(synthetic_store) as url:
        store = HttpStore(url)
        assert get(store, SHARD) == data
        assert get(store, SHARD, RangeByteRequest(10, 30)) == data[10:30]
        assert get(store, SHARD, SuffixByteRequest(20)) == data[-20:]  # a shard's index
        assert get(store, "image/c/9/0/0/0") is None  # 404
        group = open_store(url)
        np.testing.assert_array_equal(group["label"][:], open_store(synthetic_store)["label"][:])


def test_oversized_files_over_a_server_ignoring_range_are_refused_holding_little(synthetic_store, tmp_path):
    store_copy = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, store_copy)
    with open(store_copy / "zarr.json", "ab") as document:
        document.write(b" " * (200 << 20))  # 200 MB of metadata
    layout = ShardLayout.of(open_store(synthetic_store)["image"])
    (store_copy / SHARD).write_bytes(bytes(layout.max_file_bytes + (64 << 20)))  # a shard no array writes
    with ignoring_range(store_copy) as url:
        store = HttpStore(url)
        tracemalloc.start()
        try:
            with pytest.raises(StoreError, match="zarr.json is larger than 16,777,216 bytes"):
                read_document(store, "zarr.json", 16 << 20)
            with pytest.raises(StoreError, match=f"{SHARD} is larger than {layout.max_file_bytes:,} bytes"):
                fetch_whole_files(store, [(SHARD, layout.max_file_bytes)])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 40 << 20 < layout.max_file_bytes + (64 << 20)  # the bodies were never held


class BusyTwice(Quiet):
    """Answers 503 (Retry-After: 0) to the first ``failures`` requests, then serves files."""

    failures, seen = 2, 0

    def do_GET(self) -> None:
        type(self).seen += 1
        if type(self).seen <= self.failures:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


class AlwaysBusy(BusyTwice):
    failures, seen = 10**9, 0


def test_a_busy_server_is_asked_again_and_one_that_stays_busy_is_named_a_network_fault(synthetic_store):
    data = (synthetic_store / SHARD).read_bytes()
    with served(functools.partial(BusyTwice, directory=str(synthetic_store))) as url:
        assert get(HttpStore(url), SHARD) == data and BusyTwice.seen == 3
    with served(functools.partial(AlwaysBusy, directory=str(synthetic_store))) as url:
        with pytest.raises(StoreNetworkError, match="answered 503 Service Unavailable 4 times; it is busy or failing"):
            get(HttpStore(url), SHARD)
        assert AlwaysBusy.seen == 4


def test_a_server_that_never_answers_is_a_network_fault_not_damage():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts connections (the kernel does), never answers them
        store = HttpStore(f"http://127.0.0.1:{silent.getsockname()[1]}", read_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(
            StoreNetworkError, match="no answer for 0.5 s after 4 tries; this is the network or the server, not damage"
        ) as raised:
            get(store, "zarr.json")
        assert time.monotonic() - began < 10
    assert damaged_store_error("http://x", raised.value) is raised.value  # readers pass it on as it is
