"""A dataset's crop framing: fitted from landmarks, fitted back onto a face of any scale and place."""

import numpy as np

from pipeline.stages.crop_framing import MIN_FRAMING_FACES, CropFraming

rng = np.random.default_rng(0)
FACE = rng.uniform(0.2, 0.8, (68, 2))  # a face's landmarks as shares of its crop


def test_the_crop_of_a_face_is_where_the_dataset_s_crops_put_it_at_any_scale_and_place():
    crops = np.repeat(FACE[None], MIN_FRAMING_FACES, axis=0) * 48 + rng.normal(0, 0.2, (MIN_FRAMING_FACES, 68, 2))
    framing = CropFraming.fit(crops, np.full(MIN_FRAMING_FACES, 48.0))
    assert framing is not None and framing.source_size == 48
    for side, left, top in ((300.0, 120.0, 40.0), (30.0, -5.0, 10.0)):
        box = framing.crop_box(FACE * side + (left, top))
        assert np.allclose(box, (left, top, left + side, top + side), atol=0.02 * side)
    assert CropFraming.from_dict(framing.to_dict()) == framing
    assert CropFraming.fit(crops[:-1], np.full(MIN_FRAMING_FACES - 1, 48.0)) is None


def test_the_cut_is_the_crop_resized_to_the_dataset_s_side():
    framing = CropFraming(tuple(FACE.ravel()), 48, MIN_FRAMING_FACES)
    photo = np.zeros((600, 800), np.uint8)
    photo[100:340, 200:440] = np.kron(rng.integers(0, 256, (48, 48)), np.ones((5, 5))).astype(np.uint8)
    cut = framing.cut(photo, FACE * 240 + (200, 100))  # the face of a 240-pixel crop at (200, 100)
    expected = photo[100:340, 200:440].reshape(48, 5, 48, 5).mean(axis=(1, 3))
    assert cut.shape == (48, 48) and np.abs(cut.astype(float) - expected).mean() < 1.0
