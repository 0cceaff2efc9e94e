"""dlib's real models on dlib's example photos."""

import dlib
import numpy as np
import pytest

from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.stages.decode import decode_image
from pipeline.stages.detect import detect_face
from pipeline.stages.landmarks import predict_landmarks
from tests.support.shared_data import reference_faces


@pytest.fixture(scope="module")
def models():
    return thread_models(ModelFiles.locate())


def load(path):
    return decode_image(path.read_bytes(), max_pixels=40_000_000)


def max_landmark_error(folder, models, decode) -> float:
    faces = list(reference_faces(folder))
    assert len(faces) == 43
    images, worst = {}, 0.0
    for file, box, reference in faces:
        image = images.setdefault(file, decode(folder / file))
        landmarks = predict_landmarks(models.predictor, image, box)
        assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
        # Our frame puts pixel centres at +0.5; the XML uses dlib's integer pixel coordinates.
        worst = max(worst, float(np.abs(landmarks - 0.5 - reference).max()))
    return worst


def test_landmarks_match_the_dlib_reference_within_two_pixels(dlib_faces, models):
    # The XML was made from pixels decoded by dlib's own JPEG loader.
    assert max_landmark_error(dlib_faces, models, lambda p: dlib.load_rgb_image(str(p))) <= 2.0


def test_landmarks_from_our_decoder_stay_within_three_pixels(dlib_faces, models):
    # Pillow and OpenCV (libjpeg-turbo) decode these JPEGs identically to each other but up to 26
    # grey levels away from dlib's bundled libjpeg, which moves one point of one face by 3 px.
    assert max_landmark_error(dlib_faces, models, load) <= 3.0


def test_detector_finds_a_face_in_each_reference_photo(dlib_faces, models):
    for file in {f for f, _, _ in reference_faces(dlib_faces)}:
        found = detect_face(models.detector, load(dlib_faces / file), upsample=1)
        assert found.box is not None and found.faces >= 1 and found.score > 0, file


def test_detector_finds_no_face_on_dogs(dlib_faces, models):
    found = detect_face(models.detector, load(dlib_faces / "dogs.jpg"), upsample=1)
    assert found.box is None and found.faces == 0 and np.isnan(found.score)


def test_largest_of_several_faces_wins(dlib_faces, models):
    image = load(dlib_faces / "bald_guys.jpg")
    rects = models.detector(image, 0)
    assert len(rects) > 5
    largest = max(rects, key=lambda r: r.area())
    found = detect_face(models.detector, image, upsample=0)
    np.testing.assert_array_equal(found.box, [largest.left(), largest.top(), largest.right() + 1, largest.bottom() + 1])
    assert found.faces == len(rects) and found.undecided
