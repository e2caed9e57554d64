"""ManyDepth's matching encoder (networks/manydepth.py): shapes (check 8.1), depth bins (8.2),
the cost volume of a textured plane (8.3), zero poses (8.4), the border (8.5), the trackers
(8.6), the matching mask (8.7), the zero-cost pitfall, and the weight-file names."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from layers import BackprojectDepth, Project3D, transformation_from_parameters
from networks.manydepth import ResnetEncoderMatching, depth_bins, matching_mask

B, H, W, D = 2, 64, 192, 16  # small input: matching at 16 x 48


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def intrinsics(h, w, batch=B):
    """Monodepth2's normalised KITTI K in pixels of h x w, and its inverse (batch x 4 x 4)."""
    K = torch.eye(4)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = 0.58 * w, 1.92 * h, 0.5 * w, 0.5 * h
    return K.repeat(batch, 1, 1), torch.inverse(K).repeat(batch, 1, 1)


def pose(t, axisangle=(0.0, 0.0, 0.0)):
    """4 x 4 mapping target points into the lookup frame: x' = R x + t."""
    return transformation_from_parameters(torch.tensor(axisangle).view(1, 1, 3), torch.tensor(t).view(1, 1, 3))[0]


def encoder(num_bins=D, height=H, width=W, **kwargs):
    torch.manual_seed(0)
    return ResnetEncoderMatching(18, False, height, width, num_depth_bins=num_bins, **kwargs).eval()


def smooth_features(batch, channels, h, w, seed):
    """Random noise blurred twice by a 5 x 5 box: a texture without flat areas."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, h + 8, w + 8, generator=g)
    for _ in range(2):
        x = F.avg_pool2d(x, 5, stride=1)
    return x


# ---- 8.1 shapes

@pytest.mark.parametrize("num_lookups", [1, 2])
def test_forward_shapes_small(num_lookups):
    model = encoder()
    K, invK = intrinsics(H // 4, W // 4)
    poses = pose([0.1, 0, 0]).expand(B, num_lookups, 4, 4)
    with torch.no_grad():
        features, lowest_cost, confidence = model(torch.rand(B, 3, H, W), torch.rand(B, num_lookups, 3, H, W),
                                                  poses, K, invK)
    assert [tuple(f.shape) for f in features] == [(B, c, H // s, W // s) for c, s in
                                                  zip([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])]
    assert list(model.num_ch_enc) == [64, 64, 128, 256, 512]
    assert lowest_cost.shape == confidence.shape == (B, H // 4, W // 4)
    assert model.last_cost_volume.shape == (B, D, H // 4, W // 4)
    assert set(confidence.unique().tolist()) <= {0.0, 1.0}
    assert confidence.sum() > 0


def test_forward_shapes_kitti_size():
    """Check 8.1 at 640 x 192, B = 2, D = 96 (about 2 s on one thread)."""
    model = encoder(num_bins=96, height=192, width=640)
    K, invK = intrinsics(48, 160)
    with torch.no_grad():
        features, lowest_cost, confidence = model(torch.rand(2, 3, 192, 640), torch.rand(2, 1, 3, 192, 640),
                                                  pose([0.1, 0, 0]).expand(2, 1, 4, 4), K, invK)
    assert [tuple(f.shape[1:]) for f in features] == [(64, 96, 320), (64, 48, 160), (128, 24, 80),
                                                      (256, 12, 40), (512, 6, 20)]
    assert features[1].shape == (2, 64, 48, 160)
    assert model.last_cost_volume.shape == (2, 96, 48, 160)
    assert lowest_cost.shape == confidence.shape == (2, 48, 160)


def test_resnet50_channels():
    model = ResnetEncoderMatching(50, False, H, W, num_depth_bins=D)
    assert list(model.num_ch_enc) == [64, 256, 512, 1024, 2048]
    assert model.reduce_conv[0].in_channels == 256 + D and model.reduce_conv[0].out_channels == 256


# ---- 8.2 bins

def test_linear_bins_span_the_range_with_a_constant_step():
    bins = depth_bins(0.1, 20.0, 96, "linear")
    assert bins.shape == (96,) and bins.dtype == torch.float32
    assert bins[0].item() == pytest.approx(0.1, abs=1e-7) and bins[-1].item() == pytest.approx(20.0, abs=1e-6)
    step = (20.0 - 0.1) / 95
    assert torch.allclose(bins.diff(), torch.full((95,), step), atol=1e-5)


def test_inverse_bins_ascend_with_a_constant_inverse_step():
    bins = depth_bins(0.1, 20.0, 96, "inverse")
    assert bins[0].item() == pytest.approx(0.1, abs=1e-7) and bins[-1].item() == pytest.approx(20.0, abs=1e-4)
    assert (bins.diff() > 0).all()
    inv = 1 / bins.double()
    assert torch.allclose(inv.diff(), torch.full((95,), (1 / 20.0 - 1 / 0.1) / 95, dtype=torch.float64),
                          atol=1e-4)


def test_bins_take_tensors_and_reject_unknown_binning():
    assert torch.equal(depth_bins(torch.tensor(0.5), torch.tensor(8.0), 16), depth_bins(0.5, 8.0, 16))
    with pytest.raises(ValueError, match="depth_binning"):
        depth_bins(0.1, 20.0, 8, "log")
    with pytest.raises(ValueError, match="depth_binning"):
        ResnetEncoderMatching(18, False, H, W, depth_binning="log")


def test_bins_follow_the_trackers_at_every_forward():
    model = encoder()
    model.min_depth_bin.fill_(2.0)
    model.max_depth_bin.fill_(5.0)
    K, invK = intrinsics(H // 4, W // 4)
    with torch.no_grad():
        _, lowest_cost, _ = model(torch.rand(B, 3, H, W), torch.rand(B, 1, 3, H, W),
                                  pose([0.1, 0, 0]).expand(B, 1, 4, 4), K, invK)
    disparities = 1 / depth_bins(2.0, 5.0, D)
    assert torch.isin(lowest_cost, disparities).all()


# ---- 8.3 a textured fronto-parallel plane

def sinusoid_texture(u, v, seed, channels=8, waves=6):
    """A smooth random texture that can be evaluated anywhere: per channel, the mean of
    `waves` plane waves of 0.1-0.4 rad/px in random directions. u, v: h x w -> C x h x w."""
    g = torch.Generator().manual_seed(seed)
    freq = 0.1 + 0.3 * torch.rand(channels, waves, 1, 1, generator=g)
    angle = 2 * math.pi * torch.rand(channels, waves, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(channels, waves, 1, 1, generator=g)
    return torch.sin(freq * (torch.cos(angle) * u + torch.sin(angle) * v) + phase).mean(1)


def plane_pair(z, T, h=48, w=160, seed=0):
    """Target features and the lookup frame's view of a fronto-parallel plane at depth z.
    A target pixel x lands at H x in the lookup frame, with H = K (R + t n^T / z) K^-1 and
    n = (0, 0, 1); the lookup texture at pixel x' is the target's at H^-1 x' (exact, no
    resampling). Also returns where the plane is visible: the true projection lands in the
    valid region and the target pixel is >= 2 px from the border."""
    K, invK = intrinsics(h, w, batch=1)
    k = K[0, :3, :3].double()
    Td = T.double()
    hom = k @ (Td[:3, :3] + Td[:3, 3:] @ torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64) / z) @ torch.inverse(k)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=torch.float64)])
    src = torch.inverse(hom) @ pix
    target = sinusoid_texture(u.float(), v.float(), seed)
    lookup = sinusoid_texture((src[0] / src[2]).view(h, w).float(), (src[1] / src[2]).view(h, w).float(), seed)
    dst = hom @ pix
    x, y = (dst[0] / dst[2]).view(h, w), (dst[1] / dst[2]).view(h, w)
    visible = (x >= 2) & (x <= w - 2) & (y >= 2) & (y <= h - 2)
    visible[:2] = visible[-2:] = False
    visible[:, :2] = visible[:, -2:] = False
    return target[None], lookup[None, None], K, invK, visible


# (bins, depth of the plane, fraction of visible pixels whose argmin is the nearest bin:
# required, and measured with seeds 0-3 (48 x 160, C = 8, pose t = (0.5, 0.05, 0.2),
# rotation 0.02 rad about y))
PLANES = [
    (("linear", 0.1, 20.0, 96), "bin 38 + 0.1 step", 0.97),  # measured 0.989, 0.997, 0.998, 0.998
    (("linear", 2.0, 20.0, 16), 8.3, 0.99),  # measured 1.000, 1.000, 0.9998, 1.000 (nearest 8.0)
    (("inverse", 1.0, 20.0, 32), "bin 20 x 1.01", 0.99),  # measured 1.000 at all seeds
]


@pytest.mark.parametrize("binning, z, required", PLANES)
def test_plane_cost_volume_argmin_is_the_nearest_bin(binning, z, required):
    kind, lo, hi, num = binning
    bins = depth_bins(lo, hi, num, kind)
    if z == "bin 38 + 0.1 step":
        z = bins[38].item() + 0.1 * (bins[1] - bins[0]).item()
    elif z == "bin 20 x 1.01":
        z = bins[20].item() * 1.01
    T = pose([0.5, 0.05, 0.2], [0.0, 0.02, 0.0])
    target, lookup, K, invK, visible = plane_pair(z, T)
    model = encoder(num_bins=num)
    volume, confidence, count = model.match(target, lookup, T.view(1, 1, 4, 4), K, invK, bins)
    nearest = (bins - z).abs().argmin()
    argmin = volume[0].argmin(0)
    assert visible.sum() > 6000  # of 48 x 160
    assert (argmin == nearest)[visible].float().mean() >= required
    assert (count[0, nearest][visible] == 1).all()
    # the pose convention matters: the inverse pose finds the plane almost nowhere
    wrong = model.match(target, lookup, torch.inverse(T).view(1, 1, 4, 4), K, invK, bins)[0][0].argmin(0)
    assert (wrong == nearest)[visible].float().mean() < 0.2


def test_match_equals_a_per_bin_loop_over_layers_geometry():
    """The vectorised, chunked volume is the per-bin warp of BackprojectDepth/Project3D."""
    h, w, c, n = 16, 48, 8, 2
    target = smooth_features(B, c, h, w, seed=1)
    lookup = smooth_features(B * n, c, h, w, seed=2).view(B, n, c, h, w)
    poses = torch.stack([pose([0.2, 0.02, 0.1], [0.01, 0.02, 0.0]), pose([-0.3, 0.0, -0.1])]).expand(B, n, 4, 4)
    poses = poses.clone()
    poses[1, 1] = 0  # a missing lookup in the second sample
    K, invK = intrinsics(h, w)
    bins = depth_bins(1.0, 20.0, D)
    model = encoder()
    volume, confidence, count = model.match(target, lookup, poses, K, invK, bins)

    backproject, project = BackprojectDepth(B, h, w), Project3D(B, h, w)
    cost, counts = torch.zeros(B, D, h, w), torch.zeros(B, D, h, w)
    interior = torch.zeros(h, w)
    interior[2:-2, 2:-2] = 1
    for k, d in enumerate(bins):
        points = backproject(torch.full((B, 1, h, w), d.item()), invK)
        for j in range(n):
            grid = project(points, K, poses[:, j])
            x, y = (grid[..., 0] + 1) / 2 * (w - 1), (grid[..., 1] + 1) / 2 * (h - 1)
            valid = ((x >= 2) & (x <= w - 2) & (y >= 2) & (y <= h - 2)).float() * interior
            valid = valid * (poses[:, j].flatten(1).abs().sum(1) > 0).float().view(B, 1, 1)
            warped = F.grid_sample(lookup[:, j], grid, padding_mode="zeros", align_corners=True)
            cost[:, k] += (warped - target).abs().mean(1) * valid
            counts[:, k] += valid
    expected = cost / (counts + 1e-7)
    expected = torch.where(counts == 0, expected.amax(1, keepdim=True), expected)
    assert torch.equal(count, counts)
    assert torch.allclose(volume, expected, atol=1e-5)
    assert torch.equal(confidence, (counts > 0).all(1).float())

    model.max_chunk_elements = 1  # one bin per chunk
    chunked = model.match(target, lookup, poses, K, invK, bins)
    assert torch.allclose(chunked[0], volume, atol=1e-6) and torch.equal(chunked[2], count)


# ---- 8.4 zero poses, 8.5 the border

def test_zero_poses_give_an_empty_volume_and_ignore_the_lookup():
    model = encoder()
    K, invK = intrinsics(H // 4, W // 4)
    zero = torch.zeros(B, 1, 4, 4)
    volume, confidence, count = model.match(smooth_features(B, 8, 16, 48, 1),
                                            smooth_features(B, 8, 16, 48, 2).unsqueeze(1), zero, K, invK,
                                            depth_bins(1.0, 20.0, D))
    assert (volume == 0).all() and (confidence == 0).all() and (count == 0).all()

    torch.manual_seed(3)
    image = torch.rand(B, 3, H, W)
    with torch.no_grad():
        first = model(image, torch.rand(B, 1, 3, H, W), zero, K, invK)
        volume_first = model.last_cost_volume
        second = model(image, torch.rand(B, 1, 3, H, W), zero, K, invK)
    assert (volume_first == 0).all() and (first[2] == 0).all()
    for a, b in zip(first[0] + [first[1], first[2]], second[0] + [second[1], second[2]]):
        assert torch.equal(a, b)


def test_a_zero_pose_skips_only_its_lookup():
    model = encoder()
    K, invK = intrinsics(16, 48)
    target = smooth_features(B, 8, 16, 48, 1)
    lookups = smooth_features(2 * B, 8, 16, 48, 2).view(B, 2, 8, 16, 48)
    poses = torch.stack([pose([0.1, 0, 0]), torch.zeros(4, 4)]).expand(B, 2, 4, 4)
    bins = depth_bins(1.0, 20.0, D)
    both = model.match(target, lookups, poses, K, invK, bins)
    only_first = model.match(target, lookups[:, :1], poses[:, :1], K, invK, bins)
    for a, b in zip(both, only_first):
        assert torch.allclose(a, b, atol=1e-7)
    assert both[1].sum() > 0


def test_confidence_is_zero_within_two_pixels_of_the_border():
    model = encoder()
    K, invK = intrinsics(H // 4, W // 4)
    torch.manual_seed(4)
    # at 0.1 m, 5 mm of baseline move a pixel by 0.58 * 48 * 0.005 / 0.1 = 1.4 px
    poses = pose([0.005, 0, 0]).expand(B, 1, 4, 4)
    with torch.no_grad():
        _, _, confidence = model(torch.rand(B, 3, H, W), torch.rand(B, 1, 3, H, W), poses, K, invK)
    for border in (confidence[:, :2], confidence[:, -2:], confidence[:, :, :2], confidence[:, :, -2:]):
        assert (border == 0).all()
    # measured 0.896: the last interior column shifts past w - 2 at 0.1 m, and the first
    # interior row projects to y = 2 d/(d + 1e-7) < 2 (the projection's epsilon, as in the reference)
    assert confidence[:, 2:-2, 2:-2].mean() > 0.85
    assert (model.last_cost_volume[:, :, :2] == 0).all() and (model.last_cost_volume[:, :, :, -2:] == 0).all()


# ---- 8.6 trackers, 8.7 matching mask

def test_trackers_move_towards_a_constant_mono_depth():
    model = encoder()
    assert (model.min_depth_bin.item(), model.max_depth_bin.item()) == pytest.approx((0.1, 10.0))
    model.update_bins(torch.full((B, 1, H, W), 5.0))
    assert model.min_depth_bin.item() == pytest.approx(0.144, abs=1e-3)  # 0.99 * 0.1 + 0.01 * 4.5
    assert model.max_depth_bin.item() == pytest.approx(9.955, abs=1e-3)  # 0.99 * 10 + 0.01 * 5.5
    model.update_bins(torch.full((B, 1, H, W), 0.05))  # 0.9 m below min_depth: clamped to 0.1
    assert model.min_depth_bin.item() == pytest.approx(0.99 * 0.144 + 0.01 * 0.1, abs=1e-5)


def test_matching_mask_trusts_depths_within_a_factor_of_two():
    mono = torch.full((1, 1, 1, 3), 10.0)
    cv = torch.tensor([19.0, 21.0, 4.0]).view(1, 1, 1, 3)
    mask = matching_mask(cv, mono)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 1, 3)
    assert mask.flatten().tolist() == [1.0, 0.0, 0.0]


# ---- pitfall: an exactly zero cost

def zero_cost_case(count_valid_from_mask):
    """Target features 0; the lookup is 0 in columns 20-23 and positive elsewhere. With
    f_x t_x = 48 px m, target pixel (8, 10) lands at 10 + 48/d: only bin 2 (d = 4.4) lands
    in 20-23, a perfect (exactly zero) match; every other bin costs > 0."""
    h, w = 16, 48
    model = encoder(count_valid_from_mask=count_valid_from_mask)
    K = torch.eye(4)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = 48.0, 48.0, 24.0, 8.0
    lookup = 1 + torch.rand(1, 1, 1, 1, w, generator=torch.Generator().manual_seed(0)).expand(1, 1, 1, h, w).clone()
    lookup[..., 20:24] = 0
    bins = depth_bins(2.0, 20.0, D)
    volume, confidence, count = model.match(torch.zeros(1, 1, h, w), lookup, pose([1.0, 0, 0]).view(1, 1, 4, 4),
                                            K[None], torch.inverse(K)[None], bins)
    lowest_cost = model.lowest_cost(volume, bins)
    return volume[0, :, 8, 10], confidence[0, 8, 10], count[0, :, 8, 10], lowest_cost[0, 8, 10], bins


def test_zero_cost_is_a_valid_match_when_counting_from_the_mask():
    volume, confidence, count, lowest_cost, bins = zero_cost_case(True)
    assert bins[2].item() == pytest.approx(4.4)
    assert (count == 1).all()
    assert volume[2] == 0 and (volume[torch.arange(D) != 2] > 0).all()
    assert confidence == 1
    assert lowest_cost.item() == pytest.approx(1 / 4.4)


def test_zero_cost_is_missing_in_the_reference_counting():
    volume, confidence, count, lowest_cost, _ = zero_cost_case(False)
    assert count[2] == 0 and (count[torch.arange(D) != 2] == 1).all()
    assert volume[2] == volume.max() > 0  # filled with the pixel's max over bins
    assert confidence == 0
    assert lowest_cost.item() != pytest.approx(1 / 4.4)


# ---- weights, gradients, autocast

def test_state_dict_uses_manydepth_names():
    model = encoder()
    keys = set(model.state_dict())
    for key in ("min_depth_bin", "max_depth_bin", "layer0.0.weight", "layer0.1.running_mean",
                "layer1.1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.weight",
                "reduce_conv.0.weight", "reduce_conv.0.bias", "prematching_conv.0.weight"):
        assert key in keys, key
    assert not any(k.startswith(("encoder.", "fc.")) for k in keys)
    assert model.state_dict()["reduce_conv.0.weight"].shape == (64, 64 + D, 3, 3)
    assert model.state_dict()["prematching_conv.0.weight"].shape == (16, 64, 1, 1)
    state = model.state_dict()
    state["min_depth_bin"] = torch.tensor(0.5)
    other = ResnetEncoderMatching(18, False, H, W, num_depth_bins=D)
    other.load_state_dict(state)  # strict
    assert other.min_depth_bin.item() == 0.5 and torch.equal(other.layer0[0].weight, model.layer0[0].weight)


def test_imagenet_weights_land_in_the_split_layers(tmp_path):
    torch.manual_seed(5)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = ResnetEncoderMatching(18, True, H, W, num_depth_bins=D, weights_file=str(path))
    assert torch.equal(model.layer0[0].weight, resnet.conv1.weight)
    assert torch.equal(model.layer0[1].running_var, resnet.bn1.running_var)
    assert torch.equal(model.layer1[1][0].conv1.weight, resnet.layer1[0].conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_gradients_reach_the_target_branch_but_not_the_lookups():
    model = encoder().train()
    K, invK = intrinsics(H // 4, W // 4)
    torch.manual_seed(6)
    lookups = torch.rand(B, 1, 3, H, W, requires_grad=True)
    features, _, _ = model(torch.rand(B, 3, H, W), lookups, pose([0.1, 0, 0]).expand(B, 1, 4, 4), K, invK)
    sum(f.mean() for f in features).backward()
    assert model.layer0[0].weight.grad.abs().sum() > 0 and model.reduce_conv[0].weight.grad.abs().sum() > 0
    assert lookups.grad is None and not model.last_cost_volume.requires_grad


def test_match_is_float32_under_autocast():
    model = encoder()
    K, invK = intrinsics(16, 48)
    target = smooth_features(B, 8, 16, 48, 1)
    lookup = smooth_features(B, 8, 16, 48, 2).unsqueeze(1)
    poses = pose([0.2, 0.01, 0.1], [0.0, 0.01, 0.0]).expand(B, 1, 4, 4)
    bins = depth_bins(1.0, 20.0, D)
    plain = model.match(target, lookup, poses, K, invK, bins)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = model.match(target, lookup, poses, K, invK, bins)
        with torch.no_grad():
            _, lowest_cost, _ = model(torch.rand(B, 3, H, W), torch.rand(B, 1, 3, H, W), poses, intrinsics(16, 48)[0],
                                      intrinsics(16, 48)[1])
    for a, b in zip(plain, cast):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    assert lowest_cost.dtype == model.last_cost_volume.dtype == torch.float32
    assert torch.isin(lowest_cost, 1 / model.bins()).all()
