import numpy as np
import pytest

from pipeline.stages.heatmaps import guidance_pixel_centres, render_landmark_heatmap
from pipeline.stages.masks import FILLED_REGIONS, SOFT_BACKGROUND, render_binary_landmark_mask, soften_mask
from pipeline.stages.saliency import spectral_residual_saliency
from tests.pipeline.test_align import synthetic_landmarks


@pytest.mark.parametrize("aligned_size, guidance_size", [(112, 112), (112, 56), (48, 48), (64, 96)])
def test_single_gaussian_peaks_at_its_landmark_within_half_a_pixel(aligned_size, guidance_size):
    rng = np.random.default_rng(0)
    for point in rng.uniform(0.2, 0.8, size=(10, 2)) * aligned_size:
        heat = render_landmark_heatmap(point[None], aligned_size, guidance_size, sigma=3.0)
        assert heat.dtype == np.uint8 and heat.shape == (guidance_size, guidance_size)
        assert heat.max() == 255
        # The peak may span a few pixels after rounding to uint8: take their centre.
        rows, cols = np.nonzero(heat == 255)
        centres = guidance_pixel_centres(aligned_size, guidance_size)
        pixel = aligned_size / guidance_size  # one guidance pixel, in aligned pixels
        assert abs(centres[cols].mean() - point[0]) <= pixel / 2
        assert abs(centres[rows].mean() - point[1]) <= pixel / 2


def test_heatmap_of_68_landmarks_is_bright_at_landmarks_and_dark_far_away():
    landmarks = synthetic_landmarks()  # S = 100
    heat = render_landmark_heatmap(landmarks, 100, 100, sigma=2.0)
    for x, y in landmarks:
        assert heat[int(y), int(x)] > 60
    assert heat[:5, :5].max() == 0


def face_landmarks(size=112) -> np.ndarray:
    """A plausible frontal face in aligned pixels (eyes, brows, nose, mouth, jaw)."""
    s = size / 112
    jaw = [(18 + 76 * t, 40 + 60 * np.sin(np.pi * t) ** 0.5) for t in np.linspace(0, 1, 17)]
    right_brow = [(28 + 6 * i, 30 - 2 * np.sin(np.pi * i / 4)) for i in range(5)]
    left_brow = [(60 + 6 * i, 30 - 2 * np.sin(np.pi * i / 4)) for i in range(5)]
    bridge = [(56, 40 + 5 * i) for i in range(4)]
    lower_nose = [(48 + 4 * i, 62 + (2 if i in (1, 3) else 3 if i == 2 else 0)) for i in range(5)]

    def ring(cx, cy, rx, ry, n):
        return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in np.linspace(np.pi, 3 * np.pi, n, endpoint=False)]

    eyes = ring(38, 38, 7, 3, 6) + ring(74, 38, 7, 3, 6)
    outer = ring(56, 78, 14, 6, 12)
    inner = ring(56, 78, 9, 2, 8)
    points = np.array(jaw + right_brow + left_brow + bridge + lower_nose + eyes + outer + inner, np.float32)
    assert points.shape == (68, 2)
    return points * s


@pytest.mark.parametrize("guidance_size", [112, 48])
def test_binary_mask_covers_the_regions_and_nothing_of_the_background(guidance_size):
    landmarks = face_landmarks(112)
    mask = render_binary_landmark_mask(landmarks, 112, guidance_size)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    scale = guidance_size / 112
    for name, indices in FILLED_REGIONS.items():
        cx, cy = landmarks[list(indices)].mean(0) * scale
        assert mask[int(cy), int(cx)] == 255, name
    # Background: the corners and the cheeks between eye and jaw stay black.
    for x, y in [(2, 2), (110, 2), (2, 110), (110, 110), (24, 60), (88, 60)]:
        assert mask[int(y * scale), int(x * scale)] == 0
    # Nothing is drawn outside the landmarks' bounding box (plus the jaw line's thickness).
    ys, xs = np.nonzero(mask)
    low, high = landmarks.min(0) * scale - 2, landmarks.max(0) * scale + 2
    assert xs.min() >= low[0] and xs.max() <= high[0] and ys.min() >= low[1] and ys.max() <= high[1]


def test_mouth_and_inner_mouth_overlap_leaves_no_hole():
    mask = render_binary_landmark_mask(face_landmarks(112), 112, 112)
    assert mask[78, 56] == 255  # centre of the inner mouth, inside the outer mouth too


def test_soft_mask_keeps_features_and_halves_the_background():
    binary = render_binary_landmark_mask(face_landmarks(112), 112, 112)
    soft = soften_mask(binary)
    assert set(np.unique(soft)) == {SOFT_BACKGROUND, 255}
    np.testing.assert_array_equal(soft == 255, binary == 255)


def test_saliency_is_finite_normalised_and_deterministic():
    rng = np.random.default_rng(3)
    image = (rng.normal(100, 10, (112, 112, 3))).clip(0, 255).astype(np.uint8)
    image[40:60, 50:70] = 250  # a salient patch
    first = spectral_residual_saliency(image, 56)
    second = spectral_residual_saliency(image.copy(), 56)
    assert first.dtype == np.uint8 and first.shape == (56, 56)
    assert first.min() == 0 and first.max() == 255
    np.testing.assert_array_equal(first, second)
    assert first[20:30, 25:35].mean() > first.mean()  # the patch stands out


def test_saliency_of_a_constant_image_is_zero():
    assert spectral_residual_saliency(np.full((48, 48), 77, np.uint8), 48).max() == 0
