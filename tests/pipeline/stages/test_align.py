import numpy as np

from pipeline.stages.align import (
    ARCFACE_TEMPLATE_112,
    TEMPLATE_FRACTIONS,
    aligned_from_src_for,
    aligned_from_src_matrix,
    anchor_points,
    apply_affine,
    five_points,
    invert_affine,
    resample_to_aligned,
    similarity_from_points,
    warp_to_aligned,
)
from tests.support.landmarks import synthetic_landmarks


def test_similarity_recovers_a_known_transform():
    src = np.array([[0, 0], [10, 0], [3, 7]], float)
    c, s = 2 * np.cos(0.3), 2 * np.sin(0.3)
    dst = src @ np.array([[c, -s], [s, c]]).T + [5, -2]
    matrix = similarity_from_points(src, dst)
    np.testing.assert_allclose(apply_affine(matrix, src), dst, atol=1e-5)


def test_alignment_puts_the_anchors_on_the_template():
    landmarks = synthetic_landmarks(scale=3.0, angle=0.4, offset=(200, 120))
    matrix = aligned_from_src_matrix(landmarks, size=112)
    aligned_anchors = anchor_points(apply_affine(matrix, landmarks))
    np.testing.assert_allclose(aligned_anchors, TEMPLATE_FRACTIONS * 112, atol=1e-3)
    np.testing.assert_allclose(
        apply_affine(invert_affine(matrix), apply_affine(matrix, landmarks)), landmarks, atol=1e-3
    )


def dot_image(height, width, point) -> np.ndarray:
    """A black image with one bright Gaussian blob centred at ``point`` (corner frame)."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    blob = np.exp(-((x - point[0]) ** 2 + (y - point[1]) ** 2) / (2 * 3.0**2))
    return np.round(blob * 255).astype(np.uint8)


def centroid(image) -> np.ndarray:
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] + 0.5
    weight = image.astype(float)
    return np.array([(x * weight).sum(), (y * weight).sum()]) / weight.sum()


def test_warped_pixels_land_where_the_transform_maps_points():
    # Checks the half-pixel convention: the warp and apply_affine agree on where a point goes.
    landmarks = synthetic_landmarks(scale=1.5, angle=-0.2, offset=(30, 40))
    matrix = aligned_from_src_matrix(landmarks, size=112)
    point = landmarks[30]  # nose tip
    aligned = warp_to_aligned(dot_image(240, 260, point), matrix, 112)
    np.testing.assert_allclose(centroid(aligned), apply_affine(matrix, point[None])[0], atol=0.15)


def test_strong_downscaling_keeps_the_point_mapping():
    landmarks = synthetic_landmarks(scale=8.0, angle=0.1, offset=(100, 50))
    matrix = aligned_from_src_matrix(landmarks, size=48)  # shrinks the face about 16x
    point = landmarks[30]
    y, x = np.mgrid[0:1000, 0:1000] + 0.5
    blob = np.exp(-((x - point[0]) ** 2 + (y - point[1]) ** 2) / (2 * 40.0**2))
    aligned = warp_to_aligned(np.round(blob * 255).astype(np.uint8), matrix, 48)
    np.testing.assert_allclose(centroid(aligned), apply_affine(matrix, point[None])[0], atol=0.3)


def test_color_and_gray_shapes():
    landmarks = synthetic_landmarks()
    matrix = aligned_from_src_matrix(landmarks, size=64)
    assert warp_to_aligned(np.zeros((100, 100, 3), np.uint8), matrix, 64).shape == (64, 64, 3)
    assert warp_to_aligned(np.zeros((100, 100), np.uint8), matrix, 64).shape == (64, 64)


def test_the_crop_mode_keeps_a_crop_of_size_s_unchanged_and_scales_a_larger_one_with_its_points():
    image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    landmarks = synthetic_landmarks(scale=0.4)
    same = aligned_from_src_for("crop", landmarks, image.shape, 48)
    np.testing.assert_array_equal(same, np.eye(2, 3))
    np.testing.assert_array_equal(resample_to_aligned(image, same, 48, "crop"), image)
    doubled = aligned_from_src_for("crop", landmarks, image.shape, 96)
    np.testing.assert_allclose(apply_affine(doubled, landmarks), landmarks * 2, atol=1e-5)
    resized = resample_to_aligned(dot_image(48, 48, (12.0, 30.0)), doubled, 96, "crop")
    np.testing.assert_allclose(centroid(resized), (24.0, 60.0), atol=0.3)  # the dot follows the scaling
    flat = resample_to_aligned(np.full((48, 48), 200, np.uint8), doubled, 96, "crop")
    assert flat.shape == (96, 96) and (flat == 200).all()  # edges are not blended with black
    wide = aligned_from_src_for("crop", landmarks, (50, 100, 3), 25)  # a source that is not square
    np.testing.assert_allclose(apply_affine(wide, [[100, 50]]), [[25, 25]])


def test_the_arcface_mode_puts_the_five_points_on_insightfaces_template_scaled_to_s():
    template = ARCFACE_TEMPLATE_112  # a face whose five points lie on the template, then moved
    landmarks = np.random.default_rng(2).uniform(30, 90, (68, 2))
    for index, target in zip((range(36, 42), range(42, 48), [30], [48], [54]), template):
        landmarks[list(index)] += target - landmarks[list(index)].mean(0)
    c, s = 2.5 * np.cos(-0.3), 2.5 * np.sin(-0.3)
    moved = landmarks @ np.array([[c, -s], [s, c]]).T + (40, 75)
    for size in (112, 224):
        matrix = aligned_from_src_for("arcface", moved, (500, 500), size)
        np.testing.assert_allclose(five_points(apply_affine(matrix, moved)), template * size / 112, atol=1e-3)
