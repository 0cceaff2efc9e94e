"""File and folder names that are not UTF-8.

POSIX names are bytes; Python carries bytes that are not UTF-8 as lone surrogates
(``surrogateescape``), which open() accepts but UTF-8 (a Zarr string, JSON) cannot hold. Reading
keeps the name as Python has it; what a store records shows those bytes escaped, ``\\xff``.
"""

from __future__ import annotations


def shown(name: str) -> str:
    """``name`` with each byte that is not UTF-8 written as ``\\xNN``; any other name unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
