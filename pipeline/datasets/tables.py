"""Reading the label files datasets ship (CSV and whitespace tables), with errors that name the
file, the line and the column of what is wrong."""

from __future__ import annotations

import _csv
import csv
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pipeline.errors import DatasetError

T = TypeVar("T")


def require_file(path: Path, what: str) -> Path:
    """Check a dataset file exists; the message says which file the layout expects."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: {what}")
    return path


def malformed(path: Path, line: int, problem: str, column: str | None = None) -> DatasetError:
    where = f"{path}, line {line}" + (f", column {column!r}" if column else "")
    return DatasetError(f"{where}: {problem}")


def parse_field(path: Path, line: int, column: str, text: str, parse: Callable[[str], T], expected: str) -> T:
    """``parse(text)``, or a :class:`DatasetError` naming the file, line and column."""
    try:
        return parse(text)
    except (ValueError, TypeError):
        raise malformed(path, line, f"expected {expected}, got {text!r}", column) from None


def csv_rows(
    path: Path, header: tuple[str, ...], *, header_optional: bool = False, check_columns: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every data row of a CSV file, after checking its header.

    Args:
        path: the CSV file.
        header: the expected column names, in order (compared after stripping spaces).
        header_optional: accept a file whose first line is already data (AffectNet's
            ``validation.csv`` ships without a header in some releases); a first line naming any
            of the columns is still taken as a header and checked.
        check_columns: refuse a row with the wrong number of columns; False yields it for the
            caller to record.

    Raises:
        DatasetError: wrong header, or (with ``check_columns``) a row with the wrong number of
            columns (file, line).
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = _checked(csv.reader(handle), path)
        first = next(reader, None)
        if first is None:
            raise malformed(path, 1, f"the file is empty; expected the header {','.join(header)}")
        pending: list[tuple[int, list[str]]] = []
        cells = [cell.strip() for cell in first]
        if cells != list(header):
            names = {name.lower() for name in header}
            looks_like_header = any(cell.lower() in names for cell in cells)
            if looks_like_header or not (header_optional and len(first) == len(header)):
                raise malformed(path, 1, f"expected the header {','.join(header)}, got {','.join(first)}")
            pending.append((1, first))
        for number, row in itertools.chain(pending, ((reader.line_num, row) for row in reader)):
            if not row:
                continue
            if check_columns and len(row) != len(header):
                raise malformed(path, number, f"expected {len(header)} columns ({','.join(header)}), got {len(row)}")
            yield number, row


class _checked:
    """A csv reader whose failures name the file and line: a field over the csv module's limit
    (128 KiB), or bytes that are not UTF-8."""

    def __init__(self, reader: _csv.Reader, path: Path) -> None:
        self.reader, self.path = reader, path

    @property
    def line_num(self) -> int:
        return self.reader.line_num

    def __iter__(self) -> _checked:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self.reader)
        except csv.Error as error:
            raise malformed(self.path, self.reader.line_num, f"{error}; is a quote left open?") from None
        except UnicodeDecodeError:
            raise not_utf8(self.path) from None


def not_utf8(path: Path) -> DatasetError:
    """The error for a text file that is not UTF-8, naming the line of its first bad byte."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        return malformed(path, line, f"byte {raw[error.start]:#04x} is not UTF-8 text; save the file as UTF-8")
    return DatasetError(f"{path} is not UTF-8 text; save it as UTF-8")
