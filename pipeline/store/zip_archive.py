"""Zipped stores (``*.zarr.zip``, ``fer-store pack``): members judged by the bytes they really
occupy, and reads whose size or CRC lies end as :class:`~pipeline.errors.StoreError`."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import ZipStore

from pipeline.errors import StoreError
from pipeline.store.metadata import MAX_CHUNK_BYTES

# A member may unpack to this many times the bytes it really occupies in the archive (plus a
# little, for small metadata documents), and all members together to this many times the archive.
ZIP_MEMBER_RATIO, ZIP_MEMBER_SLACK = 100, 64 * 1024
ZIP_TOTAL_RATIO, ZIP_TOTAL_SLACK = 4, 16 * 2**20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name's and the extra field's lengths


def member_data_offset(raw: BinaryIO, member: zipfile.ZipInfo) -> int:
    """Where ``member``'s data begins in the archive open as ``raw``: after its local header,
    whose name and extra field may differ from the central directory's."""
    raw.seek(member.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise StoreError(f"the member {member.filename!r} has no local header where the directory says")
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[1:]
    return int(member.header_offset + _LOCAL_HEADER.size + name_length + extra_length)


def check_zip_members(path: str) -> None:
    """Refuse a zip whose members could not be chunks or metadata of a store, judged from where
    each member's data really lies, not from the sizes the central directory claims: members that
    overlap or claim more compressed bytes than they occupy, a stored member whose sizes differ,
    a member unpacking to more than :data:`ZIP_MEMBER_RATIO` times the bytes it occupies (a zip
    bomb), or all of them to more than :data:`ZIP_TOTAL_RATIO` times the archive. Reading stays
    bounded by the checked sizes: Python's zipfile never unpacks past a member's declared size,
    and a member whose bytes disagree with its sizes or CRC fails as :class:`StoreError`
    (:class:`CheckedZipStore`)."""
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            members = sorted(archive.infolist(), key=lambda member: member.header_offset)
            ends = [member.header_offset for member in members[1:]] + [archive.start_dir]
            total = 0
            for member, end in zip(members, ends):
                try:
                    occupies = end - member_data_offset(raw, member)
                except StoreError as error:
                    raise StoreError(f"{path}: {error}") from None
                _check_zip_member(path, member, occupies)
                total += member.file_size
    except (zipfile.BadZipFile, OSError) as error:
        raise StoreError(f"{path} is not a readable zip file ({error})") from None
    budget = ZIP_TOTAL_RATIO * Path(path).stat().st_size + ZIP_TOTAL_SLACK
    if total > budget:
        raise StoreError(
            f"{path}: its members unpack to {total:,} bytes, more than {ZIP_TOTAL_RATIO} times the archive's "
            f"size; no store's compressed chunks do, so the zip is refused"
        )


def _check_zip_member(path: str, member: zipfile.ZipInfo, occupies: int) -> None:
    """Raise StoreError if ``member``'s claimed sizes cannot be true of the ``occupies`` bytes it
    has in the archive, or if it could not be a store's chunk or metadata."""
    name = member.filename
    if occupies < member.compress_size:
        raise StoreError(
            f"{path}: the member {name!r} claims {member.compress_size:,} compressed bytes but occupies "
            f"{max(occupies, 0):,} (members overlap, or its sizes lie), so the zip is refused"
        )
    if member.compress_type == zipfile.ZIP_STORED:
        if member.file_size != member.compress_size:
            raise StoreError(
                f"{path}: the stored member {name!r} claims {member.file_size:,} bytes unpacked from "
                f"{member.compress_size:,}; a stored member's sizes are equal, so the zip is refused"
            )
    elif member.compress_type != zipfile.ZIP_DEFLATED:
        raise StoreError(
            f"{path}: the member {name!r} uses zip compression method {member.compress_type}; a packed "
            "store's members are stored (fer-store pack) or deflated"
        )
    limit = min(MAX_CHUNK_BYTES + 2**20, ZIP_MEMBER_RATIO * occupies + ZIP_MEMBER_SLACK)
    if member.file_size > limit:
        raise StoreError(
            f"{path}: the member {name!r} unpacks to {member.file_size:,} bytes from the {occupies:,} it "
            "occupies; no store holds such a file, so the zip is refused"
        )


class CheckedZipStore(ZipStore):
    """A read-only :class:`~zarr.storage.ZipStore` of a zip that passed :func:`check_zip_members`,
    whose reads end in :class:`StoreError` where a member's bytes disagree with its sizes or CRC."""

    def _get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        try:
            return super()._get(key, prototype, byte_range)
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise StoreError(
                f"{self.path}: the member {key!r} is damaged or lies about its size ({error}); "
                "get the store again from its source"
            ) from None
