"""A corpus of damaged and hostile stores, each made from a copy of a real store.

Every entry damages the copy in one way and says what must happen: ``opening`` kinds are refused
by the check made before zarr reads anything (every tool: info, ls, show, diff, verify, training),
``verify`` kinds open (their metadata is sound) and ``fer-store verify`` names the damage. docs/
reliability.md lists them; bench/damaged_stores.py times each refusal and measures its memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np


@dataclass(frozen=True)
class DamagedStore:
    kind: str
    damage: Callable[[Path], Path | None]  # damages the store copy; may return another path to open
    expected: str  # a fragment of the refusal message (opening) or of verify's fault (verify); a pattern (reading)
    caught_on: str = "opening"  # or "verify"; "reading": by every reader (READ_DAMAGE)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def edit_array(store: Path, name: str, edit: Callable[[dict], None]) -> None:
    """Edit array ``name``'s metadata the same way in its own zarr.json and the consolidated copy."""
    _edit_json(store / name / "zarr.json", edit)
    _edit_json(store / "zarr.json", lambda root: edit(root["consolidated_metadata"]["metadata"][name]))


def edit_provenance(store: Path, edit: Callable[[dict], None]) -> None:
    _edit_json(store / "zarr.json", lambda root: edit(root["attributes"]["fer_store"]))


def rename_in_consolidated(store: Path, old: str, new: str) -> None:
    def rename(root: dict) -> None:
        metadata = root["consolidated_metadata"]["metadata"]
        metadata[new] = metadata.pop(old)

    _edit_json(store / "zarr.json", rename)


def set_field(name: str, path: tuple[str, ...], value) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        def edit(document: dict) -> None:
            target = document
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        edit_array(store, name, edit)

    return damage


def chunk_file(store: Path, name: str, shard: int) -> Path:
    folder = store / name / "c" / str(shard)
    return folder if folder.is_file() else next(p for p in sorted(folder.rglob("*")) if p.is_file())


def with_crc32c(payload: bytes) -> bytes:
    return payload + struct.pack("<I", google_crc32c.value(payload))


def index_past_the_end(store: Path) -> None:
    """Point the first inner chunk of an image shard past the end of its file, with a valid index
    checksum, as a tool that damaged the file and recomputed the checksum would."""
    path = chunk_file(store, "image", 0)
    data = bytearray(path.read_bytes())
    metadata = json.loads((store / "image" / "zarr.json").read_text())
    shard_len = metadata["chunk_grid"]["configuration"]["chunk_shape"][0]
    inner_count = shard_len // metadata["codecs"][0]["configuration"]["chunk_shape"][0]
    index_start = len(data) - 16 * inner_count - 4  # (offset, nbytes) of each inner chunk, then crc32c
    entries = np.frombuffer(bytes(data[index_start:-4]), "<u8").copy()
    entries[0] = len(data) + 1_000_000
    data[index_start:] = with_crc32c(entries.tobytes())
    path.write_bytes(bytes(data))


def truncate_shard(store: Path) -> None:
    path = chunk_file(store, "heatmap", 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def swap_shards(store: Path) -> None:
    a, b = chunk_file(store, "image", 0), chunk_file(store, "image", 1)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def delete_chunk(store: Path) -> None:
    chunk_file(store, "mask_soft", 1).unlink()


def zstd_bomb(store: Path) -> None:
    """Replace the first ``label`` chunk (64 bytes raw) by a valid zstd frame of 256 MiB of zeros
    with a valid crc32c: decompressing it would allocate 256 MiB for a 64-byte chunk."""
    frame = numcodecs.Zstd(level=1).encode(np.zeros(256 * 2**20, np.uint8))
    chunk_file(store, "label", 0).write_bytes(with_crc32c(bytes(frame)))


def blosc_bomb(store: Path) -> None:
    """Recompress ``label`` with blosc (lz4), as ``--codec lz4`` does tensors, its first chunk a
    valid blosc frame of 256 MiB of zeros with a valid crc32c: a blosc header sets the size of
    the buffer zarr would allocate for a 64-byte chunk."""
    blosc = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.NOSHUFFLE)
    codec = {"name": "blosc", "configuration": blosc.get_config() | {"typesize": 1, "shuffle": "noshuffle"}}
    codec["configuration"].pop("id")
    edit_array(store, "label", lambda document: document["codecs"].__setitem__(1, codec))  # bytes, zstd, crc32c
    for path in (p for p in (store / "label" / "c").rglob("*") if p.is_file()):
        raw = numcodecs.Zstd().decode(path.read_bytes()[:-4])
        path.write_bytes(with_crc32c(bytes(blosc.encode(raw))))
    chunk_file(store, "label", 0).write_bytes(with_crc32c(bytes(blosc.encode(np.zeros(256 * 2**20, np.uint8)))))


def symlink_out(store: Path) -> None:
    """A chunk file replaced by a symlink to a file outside the store."""
    outside = store.parent / "outside-the-store"
    outside.write_bytes(chunk_file(store, "label", 0).read_bytes())
    target = chunk_file(store, "label", 0)
    target.unlink()
    target.symlink_to(outside)


def folder_symlink_out(store: Path) -> None:
    """A shard's chunk folder replaced by a symlink to a copy outside the store."""
    folder = chunk_file(store, "image", 1).parents[2]  # image/c/1
    outside = store.parent / "folder-outside-the-store"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)


def fifo_chunk(store: Path) -> None:
    target = chunk_file(store, "source", 0)
    target.unlink()
    os.mkfifo(target)


def oversized_root(store: Path) -> None:
    edit_provenance(store, lambda provenance: provenance.update(padding="x" * (17 * 2**20)))


def deep_nesting(store: Path) -> None:
    text = (store / "zarr.json").read_text()
    (store / "zarr.json").write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")


def not_utf8(store: Path) -> None:
    path = store / "zarr.json"
    path.write_bytes(path.read_bytes().replace(b'"fer_store"', b'"fer\xff\xfestore"', 1))


def huge_integer(store: Path) -> None:
    path = store / "zarr.json"
    path.write_text(re.sub(r'"shape": \[\s*84', '"shape": [' + "9" * 5000, path.read_text(), count=1))


def array_without_own_metadata(store: Path) -> None:
    (store / "valence" / "zarr.json").unlink()


def consolidated_disagrees(store: Path) -> None:
    _edit_json(
        store / "zarr.json", lambda root: root["consolidated_metadata"]["metadata"]["image"].update(fill_value=7)
    )


def extra_array(store: Path) -> None:
    shutil.copytree(store / "label", store / "notes")
    _edit_json(
        store / "zarr.json",
        lambda root: root["consolidated_metadata"]["metadata"].update(
            notes=root["consolidated_metadata"]["metadata"]["label"]
        ),
    )


def zip_bomb(store: Path) -> Path:
    """A .zarr.zip of the store with one more member that deflates 256 MiB of zeros to 250 KB."""
    packed = store.parent / "bomb.zarr.zip"
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(store.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(store).as_posix())
        info = zipfile.ZipInfo("label/c/9")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w") as member:
            for _ in range(256):
                member.write(bytes(2**20))
    return packed


def _packed(store: Path, name: str) -> Path:
    """The store as a stored (uncompressed) zip, as fer-store pack writes it."""
    packed = store.parent / name
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(store.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(store).as_posix())
    return packed


def _patch_central_directory(packed: Path, member: str, field_offset: int, value: int) -> None:
    """Overwrite a 4-byte field of ``member``'s central directory entry (16: CRC-32, 20:
    compressed size, 24: uncompressed size)."""
    with zipfile.ZipFile(packed) as archive:
        start = archive.start_dir
    data = bytearray(packed.read_bytes())
    at = start
    while data[at : at + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46 : at + 46 + name_length].decode() == member:
            struct.pack_into("<I", data, at + field_offset, value)
            packed.write_bytes(bytes(data))
            return
        at += 46 + name_length + extra_length + comment_length
    raise KeyError(member)


def zip_compressed_size_lies(store: Path) -> Path:
    """Eight more members, each deflating 16 MiB of zeros to 16 KB, whose directory entries claim
    16 MiB compressed: a ratio check that trusts the claim lets 128 MiB out of 130 KB."""
    packed = _packed(store, "size-lies.zarr.zip")
    names = [f"label/c/{9 + i}" for i in range(8)]
    with zipfile.ZipFile(packed, "a") as archive:
        for name in names:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                for _ in range(16):
                    member.write(bytes(2**20))
    for name in names:
        _patch_central_directory(packed, name, 20, 16 * 2**20)
    return packed


def zip_stored_size_lie(store: Path) -> Path:
    """A stored member whose directory entry claims 64 bytes more than it holds."""
    packed = _packed(store, "stored-lie.zarr.zip")
    with zipfile.ZipFile(packed) as archive:
        size = archive.getinfo("label/c/0").file_size
    _patch_central_directory(packed, "label/c/0", 24, size + 64)
    return packed


def zip_crc_lie(store: Path) -> Path:
    """A stored chunk whose directory entry records another CRC-32: its bytes are not what was packed."""
    packed = _packed(store, "crc-lie.zarr.zip")
    with zipfile.ZipFile(packed) as archive:
        crc = archive.getinfo("label/c/0").CRC
    _patch_central_directory(packed, "label/c/0", 16, crc ^ 1)
    return packed


def zip_with_an_unread_member(store: Path) -> Path:
    """A packed store with one more member that is neither metadata nor a chunk."""
    packed = _packed(store, "extra.zarr.zip")
    with zipfile.ZipFile(packed, "a") as archive:
        archive.writestr("notes/readme.txt", "not part of the store")
    return packed


def delete_image_shard(store: Path) -> None:
    chunk_file(store, "image", 1).unlink()


def relabel_chunk(store: Path) -> None:
    """Rewrite the first ``label`` chunk with other labels (each moved to the next class), its
    zstd frame and crc32c valid, as a tool that edits labels in place would."""
    path = chunk_file(store, "label", 0)
    labels = np.frombuffer(numcodecs.Zstd().decode(path.read_bytes()[:-4]), "<i2")
    path.write_bytes(with_crc32c(bytes(numcodecs.Zstd(level=1).encode(((labels + 1) % 7).astype("<i2")))))


def delete_status_chunk(store: Path) -> None:
    chunk_file(store, "status", 0).unlink()


def delete_checksum_chunk(store: Path) -> None:
    chunk_file(store, "checksum", 0).unlink()


# Damage a store's metadata cannot show, which every reader must stop on (training, evaluation,
# the viewer), and a pattern of the message it stops with: the array, the shard and the samples
# (swapped shards: whichever of the two is read first).
READ_DAMAGE: tuple[DamagedStore, ...] = (
    DamagedStore("image shard deleted", delete_image_shard, r"image/c/1/0/0/0 \(samples 32-63\)", "reading"),
    DamagedStore("image shards swapped", swap_shards, r"image/c/[01]/0/0/0 \(samples (0-31|32-63)\)", "reading"),
    DamagedStore("label chunk rewritten with a valid crc32c", relabel_chunk, r"label/c/0 \(samples 0-31\)", "reading"),
    DamagedStore("status chunk deleted", delete_status_chunk, r"status/c/0 \(samples 0-31\)", "reading"),
    DamagedStore("checksum chunk deleted", delete_checksum_chunk, r"checksum/c/0/0 \(samples 0-31\)", "reading"),
)

CORPUS: tuple[DamagedStore, ...] = (
    DamagedStore(
        "shape of 10**15 samples",
        set_field("image", ("shape",), [10**15, 1, 48, 48]),
        "array 'image': field 'shape' is [1000000000000000, 1, 48, 48]: 1,000,000,000,000,000 samples",
    ),
    DamagedStore(
        "inner chunks of 10**12 samples",
        set_field("image", ("codecs", 0, "configuration", "chunk_shape"), [10**12, 1, 48, 48]),
        "array 'image': field 'sharding_indexed.chunk_shape' is [1000000000000, 1, 48, 48]: 1,000,000,000,000 samples",
    ),
    DamagedStore(
        "chunks of 10**12 samples",
        set_field("label", ("chunk_grid", "configuration", "chunk_shape"), [10**12]),
        "array 'label': field 'chunk_grid.chunk_shape' is [1000000000000]",
    ),
    DamagedStore(
        "negative shape",
        set_field("label", ("shape",), [-84]),
        "array 'label': field 'shape' is [-84]; it must be a list of at most 8 non-negative integers",
    ),
    DamagedStore(
        "float shape",
        set_field("label", ("shape",), [84.5]),
        "array 'label': field 'shape' is [84.5]; it must be a list",
    ),
    DamagedStore(
        "shape of another rank than its chunks",
        set_field("label", ("shape",), [84, 2]),
        "array 'label': field 'chunk_grid.chunk_shape' has 1 entries for an array of rank 2",
    ),
    DamagedStore(
        "shape off the sample count",
        set_field("label", ("shape",), [85]),
        "array 'label': field 'shape' is [85]; the store's 84 samples and its config call for [84]",
    ),
    DamagedStore(
        "sample count off the arrays",
        lambda store: edit_provenance(store, lambda p: p["counts"].update(total=10**6)),
        "field 'shape' is [84, 1, 48, 48]; the store's 1000000 samples",
    ),
    DamagedStore(
        "array name with ../",
        lambda store: rename_in_consolidated(store, "label", "../../etc"),
        "the store names an array '../../etc'; FER store arrays are named like 'mask_soft'",
    ),
    DamagedStore(
        "array name with a path separator",
        lambda store: rename_in_consolidated(store, "label", "label/c"),
        "the store names an array 'label/c'",
    ),
    DamagedStore(
        "object data type", set_field("message", ("data_type",), "object"), "array 'message' has data type 'object'"
    ),
    DamagedStore(
        "pickle codec",
        set_field("label", ("codecs", 1), {"name": "numcodecs.pickle"}),
        "array 'label' uses the codec 'numcodecs.pickle'",
    ),
    DamagedStore(
        "data type other than the schema's",
        set_field("label", ("data_type",), "float32"),
        "array 'label': field 'data_type' is 'float32'; the schema's is 'int16'",
    ),
    DamagedStore(
        "array the schema does not define",
        extra_array,
        "array 'notes' is not one the schema defines for this store's config",
    ),
    DamagedStore(
        "consolidated metadata disagreeing with an array's own",
        consolidated_disagrees,
        "array 'image': its own image/zarr.json is missing or differs from the consolidated metadata",
    ),
    DamagedStore(
        "array's own zarr.json missing",
        array_without_own_metadata,
        "array 'valence': its own valence/zarr.json is missing or differs",
    ),
    DamagedStore("root zarr.json over 16 MiB", oversized_root, "zarr.json is larger than 16,777,216 bytes"),
    DamagedStore("JSON nested 100,000 deep", deep_nesting, "zarr.json is nested too deeply to be Zarr metadata"),
    DamagedStore("root zarr.json not UTF-8", not_utf8, "zarr.json is not UTF-8 text"),
    DamagedStore("integer of 5,000 digits", huge_integer, "zarr.json is not valid JSON"),
    DamagedStore(
        "schema version 2",
        lambda store: edit_provenance(store, lambda p: p.update(schema_version=2)),
        "has schema version 2; this version of the software reads version 1",
    ),
    DamagedStore(
        "Zarr format 2 root",
        lambda store: _edit_json(store / "zarr.json", lambda root: root.update(zarr_format=2)),
        "is not a Zarr format 3 group",
    ),
    DamagedStore("zip member that is a zip bomb", zip_bomb, "unpacks to 268,435,456 bytes"),
    DamagedStore("zip members whose compressed sizes lie", zip_compressed_size_lies, "compressed bytes but occupies"),
    DamagedStore("stored zip member whose size lies", zip_stored_size_lie, "a stored member's sizes are equal"),
    DamagedStore("zip member whose CRC lies", zip_crc_lie, "is damaged or lies about its size", "verify"),
    DamagedStore(
        "zip member no array reads",
        zip_with_an_unread_member,
        "1 member that no array reads, so nothing checks them: notes/readme.txt",
        "verify",
    ),
    DamagedStore(
        "chunk file symlinked out of the store", symlink_out, "outside the store; refusing to read it", "verify"
    ),
    DamagedStore(
        "chunk folder symlinked out of the store",
        folder_symlink_out,
        "outside the store; refusing to read it",
        "verify",
    ),
    DamagedStore("FIFO as a chunk file", fifo_chunk, "is not a regular file; refusing to read it", "verify"),
    DamagedStore("zstd bomb chunk", zstd_bomb, "would decompress to 268,435,456 bytes", "verify"),
    DamagedStore("blosc bomb chunk", blosc_bomb, "would decompress to 268,435,456 bytes", "verify"),
    DamagedStore("shard index entry past the file end", index_past_the_end, "image/c/0/0/0/0 (samples 0-31)", "verify"),
    DamagedStore("truncated shard", truncate_shard, "heatmap/c/1/0/0/0 (samples 32-63)", "verify"),
    DamagedStore("shard files swapped", swap_shards, "32 of 32 samples differ from what was written", "verify"),
    DamagedStore(
        "chunk file deleted", delete_chunk, "samples differ from what was written (first: sample 32)", "verify"
    ),
)


def make_damaged(original: Path, folder: Path, entry: DamagedStore) -> Path:
    """A copy of the store at ``original`` in ``folder``, damaged as ``entry`` says; returns the
    location to open."""
    store = folder / "store.zarr"
    shutil.copytree(original, store, symlinks=True)
    return entry.damage(store) or store
