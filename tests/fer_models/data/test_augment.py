"""Augmentation moves the image and every guidance tensor together."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fer_models.data.augment import AugmentConfig, augment_batch, flip_batch, random_transforms, warp_batch
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from fer_models.training.engine import prepare_batch
from fer_models.training.store_view import StoreView
from pipeline.landmark_scheme import FLIP_PERMUTATION
from pipeline.stages.heatmaps import LANDMARK_GROUPS, guidance_pixel_centres, render_grouped_heatmaps

FIELDS = ("image", "landmarks", "heatmap", "heatmap_regions", "mask_soft", "regions")


def real_batch(store, n=16) -> dict[str, torch.Tensor]:
    batches = StoreBatches(store, select_samples(store, "train"), FIELDS, n, in_memory=True)
    return prepare_batch(next(iter(batches)), torch.device("cpu"))


def sample_at(maps: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear values of ``(B, C, h, w)`` maps at ``(B, P, 2)`` aligned-pixel points -> (B, C, P)."""
    grid = (points * (2.0 / size) - 1).unsqueeze(1)  # (B, 1, P, 2)
    return F.grid_sample(maps, grid, align_corners=False)[:, :, 0]


def test_flipping_twice_is_the_identity(fer_store):
    batch = real_batch(fer_store)
    view = StoreView.open(str(fer_store))
    everything = torch.ones(len(batch["index"]), dtype=torch.bool)
    twice = flip_batch(flip_batch(batch, everything, 48, view.permutations), everything, 48, view.permutations)
    for key in batch:
        torch.testing.assert_close(twice[key], batch[key], rtol=0, atol=1e-5)


def test_a_flipped_samples_landmarks_land_on_the_flipped_features(fer_store):
    batch = real_batch(fer_store)
    view = StoreView.open(str(fer_store))
    flipped = flip_batch(batch, torch.ones(len(batch["index"]), dtype=torch.bool), 48, view.permutations)
    permutation = torch.from_numpy(FLIP_PERMUTATION)
    # Flipped landmark i is the mirror image of original landmark FLIP_PERMUTATION[i]: the flipped
    # image (and every flipped map) holds at it what the original holds at that landmark.
    for key in ("image", "heatmap", "mask_soft"):
        torch.testing.assert_close(
            sample_at(flipped[key], flipped["landmarks"], 48),
            sample_at(batch[key], batch["landmarks"][:, permutation], 48),
            atol=1e-5,
            rtol=0,
        )
    # Region channels swap sides: the flipped right-eye box is the mirrored left-eye box.
    np.testing.assert_allclose(
        flipped["regions"][:, 0, [0, 2]].numpy(), 48 - batch["regions"][:, 1, [2, 0]].numpy(), atol=1e-5
    )
    right_brows = flipped["heatmap_regions"][:, 0]  # channel 0 holds both brows, which swap with each other
    torch.testing.assert_close(right_brows, batch["heatmap_regions"][:, 0].flip(-1))


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(flip=0.0, degrees=15, scale=0.1, translate=0.08, brightness=0, contrast=0),
        AugmentConfig(flip=0.0, degrees=10, scale=0.0, translate=0.0, brightness=0, contrast=0, crop_area=0.6),
    ],
    ids=["affine", "resized crop"],
)
def test_warped_maps_keep_their_peaks_on_the_moved_landmarks_at_any_resolution(config):
    rng = np.random.default_rng(0)
    size, guidance_size = 48, 64  # maps at another resolution than the image
    landmarks = rng.uniform(14, 34, (2, 68, 2)).astype(np.float32)
    maps = np.stack([render_grouped_heatmaps(lm, LANDMARK_GROUPS, size, guidance_size, sigma=1.5) for lm in landmarks])
    batch = {
        "image": torch.rand(2, 1, size, size),
        "landmarks": torch.from_numpy(landmarks),
        "heatmap_landmarks": torch.from_numpy(maps).float() / 255,
    }
    _, forward = random_transforms(2, config, torch.Generator().manual_seed(1))
    warped = warp_batch(batch, forward, size)
    centres = guidance_pixel_centres(size, guidance_size)
    for b in range(2):
        for i in range(68):
            heat = warped["heatmap_landmarks"][b, i].numpy()
            row, col = np.unravel_index(heat.argmax(), heat.shape)
            moved = warped["landmarks"][b, i].numpy()
            assert abs(centres[col] - moved[0]) <= 0.75 and abs(centres[row] - moved[1]) <= 0.75


def test_augmentation_is_seeded_and_leaves_targets_alone(fer_store):
    batch = real_batch(fer_store)
    view = StoreView.open(str(fer_store))
    first = augment_batch(batch, AugmentConfig(), view.permutations, torch.Generator().manual_seed(5))
    second = augment_batch(batch, AugmentConfig(), view.permutations, torch.Generator().manual_seed(5))
    for key in batch:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert torch.equal(first["target"], batch["target"]) and torch.equal(first["index"], batch["index"])
    assert 0 <= first["image"].min() and first["image"].max() <= 1
    assert not torch.equal(first["image"], batch["image"])
    assert (first["regions"] >= 0).all() and (first["regions"] <= 48).all()
    off = augment_batch(batch, AugmentConfig.off(), view.permutations, torch.Generator().manual_seed(5))
    for key in batch:
        torch.testing.assert_close(off[key], batch[key], rtol=0, atol=1e-6)


def test_a_resized_crop_maps_its_box_onto_the_whole_face():
    config = AugmentConfig(flip=0.0, degrees=0, scale=0, translate=0, brightness=0, contrast=0, crop_area=0.3)
    _, forward = random_transforms(500, config, torch.Generator().manual_seed(0))
    linear = forward[:, :, :2]
    assert torch.allclose(linear[:, 0, 1], torch.zeros(500)) and torch.allclose(linear[:, 1, 0], torch.zeros(500))
    half = 1 / torch.stack([linear[:, 0, 0], linear[:, 1, 1]], 1)  # the box's half sides
    area, ratio = half.prod(1), half[:, 0] / half[:, 1]
    assert area.min() >= 0.3 - 1e-5 and area.max() <= 1 + 1e-5 and area.max() > 0.9 and area.min() < 0.4
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    centre = -forward[:, :, 2] * half
    assert ((centre.abs() + half) <= 1 + 1e-5).all()  # the box lies inside the face


def test_random_erasing_clears_the_same_rectangle_of_the_image_and_every_map():
    batch = {
        "image": torch.ones(64, 1, 48, 48),
        "mask_soft": torch.ones(64, 1, 96, 96),
        "landmarks": torch.rand(64, 68, 2),
    }
    config = AugmentConfig(flip=0, degrees=0, scale=0, translate=0, brightness=0, contrast=0, erase=0.5)
    out = augment_batch(batch, config, {}, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out["landmarks"], batch["landmarks"])
    erased = [(out[k] == 0).flatten(1).any(1) for k in ("image", "mask_soft")]
    assert torch.equal(erased[0], erased[1]) and 15 < int(erased[0].sum()) < 49
    for b in torch.nonzero(erased[0])[:, 0].tolist():
        bounds = []
        for key, side in (("image", 48), ("mask_soft", 96)):
            rows, cols = ((v.float() + 0.5) * (2 / side) - 1 for v in torch.nonzero(out[key][b, 0] == 0, as_tuple=True))
            bounds.append(torch.stack([cols.min(), rows.min(), cols.max(), rows.max()]))
            share = (out[key][b, 0] == 0).float().mean().item()
            assert 0.005 < share < 0.4
        assert (bounds[0] - bounds[1]).abs().max() <= 2 / 48  # within one image pixel
