"""The start-up check of a user's saliency network, in a child process bounded in time and memory.

A network is run once on a face before any work (:class:`~pipeline.compute.model_files.SaliencyNetwork`
checks its contract). ONNX Runtime runs a graph to its end without looking up: a ``Loop`` that
never ends would hang the check for ever (Ctrl-C included: the signal waits for the run), and an
operator that allocates without bound would take the machine's memory. So the check runs in a
child process with :data:`PROBE_SECONDS` and :data:`PROBE_MEMORY_BYTES` (its address space); past
either, the child is stopped and the network refused, naming the limit. Ctrl-C in the command
reaches the child too (the same process group) and stops both at once.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.errors import ModelFileError

PROBE_SECONDS = 120
PROBE_MEMORY_BYTES = 8 << 30
_REFUSED = 3  # the child's exit status when the network breaks its contract


def check_saliency_network(
    path: str | Path, face: np.ndarray, seconds: float = PROBE_SECONDS, memory_bytes: int = PROBE_MEMORY_BYTES
) -> None:
    """Run the network at ``path`` once on ``face`` (``(S, S) uint8`` or ``(S, S, 3) uint8``) in
    a child process, within ``seconds`` and ``memory_bytes`` of address space.

    Raises:
        ModelFileError: the network breaks its contract, fails, runs past ``seconds`` or needs
            more than ``memory_bytes``.
    """
    face_file = io.BytesIO()
    np.save(face_file, face, allow_pickle=False)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    command = [sys.executable, "-m", "pipeline.compute.network_probe", str(path)]
    try:
        child = subprocess.run(
            command, input=face_file.getvalue(), capture_output=True, timeout=seconds, preexec_fn=limited
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"the saliency network {path} did not finish one face in {seconds:g} s (a Loop that never ends?); "
            "it is refused: export a network that runs in bounded time"
        ) from None
    lines = [line.strip() for line in child.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if child.returncode == _REFUSED:  # its last line is the refusal; ONNX Runtime's own log comes before
        raise ModelFileError(lines[-1])
    message = " ".join(lines)
    if child.returncode != 0:
        raise ModelFileError(
            f"the saliency network {path} failed on one face within {memory_bytes / 2**30:g} GiB of memory "
            f"(exit status {child.returncode}): {message[-500:] or 'no message'}"
        )


def main() -> None:
    """The child: the network's path as the argument, the face as ``.npy`` on stdin."""
    from pipeline.compute.model_files import SaliencyNetwork

    face = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)
    try:
        SaliencyNetwork(sys.argv[1], face)
    except ModelFileError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(_REFUSED) from None


if __name__ == "__main__":
    main()
