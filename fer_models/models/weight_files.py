"""Weight files are checked before torch inflates them.

``torch.save`` writes a zip archive whose members (the pickled structure and one file per tensor)
are stored uncompressed, so what it loads is about the size of the file. A member that is
compressed can inflate to many times that, and torch allocates the whole of it before any of its
own checks: a 2 MB file can cost gigabytes. :func:`check_inflation` reads only the archive's
directory and refuses such a file first.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from pipeline.errors import ConfigError

# What a file may hold, uncompressed, beyond itself: torch writes nothing compressed, so a file
# written by torch.save (or re-zipped with compression, which float tensors resist) stays far
# below this.
INFLATION_FACTOR = 4
INFLATION_SLACK = 64 << 20


def check_inflation(path: str | Path, what: str) -> None:
    """Refuse a zip weight file whose members would inflate beyond :data:`INFLATION_FACTOR`
    times its size (plus :data:`INFLATION_SLACK`), before anything is decompressed; a file that is
    not a zip archive (torch's legacy format, safetensors) is left to its reader.

    Args:
        path: the file.
        what: how the message names it (``"--init weights.pt"``).

    Raises:
        ConfigError: the members' declared sizes exceed the bound, naming the largest.
    """
    if not zipfile.is_zipfile(path):
        return
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    inflated = sum(member.file_size for member in members)
    if inflated > INFLATION_FACTOR * size + INFLATION_SLACK:
        largest = max(members, key=lambda member: member.file_size)
        raise ConfigError(
            f"{what}: its members inflate to {inflated / 1e6:,.0f} MB from a file of {size / 1e6:,.1f} MB "
            f"({largest.filename}: {largest.file_size / 1e6:,.0f} MB); torch.save stores tensors uncompressed, "
            "so this is not a weight file it wrote: refused before reading it"
        )
