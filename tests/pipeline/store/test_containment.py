"""A local store reads files inside itself only, through every read method zarr's store offers."""

import asyncio
import inspect
import shutil

import pytest
import zarr.storage
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline.errors import StoreError
from pipeline.store.location import GUARDED_READS, UNGUARDED_METHODS, ContainedLocalStore


def test_every_method_of_zarrs_local_store_is_guarded_or_known_harmless():
    methods = {
        name
        for name, value in inspect.getmembers(zarr.storage.LocalStore)
        if callable(value) and not name.startswith("__")
    }
    unknown = methods - set(GUARDED_READS) - set(UNGUARDED_METHODS)
    assert not unknown, (
        f"zarr {zarr.__version__}'s LocalStore has methods the project has not judged: {sorted(unknown)}; "
        "guard each that reads a key in ContainedLocalStore, or list it in UNGUARDED_METHODS"
    )
    assert all(name in ContainedLocalStore.__dict__ for name in GUARDED_READS)


async def collect(iterator):
    return [key async for key in iterator]


def test_each_guarded_read_refuses_a_link_out_of_the_store(synthetic_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, store)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_bytes(b"not the store's")
    (store / "label" / "c" / "9").symlink_to(secret / "key")
    (store / "outside").symlink_to(secret, target_is_directory=True)
    contained = ContainedLocalStore(store)
    prototype = default_buffer_prototype()
    reads = {
        "get": lambda: sync(contained.get("label/c/9", prototype)),
        "get_partial_values": lambda: sync(contained.get_partial_values(prototype, [("label/c/9", None)])),
        "get_sync": lambda: contained.get_sync("label/c/9"),
        "getsize": lambda: sync(contained.getsize("label/c/9")),
        "exists": lambda: sync(contained.exists("outside/key")),
        "list_dir": lambda: asyncio.run(collect(contained.list_dir("outside"))),
        "list_prefix": lambda: asyncio.run(collect(contained.list_prefix("outside/"))),
    }
    assert set(reads) == set(GUARDED_READS)
    for name, read in reads.items():
        with pytest.raises(StoreError, match="outside the store; refusing to read it"):
            read()
            pytest.fail(f"{name} read outside the store")
    assert contained.get_sync("label/zarr.json") is not None  # what lies inside still reads


def test_the_bounded_codecs_apply_to_fer_stores_only(synthetic_store, tmp_path):
    """A zstd frame that does not record its size (as tensorstore writes them) is refused in a FER
    store and read as zarr reads it in any other store of the same process."""
    import numpy as np
    import zstandard

    from pipeline.store import open_store

    assert type(open_store(synthetic_store)["label"].metadata.codecs[1]).__name__ == "BoundedZstdCodec"
    values = np.arange(48, dtype=np.int16)
    other = zarr.create_array(tmp_path / "other.zarr", shape=(48,), chunks=(48,), dtype="int16")
    other[:] = values
    unsized = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = unsized.compress(values.tobytes()) + unsized.flush()
    (tmp_path / "other.zarr" / "c" / "0").write_bytes(frame)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "other.zarr", mode="r")[:], values)


def test_array_documents_without_the_specs_defaults_open_and_verify(synthetic_store, tmp_path):
    """Each array's own zarr.json as a terser Zarr v3 writer (tensorstore) writes it: no empty
    attributes or storage transformers, no default codec configurations; the consolidated copy
    keeps them. Only a real difference is refused."""
    import json

    from pipeline.store import open_store
    from pipeline.tools.verify import verify_store

    store = tmp_path / "terse.zarr"
    shutil.copytree(synthetic_store, store)

    def terse(codecs):
        for codec in codecs:
            configuration = codec.get("configuration", {})
            if codec["name"] == "zstd":
                configuration.pop("checksum", None)
            if codec["name"] == "sharding_indexed":
                configuration.pop("index_location", None)
                terse(configuration["codecs"])
                terse(configuration["index_codecs"])

    for own in sorted(store.glob("*/zarr.json")):
        document = json.loads(own.read_text())
        if not document["attributes"]:
            del document["attributes"]
        del document["storage_transformers"]
        terse(document["codecs"])
        own.write_text(json.dumps(document))
    assert open_store(store)["label"][:].tolist() == open_store(synthetic_store)["label"][:].tolist()
    assert verify_store(str(store)) == []

    document = json.loads((store / "label" / "zarr.json").read_text())
    document["fill_value"] = 7
    (store / "label" / "zarr.json").write_text(json.dumps(document))
    with pytest.raises(StoreError, match="its own label/zarr.json is missing or differs from the consolidated"):
        open_store(store)
