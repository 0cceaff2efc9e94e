"""Dataset adapters on trees in each official layout, written from real faces, preprocessed through
the real pipeline (real dlib, real Zarr)."""

import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import DATASETS, fer2013, get_dataset
from pipeline.datasets.ferplus_votes import vote_distributions
from pipeline.datasets.label_sets import label_set_from_attrs, label_sets_to_attrs
from pipeline.errors import ConfigError, DatasetError
from pipeline.store import ATTRS_KEY, Status
from tests.support import dataset_trees as trees


def build(store: Path, dataset: str, root: Path, **overrides) -> zarr.Group:
    """Preprocess ``root`` with the dataset's defaults (plus ``overrides``) in this process."""
    overrides.setdefault("shard_size", 16)
    config = build_config(get_dataset(dataset).config_defaults, overrides)
    summary = preprocess(store, dataset, root, config, scheduler=SYNCHRONOUS)
    assert summary.complete and not summary.failed_shards
    return zarr.open_group(str(store), mode="r")


def column(group: zarr.Group, name: str) -> np.ndarray:
    return group[name][:]


# --- FER-2013 -------------------------------------------------------------------------------


def test_fer2013_csv_labels_splits_and_pixels_match_the_file(tmp_path):
    rows = trees.write_fer2013_csv(tmp_path / "fer", 40)
    group = build(tmp_path / "s.zarr", "fer2013", tmp_path / "fer")
    provenance = group.attrs[ATTRS_KEY]
    assert provenance["splits"] == ["train", "val", "test"]
    assert provenance["label_names"][0] == "angry" and provenance["label_names"][6] == "neutral"
    assert column(group, "label").tolist() == [e for e, _, _ in rows]
    usage_index = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    assert column(group, "split").tolist() == [usage_index[u] for _, _, u in rows]
    assert column(group, "source")[3] == "fer2013.csv#3"
    status = column(group, "status")
    assert set(status.tolist()) <= {Status.OK, Status.OK_PRIOR}  # full-frame prior: nothing lost
    assert group["image"].shape == (40, 1, 48, 48)  # the dataset's defaults: 48 px grey
    # a full-frame sample's source box is the whole 48x48 image
    prior_rows = np.flatnonzero(status == Status.OK_PRIOR)
    assert len(prior_rows) and np.array_equal(group["box_src"][prior_rows[0]], [0, 0, 48, 48])
    # the official crops are kept as they are (--align crop), landmarks in their frame
    pixels = np.array([np.array(p.split(), dtype=np.uint8).reshape(1, 48, 48) for _, p, _ in rows])
    assert np.array_equal(group["image"][:], pixels)
    assert np.array_equal(group["aligned_from_src"][:], np.broadcast_to(np.eye(2, 3, dtype=np.float32), (40, 2, 3)))
    assert np.array_equal(group["landmarks"][:], group["landmarks_src"][:])
    assert provenance["config"]["align"]["mode"] == "crop"
    warped = build(tmp_path / "warped.zarr", "fer2013", tmp_path / "fer", align={"mode": "similarity"})
    assert warped.attrs[ATTRS_KEY]["config"]["align"]["mode"] == "similarity"
    assert not np.array_equal(warped["image"][:], pixels)  # re-warped onto the template


def test_fer2013_csv_and_folder_forms_agree_on_the_same_images(tmp_path):
    trees.write_fer2013_csv(tmp_path / "csv", 30)
    trees.write_fer2013_folders(tmp_path / "folders", 30)
    from_csv = build(tmp_path / "csv.zarr", "fer2013", tmp_path / "csv")
    from_folders = build(tmp_path / "folders.zarr", "fer2013", tmp_path / "folders")
    # rows of the folder form, put back in CSV order by the row number in each file name
    row_of = np.array([int(Path(s).stem.split("_")[1]) for s in column(from_folders, "source")])
    order = np.argsort(row_of)
    assert np.array_equal(row_of[order], np.arange(30))
    for name in ("label", "split", "status", "image", "landmarks"):
        assert np.array_equal(column(from_folders, name)[order], column(from_csv, name)), name
    assert from_csv.attrs[ATTRS_KEY]["label_names"] == from_folders.attrs[ATTRS_KEY]["label_names"]


def test_fer2013_reads_the_real_image_archive_layout(fer2013_small):
    manifest = get_dataset("fer2013").scan(fer2013_small)
    assert len(manifest) == 84
    for source, label, split in zip(manifest.source, manifest.label, manifest.split):
        folder_split, folder_class, name = source.split("/")
        assert manifest.label_names[label] == folder_class
        usage = name.split("_")[0]
        assert manifest.splits[split] == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[usage]
        assert (folder_split == "train") == (usage == "Training")


def test_fer2013_polarity_follows_the_guided_stn_paper():
    labels = np.arange(7)  # angry disgust fear happy sad surprise neutral
    target, keep = label_set_from_attrs(label_sets_to_attrs(fer2013.LABEL_SETS), "polarity").targets(labels)
    assert target.tolist() == [0, 0, 0, 2, 0, -1, 1]
    assert keep.tolist() == [True, True, True, True, True, False, True]


def test_fer2013_csv_with_a_wrong_header_stops_the_scan(tmp_path):
    trees.write_fer2013_csv(tmp_path, 5)
    csv = tmp_path / "fer2013.csv"
    csv.write_text(csv.read_text().replace("emotion,pixels,Usage", "label,pixels,Usage"))
    with pytest.raises(DatasetError, match="line 1: expected the header") as error:
        get_dataset("fer2013").scan(tmp_path)
    assert str(csv) in str(error.value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("\n0,", "\n9,", 1), "column 'emotion': unknown emotion code 9"),
        (lambda t: t.replace(",Training\n", ",Train\n", 1), "column 'Usage': unknown Usage 'Train'"),
        (lambda t: t.replace("\n0,70 ", "\n0,", 1), "column 'pixels': expected 2304 grey values, got 2303"),
        (
            lambda t: t.replace(",Training\n", ",Training,extra\n", 1),
            "expected 3 columns (emotion,pixels,Usage), got 4",
        ),
    ],
)
def test_a_malformed_fer2013_csv_row_is_a_failed_sample_and_the_others_are_kept(tmp_path, edit, expected):
    trees.write_fer2013_csv(tmp_path, 5)
    csv = tmp_path / "fer2013.csv"
    csv.write_text(edit(csv.read_text()))
    manifest = get_dataset("fer2013").scan(tmp_path)
    assert len(manifest) == 5 and manifest.skip[0].startswith("fer2013.csv, line 2") and expected in manifest.skip[0]
    assert manifest.label[0] == -1 and manifest.skip[1:] == ("",) * 4
    group = build(tmp_path / "s.zarr", "fer2013", tmp_path)
    status = column(group, "status")
    assert status[0] == Status.FAILED and expected in column(group, "message")[0]
    assert set(status[1:].tolist()) <= {Status.OK, Status.OK_PRIOR}


def test_fer2013_root_without_either_form_says_what_it_expects(tmp_path):
    with pytest.raises(DatasetError, match="neither fer2013.csv nor the image folders"):
        get_dataset("fer2013").scan(tmp_path)


# --- FERPlus --------------------------------------------------------------------------------


def test_ferplus_votes_majority_labels_and_dropped_rows(tmp_path):
    votes = trees.write_ferplus(tmp_path / "ferplus", 64)
    group = build(tmp_path / "s.zarr", "ferplus", tmp_path / "ferplus")
    assert np.array_equal(column(group, "votes"), votes)
    assert group["votes"].attrs["channels"][-2:] == ["unknown", "NF"]
    names = group.attrs[ATTRS_KEY]["label_names"]
    assert names == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    label, status, message = column(group, "label"), column(group, "status"), column(group, "message")
    for i, row in enumerate(votes):
        kept = np.where(row <= 1, 0, row)  # Barsoum et al.: single votes removed first
        top = int(kept.argmax())
        expected = top if kept[top] > kept.sum() / 2 and top < 8 else -1
        assert label[i] == expected, i
    dropped = [17, 23, 59]  # rows of fer2013new.csv with an empty image name
    assert np.flatnonzero(status == Status.FAILED).tolist() == dropped
    assert all("empty 'Image name'" in message[i] for i in dropped)
    assert np.all(group["image"][dropped] == 0)
    assert set(np.delete(status, dropped).tolist()) <= {Status.OK, Status.OK_PRIOR}
    label_sets = group.attrs[ATTRS_KEY]["label_sets"]
    assert list(label_sets) == ["8", "7", "polarity", "crossentropy", "probability"]
    soft, keep = label_set_from_attrs(label_sets, "crossentropy").targets(label, votes=votes)
    assert np.allclose(soft[keep].sum(axis=1), 1.0)
    assert np.array_equal(soft, vote_distributions(votes)[0])


def test_ferplus_refuses_files_out_of_step(tmp_path):
    trees.write_ferplus(tmp_path, 20)
    labels = tmp_path / "fer2013new.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="has 19 data rows but fer2013.csv beside it has 20"):
        get_dataset("ferplus").scan(tmp_path)
    lines[9] = lines[9].replace("PublicTest", "Training", 1)  # data row 8 is PublicTest in fer2013.csv
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"line 10, column 'Usage': Usage Training differs from row 8"):
        get_dataset("ferplus").scan(tmp_path)


def test_a_malformed_ferplus_row_is_a_failed_sample(tmp_path):
    trees.write_ferplus(tmp_path, 20)
    labels = tmp_path / "fer2013new.csv"
    lines = labels.read_text().splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join([*fields[:2], "lots", *fields[3:]])  # data row 2: a vote count that is not one
    labels.write_text("\n".join(lines) + "\n")
    manifest = get_dataset("ferplus").scan(tmp_path)
    assert manifest.skip[2] == "fer2013new.csv, line 4, column 'neutral': expected a vote count, got 'lots'"
    assert not manifest.votes[2].any() and manifest.label[2] == -1 and manifest.skip[1] == ""


def test_ferplus_needs_the_pixels_beside_the_labels(tmp_path):
    trees.write_ferplus(tmp_path, 5)
    (tmp_path / "fer2013.csv").unlink()
    with pytest.raises(DatasetError, match="fer2013.csv not found: FERPlus takes its pixels"):
        get_dataset("ferplus").scan(tmp_path)


# --- AffectNet ------------------------------------------------------------------------------


@pytest.fixture
def affectnet(tmp_path, dlib_faces):
    root = tmp_path / "affectnet"
    return root, trees.write_affectnet(root, dlib_faces)


def test_affectnet_columns_match_the_csv_files(tmp_path, affectnet):
    root, rows = affectnet
    manifest = get_dataset("affectnet").scan(root)
    assert [manifest.splits[s] for s in manifest.split] == [r.split for r in rows]
    assert list(manifest.source) == [f"Manually_Annotated_Images/{r.path}" for r in rows]
    assert manifest.label.tolist() == [r.expression if r.expression < 8 else -1 for r in rows]
    expected_valence = [r.valence if r.valence >= -1 else np.nan for r in rows]
    assert np.allclose(manifest.valence, expected_valence, equal_nan=True)
    assert np.isnan(manifest.arousal[-1]) and manifest.arousal[0] == pytest.approx(rows[0].arousal)
    assert np.array_equal(manifest.prior_box, np.stack([r.box for r in rows]))
    assert np.allclose(manifest.prior_landmarks, np.stack([r.landmarks for r in rows]) + 0.5, atol=0.006)


def test_affectnet_with_dataset_landmarks_aligns_from_the_provided_points(tmp_path, affectnet):
    root, rows = affectnet
    group = build(tmp_path / "s.zarr", "affectnet", root, landmarks={"source": "dataset"})
    status, message = column(group, "status"), column(group, "message")
    assert status[-1] == Status.UNREADABLE and "missing.jpg" in message[-1]
    assert np.all(status[:-1] == Status.OK_PRIOR)  # .bmp and .tif decode like the JPEGs
    for i, row in enumerate(rows[:-1]):
        assert np.allclose(group["landmarks_src"][i], row.landmarks + 0.5, atol=0.006)
        assert np.array_equal(group["box_src"][i], row.box)
    label_sets = group.attrs[ATTRS_KEY]["label_sets"]
    assert list(label_sets) == ["7", "8", "polarity"]
    label, valence = column(group, "label"), column(group, "valence")
    seven, keep7 = label_set_from_attrs(label_sets, None).targets(label)
    assert keep7.tolist() == [r.expression <= 6 for r in rows]  # contempt, none, no-face left out
    eight, _ = label_set_from_attrs(label_sets, "8").targets(label)
    assert eight[7] == 7  # contempt
    polarity, _ = label_set_from_attrs(label_sets, "polarity").targets(label, valence=valence)
    expected = [-1 if r.valence < -1 else 0 if r.valence < -0.2 else 2 if r.valence > 0.2 else 1 for r in rows]
    assert polarity.tolist() == expected


def test_affectnet_with_dlib_landmarks_finds_the_annotated_face(tmp_path, affectnet):
    """dlib's landmarks land on the face the row annotates (the detection overlapping the dataset
    box is taken, or the box itself), within a tenth of the face width of the file's points."""
    root, rows = affectnet
    group = build(tmp_path / "s.zarr", "affectnet", root, detect={"upsample": 1})
    status = column(group, "status")
    assert set(status[:-1].tolist()) <= {Status.OK, Status.OK_PRIOR} and status[-1] == Status.UNREADABLE
    for i, row in enumerate(rows[:-1]):
        error = np.linalg.norm(group["landmarks_src"][i] - (row.landmarks + 0.5), axis=1).mean()
        assert error < 0.1 * (row.box[2] - row.box[0]), (row.path, error)


def test_affectnet_wrong_header_is_refused_before_any_work(affectnet):
    root, _ = affectnet
    csv = root / "Manually_Annotated_file_lists" / "training.csv"
    csv.write_text(csv.read_text().replace("subDirectory_filePath,", "path,", 1))
    with pytest.raises(DatasetError, match="training.csv, line 1: expected the header"):
        get_dataset("affectnet").scan(root)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace(";", ",", 1), "training.csv, line 2: expected 9 columns"),
        (
            lambda t: _replace_field(t, 5, lambda v: v.rsplit(";", 2)[0]),
            "column 'facial_landmarks': expected 136 numbers",
        ),
        (lambda t: _replace_field(t, 6, lambda v: "11"), "column 'expression': unknown expression code 11"),
        (lambda t: _replace_field(t, 1, lambda v: "left"), "column 'face_x': expected a number, got 'left'"),
        (
            lambda t: _replace_field(t, 0, lambda v: "../../etc/passwd"),
            "column 'subDirectory_filePath': path '../../etc/passwd'",
        ),
        (lambda t: _replace_field(t, 0, lambda v: "/etc/passwd"), "must be relative"),
    ],
)
def test_affectnet_malformed_rows_are_recorded_and_the_other_rows_kept(affectnet, edit, expected):
    root, rows = affectnet
    csv = root / "Manually_Annotated_file_lists" / "training.csv"
    csv.write_text(edit(csv.read_text()))
    manifest = get_dataset("affectnet").scan(root)
    assert len(manifest) == len(rows)
    assert re.search(expected, manifest.skip[0]) and "training.csv, line 2" in manifest.skip[0]
    assert manifest.label[0] == -1 and np.isnan(manifest.prior_box[0]).all()
    assert not any(manifest.skip[1:])


def _replace_field(text: str, index: int, change) -> str:
    """Change one field of the first data row (line 2) of an AffectNet CSV."""
    lines = text.splitlines()
    fields = lines[1].split(",")
    fields[index] = change(fields[index])
    lines[1] = ",".join(fields)
    return "\n".join(lines) + "\n"


def test_affectnet_missing_list_file_names_the_layout(affectnet):
    root, _ = affectnet
    (root / "Manually_Annotated_file_lists" / "validation.csv").unlink()
    with pytest.raises(DatasetError, match="validation.csv not found: AffectNet's val list"):
        get_dataset("affectnet").scan(root)


def test_dataset_landmarks_on_a_dataset_without_them_is_refused(tmp_path):
    trees.write_fer2013_csv(tmp_path / "fer", 3)
    with pytest.raises(ConfigError, match="provides no landmarks; use --landmarks dlib"):
        build(tmp_path / "s.zarr", "fer2013", tmp_path / "fer", landmarks={"source": "dataset"})
    assert not (tmp_path / "s.zarr").exists()


# --- RAF-DB ---------------------------------------------------------------------------------


def test_rafdb_aligned_and_original_images(tmp_path, dlib_faces):
    root = tmp_path / "rafdb"
    trees.write_rafdb(root, dlib_faces)
    aligned = build(tmp_path / "a.zarr", "rafdb", root)
    assert column(aligned, "source")[0] == "Image/aligned/train_00001_aligned.jpg"
    assert column(aligned, "label").tolist() == [label - 1 for _, label in trees.RAFDB_FILES]
    assert column(aligned, "split").tolist() == [0, 0, 0, 1, 1]
    assert aligned.attrs[ATTRS_KEY]["label_names"][3] == "happiness"
    assert set(column(aligned, "status").tolist()) <= {Status.OK, Status.OK_PRIOR}
    assert aligned["image"].shape == (5, 3, 100, 100)
    assert np.array_equal(aligned["aligned_from_src"][0], np.eye(2, 3))  # the dataset's crops, kept
    original = build(tmp_path / "o.zarr", "rafdb-original", root)
    assert column(original, "source")[0] == "Image/original/train_00001.jpg"
    assert np.all(column(original, "status") == Status.OK)  # faces detected in the photos


def test_rafdb_errors(tmp_path, dlib_faces):
    trees.write_rafdb(tmp_path, dlib_faces)
    labels = tmp_path / "EmoLabel" / "list_patition_label.txt"
    text = labels.read_text()
    labels.write_text(text.replace("train_00002.jpg 1", "train_00002.jpg 8") + "train_00001.jpg\n")
    manifest = get_dataset("rafdb").scan(tmp_path)  # malformed lines become failed samples
    assert manifest.skip[0] == "" and manifest.skip[1] == (
        "EmoLabel/list_patition_label.txt, line 2, column 'label': unknown label '8'; RAF-DB basic labels are 1-7"
    )
    assert manifest.source[1] == "Image/aligned/train_00002_aligned.jpg" and manifest.label[1] == -1
    last = len(text.splitlines()) + 1
    assert manifest.source[-1] == f"EmoLabel/list_patition_label.txt, line {last}"
    assert "expected '<train|test>_<number>.jpg <label 1-7>', got 'train_00001.jpg'" in manifest.skip[-1]
    group = build(tmp_path / "bad.zarr", "rafdb", tmp_path)
    status = column(group, "status")
    assert status[1] == status[-1] == Status.FAILED and status[0] in (Status.OK, Status.OK_PRIOR)
    labels.write_text("\n")
    with pytest.raises(DatasetError, match="no labelled images in the file"):
        get_dataset("rafdb").scan(tmp_path)
    for path in (tmp_path / "Image" / "aligned").iterdir():
        path.unlink()
    (tmp_path / "Image" / "aligned").rmdir()
    with pytest.raises(DatasetError, match="reads Image/aligned/ .*--dataset rafdb-original"):
        get_dataset("rafdb").scan(tmp_path)


# --- CK+ ------------------------------------------------------------------------------------


def test_ckplus_labels_and_subjects(tmp_path, fer2013_small):
    rows = trees.write_ckplus(tmp_path / "ck", fer2013_small)
    group = build(tmp_path / "s.zarr", "ckplus", tmp_path / "ck")
    names = group.attrs[ATTRS_KEY]["label_names"]
    expected = {f"{ck_class}/{file}": (ck_class, subject) for ck_class, file, subject in rows}
    stored = zip(column(group, "source"), column(group, "label"), column(group, "subject"))
    assert {source: (names[label], subject) for source, label, subject in stored} == expected
    assert set(column(group, "status").tolist()) <= {Status.OK, Status.OK_PRIOR}
    assert list(group.attrs[ATTRS_KEY]["label_sets"]) == ["7", "6"]


def test_ckplus_errors_name_the_entry(tmp_path, fer2013_small):
    trees.write_ckplus(tmp_path, fer2013_small, per_class=1)
    (tmp_path / "neutral").mkdir()
    with pytest.raises(DatasetError, match="unexpected entries in .*: neutral"):
        get_dataset("ckplus").scan(tmp_path)
    (tmp_path / "neutral").rmdir()
    (tmp_path / "happy" / "frame1.png").write_bytes(b"")
    manifest = get_dataset("ckplus").scan(tmp_path)  # a misnamed file is a failed sample; the rest go on
    bad = manifest.source.index("happy/frame1.png")
    assert manifest.skip[bad].startswith("happy/frame1.png: expected a file named S<subject>_<sequence>_<frame>.png")
    assert manifest.subject[bad] == "" and sum(map(bool, manifest.skip)) == 1 and len(manifest) == 8


# --- every adapter --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["affectnet", "fer2013", "ferplus", "rafdb", "rafdb-original", "ckplus"])
def test_a_missing_root_says_to_set_data_root(tmp_path, name):
    with pytest.raises(DatasetError, match="DATA_ROOT"):
        get_dataset(name).scan(tmp_path / "nowhere")


def test_manifests_are_reproducible(tmp_path, dlib_faces):
    root = tmp_path / "affectnet"
    trees.write_affectnet(root, dlib_faces)
    adapter = get_dataset("affectnet")
    assert adapter.scan(root).sha256() == adapter.scan(root).sha256()


def test_the_table_of_defaults_in_docs_says_what_each_adapter_does():
    table = (Path(__file__).resolve().parents[3] / "docs" / "datasets.md").read_text()
    for name, adapter in DATASETS.items():
        align = build_config(adapter.config_defaults).align
        colour = "RGB" if align.color == "rgb" else "gray"
        assert re.search(rf"^\| `{re.escape(name)}` \|.* \| `{align.mode}` {align.size} {colour} \|$", table, re.M), (
            name
        )
