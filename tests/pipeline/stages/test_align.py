import numpy as np

from pipeline.stages.align import (
    TEMPLATE_FRACTIONS,
    aligned_from_src_matrix,
    anchor_points,
    apply_affine,
    invert_affine,
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
