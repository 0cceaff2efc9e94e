"""Turn the project's errors into click errors: a clear message and exit status 1, no traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from pipeline.errors import FerStoreError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except FerStoreError as error:
        raise click.ClickException(str(error)) from None
