"""--detect auto / never, the mapping of dataset boxes to dlib's framing, detection on a scaled
copy and reduced JPEG decoding, on the dlib example photos (real faces, real dlib models)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.compute.image_chain import process_image, reduction_allowed
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.stages.align import apply_affine
from pipeline.stages.box_mapping import BoxMapping, fit_box_mapping
from pipeline.stages.decode import decode_reduced
from pipeline.stages.detect import box_iou, detect_face
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store import Status, open_store, provenance_of, read_array
from tests.support import dataset_trees as trees
from tests.support.dataset_trees import another_framing
from tests.support.landmarks import relative_distances
from tests.support.shared_data import reference_faces

SCALE = 3  # the photos upscaled: faces of 111-327 px, as in AffectNet's large photos


@pytest.fixture(scope="module")
def models():
    return thread_models(ModelFiles.locate())


@pytest.fixture(scope="module")
def faces(dlib_faces):
    """``(photo, XML box)`` of every XML face, the photos upscaled by :data:`SCALE`."""
    photos, found = {}, []
    for file, box, _ in reference_faces(dlib_faces):
        if file not in photos:
            photo = np.asarray(Image.open(dlib_faces / file).convert("RGB"))
            photos[file] = cv2.resize(photo, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
        found.append((photos[file], box * SCALE))
    return found


def relative_distance(reference: np.ndarray, other: np.ndarray) -> float:
    """One face's mean landmark distance over the inter-ocular distance of ``reference``."""
    return float(relative_distances(reference, other)[0])


@pytest.mark.slow
def test_landmarks_from_a_mapped_dataset_box_agree_with_the_detector_path(faces, models):
    """Boxes of another framing, mapped by the fit, place dlib's landmarks where the detector's
    boxes place them: within 2% of the inter-ocular distance for the median face (the detector
    agrees with itself on a photo shifted by a few pixels about as well: docs/benchmarks.md)."""
    found = [(photo, box, detect_face(models.detector, photo, 0, another_framing(box)).box) for photo, box in faces]
    pairs = [(photo, box, detected) for photo, box, detected in found if detected is not None]
    assert len(pairs) >= len(faces) - 2  # HOG at native resolution misses a face of 111 px
    mapping = fit_box_mapping(
        np.array([another_framing(box) for _, box, _ in pairs]), np.array([d for _, _, d in pairs]), len(faces)
    )
    assert mapping.fitted_on == len(pairs) and 0.6 < mapping.scale_x < 0.9 and 0.03 < mapping.shift_y < 0.12
    distances = [
        relative_distance(
            predict_landmarks(models.predictor, photo, detected),
            predict_landmarks(models.predictor, photo, mapping.apply(another_framing(box))),
        )
        for photo, box, detected in pairs
    ]
    unmapped = [
        relative_distance(
            predict_landmarks(models.predictor, photo, detected),
            predict_landmarks(models.predictor, photo, another_framing(box)),
        )
        for photo, box, detected in pairs
    ]
    assert np.median(distances) <= 0.02 and np.percentile(distances, 90) <= 0.06, distances
    assert np.median(unmapped) > 2 * np.median(distances)  # the mapping is what makes them agree


@pytest.mark.slow
def test_a_store_built_with_auto_places_the_landmarks_the_detector_would(tmp_path, dlib_faces):
    """On AffectNet's layout with large photos and boxes of another framing, ``--detect auto``
    fits the mapping when the store is created (recorded in the provenance), runs no detector,
    and its landmarks agree with ``--detect always``'s within 2% of the inter-ocular distance for
    the median face."""
    root, _, _ = trees.write_affectnet_photos(tmp_path, scale=SCALE)
    stores = {}
    for mode in ("always", "auto"):
        config = build_config(
            get_dataset("affectnet").config_defaults, {"detect": {"mode": mode}, "guidance": {"types": "heatmap"}}
        )
        summary = preprocess(tmp_path / f"{mode}.zarr", "affectnet", root, config, scheduler=SYNCHRONOUS)
        assert ("detect" in summary.stage_seconds) == (mode == "always")
        stores[mode] = open_store(tmp_path / f"{mode}.zarr")
    mapping = provenance_of(stores["auto"]).box_mapping
    assert mapping is not None and mapping.fitted_on >= 40 and 0.6 < mapping.scale_y < 0.8
    assert provenance_of(stores["always"]).box_mapping is None
    always, auto = (read_array(stores[mode], "landmarks_src") for mode in ("always", "auto"))
    assert np.all(read_array(stores["auto"], "status") == Status.OK_PRIOR)
    distances = [relative_distance(a, b) for a, b in zip(always, auto)]
    # the detector agrees with itself on the photos shifted by a few pixels to 2.2% (median) and
    # 6.3% (90th percentile) at this scale: bench/affectnet.py
    assert np.median(distances) <= 0.02 and np.percentile(distances, 90) <= 0.08, distances


def test_a_detection_on_a_scaled_copy_is_in_the_full_size_frame(faces, models):
    """min_face runs the detector on a smaller copy; its boxes land on the same faces as at full
    size (HOG's boxes come in steps of scale, so not on the same pixels), and the landmarks placed
    in them agree within 3% of the inter-ocular distance for the median face."""
    distances = []
    for photo, box in [(photo, box) for photo, box in faces if box[2] - box[0] >= 112][:12]:  # min_face or more
        full = detect_face(models.detector, photo, 1, box)
        scaled = detect_face(models.detector, photo, 1, box, min_face=112)
        assert full.box is not None and scaled.box is not None
        assert box_iou(full.box, scaled.box) >= 0.5
        reference = predict_landmarks(models.predictor, photo, full.box)
        distances.append(relative_distance(reference, predict_landmarks(models.predictor, photo, scaled.box)))
    assert len(distances) == 12 and np.median(distances) < 0.03, distances


def test_a_reduced_decode_keeps_the_face_at_least_s_pixels_and_the_source_frame(faces, models):
    """A JPEG decoded at 1/2 gives the same landmarks (in source pixels) as at full size, within
    a few percent of the inter-ocular distance; aligned_from_src still maps source landmarks to the
    aligned ones; the reduction chosen never leaves the face fewer than S pixels across."""
    photo, box = max(faces, key=lambda face: face[1][2] - face[1][0])  # the largest face
    encoded = io.BytesIO()
    Image.fromarray(photo).save(encoded, "JPEG", quality=92)
    config = build_config({"detect": {"mode": "auto"}, "guidance": {"types": "heatmap"}})
    factor = reduction_allowed(box, BoxMapping(), config)
    assert factor >= 2 and min(box[2] - box[0], box[3] - box[1]) / factor >= config.align.size
    assert reduction_allowed(box, BoxMapping(), build_config({})) == 1  # --detect always: size unknown
    full, _ = decode_reduced(encoded.getvalue(), max_pixels=10**8, largest_factor=1)
    reduced, scale = decode_reduced(encoded.getvalue(), max_pixels=10**8, largest_factor=factor)
    assert scale == factor and reduced.shape[0] == -(-full.shape[0] // factor)
    at_full = process_image(full, box, config, models)
    at_reduced = process_image(reduced, box, config, models, pixel_scale=scale)
    assert at_full.status == at_reduced.status == Status.OK_PRIOR
    assert relative_distance(at_full.landmarks_src, at_reduced.landmarks_src) < 0.04
    np.testing.assert_allclose(
        apply_affine(at_reduced.aligned_from_src, at_reduced.landmarks_src), at_reduced.landmarks, atol=0.05
    )


def test_detect_never_runs_no_detector_and_auto_records_its_mapping(tmp_path, dlib_faces):
    """AffectNet's default (auto) maps every row's box and records the mapping in the provenance;
    never does the same, and on a dataset without boxes takes the prior (full frame) or reports
    the sample has no box; neither runs the detector on a sample."""
    root = tmp_path / "affectnet"
    rows = trees.write_affectnet(root, dlib_faces)
    config = build_config(get_dataset("affectnet").config_defaults, {"guidance": {"types": "heatmap"}})
    assert config.detect.mode == "auto"
    summary = preprocess(tmp_path / "auto.zarr", "affectnet", root, config, scheduler=SYNCHRONOUS)
    group = open_store(tmp_path / "auto.zarr")
    provenance = provenance_of(group)
    assert provenance.preprocess_config.detect.mode == "auto" and "detect" not in summary.stage_seconds
    # its faces of 37-109 px are mostly too small for HOG at native resolution: too few to fit
    assert provenance.box_mapping == BoxMapping(tried=len(rows))
    status = read_array(group, "status")
    assert np.all(status[:-1] == Status.OK_PRIOR) and status[-1] == Status.UNREADABLE
    assert not read_array(group, "faces_detected").any() and np.isnan(read_array(group, "face_score")).all()

    folder = tmp_path / "folder" / "faces"
    folder.mkdir(parents=True)
    for row in rows[:2]:
        Image.open(root / "Manually_Annotated_Images" / row.path).convert("RGB").save(folder / f"{row.path[:3]}.png")
    for prior, expected in (("full-frame", Status.OK_PRIOR), ("none", Status.NO_FACE)):
        never = build_config({"detect": {"mode": "never", "prior": prior}, "guidance": {"types": "heatmap"}})
        summary = preprocess(tmp_path / f"never-{prior}.zarr", "folder", folder.parent, never, scheduler=SYNCHRONOUS)
        group = open_store(tmp_path / f"never-{prior}.zarr")
        assert "detect" not in summary.stage_seconds and provenance_of(group).box_mapping is None
        assert np.all(read_array(group, "status") == expected)
        if prior == "none":
            assert "--detect never runs the detector" in str(read_array(group, "message")[0])


def test_a_detector_miss_advises_what_fits_the_image(models):
    """A small image may be a face cropped to its frame (--prior full-frame); a photo without a
    face needs nothing, or more upsampling for a small face; never the cropped-face advice."""
    config = build_config({"guidance": {"types": "heatmap"}})
    small = process_image(np.full((48, 48), 128, np.uint8), None, config, models)
    photo = process_image(np.full((400, 600, 3), 128, np.uint8), None, config, models)
    assert small.status == photo.status == Status.NO_FACE
    assert "build with --prior full-frame" in small.message
    assert "full-frame" not in photo.message and "--upsample 2" in photo.message and "about 40 pixels" in photo.message
