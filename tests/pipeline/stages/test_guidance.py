import cv2
import numpy as np
import pytest
import skimage.data

from pipeline.compute.renderers import RENDERERS, heatmap_sigma
from pipeline.config import GuidanceConfig
from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES, resolve_guidance
from pipeline.landmark_scheme import FLIP_PERMUTATION
from pipeline.stages.heatmaps import (
    LANDMARK_GROUPS,
    REGION_GROUPS,
    guidance_pixel_centres,
    render_grouped_heatmaps,
)
from pipeline.stages.masks import (
    FILLED_REGIONS,
    SOFT_BACKGROUND,
    _filled_regions,
    render_binary_landmark_mask,
    render_dilated_landmark_mask,
    render_face_hull_mask,
    soften_mask,
)
from pipeline.stages.regions import REGIONS, region_boxes
from pipeline.stages.saliency import fine_grained_saliency, spectral_residual_saliency
from tests.support.landmarks import synthetic_landmarks


@pytest.mark.parametrize("aligned_size, guidance_size", [(112, 112), (112, 56), (48, 48), (64, 96)])
def test_single_gaussian_peaks_at_its_landmark_within_half_a_pixel(aligned_size, guidance_size):
    rng = np.random.default_rng(0)
    for point in rng.uniform(0.2, 0.8, size=(10, 2)) * aligned_size:
        heat = render_grouped_heatmaps(point[None], ((0,),), aligned_size, guidance_size, sigma=3.0)[0]
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
    heat = render_grouped_heatmaps(landmarks, (tuple(range(68)),), 100, 100, sigma=2.0)[0]
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


def flip_landmarks(landmarks: np.ndarray, aligned_size: int) -> np.ndarray:
    """The landmarks of the horizontally flipped face: x -> S - x, then left/right indices swapped."""
    flipped = landmarks.copy()
    flipped[:, 0] = aligned_size - flipped[:, 0]
    return flipped[FLIP_PERMUTATION]


def test_flip_permutation_is_an_involution_that_swaps_sides():
    assert np.array_equal(FLIP_PERMUTATION[FLIP_PERMUTATION], np.arange(68))
    face = face_landmarks(112)  # a left/right symmetric face: flipping it gives it back
    np.testing.assert_allclose(flip_landmarks(face, 112), face, atol=1e-4)


# A learned saliency network need not be mirror-symmetric, so flip equivariance is not asked of it.
@pytest.mark.parametrize("name", [name for name, kind in GUIDANCE_TYPES.items() if kind.model is None])
@pytest.mark.parametrize("aligned_size, guidance_size", [(112, 112), (48, 64)])
def test_flipping_landmarks_then_rendering_equals_rendering_then_flipping(name, aligned_size, guidance_size):
    kind, render = GUIDANCE_TYPES[name], RENDERERS[name]
    config = GuidanceConfig(types=(name,), size=guidance_size, heatmap_sigma=2.0)
    rng = np.random.default_rng(7)
    landmarks = (face_landmarks(112) + rng.normal(0, 1.5, (68, 2))).astype(np.float32) * (aligned_size / 112)
    rgb = cv2.resize(skimage.data.astronaut()[30:230, 150:350], (aligned_size, aligned_size))  # a real face
    rendered = render(rgb, landmarks, aligned_size, config, None)
    rendered_flipped = render(rgb[:, ::-1].copy(), flip_landmarks(landmarks, aligned_size), aligned_size, config, None)
    permutation = list(kind.flip_permutation or range(len(kind.channels)))
    if kind.boxes:
        expected = rendered[permutation].copy()
        expected[:, [0, 2]] = aligned_size - rendered[permutation][:, [2, 0]]
        np.testing.assert_allclose(rendered_flipped, expected, atol=1e-3)
        return
    assert rendered.shape == (len(kind.channels), guidance_size, guidance_size) and rendered.dtype == np.uint8
    expected = rendered[permutation][:, :, ::-1]
    if name.startswith("saliency"):  # computed from the image: FFT / integral-image borders are not mirror-exact
        correlation = np.corrcoef(expected.ravel().astype(float), rendered_flipped.ravel().astype(float))[0, 1]
        assert correlation > 0.99
    elif name.startswith("heatmap"):
        assert np.abs(expected.astype(int) - rendered_flipped.astype(int)).max() <= 1
    else:  # polygons: OpenCV's rasteriser is not mirror-exact, so they may differ on edge pixels only
        for want, got in zip(expected, rendered_flipped):
            edge = cv2.dilate(want, np.ones((3, 3), np.uint8)) != cv2.erode(want, np.ones((3, 3), np.uint8))
            assert not np.any((want != got) & ~edge)


def test_region_heatmap_channels_light_up_their_own_landmarks():
    landmarks = face_landmarks(112)
    heat = render_grouped_heatmaps(landmarks, tuple(REGION_GROUPS.values()), 112, 56, sigma=2.0)
    assert heat.shape == (5, 56, 56)
    for channel, name in enumerate(REGION_GROUPS):
        for other, indices in enumerate(REGION_GROUPS.values()):
            pixels = (landmarks[list(indices)] / 2).astype(int)  # guidance pixels of the group's landmarks
            mean = heat[channel, pixels[:, 1], pixels[:, 0]].mean()
            assert mean > 150 if other == channel else mean < 10, (name, list(REGION_GROUPS)[other], mean)


def test_sixty_eight_channel_heatmap_peaks_at_each_landmark():
    landmarks = face_landmarks(112)
    heat = render_grouped_heatmaps(landmarks, LANDMARK_GROUPS, 112, 112, sigma=1.5)
    for i, (x, y) in enumerate(landmarks):
        row, col = np.unravel_index(heat[i].argmax(), heat[i].shape)
        assert abs(col + 0.5 - x) <= 1.0 and abs(row + 0.5 - y) <= 1.0, i


def test_dilated_mask_grows_the_regions_and_drops_the_jaw():
    landmarks = face_landmarks(112)
    regions = _filled_regions(landmarks, 112, 112)  # the binary mask without its jaw line
    dilated = render_dilated_landmark_mask(landmarks, 112, 112)
    assert set(np.unique(dilated)) <= {0, 255}
    assert np.all(dilated[regions == 255] == 255)
    assert (dilated == 255).sum() > 1.5 * (regions == 255).sum()
    chin_x, chin_y = landmarks[8]  # the jaw line at the chin, far from every filled region
    assert dilated[int(chin_y) - 1 : int(chin_y) + 1, int(chin_x)].max() == 0
    assert render_binary_landmark_mask(landmarks, 112, 112)[int(chin_y) - 1 : int(chin_y) + 1, int(chin_x)].max() == 255


def test_face_hull_covers_every_landmark_and_no_corner():
    landmarks = face_landmarks(112)
    hull = render_face_hull_mask(landmarks, 112, 56)
    for x, y in landmarks / 2:
        assert hull[min(int(y), 55), min(int(x), 55)] == 255 or hull[int(y) - 1, int(x)] == 255
    assert hull[0, 0] == hull[0, 55] == hull[55, 0] == hull[55, 55] == 0
    assert hull[28, 28] == 255


def test_region_boxes_sit_on_their_landmarks_scale_with_the_face_and_stay_in_the_crop():
    landmarks = face_landmarks(112)
    boxes = region_boxes(landmarks, 112)
    assert boxes.shape == (len(REGIONS), 4) and boxes.dtype == np.float32
    for (indices, _, _), (left, top, right, bottom) in zip(REGIONS.values(), boxes):
        cx, cy = landmarks[list(indices)].mean(0)
        assert left < cx < right and top < cy < bottom
    mouth = boxes[list(REGIONS).index("mouth")]
    assert mouth[0] < landmarks[48, 0] and landmarks[54, 0] < mouth[2]  # both corners inside
    np.testing.assert_allclose(region_boxes(landmarks * 0.5, 56), boxes * 0.5, atol=1e-4)
    edge = region_boxes(landmarks - [40, 0], 112)  # face pushed off the left edge
    assert edge.min() >= 0 and edge.max() <= 112


def test_fine_grained_saliency_is_finite_normalised_and_deterministic():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 10, (112, 112)).clip(0, 255).astype(np.uint8)
    image[40:60, 50:70] = 250
    first = fine_grained_saliency(image, 56)
    assert first.dtype == np.uint8 and first.min() == 0 and first.max() == 255
    np.testing.assert_array_equal(first, fine_grained_saliency(image.copy(), 56))
    assert fine_grained_saliency(np.full((48, 48), 5, np.uint8), 48).max() == 0


def test_unknown_guidance_names_are_refused_with_the_list():
    with pytest.raises(ConfigError, match="unknown guidance type 'heatmaps'; choose from: heatmap, "):
        GuidanceConfig(types=("heatmaps",))
    assert GuidanceConfig(types=("mask_hull", "heatmap")).types == ("heatmap", "mask_hull")
    assert resolve_guidance("all") == tuple(name for name in GUIDANCE_TYPES if name != "saliency_network")


def test_the_heatmap_sigma_is_a_share_of_the_face_so_maps_match_across_sizes():
    """Stores built before drew every landmark 2 aligned pixels wide, 2.3x narrower relative to the
    face at S = 112 than at 48; the default now scales with the inter-ocular distance."""
    face = synthetic_landmarks()  # eye and mouth centres on the template at S = 100
    relative = GuidanceConfig(types=("heatmap",), size=48)
    assert heatmap_sigma(face * 0.48, relative) == pytest.approx(2.0, rel=0.05)  # FER-2013's S = 48 as before
    assert heatmap_sigma(face * 1.12, relative) == pytest.approx(heatmap_sigma(face * 0.48, relative) * 112 / 48)
    maps = {}
    for pixels in (0.0, 2.0):
        config = GuidanceConfig(types=("heatmap",), size=48, heatmap_sigma=pixels)
        small = RENDERERS["heatmap"](None, face * 0.48, 48, config, None)
        large = RENDERERS["heatmap"](None, face * 1.12, 112, config, None)  # the same face at S = 112, H = 48
        maps[pixels] = np.abs(small.astype(int) - large.astype(int)).max()
    assert maps[0.0] <= 2 < maps[2.0], maps
