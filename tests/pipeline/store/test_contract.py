"""The store contract on a synthetic store: provenance round trip, the catalogue's derived lists,
verification, and reading without dlib or OpenCV."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from fer_models.models.stn import GUIDED_STN_GUIDANCE
from pipeline.compute.renderers import RENDERERS
from pipeline.errors import StoreError
from pipeline.guidance import GUIDANCE_TYPES, markdown_table_rows
from pipeline.store import ATTRS_KEY, Provenance, read_provenance
from pipeline.tools.contact_sheet import TILE_FAMILIES
from pipeline.tools.verify import verify_store

GUIDANCE_TABLE = Path(__file__).parents[3] / "docs" / "preprocessing.md"


def test_provenance_round_trips_the_stored_attributes(synthetic_store):
    stored = zarr.open_group(str(synthetic_store), mode="r").attrs[ATTRS_KEY]
    provenance = Provenance.from_attrs({ATTRS_KEY: stored})
    assert json.loads(json.dumps(provenance.to_attrs())) == stored
    assert Provenance.from_attrs({ATTRS_KEY: provenance.to_attrs()}) == provenance == read_provenance(synthetic_store)
    assert provenance.total == 48 and provenance.complete and provenance.preprocess_config.shard_size == 16
    assert provenance.label_set(None).names == ("neutral", "happy", "sad")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda attrs: attrs.pop("splits"), "provenance .* cannot be read: KeyError: 'splits'"),
        (
            lambda attrs: attrs.update(schema_version=2),
            "schema version 2; this version of the software reads version 1",
        ),
        (lambda attrs: attrs["counts"].update(total=-1), "counts.total is -1, not a sample count"),
        (lambda attrs: attrs["config"].update(shard_size=0), "shard_size must be between 1 and 65536"),
        (
            lambda attrs: attrs.update(growing={"types": ["sparkles"], "models": {}, "started": ""}),
            "unknown guidance types",
        ),
    ],
)
def test_a_damaged_provenance_is_refused_naming_what_is_wrong(synthetic_store, damage, message):
    attrs = dict(zarr.open_group(str(synthetic_store), mode="r").attrs[ATTRS_KEY])
    attrs["counts"], attrs["config"] = dict(attrs["counts"]), dict(attrs["config"])
    damage(attrs)
    with pytest.raises(StoreError, match=message):
        Provenance.from_attrs({ATTRS_KEY: attrs})


def test_the_synthetic_store_verifies(synthetic_store):
    assert verify_store(str(synthetic_store)) == []


def test_every_catalogued_type_has_a_renderer_and_the_docs_table_follows_the_catalogue():
    assert RENDERERS.keys() == GUIDANCE_TYPES.keys()
    readme_rows = [
        re.match(r"(\|[^|]*){3}\|", line).group(0)
        for line in GUIDANCE_TABLE.read_text().splitlines()
        if line.startswith("| `") and ("uint8` |" in line or "float32` |" in line)
    ]
    assert readme_rows == markdown_table_rows()


def test_the_contact_sheet_and_the_guided_transformer_derive_their_lists_from_the_catalogue():
    maps = {name for name, kind in GUIDANCE_TYPES.items() if not kind.boxes}
    assert {name for family in TILE_FAMILIES for name in family} == maps
    assert [family[0] for family in TILE_FAMILIES] == ["heatmap", "saliency", "mask_soft"]  # the defaults first
    assert set(GUIDED_STN_GUIDANCE) == {name for name in maps if len(GUIDANCE_TYPES[name].channels) == 1}


READ_WITHOUT_DLIB = """
import sys
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from fer_models.training.store_view import StoreView
from pipeline.tools.describe import describe_store
from pipeline.tools.verify import verify_store
store = sys.argv[1]
view = StoreView.open(store)
batch = next(iter(StoreBatches(store, select_samples(store, "train"), ("image", "heatmap", "regions"), 8)))
assert batch["image"].shape == (8, 1, 32, 32), batch["image"].shape
describe_store(store)
assert verify_store(store) == []
print(sorted(name for name in ("dlib", "cv2", "click") if name in sys.modules))
"""


def test_reading_a_store_imports_neither_dlib_nor_opencv(synthetic_store):
    result = subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_DLIB, str(synthetic_store)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_training_commands_load_opencv_only_to_draw_and_the_pipeline_never_imports_training():
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cli.train, cli.compare; print('cv2' in sys.modules, 'dlib' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.split() == ["False", "False"], imported.stderr
    upward = []
    for path in sorted((Path(__file__).parents[3] / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            upward += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("fer_models", "cli")]
    assert upward == []
