"""The local cluster's workers leave Ctrl-C to the command that started them.

A terminal's Ctrl-C reaches every process of the foreground group, the local cluster's worker
processes included; each would print its own traceback of Dask internals. With this plugin the
workers ignore it, and the command (which shuts the cluster down) alone answers.
"""

from __future__ import annotations

import signal

from distributed import Worker, WorkerPlugin


class IgnoreInterrupts(WorkerPlugin):
    """Set up in each worker process (in its main thread, where the event loop runs): SIGINT is
    ignored from then on."""

    name = "ignore-interrupts"

    def setup(self, worker: Worker) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
