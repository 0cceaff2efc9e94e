"""Reads checked against the checksums a store recorded when it wrote them.

Zarr's crc32c finds a damaged chunk, but not a chunk file that is missing (it reads as the fill
value, and a server's 404 or a bucket's missing key looks the same), moved to another shard's
place, or replaced by one with a valid crc32c. Every writer records, per sample and per array, the
CRC-32 of the values it wrote (:mod:`pipeline.store.checksums`). :class:`RecordedChecksums` holds
those of a complete store's arrays and checks what a reader decoded against them, so training,
evaluation and the viewer use only values the store vouches for: what was written at that place.

Position is vouched for by the per-sample record itself, which lies at the samples' place in the
``checksum`` array: a shard file moved to another place holds values whose checksums are those
recorded at its old place. A whole shard is checked with one CRC over its decoded buffer against
the checksum of its samples taken together (:func:`~pipeline.store.checksums.concatenated_checksum`,
worked out once per array), so the check costs one pass of ISA-L's CRC-32 over the bytes; single
samples and strings are checked one by one.
"""

from __future__ import annotations

import numpy as np
import zarr
from isal import isal_zlib

from pipeline.errors import StoreError, StoreNetworkError
from pipeline.store.access import array_in, channel_names, provenance_of, read_array
from pipeline.store.checksums import CRC_START, concatenated_checksum, sample_checksums
from pipeline.store.schema import CHECKSUM
from pipeline.store.shard_format import ChunkDamagedError, ChunkLocation, samples_per_shard

_DAMAGE = "the chunk file was deleted, replaced or moved after it was written"


class RecordedChecksums:
    """The checksums a store recorded for some of its arrays, and checks of reads against them.

    Args:
        recorded: ``{array: (N,) uint32}``, the per-sample checksums of each array vouched for.
        shard_len: samples per shard (every array of a store has the same).
        ndim: ``{array: its number of dimensions}`` (for the shard file names in messages).

    An array without a record (a store, or a guidance type, older than the records) is read
    unchecked: :func:`unvouched_note` says which.
    """

    def __init__(self, recorded: dict[str, np.ndarray], shard_len: int, ndim: dict[str, int]):
        self.recorded, self.shard_len, self.ndim = recorded, shard_len, ndim
        self._digests: dict[tuple[str, int], np.ndarray] = {}  # (array, block length) -> per block

    @classmethod
    def of(cls, group: zarr.Group, names: tuple[str, ...] | list[str]) -> RecordedChecksums:
        """The checksums recorded for the arrays ``names`` of the complete store ``group``.

        Raises:
            ChunkDamagedError: a sample of one of them has no checksum recorded (a complete store
                records one for every sample: the ``checksum`` chunk file is missing or replaced).
        """
        names = [name for name in dict.fromkeys(names) if name in group]
        ndim = {name: array_in(group, name).ndim for name in names}
        if CHECKSUM not in group:  # a store written before checksums were recorded
            return cls({}, 0, ndim)
        checksum = array_in(group, CHECKSUM)
        shard_len = samples_per_shard(checksum)
        columns = channel_names(checksum)
        growing = set(provenance_of(group).growing_types)
        held = [name for name in names if name in columns and name not in growing]
        values = read_array(group, CHECKSUM)
        recorded = {name: np.ascontiguousarray(values[:, columns.index(name)]) for name in held}
        for name, checksums in recorded.items():
            missing = np.flatnonzero(checksums == 0)
            if len(missing):
                shard = int(missing[0]) // shard_len
                first, last = shard * shard_len, min((shard + 1) * shard_len, len(checksums)) - 1
                where = ChunkLocation(CHECKSUM, f"{CHECKSUM}/c/{shard}/0", first, last)
                raise where.damaged(
                    f"no checksums of {name!r} recorded for {len(missing)} samples (first: sample {missing[0]}), "
                    f"where a complete store records them all: {_DAMAGE}"
                )
        return cls(recorded, shard_len, ndim)

    def check(self, name: str, first: int, values: np.ndarray) -> None:
        """Check ``values``, ``(n, ...)``, samples ``first`` to ``first + n - 1`` of array ``name``
        as read, against the checksums recorded for them (nothing, for an array not vouched for).
        Where ``first`` is a multiple of ``n`` (a whole shard, a whole column),
        one CRC over ``values`` is compared with the checksum of those samples together.

        Raises:
            ChunkDamagedError: some samples differ from what was written; it names the array's
                shard file and the samples.
        """
        if name not in self.recorded or len(values) == 0:
            return
        if not (first % len(values) == 0 and self._block_matches(name, first, values)):
            self.check_samples(name, np.arange(first, first + len(values)), values)

    def check_samples(self, name: str, index: np.ndarray, values: np.ndarray) -> None:
        """Check ``values``, ``(len(index), ...)``, the samples at store ``index`` (``(n,) int``,
        any order) of array ``name``, one by one against their recorded checksums.

        Raises:
            ChunkDamagedError: as :meth:`check`, naming the shard of the first that differs.
        """
        if name not in self.recorded or len(index) == 0:
            return
        index = np.asarray(index, np.int64)
        differing = np.flatnonzero(sample_checksums(np.asarray(values)) != self.recorded[name][index])
        if len(differing):
            wrong = index[differing]
            shard = int(wrong[0]) // self.shard_len
            first, last = shard * self.shard_len, min((shard + 1) * self.shard_len, self._n(name)) - 1
            key = "/".join([name, "c", str(shard)] + ["0"] * (self.ndim[name] - 1))
            raise ChunkDamagedError(
                ChunkLocation(name, key, first, last),
                f"{len(wrong)} of {len(index)} samples read differ from what was written "
                f"(first: sample {wrong[0]}): {_DAMAGE}",
            )

    def _n(self, name: str) -> int:
        return len(self.recorded[name])

    def _block_matches(self, name: str, first: int, values: np.ndarray) -> bool:
        """Whether the CRC of ``values``, the ``first // len(values)``-th block of ``len(values)``
        samples of ``name``, is that of its recorded samples together."""
        if values.dtype.kind not in "biuf" or values.dtype.byteorder == ">":
            return False  # strings differ in length: checked sample by sample
        block = len(values)
        if (name, block) not in self._digests:
            recorded = self.recorded[name]
            whole = len(recorded) // block * block
            self._digests[name, block] = concatenated_checksum(recorded[:whole].reshape(-1, block), values[0].nbytes)
        digests = self._digests[name, block]
        if first // block >= len(digests):
            return False  # the last block, shorter: checked sample by sample
        data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        # ISA-L's CRC-32 is zlib's, 7x faster here (41 against 6 GB/s: docs/reliability.md)
        return isal_zlib.crc32(data.data, CRC_START) == int(digests[first // block])


def read_checked(group: zarr.Group, name: str, checksums: RecordedChecksums) -> np.ndarray:
    """The whole array ``name`` (a column, read whole) as a numpy array, checked against
    ``checksums``.

    Raises:
        ChunkDamagedError: as :meth:`RecordedChecksums.check`.
    """
    values = read_array(group, name)
    checksums.check(name, 0, values)
    return values


def damaged_store_error(store: str, error: BaseException) -> StoreError:
    """What a reader raises for a store that could not be read as written: the error, and how
    to list everything wrong (``fer-store verify``); a network fault is not damage and is
    returned as it is."""
    if isinstance(error, StoreNetworkError):
        return error
    shown = error if isinstance(error, StoreError) else repr(error)
    return StoreError(f"cannot read {store}: {shown}; the store is damaged: `fer-store verify {store}` lists what")


def unvouched_note(store: str, group: zarr.Group, names: tuple[str, ...]) -> str | None:
    """A line saying which of the arrays ``names`` of ``store`` (open as ``group``) a reader reads
    without a record to check them against; None when every one is vouched for."""
    columns = set(channel_names(array_in(group, CHECKSUM))) if CHECKSUM in group else set()
    names = tuple(name for name in names if name in group and name not in columns)
    if not names:
        return None
    return (
        f"note: {store} recorded no checksums of {', '.join(names)} (written before they were recorded): "
        "a deleted or moved chunk file of those arrays cannot be detected"
    )
