"""Progress on the terminal: lines through click, counted work as click progress bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from pipeline.progress import Progress


class ConsoleProgress(Progress):
    """Lines to stdout (``err=False``) or stderr; bars on stderr when ``bars``."""

    def __init__(self, bars: bool = True, err: bool = True):
        self.bars, self.err = bars, err

    def line(self, text: str) -> None:
        click.echo(text, err=self.err)

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.bars:
            yield lambda units: None
            return
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update
