"""``fer-store serve`` answers byte ranges over one kept-alive connection, and nothing outside the store;
a page at the root; a zipped store as the directory it packs."""

import http.client
import socket
import threading
import time
import zipfile

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store import open_store, read_array
from pipeline.tools.pack import pack_store
from pipeline.tools.serve import make_server
from tests.support.servers import store_server

SHARD = "image/c/0/0/0/0"


@pytest.fixture
def connection(synthetic_store):
    with store_server(synthetic_store) as url:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        yield connection
        connection.close()


def get(connection, path: str, byte_range: str | None = None) -> tuple[int, dict, bytes]:
    connection.request("GET", f"/{path}", headers={"Range": byte_range} if byte_range else {})
    response = connection.getresponse()
    body = response.read()
    return response.status, {**dict(response.getheaders()), "kept alive": not response.will_close}, body


def test_ranges_and_suffixes_over_one_connection(connection, synthetic_store):
    data = (synthetic_store / SHARD).read_bytes()
    status, _, body = get(connection, SHARD)
    assert (status, body) == (200, data)
    status, headers, body = get(connection, SHARD, "bytes=10-19")
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{len(data)}")
    status, headers, body = get(connection, SHARD, "bytes=-20")  # a shard's index is read this way
    assert (status, body) == (206, data[-20:])
    assert headers["kept alive"]  # a reader's many small ranges reuse one connection (HTTP/1.1)


@pytest.mark.parametrize("path", ["../beside.txt", "%2e%2e/beside.txt", "image", "image/c/9/0/0/0"])
def test_nothing_but_the_store_files(connection, synthetic_store, path):
    beside = synthetic_store.parent / "beside.txt"  # a readable file next to the store
    beside.write_text("not part of the store")
    try:
        assert get(connection, path)[0] == 404
    finally:
        beside.unlink()


@pytest.mark.parametrize(
    "path", ["notes.txt", ".git/config", "image/extra.bin", "image/c/0/0/0/x", "c/0", "image/.zarr.json"]
)
def test_files_in_the_store_folder_that_are_not_the_stores_own_are_not_served(connection, synthetic_store, path):
    stray = synthetic_store / path  # what a lab may leave in the folder: notes, a repository, a copy
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("not part of the store")
    try:
        assert get(connection, path)[0] == 404
        assert get(connection, "image/zarr.json")[0] == get(connection, SHARD)[0] == 200
    finally:
        stray.unlink()
        if path == ".git/config":
            stray.parent.rmdir()


def test_a_client_dripping_its_headers_is_closed_at_the_request_deadline(synthetic_store):
    server = make_server(synthetic_store, port=0, request_deadline=1.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as dripping:
            dripping.sendall(b"GET /zarr.json HTTP/1.1\r\n")
            began, closed = time.monotonic(), False
            while time.monotonic() - began < 8 and not closed:
                try:
                    dripping.sendall(b"X")  # each byte restarts a socket timeout, never the deadline
                    time.sleep(0.25)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                else:
                    dripping.setblocking(False)
                    try:
                        closed = dripping.recv(1) == b""
                    except BlockingIOError:
                        pass
                    dripping.setblocking(True)
            assert closed and time.monotonic() - began < 4
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert get(fresh, "zarr.json")[0] == 200  # the server goes on
        fresh.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_range_past_the_end_is_refused(connection, synthetic_store):
    size = (synthetic_store / SHARD).stat().st_size
    status, headers, _ = get(connection, SHARD, f"bytes={size}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")


def test_a_browser_at_the_root_gets_a_page_describing_the_store_and_how_to_open_it(connection):
    connection.request("GET", "/", headers={"Host": "lab-server:8000"})
    response = connection.getresponse()
    page = response.read().decode()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert "<h1>synthetic.zarr</h1>" in page and "samples 48" in page  # describe_store's counts
    assert "fer-store info http://lab-server:8000/" in page and "fer-train --store http://lab-server:8000/" in page


def test_a_zipped_store_is_served_as_the_directory_it_packs(synthetic_store, tmp_path):
    packed = tmp_path / "synthetic.zarr.zip"
    pack_store(synthetic_store, packed)
    files = [p.relative_to(synthetic_store).as_posix() for p in sorted(synthetic_store.rglob("*")) if p.is_file()]
    with store_server(packed) as url:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        for relative in files:
            assert get(connection, relative)[2] == (synthetic_store / relative).read_bytes(), relative
        data = (synthetic_store / SHARD).read_bytes()
        assert get(connection, SHARD, "bytes=-20")[2] == data[-20:]
        assert get(connection, "notes.txt")[0] == 404
        connection.close()
        remote = read_array(open_store(url + "/"), "image")
    np.testing.assert_array_equal(remote, read_array(open_store(synthetic_store), "image"))


def test_a_zip_that_compresses_its_members_is_refused_saying_how_to_serve_it(synthetic_store, tmp_path):
    squeezed = tmp_path / "squeezed.zarr.zip"
    with zipfile.ZipFile(squeezed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(synthetic_store.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(synthetic_store).as_posix())
    with pytest.raises(StoreError, match="is compressed; serve reads stored members"):
        make_server(squeezed, port=0)
