"""Turn the project's errors into click errors: a clear message and exit status 1, no traceback."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import click

from pipeline.errors import FerStoreError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report the project's errors, and a file the user cannot write (a read-only store or
    folder, a read-only file system), as a message with exit status 1."""
    try:
        yield
    except FerStoreError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        where = error.filename or "a file"
        raise click.ClickException(
            f"cannot write {where} ({error.strerror}): the store and the folder holding it must be writable by "
            "you, on a writable file system; nothing already written was changed"
        ) from None
