"""Dynamic multi-frame depth (networks/dynamic_mf.py), spec dynamic_multiframe.md checks
7.6-7.15 and 7.22: depth bins, the SSIM cost volume (shape, range, border, validity, a
textured plane, zero baseline, points behind the camera), the mono one-hot volume, CCF
(shape, attention rows, gamma = 0, cross routing, ablation layout), the MonoRec depth module,
gradients, the in-model flip and the parameter counts."""
import math

import pytest
import torch

from networks.dynamic_mf import (CCF, ConvReLU2, DynamicMultiFrameDepth, EfficientNetB5Backbone,
                                 inverse_depth_bins, mono_onehot_volume, ssim_cost_volume)

FX, CX, CY = 489.2, 248.3, 126.7  # KITTI odometry 04-10 at 256 x 512 (spec §1)
SMALL_H, SMALL_W = 64, 128  # the whole model on small inputs


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def intrinsics(height, width=None, batch=1):
    """The KITTI K scaled to height (x 256 reference), and its inverse, batch x 4 x 4."""
    s = height / 256
    K = torch.eye(4, dtype=torch.float64)
    K[0, 0] = K[1, 1] = FX * s
    K[0, 2], K[1, 2] = (CX + 0.5) * s - 0.5, (CY + 0.5) * s - 0.5
    return K.repeat(batch, 1, 1), torch.inverse(K).repeat(batch, 1, 1)


def pose(t=(0.0, 0.0, 0.0), yaw=0.0, batch=1):
    """Key -> source 4 x 4 (x' = R x + t), R a rotation about y; float64, batch x 4 x 4."""
    T = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    T[0, 0], T[0, 2], T[2, 0], T[2, 2] = c, s, -s, c
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T.repeat(batch, 1, 1)


def texture(x, y, seed=0):
    """Sum of sines on the plane (x, y in key pixels at the plane): 3 x ... in [0.08, 0.92],
    wavelengths 4-16 px in random directions, different per channel."""
    g = torch.Generator().manual_seed(seed)
    channels = []
    for _ in range(3):
        img = torch.full_like(x, 0.5)
        for theta, wavelength, phase in torch.rand(6, 3, generator=g, dtype=torch.float64).tolist():
            theta, wavelength, phase = 2 * math.pi * theta, 4 + 12 * wavelength, 2 * math.pi * phase
            img = img + 0.07 * torch.sin(2 * math.pi / wavelength * (math.cos(theta) * x + math.sin(theta) * y)
                                         + phase)
        channels.append(img)
    return torch.stack(channels)


def render_plane(depth, T, K, invK, height, width, seed=0):
    """What a camera at pose T (key -> camera) sees of the textured fronto-parallel plane
    z = depth of the key camera, exactly: each pixel's ray hits the plane at X_key =
    R^T (s r - t) with the s that gives z = depth. -> 1 x 3 x H x W float32 in [0, 1]."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    rays = invK[0, :3, :3] @ torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width,
                                                                                   dtype=torch.float64)])
    Rt, t = T[0, :3, :3].T, T[0, :3, 3:]
    s = (depth + Rt[2] @ t) / (Rt[2] @ rays)
    X = Rt @ (s * rays - t)
    f = K[0, 0, 0]
    image = texture(X[0] * f / depth, X[1] * f / depth, seed)
    return image.view(1, 3, height, width).float()


def plane_scene(depth, translations, height, width, yaw=0.0):
    """Key and sources of the textured plane; poses, K, invK in float32."""
    K, invK = intrinsics(height, width)
    poses = [pose(t, yaw) for t in translations]
    key = render_plane(depth, pose(), K, invK, height, width)
    sources = [render_plane(depth, T, K, invK, height, width) for T in poses]
    return key, sources, [T.float() for T in poses], K.float(), invK.float()


def count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


# ---- 7.6 bins

def test_inverse_depth_bins_uniform_in_inverse_depth_from_400_to_3_03():
    bins = inverse_depth_bins()
    assert bins.shape == (32,) and bins.dtype == torch.float32
    assert bins[0].item() == pytest.approx(400.0, rel=1e-6)
    assert bins[31].item() == pytest.approx(1 / 0.33, rel=1e-6)  # 3.0303
    steps = (1 / bins.double()).diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.3275 / 31), rtol=1e-5)


# ---- 7.7 cost volume: shape, range, gradient, border, validity

def test_cost_volume_full_size_range_border_and_invalid_columns():
    """256 x 512, B = 1, one source 0.5 m to the right (x' = x - 0.5): a key pixel u moves to
    u - 0.5 fx / d, 80.7 px at the nearest bin, so u <= 80 never stays inside the source at
    every depth and must be 0; the valid rest is (almost) all non-zero."""
    depths = inverse_depth_bins()
    key, sources, poses, K, invK = plane_scene(depths[16].item(), [(-0.5, 0.0, 0.0)], 256, 512)
    key.requires_grad_(True)
    volume = ssim_cost_volume(key, sources, poses, K, invK, depths)
    assert volume.shape == (1, 32, 256, 512)
    assert not volume.requires_grad
    assert volume.min() >= -1 and volume.max() <= 1
    border = torch.ones(256, 512, dtype=torch.bool)
    border[2:-2, 2:-2] = False
    assert volume[..., border].abs().max() == 0
    assert volume[..., :81].abs().max() == 0
    assert (volume[0, :, 2:-2, 85:-2] != 0).any(0).float().mean() > 0.99


# ---- 7.8 textured plane at a bin depth

@pytest.mark.parametrize("true_bin", [5, 12, 20, 28])
def test_cost_volume_argmax_finds_the_plane_bin(true_bin):
    """Plane at d_k, sources at +-0.5 m lateral, exact poses, 128 x 256 (K halved: 1.3 px of
    disparity per bin per source): argmax_d C = k on >= 99 % of the valid pixels."""
    depths = inverse_depth_bins()
    h, w = 128, 256
    key, sources, poses, K, invK = plane_scene(depths[true_bin].item(), [(0.5, 0, 0), (-0.5, 0, 0)], h, w)
    volume = ssim_cost_volume(key, sources, poses, K, invK, depths)
    valid = (volume != 0).any(1)
    assert valid.float().mean() > 0.9
    fraction = (volume.argmax(1) == true_bin)[valid].float().mean().item()
    assert fraction >= 0.99, f"argmax = true bin on {100 * fraction:.2f} % of {int(valid.sum())} valid px"


def test_cost_volume_matching_errors_l1_and_ssim_l1():
    """--cv_match: with one source C = 1 - 2 sad wherever it is valid, and the patch mean is
    linear, so the ssim_l1 volume's sad is 0.85 x SSIM's + 0.15 x L1's; each finds the plane."""
    depths = inverse_depth_bins()
    key, sources, poses, K, invK = plane_scene(depths[12].item(), [(0.5, 0, 0)], 64, 128)
    volumes = {m: ssim_cost_volume(key, sources, poses, K, invK, depths, match=m) for m in ("ssim", "l1", "ssim_l1")}
    valid = (volumes["ssim"] != 0) & (volumes["l1"] != 0) & (volumes["ssim_l1"] != 0)
    assert valid.float().mean() > 0.5
    sad = {m: (1 - v) / 2 for m, v in volumes.items()}
    assert torch.allclose(sad["ssim_l1"][valid], (0.85 * sad["ssim"] + 0.15 * sad["l1"])[valid], atol=1e-5)
    assert (sad["l1"] - sad["ssim"])[valid].abs().max() > 1e-2
    for m, v in volumes.items():
        assert (v.argmax(1) == 12)[valid.any(1)].float().mean() >= 0.99, m
    with pytest.raises(ValueError, match="--cv_match"):
        DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W, cv_match="sad")


def test_reference_cv_sampling_pads_grey_and_counts_any_overlap():
    """--reference_cv_sampling: outside a source the released code read mid-grey (its images
    were in [-0.5, 0.5], zero padded), and a lookup counted as inside wherever the warped
    border mask was non-zero. Grey key and source: every lookup then matches exactly, the
    curve is flat and the volume 0, while black padding makes errors near the edges; the
    reference's valid pixels include ours; the plane is still found."""
    depths = inverse_depth_bins()
    K, invK = intrinsics(32, 64)
    grey = torch.full((1, 3, 32, 64), 0.5)
    T = [pose((0.5, 0, 0)).float()]
    ours = ssim_cost_volume(grey, [grey], T, K.float(), invK.float(), depths)
    ref = ssim_cost_volume(grey, [grey], T, K.float(), invK.float(), depths, reference_sampling=True)
    assert torch.equal(ref, torch.zeros_like(ref)) and ours.abs().max() > 0.01
    # 0.37 m: the nearest plane's lookups land at fractional columns, some 1-1.5 px inside
    key, sources, poses, K, invK = plane_scene(depths[12].item(), [(0.37, 0, 0)], 64, 128)
    ours = ssim_cost_volume(key, sources, poses, K, invK, depths)
    ref = ssim_cost_volume(key, sources, poses, K, invK, depths, reference_sampling=True)
    valid_ours, valid_ref = (ours != 0).any(1), (ref != 0).any(1)
    assert bool((valid_ref | ~valid_ours).all()) and int(valid_ref.sum()) > int(valid_ours.sum())
    assert (ref.argmax(1) == 12)[valid_ref].float().mean() >= 0.99
    assert DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W, reference_sampling=True).reference_sampling


# ---- 7.9 zero baseline, points behind the camera, align_corners

def test_cost_volume_is_exactly_zero_for_zero_baseline():
    """Source pose = key pose: every depth warps alike, the curve is flat, confidence 0,
    even though the source image differs from the key."""
    K, invK = intrinsics(32, 64, batch=2)
    g = torch.Generator().manual_seed(1)
    key, other = torch.rand(2, 3, 32, 64, generator=g), torch.rand(2, 3, 32, 64, generator=g)
    volume = ssim_cost_volume(key, [other, key], [pose(batch=2).float()] * 2, K.float(), invK.float(),
                              inverse_depth_bins())
    assert torch.equal(volume, torch.zeros_like(volume))


def test_cost_volume_rejects_points_behind_the_source_camera():
    """A source 10 m ahead: planes nearer than 10 m lie behind it, so (in bounds at every
    depth) no pixel is valid and the volume is 0 (the reference sampled them mirrored)."""
    depths = inverse_depth_bins()
    key, _, _, K, invK = plane_scene(depths[3].item(), [], 32, 64)
    volume = ssim_cost_volume(key, [torch.rand(1, 3, 32, 64)], [pose((0, 0, -10.0)).float()], K, invK, depths)
    assert torch.equal(volume, torch.zeros_like(volume))


def test_cost_volume_align_corners_flag_changes_sampling():
    depths = inverse_depth_bins()
    scene = plane_scene(depths[10].item(), [(0.5, 0, 0)], 32, 64)
    fixed = ssim_cost_volume(*scene, depths)
    compat = ssim_cost_volume(*scene, depths, align_corners=False)
    assert compat.abs().max() <= 1
    assert (fixed - compat).abs().max() > 1e-2


def test_cost_volume_batches_samples_independently():
    """No loop over the batch, yet sample b of a batch equals the volume of sample b alone."""
    depths = inverse_depth_bins(8)
    a = plane_scene(depths[2].item(), [(0.5, 0, 0)], 32, 64)
    b = plane_scene(depths[5].item(), [(0.3, 0, 0.2)], 32, 64, yaw=0.01)
    batch = [torch.cat([x, y]) for x, y in zip((a[0], a[1][0], a[2][0], a[3], a[4]),
                                                (b[0], b[1][0], b[2][0], b[3], b[4]))]
    both = ssim_cost_volume(batch[0], [batch[1]], [batch[2]], batch[3], batch[4], depths)
    alone = ssim_cost_volume(b[0], b[1], b[2], b[3], b[4], depths)
    assert torch.allclose(both[1:], alone, atol=1e-6)
    stacked = ssim_cost_volume(batch[0], batch[1].unsqueeze(1), batch[2].unsqueeze(1), batch[3], batch[4], depths)
    assert torch.equal(stacked, both)  # B x N x 3 x H x W sources and B x N x 4 x 4 poses


# ---- 7.10 one-hot volume

def test_mono_onehot_picks_nearest_bin_in_metric_depth_and_is_detached():
    depths = inverse_depth_bins()  # d_1 = 76.54, d_2 = 42.32
    # 57 m: nearer d_2 in metres (14.7 vs 19.5) but nearer d_1 in inverse depth;
    # 500 m clamps to 80 (-> d_1, never d_0 = 400); 0 clamps to 1e-3 (-> d_31)
    values = torch.tensor([57.0, 500.0, 0.0, depths[7].item(), 3.05])  # d_30 = 3.13, d_31 = 3.03
    depth = values.view(1, 1, 1, -1).repeat(2, 1, 3, 1).requires_grad_(True)
    onehot = mono_onehot_volume(depth, depths)
    assert onehot.shape == (2, 32, 3, 5)
    assert onehot.grad_fn is None and not onehot.requires_grad
    assert torch.equal(onehot.sum(1), torch.ones(2, 3, 5))
    assert set(onehot.unique().tolist()) == {0.0, 1.0}
    assert onehot.argmax(1)[0, 0].tolist() == [2, 1, 31, 7, 31]
    assert not onehot[:, 0].any()


# ---- 7.11 CCF: shapes, attention rows, gamma = 0

def test_ccf_full_size_tokens_attention_rows_and_gamma_zero():
    """256 x 512, B = 1: tokens 64 x 128 (N = 8192), rows of both N x N attentions sum to 1,
    gamma = 0 gives exactly cat[mono_reg(P), multi_reg(C)]."""
    torch.manual_seed(0)
    ccf = CCF().eval()
    P = mono_onehot_volume(torch.rand(1, 1, 256, 512) * 60 + 3, inverse_depth_bins())
    C = torch.rand(1, 32, 256, 512) * 2 - 1
    with torch.no_grad():
        fused, extra = ccf(P, C, return_attention=True)
        base = torch.cat([ccf.mono_reg(P), ccf.multi_reg(C)], 1)
    assert fused.shape == (1, 64, 256, 512)
    assert extra["A_mono"].shape == extra["A_multi"].shape == (1, 8192, 8192)
    assert extra["multi_out"].shape == extra["mono_out"].shape == (1, 32, 64, 128)
    for A in (extra["A_mono"], extra["A_multi"]):
        assert (A.sum(-1) - 1).abs().max() < 1e-4
    assert ccf.gamma.item() == 0.0
    assert torch.equal(fused, base)


@pytest.mark.parametrize("mode", ["ccf", "mono_guide_multi", "multi_guide_mono", "none"])
def test_ccf_channel_layout_per_mode(mode):
    """ccf: F = cat[mono_reg(P) + g up(multi_out), multi_reg(C) + g up(mono_out)]; the one-way
    ablations keep one 32-channel path (mono_guide_multi: multi_reg(C) + g up(multi_out);
    multi_guide_mono: mono_reg(P) + g up(mono_out)); none: the two regs side by side."""
    torch.manual_seed(0)
    ccf = CCF(mode=mode, width=64).eval()
    if mode != "none":
        ccf.gamma.data.fill_(0.5)
    P = mono_onehot_volume(torch.rand(2, 1, 32, 64) * 60 + 3, inverse_depth_bins())
    C = torch.rand(2, 32, 32, 64) * 2 - 1
    with torch.no_grad():
        fused, extra = ccf(P, C, return_attention=True)
    up = lambda x: x.repeat_interleave(4, 2).repeat_interleave(4, 3)  # noqa: E731
    with torch.no_grad():
        if mode == "mono_guide_multi":
            expected = ccf.multi_reg(C) + 0.5 * up(extra["multi_out"])
        elif mode == "multi_guide_mono":
            expected = ccf.mono_reg(P) + 0.5 * up(extra["mono_out"])
        elif mode == "ccf":
            expected = torch.cat([ccf.mono_reg(P) + 0.5 * up(extra["multi_out"]),
                                  ccf.multi_reg(C) + 0.5 * up(extra["mono_out"])], 1)
        else:
            expected = torch.cat([ccf.mono_reg(P), ccf.multi_reg(C)], 1)
    assert fused.shape == (2, ccf.out_channels, 32, 64)
    assert ccf.out_channels == (32 if "guide" in mode else 64)
    assert torch.allclose(fused, expected, atol=1e-6)
    assert ("A_mono" in extra) == (mode in ("ccf", "mono_guide_multi"))
    assert ("A_multi" in extra) == (mode in ("ccf", "multi_guide_mono"))
    n = count(ccf)
    assert n == 63329 if mode == "ccf" else n < 63329


def test_ccf_attends_at_one_eighth_above_650_px():
    ccf = CCF(width=832).eval()
    with torch.no_grad():
        fused, extra = ccf(torch.rand(1, 32, 32, 832), torch.rand(1, 32, 32, 832), return_attention=True)
    assert fused.shape == (1, 64, 32, 832)
    assert extra["multi_out"].shape == (1, 32, 4, 104)


# ---- 7.12 cross routing

@pytest.mark.parametrize("uniform", ["mono", "multi"])
def test_ccf_equal_features_give_equal_routed_output(uniform):
    """A uniform cue gives equal expanded features at every token off the first row and
    column (the only ones that see zero padding), so equal query rows of its attention: the
    other cue's values routed by it are then equal there (multi_out for a uniform mono cue,
    mono_out for a uniform multi cue), although those values vary (as the run with both cues
    random shows)."""
    torch.manual_seed(0)
    ccf = CCF(width=64).eval()
    for conv in (ccf.mono_query, ccf.mono_key, ccf.multi_query, ccf.multi_key):
        conv.weight.data *= 10  # peaked attention: at initialisation it is nearly uniform
    P = mono_onehot_volume(torch.rand(1, 1, 32, 64) * 60 + 3, inverse_depth_bins())
    C = torch.rand(1, 32, 32, 64) * 2 - 1
    routed = "multi_out" if uniform == "mono" else "mono_out"
    if uniform == "mono":
        P_eq, C_eq = mono_onehot_volume(torch.full((1, 1, 32, 64), 20.0), inverse_depth_bins()), C
    else:
        P_eq, C_eq = P, torch.full_like(C, 0.3)
    with torch.no_grad():
        varied = ccf(P, C, return_attention=True)[1][routed][..., 1:, 1:]
        equal = ccf(P_eq, C_eq, return_attention=True)[1][routed][..., 1:, 1:]
    spread = lambda x: (x - x[..., :1, :1]).abs().amax(dim=(2, 3)).min()  # noqa: E731  per channel
    assert (equal - equal[..., :1, :1]).abs().max() < 1e-6
    assert spread(varied) > 1e-4  # 100 x the bound on the equal case


# ---- 7.13 depth module

def test_depth_modules_inputs_scales_and_range():
    torch.manual_seed(0)
    model = DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W).eval()
    assert model.depth_module.enc[0][0].conv_y.in_channels == 67
    assert model.mono_module.enc[0][0].conv_y.in_channels == 3
    depths = inverse_depth_bins()
    key, sources, poses, K, invK = plane_scene(depths[12].item(), [(0.5, 0, 0), (-0.5, 0, 0)], SMALL_H, SMALL_W)
    with torch.no_grad():
        out = model(key.repeat(2, 1, 1, 1), [s.repeat(2, 1, 1, 1) for s in sources],
                    [T.repeat(2, 1, 1) for T in poses], K.repeat(2, 1, 1), invK.repeat(2, 1, 1))
    sizes = [(2, 1, SMALL_H // s, SMALL_W // s) for s in (1, 2, 4, 8)]  # 256 x 512 .. 32 x 64 at full size
    for branch in ("multi", "mono"):
        assert [tuple(x.shape) for x in out[branch]] == sizes
        for x in out[branch]:
            assert x.min() >= 0.0025 and x.max() <= 0.33
    assert out["result"] is out["multi"][0] and out["result_mono"] is out["mono"][0]
    assert out["cost_volume"].shape == (2, 32, SMALL_H, SMALL_W)
    assert out["fused"].shape == (2, 64, SMALL_H, SMALL_W)


def test_convrelu2_tf_same_padding_sizes():
    layer = ConvReLU2(3, 8, 5, stride=2)
    assert layer(torch.rand(1, 3, 7, 11)).shape == (1, 8, 4, 6)
    assert ConvReLU2(3, 8, 7)(torch.rand(1, 3, 7, 11)).shape == (1, 8, 7, 11)


# ---- 7.14 gradients

def small_batch(batch=2):
    depths = inverse_depth_bins()
    key, sources, poses, K, invK = plane_scene(depths[12].item(), [(0.5, 0, 0), (-0.5, 0, 0)], SMALL_H, SMALL_W)
    rep = lambda x: x.repeat(batch, *[1] * (x.dim() - 1))  # noqa: E731
    key = torch.cat([key, key.flip(-1)])[:batch] if batch > 1 else key
    return key, [rep(s) for s in sources], [rep(T) for T in poses], rep(K), rep(invK)


def only_coarse_heads_lack_gradients(module):
    """A loss on the full-resolution map reaches every parameter but the 1/8-1/2 heads."""
    coarse = {id(p) for p in module.heads[:3].parameters()}
    return all((p.grad is not None) == (id(p) not in coarse) for p in module.parameters())


def test_loss_on_result_leaves_mono_module_and_frozen_backbone_without_gradients():
    torch.manual_seed(0)
    model = DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W).train()
    out = model(*small_batch())
    out["result"].mean().backward()
    assert all(p.grad is None for p in model.mono_module.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.encoder.bn1.training  # frozen, yet BN in train mode
    assert only_coarse_heads_lack_gradients(model.depth_module)
    assert model.fusion.gamma.grad is not None and model.fusion.gamma.grad.abs().item() > 0
    model.zero_grad(set_to_none=True)
    model(*small_batch())["result_mono"].mean().backward()
    assert only_coarse_heads_lack_gradients(model.mono_module)
    assert all(p.grad is None for p in model.backbone.parameters())


def test_effnet_b5_backbone_levels_normalisation_and_fine_tuning():
    torch.manual_seed(0)
    backbone = EfficientNetB5Backbone().eval()
    assert backbone.num_ch_enc == [24, 40, 64, 176, 2048]
    assert backbone.mean.flatten().tolist() == [0.5] * 3 and backbone.std.flatten().tolist() == [0.5] * 3
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 128) - 0.5)
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 32, 64), (40, 16, 32), (64, 8, 16), (176, 4, 8),
                                                  (2048, 2, 4)]
    compat = EfficientNetB5Backbone(imagenet_stats=True)
    assert compat.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    model = DynamicMultiFrameDepth("effnet_b5", freeze_backbone=False, height=SMALL_H, width=SMALL_W).train()
    assert model.depth_module.dec[1][0][0].in_channels == 192 + 64 + 256
    model(*small_batch())["result"].mean().backward()
    assert all(p.grad is not None for p in model.backbone.model.blocks[2].parameters())


# ---- 7.15 flip

def mirrored(key, sources, poses, K, invK):
    """The mirror image of a scene: images flipped, x negated in every pose (M T M with
    M = diag(-1, 1, 1, 1)), principal point at W - 1 - cx."""
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    K2 = K.clone()
    K2[:, 0, 2] = key.shape[-1] - 1 - K[:, 0, 2]
    return (key.flip(-1), [s.flip(-1) for s in sources], [M @ T @ M for T in poses], K2, torch.inverse(K2))


def test_flip_only_in_training_and_outputs_come_back_unflipped():
    """Eval is deterministic and never flips. In training with the flip forced on, the output
    is the mirror of the un-flipped network on the mirrored scene (so poses were not
    mirrored: the cost volume came from the real geometry); flip_prob = 1 draws the same."""
    torch.manual_seed(0)
    model = DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W)
    scene = small_batch()
    with torch.no_grad():
        model.eval()
        first, second = model(*scene), model(*scene)
        assert all(torch.equal(first[k], second[k]) for k in ("result", "result_mono", "fused"))
        with pytest.raises(ValueError):
            model(*scene, flip=torch.tensor([True, False]))
        model.train()
        on = model(*scene, flip=torch.tensor([True, True]))
        off = model(*scene, flip=torch.tensor([False, False]))
        mirror_off = model(*mirrored(*scene), flip=torch.tensor([False, False]))
        model.flip_prob = 1.0
        drawn = model(*scene)
    assert torch.equal(on["cost_volume"], off["cost_volume"])  # built before the flip
    assert (on["result"] - off["result"]).abs().max() > 1e-4  # the flip changes the prediction
    for k in ("result", "result_mono", "fused"):
        assert torch.allclose(on[k], mirror_off[k].flip(-1), atol=1e-3 if k == "fused" else 1e-5), k
        assert torch.equal(drawn[k], on[k]), k
    for a, b in zip(on["multi"] + on["mono"], mirror_off["multi"] + mirror_off["mono"]):
        assert torch.allclose(a, b.flip(-1), atol=1e-4)


def test_flip_is_drawn_per_sample():
    """With BatchNorm on running statistics (in train mode its batch statistics couple the
    samples, and a flipped image has other statistics: the network is not mirror-symmetric),
    flips [True, False] give sample 0 of the all-flipped run and sample 1 of the un-flipped."""
    torch.manual_seed(0)
    model = DynamicMultiFrameDepth(height=SMALL_H, width=SMALL_W).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    scene = small_batch()
    with torch.no_grad():
        runs = {flags: model(*scene, flip=torch.tensor(flags))
                for flags in ((True, True), (False, False), (True, False))}
    for k in ("result", "result_mono", "fused"):
        assert torch.allclose(runs[True, False][k][:1], runs[True, True][k][:1], atol=1e-6), k
        assert torch.allclose(runs[True, False][k][1:], runs[False, False][k][1:], atol=1e-6), k
    assert (runs[True, True]["result"][:1] - runs[False, False]["result"][:1]).abs().max() > 1e-4


# ---- 7.22 parameters

def test_parameter_counts_match_the_reference():
    model = DynamicMultiFrameDepth()
    assert count(model) == 20666289  # incl. the unused torchvision fc
    assert count(model, trainable=True) == 8976777
    assert count(model.fusion) == 63329
    assert count(model.depth_module) == 4467476
    assert count(model.mono_module) == 4445972


def test_cost_volume_is_float32_under_autocast():
    """Under bfloat16 autocast the volume is the float32 one exactly (pixel coordinates and
    K in bfloat16 would move the matches by pixels)."""
    bins = inverse_depth_bins()
    key, sources, poses, K, invK = plane_scene(float(bins[12]), [(0.5, 0, 0), (-0.5, 0, 0)], 64, 128)
    plain = ssim_cost_volume(key, sources, poses, K, invK, bins)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ssim_cost_volume(key, sources, poses, K, invK, bins)
    assert mixed.dtype == torch.float32 and torch.equal(plain, mixed)
