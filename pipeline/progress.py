"""How library code tells a person what it is doing, without knowing where they are.

Library functions take a :class:`Progress` and call :meth:`~Progress.line` for a line of news and
:meth:`~Progress.bar` around counted work. This base reports nothing (the default, and what tests
pass); :class:`Lines` sends lines to any callable; the command line passes
:class:`cli.progress.ConsoleProgress` (click's echo and progress bars).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Progress:
    """Reports nothing."""

    def line(self, text: str) -> None:
        """One line of news (a run starting, resuming, an epoch's figures)."""

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """Around work of ``total`` units; yields ``advance(units)`` to call as units finish."""
        yield lambda units: None


class Lines(Progress):
    """Lines to ``write`` (``print``, ``list.append``, a logger's method); no bars."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write

    def line(self, text: str) -> None:
        self.write(text)


QUIET = Progress()
