"""docs/own-loop.md's examples run as written, on a small store with the arrays they read."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parents[3] / "docs" / "own-loop.md"
ROOT = Path(__file__).parents[3]


def examples() -> dict[str, str]:
    """``{name: code}`` of the doc's python blocks marked ``# example: NAME``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    return {re.match(r"# example: (\S+)", block).group(1): block for block in blocks if block.startswith("# example:")}


def run_example(name: str, store: Path, tmp_path: Path, launcher: list[str]) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(examples()[name])
    env = {**os.environ, "STORE": str(store), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([*launcher, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_doc_has_the_three_examples():
    assert set(examples()) == {"streaming", "map-style", "ddp"}


def test_the_streaming_example_trains_two_epochs_through_loader_workers(synthetic_store, tmp_path):
    output = run_example("streaming", synthetic_store, tmp_path, [sys.executable])
    assert re.findall(r"^epoch (\d): loss \d+\.\d{3}$", output, re.MULTILINE) == ["0", "1"]


def test_the_map_style_example_indexes_the_selection_in_memory(fer_store, tmp_path):
    output = run_example("map-style", fer_store, tmp_path, [sys.executable])
    image, landmarks, name = re.match(r"\((.*?)\) \((.*?)\) (\w+)", output).groups()
    assert image == "42, 1, 48, 48" and landmarks == "42, 68, 2"  # the 42 training faces, one batch
    assert name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@pytest.mark.slow
def test_the_ddp_example_shares_every_sample_once_among_two_ranks(synthetic_store, tmp_path):
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    output = run_example("ddp", synthetic_store, tmp_path, torchrun)
    ranks, seen, total = map(int, re.search(r"(\d+) ranks saw (\d+) of (\d+) samples", output).groups())
    assert ranks == 2 and seen == total > 0
