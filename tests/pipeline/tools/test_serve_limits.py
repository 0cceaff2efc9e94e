"""`fer-store serve` under idle sockets and malformed requests: a real server process, real sockets."""

import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FER_STORE = Path(sys.executable).parent / "fer-store"


@pytest.fixture
def served(synthetic_store):
    """``fer-store serve`` of the synthetic store in a process limited to 1,024 file descriptors;
    yields its port."""

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    server = subprocess.Popen(
        [FER_STORE, "serve", synthetic_store, "--port", "0"], stderr=subprocess.PIPE, text=True, preexec_fn=limited
    )
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", server.stderr.readline()).group(1))
    yield port, server
    server.kill()
    server.wait()


def ask(port: int, request: bytes, timeout: float = 1.0) -> str:
    """Send one raw request; the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        return connection.makefile("rb").readline().decode("latin-1").strip()


def test_idle_sockets_past_the_descriptor_limit_do_not_lock_other_clients_out(served):
    port, server = served
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"this test opens 1,100 sockets; the descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    idle = []
    try:
        for _ in range(1100):  # connect and send nothing, as a slow or hostile client does
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        began = time.monotonic()
        status = ask(port, b"GET /zarr.json HTTP/1.1\r\nHost: x\r\n\r\n")
        waited = time.monotonic() - began
        assert status == "HTTP/1.1 200 OK" and waited < 1.0, (status, waited)
        assert server.poll() is None
    finally:
        for connection in idle:
            connection.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /zarr.json%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /zarr.json HTTP/1.1\r\nHost: x\r\nRange: bytes=" + b"9" * 5000 + b"-\r\n\r\n", 416),
        (b"GET /zarr.json HTTP/1.1\r\nHost: x\r\nRange: bytes=-" + b"9" * 5000 + b"\r\n\r\n", 416),
        (b"GET /zarr.json HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"POST /zarr.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 501),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ],
    ids=[
        "NUL in the path",
        "5,000-character name",
        "5,000-digit start",
        "5,000-digit suffix",
        "101 headers",
        "POST",
        "escape",
    ],
)
def test_a_malformed_request_gets_a_4xx_and_the_server_goes_on(served, request_bytes, status):
    port, server = served
    assert ask(port, request_bytes).split(" ")[1] == str(status)
    assert ask(port, b"GET /zarr.json HTTP/1.1\r\nHost: x\r\n\r\n") == "HTTP/1.1 200 OK"
    assert server.poll() is None


def test_a_503_when_every_connection_is_busy_leaves_the_server_answering(synthetic_store):
    """A server limited to 80 descriptors takes 8 connections; 8 clients stuck in their headers
    hold them all, so the next is answered 503. That 503 used to deadlock the server for good."""

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (80, 80))

    server = subprocess.Popen(
        [FER_STORE, "serve", synthetic_store, "--port", "0"], stderr=subprocess.PIPE, text=True, preexec_fn=limited
    )
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", server.stderr.readline()).group(1))
        busy = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
        for connection in busy:  # a request line, then no headers: its handler waits, busy
            connection.sendall(b"GET /zarr.json HTTP/1.1\r\n")
        time.sleep(0.5)
        for _ in range(2):
            assert (
                ask(port, b"GET /zarr.json HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
                == "HTTP/1.1 503 Service Unavailable"
            )
        for connection in busy:
            connection.close()
        time.sleep(0.5)
        assert ask(port, b"GET /zarr.json HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5) == "HTTP/1.1 200 OK"
    finally:
        server.kill()
        server.wait()
