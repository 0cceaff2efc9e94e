"""The parts the guided families share or own: point and box sampling, and each family's own
losses and inputs, pinned against the papers and the authors' code."""

import torch

from fer_models.data.augment import flip_batch
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from fer_models.models.feratt import gaussian_structure_loss, mix_embeddings, reconstruction_loss
from fer_models.models.keypoint import KeypointFeatureNet, keypoint_regularisation
from fer_models.models.landmark_sampling import roi_align, sample_points
from fer_models.models.local_nonlocal import grid_regions
from fer_models.models.pal import explained_score, privileged_attribution_loss
from fer_models.models.registry import create_model
from fer_models.training.engine import prepare_batch
from fer_models.training.store_view import StoreView
from pipeline.landmark_scheme import FLIP_PERMUTATION


def test_a_landmark_on_a_pixel_centre_reads_exactly_that_feature():
    features = torch.randn(2, 5, 12, 12, generator=torch.Generator().manual_seed(0))
    size = 48  # each feature pixel spans 4 aligned pixels
    rows, cols = torch.tensor([[0, 3, 11], [5, 6, 7]]), torch.tensor([[0, 9, 11], [2, 4, 10]])
    points = torch.stack([(cols + 0.5) * 4, (rows + 0.5) * 4], -1).float()  # (2, 3, 2) aligned pixels
    sampled = sample_points(features, points, size)
    assert sampled.shape == (2, 3, 5)
    for b in range(2):
        for p in range(3):
            torch.testing.assert_close(sampled[b, p], features[b, :, rows[b, p], cols[b, p]], rtol=0, atol=1e-5)


# Grid coordinates are float32, so a sample on a pixel centre may lean 1e-7 of a pixel towards a
# neighbour: "exactly that pixel" means within 1e-5 here.
def test_roi_align_of_a_box_on_the_feature_grid_returns_its_pixels():
    features = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[8.0, 12.0, 24.0, 28.0], [0.0, 0.0, 8.0, 8.0]]]).repeat(2, 1, 1)  # 4x4 and 2x2 pixels
    crops = roi_align(features, boxes, 48, output=4)
    assert crops.shape == (2, 2, 3, 4, 4)
    torch.testing.assert_close(crops[:, 0], features[:, :, 3:7, 2:6], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        roi_align(features, boxes, 48, output=2)[:, 1], features[:, :, 0:2, 0:2], rtol=0, atol=1e-5
    )


def test_keypoint_features_of_a_flipped_batch_are_the_permuted_features(fer_store):
    batch = prepare_batch(
        next(iter(StoreBatches(fer_store, select_samples(fer_store, "train"), ("image", "landmarks"), 8))),
        torch.device("cpu"),
    )
    conv = torch.nn.Conv2d(1, 6, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)  # mirror-symmetric: flip-equivariant
    view = StoreView.open(str(fer_store))
    flipped = flip_batch(batch, torch.ones(8, dtype=torch.bool), 48, view.permutations)
    with torch.no_grad():
        original = sample_points(conv(batch["image"]), batch["landmarks"], 48)
        mirrored = sample_points(conv(flipped["image"]), flipped["landmarks"], 48)
    torch.testing.assert_close(mirrored, original[:, torch.from_numpy(FLIP_PERMUTATION)], atol=1e-5, rtol=0)


def test_keypoint_regularisation_is_zero_without_noise_and_positive_with_it(fer_store):
    batch = prepare_batch(
        next(iter(StoreBatches(fer_store, select_samples(fer_store, "train"), ("image", "landmarks"), 8))),
        torch.device("cpu"),
    )
    torch.manual_seed(0)
    still = KeypointFeatureNet(in_channels=1, image_size=48, width=16, sigma=0.0)
    assert still(batch)["losses"]["keypoint_regularisation"].item() == 0.0
    noisy = KeypointFeatureNet(in_channels=1, image_size=48, width=16, sigma=0.1)
    assert noisy(batch)["losses"]["keypoint_regularisation"].item() > 0.0


def test_pal_loss_falls_as_the_attribution_comes_to_match_the_heatmap():
    torch.manual_seed(0)
    heatmap = torch.zeros(2, 1, 48, 48)
    heatmap[:, :, 10:20, 12:30] = 1.0
    heatmap[:, :, 30:40, 20:28] = 0.5
    matching = torch.nn.functional.interpolate(heatmap, size=(12, 12), mode="area").repeat(1, 4, 1, 1)
    assert privileged_attribution_loss(matching * 3 + 1, heatmap).item() < -0.999  # scale and offset do not matter
    attribution = torch.randn(2, 4, 12, 12, requires_grad=True)
    first = privileged_attribution_loss(attribution, heatmap)
    assert abs(first.item()) < 0.3
    optimizer = torch.optim.Adam([attribution], lr=0.1)
    losses = []
    for _ in range(20):
        loss = privileged_attribution_loss(attribution, heatmap, "mean")
        optimizer.zero_grad()
        loss.backward()
        assert attribution.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5 and losses[-1] < -0.9
    half = privileged_attribution_loss(torch.cat([matching[:, :2], torch.randn(2, 2, 12, 12)], 1), heatmap, "half")
    assert half.item() < -0.999  # only the first half of the channels is constrained


def test_gaussian_structure_loss_prefers_separated_classes():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    separated = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [-5, 5], [-5, 5.1]])
    mixed = torch.tensor([[0.0, 0], [5, 5], [5.1, 5], [-5, 5], [0.1, 0], [-5, 5.1]])
    assert gaussian_structure_loss(separated, target, 7) < 0.01 < 0.5 < gaussian_structure_loss(mixed, target, 7)
    assert gaussian_structure_loss(separated, torch.zeros(6, dtype=torch.long), 7).item() == 0.0


def authors_dgmm_loss(x: torch.Tensor, y: torch.Tensor, classes: int, sigma: float = 1.0) -> torch.Tensor:
    """DGMMLoss of pedrodiamel/ferattention (torchlib/netlosses.py, no mixup), written out class by class."""
    pi, one_hot = torch.zeros(len(x), classes), torch.zeros(len(x), classes)
    for c in range(classes):
        members = y == c
        if members.sum() == 0:
            continue
        pi[:, c] = torch.exp(-((x - x[members].mean(0)) ** 2).sum(1) / (2.0 * sigma**2))
        one_hot[members, c] = 1
    pi = (pi / (pi.sum(1, keepdim=True) + 1e-15)).clamp(0.0, 1.0)
    return ((pi - one_hot) ** 2).sum(1).mean()


def test_feratt_structure_loss_equals_the_authors_dgmm_loss_on_fixed_tensors():
    generator = torch.Generator().manual_seed(0)
    for batch, sigma in ((2, 1.0), (9, 1.0), (16, 2.0), (37, 3.0)):
        embedding = torch.randn(batch, 5, generator=generator, requires_grad=True)
        target = torch.randint(0, 7, (batch,), generator=generator)
        expected = authors_dgmm_loss(embedding, target, 7, sigma)
        ours = gaussian_structure_loss(embedding, target, 7, sigma)
        torch.testing.assert_close(ours, expected)
        torch.testing.assert_close(torch.autograd.grad(ours, embedding)[0], torch.autograd.grad(expected, embedding)[0])


def test_feratt_reconstruction_loss_is_the_authors_attloss():
    generator = torch.Generator().manual_seed(0)
    face, attention_image = torch.rand(3, 1, 8, 8, generator=generator), torch.rand(3, 1, 8, 8, generator=generator)
    torch.testing.assert_close(reconstruction_loss(attention_image, face), 10 * ((face - attention_image) ** 2).mean())
    assert reconstruction_loss(attention_image * 100, face).item() == 300.0  # the mean error is clamped at 30


def test_feratt_mixup_adds_mixed_embeddings_labelled_by_their_neighbours():
    embedding = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [10.1, 10.0], [10.0, 10.1]])
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.manual_seed(0)  # the Beta(2, 2) weight
    points, labels = mix_embeddings(embedding, target, torch.Generator().manual_seed(0))
    assert points.shape == (12, 2) and labels.shape == (12,)
    torch.testing.assert_close(points[:6], embedding)
    nearest_cluster = (points[6:].mean(1) > 5).long()
    assert torch.equal(labels[6:], nearest_cluster)


def test_pal_constrains_the_attribution_of_the_label_score_so_its_loss_depends_on_the_label():
    torch.manual_seed(0)
    model = create_model("pal", in_channels=1, num_classes=7, image_size=48, width=8).train()
    batch = {"image": torch.rand(4, 1, 48, 48), "heatmap": torch.rand(4, 1, 48, 48)}
    losses = {
        label: model({**batch, "target": torch.full((4,), label)})["losses"]["privileged_attribution"].item()
        for label in range(3)
    }
    assert len({round(loss, 6) for loss in losses.values()}) == 3, losses
    one_hot = torch.nn.functional.one_hot(torch.full((4,), 2), 7).float()
    soft = model({**batch, "target": one_hot})["losses"]["privileged_attribution"].item()
    assert abs(soft - losses[2]) < 1e-6  # a one-hot distribution explains the same score as its label
    logits = torch.randn(4, 7)
    assert explained_score(logits, None, "predicted") == logits.max(1).values.sum()


def test_keypoint_penalty_is_unchanged_when_the_features_are_scaled():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 16, 28, 28, generator=generator)
    landmarks = torch.rand(2, 68, 2, generator=generator) * 100 + 6
    moved = landmarks + torch.randn(2, 68, 2, generator=generator) * 3
    penalty = keypoint_regularisation(maps, landmarks, moved, 112)
    assert penalty.item() > 0.01
    for scale in (1e-3, 7.0):
        torch.testing.assert_close(keypoint_regularisation(maps * scale, landmarks, moved, 112), penalty)


def test_keypoint_features_are_sampled_on_a_quarter_resolution_grid_by_default():
    image = torch.rand(2, 3, 112, 112)
    fused = KeypointFeatureNet(in_channels=3, image_size=112, width=8).feature_maps(image)
    assert fused.shape == (2, 32, 28, 28)  # stage 3's 4w channels on stage 1's grid (S / 4)
    own = KeypointFeatureNet(in_channels=3, image_size=112, width=8, fuse=False).feature_maps(image)
    assert own.shape == (2, 32, 7, 7)


def test_local_nonlocal_twin_reads_no_landmarks_and_its_local_networks_see_the_unet():
    twin = create_model("local-nonlocal", in_channels=1, image_size=48, regions="grid")
    assert twin.inputs == ("image",)
    image = torch.rand(2, 1, 48, 48, requires_grad=True)
    output = twin({"image": image})
    assert output["local_features"].shape[:2] == (2, 6)
    boxes = grid_regions(1, 48, torch.device("cpu"))[0]
    assert boxes[0].tolist() == [0.0, 0.0, 24.0, 16.0] and boxes[-1].tolist() == [24.0, 32.0, 48.0, 48.0]
    # The U-Net's maps reach the local features (not only the pooled global vector).
    gradient = torch.autograd.grad(output["local_features"].sum(), twin.nonlocal_net.out.weight)[0]
    assert gradient.abs().sum() > 0


def test_guided_stn_with_guidance_at_the_sampler_warps_the_weighted_image():
    torch.manual_seed(0)
    image, mask = torch.rand(2, 1, 48, 48), torch.zeros(2, 1, 48, 48)
    mask[:, :, 10:30, 10:30] = 1.0
    plain = create_model("guided-stn", in_channels=1, image_size=48)
    both = create_model("guided-stn", in_channels=1, image_size=48, sampler_guidance=True)
    batch = {"image": image, "mask_soft": mask}
    torch.testing.assert_close(plain(batch)["warped"], image, atol=1e-5, rtol=0)  # identity at the start
    torch.testing.assert_close(both(batch)["warped"], image * mask, atol=1e-5, rtol=0)
