"""MISM's networks: MNet (FPN4, hypotheses, warping, strided group correlation, reg3d, local
max, convex upsampling, PADS, masked-image helper) and the SNet (hrnet18_raw + MSF decoder).
Spec checks 8.3 (the MISM half), 8.10-8.17 and 8.20."""
import pytest
import torch
import torch.nn.functional as F

from layers import transformation_from_parameters
from networks import msf_decoder, mism  # importing registers "msf" and (via networks) "hrnet18_raw"
from networks.bdedepth_encoders import HRNet18Encoder
from networks.registry import build_depth_decoder, build_encoder
from options import MonodepthOptions


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _K(h, w, B=1, dtype=torch.float32):
    """KITTI's normalised intrinsics at h x w: B x 4 x 4."""
    K = torch.tensor([[0.58 * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=dtype)
    return K.repeat(B, 1, 1)


def _smooth(B, C, H, W, seed, low=(6, 20)):
    """Smooth random fields in [0, 1]: bilinear upsampling of low-res noise."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(B, C, *low, generator=g), size=(H, W), mode="bilinear", align_corners=True)


def _pose(B, dtype=torch.float32, scale=1.0):
    """A small rotation and a forward/sideways translation (times scale): B x 4 x 4, target -> source."""
    axisangle = torch.tensor([[[0.01, -0.02, 0.005]]], dtype=dtype).repeat(B, 1, 1)
    translation = torch.tensor([[[0.3, 0.05, -0.8]]], dtype=dtype).repeat(B, 1, 1) * scale
    return transformation_from_parameters(axisangle, translation)


# ------------------------------------------------------------------------ 8.10 hypotheses
def test_inverse_hypotheses_for_prior_10_and_f_1_go_from_20_to_5_with_a_constant_inverse_step():
    d = mism.hypotheses(torch.full((2, 1, 3, 4), 10.0, dtype=torch.float64), 1.0, 16)
    assert d.shape == (2, 16, 3, 4)
    assert torch.allclose(d[:, 0], torch.tensor(20.0, dtype=torch.float64))  # index 0: the farthest
    assert torch.allclose(d[:, -1], torch.tensor(5.0, dtype=torch.float64))
    steps = torch.diff(1 / d, dim=1)
    assert torch.allclose(steps, torch.tensor((1 / 5 - 1 / 20) / 15, dtype=torch.float64))


@pytest.mark.parametrize("D", [8, 16, 24, 32, 64])
def test_hypotheses_are_bit_equal_to_the_arange_construction(D):
    """The released code's hypotheses: t_k = arange(D)[k] / (D - 1) (not linspace, which
    differs by an ulp at some k), inverse: 1 / (1/far + (1/near - 1/far) t_k), linear:
    near + (far - near) t_k, near = d_p / (1 + F), far = d_p (1 + F); float32, bit for bit."""
    g = torch.Generator().manual_seed(D)
    prior = 1 + 79 * torch.rand(2, 1, 6, 20, generator=g)
    fac = 0.2 + 2 * torch.rand(6, 20, generator=g)  # PADS' per-pixel F
    t = (torch.arange(D, dtype=torch.float32) / (D - 1)).view(1, D, 1, 1)
    near, far = prior / (1 + fac), prior * (1 + fac)
    assert torch.equal(mism.hypotheses(prior, fac, D), 1 / (1 / far + (1 / near - 1 / far) * t))
    assert torch.equal(mism.hypotheses(prior, fac, D, "linear"), near + (far - near) * t)
    assert torch.equal(mism.hypotheses(prior, 1.0, D), 1 / (1 / (prior * 2) + (1 / (prior / 2) - 1 / (prior * 2)) * t))
    # linspace's t differs at some k for each of these D: the comparison above can tell them apart
    assert not torch.equal(torch.linspace(0, 1, D).view(1, D, 1, 1), t)


def test_linear_and_log_hypotheses_span_the_same_range_nearest_first_and_f_may_be_a_map():
    prior = torch.full((1, 1, 2, 2), 10.0, dtype=torch.float64)
    lin = mism.hypotheses(prior, 1.0, 8, "linear")
    assert torch.allclose(lin[0, :, 0, 0], torch.linspace(5, 20, 8, dtype=torch.float64))
    log = mism.hypotheses(prior, 1.0, 8, "log")
    assert torch.allclose(log[0, :, 0, 0], torch.logspace(torch.log10(torch.tensor(5.0)), torch.log10(
        torch.tensor(20.0)), 8, dtype=torch.float64))
    fac = torch.tensor([[1.0, 0.5], [0.25, 3.0]], dtype=torch.float64)  # PADS' per-pixel F
    d = mism.hypotheses(prior, fac, 16)
    assert torch.allclose(d[0, 0], 10 * (1 + fac)) and torch.allclose(d[0, -1], 10 / (1 + fac))
    with pytest.raises(ValueError, match="schedule='cubic'"):
        mism.hypotheses(prior, 1.0, 8, "cubic")


# ------------------------------------------------------------------------ 8.11 shapes
def test_m_encoder_gives_matching_and_context_of_32_channels_at_quarter_resolution_at_192x640():
    torch.manual_seed(0)
    enc = mism.FPN4(8).eval()
    x = torch.rand(2, 3, 192, 640)
    with torch.no_grad():
        matching, context = enc(x)
        assert torch.equal(context, enc.conv2(enc.conv1(enc.conv0(x))))  # context = conv2, raw input
    assert matching.shape == context.shape == (2, 32, 48, 160)


@pytest.mark.parametrize("H, W", [(96, 320), (192, 640)])
def test_mnet_pieces_have_the_spec_shapes(H, W):
    """8.11 (at 192 x 640: features 2x32x48x160, correlation 2x16x16x48x160, reg3d
    2x16x48x160, up 2x1x192x640) and the same at half the size."""
    torch.manual_seed(0)
    net = mism.MNet(H, W).eval()
    B, h, w = 2, H // 4, W // 4
    ref, src = _smooth(B, 3, H, W, 1), _smooth(B, 3, H, W, 2)
    K = _K(h, w, B)
    with torch.no_grad():
        (m0, c0), (m1, _) = net.features(ref), net.features(src)
        assert m0.shape == c0.shape == (B, 32, h, w)
        hyp = mism.hypotheses(torch.full((B, 1, h, w), 10.0), net.pads, 16)
        warped = mism.warp_to_target(m1, hyp, _pose(B), K, torch.inverse(K))
        assert warped.shape == (B, 32, 16, h, w)
        volume = mism.group_correlation(m0, warped, 16)
        assert volume.shape == (B, 16, 16, h, w)
        assert net.reg3d(volume).shape == (B, 16, h, w)
        assert net.up(torch.rand(B, 1, h, w), c0).shape == (B, 1, H, W)
        out = net(ref, src, torch.full((B, 1, H, W), 10.0), _pose(B), K, torch.inverse(K))
    assert out["depth"].shape == (B, 1, H, W) and out["depth_low"].shape == (B, 1, h, w)
    assert out["prob"].shape == out["hypotheses"].shape == (B, 16, h, w)
    assert torch.allclose(out["prob"].sum(1), torch.ones(B, h, w))
    assert out["src_feats"].shape == (B, 32, h, w) and len(out["ref_feats"]) == 2


def test_sizes_reg3d_cannot_halve_three_times_are_refused_by_name():
    reg = mism.Reg3D(16, 4)
    with pytest.raises(ValueError, match="D=16, h=12, w=80"):
        reg(torch.zeros(1, 16, 16, 12, 80))
    with pytest.raises(ValueError, match="height=100"):
        mism.MNet(100, 320)
    with pytest.raises(ValueError, match="num_depth_bins=12"):
        mism.MNet(96, 320, num_depth_bins=12)


# ------------------------------------------------------------------------ warping, 8.3, 8.12
def test_warp_with_identity_pose_returns_the_source_and_a_sideways_move_shifts_it():
    torch.manual_seed(0)
    h, w, D = 16, 24, 4
    src = torch.rand(1, 8, h, w, dtype=torch.float64)
    K = _K(h, w, dtype=torch.float64)
    depths = torch.rand(1, D, h, w, dtype=torch.float64) * 10 + 1
    eye = torch.eye(4, dtype=torch.float64)[None]
    warped = mism.warp_to_target(src, depths, eye, K, torch.inverse(K))
    assert torch.allclose(warped, src.unsqueeze(2).expand(-1, -1, D, -1, -1), atol=1e-5)  # Project3D adds 1e-7 to z
    # x-translation tx: pixel u at depth d lands on u + fx tx / d; d = fx tx / 3 -> 3 px
    T = eye.clone()
    T[0, 0, 3] = 0.5
    d3 = K[0, 0, 0] * 0.5 / 3
    warped = mism.warp_to_target(src, torch.full((1, 1, h, w), float(d3), dtype=torch.float64), T, K,
                                 torch.inverse(K))[:, :, 0]
    assert torch.allclose(warped[..., :w - 3], src[..., 3:], atol=1e-5)
    assert warped[..., w - 2:].abs().max() == 0  # beyond the border: zero padding
    T[0, 2, 3] = -100.0  # every point ends up behind the source camera: nothing is sampled
    assert mism.warp_to_target(src, depths, T, K, torch.inverse(K)).abs().max() == 0


def test_warp_gives_gradients_to_features_not_to_depths():
    src = torch.rand(1, 4, 8, 8, requires_grad=True)
    depths = torch.full((1, 2, 8, 8), 5.0, requires_grad=True)
    K = _K(8, 8)
    mism.warp_to_target(src, depths, _pose(1), K, torch.inverse(K)).sum().backward()
    assert src.grad.abs().sum() > 0 and depths.grad is None


def test_correlation_groups_are_strided_channels_g_and_g_plus_16():
    """8.12: with ref = 1, group g is the mean of warped channels g and g + 16."""
    torch.manual_seed(0)
    warped = torch.randn(2, 32, 5, 3, 4)
    corr = mism.group_correlation(torch.ones(2, 32, 3, 4), warped, 16)
    assert corr.shape == (2, 5, 16, 3, 4)
    for g in range(16):
        assert torch.allclose(corr[:, :, g], (warped[:, g] + warped[:, g + 16]) / 2)
    with pytest.raises(ValueError, match="30 channels"):
        mism.group_correlation(torch.ones(1, 30, 3, 4), torch.ones(1, 30, 2, 3, 4), 16)


def test_correlation_of_normalised_features_peaks_at_the_hypothesis_nearest_the_plane():
    """8.3 (MISM half): a fronto-parallel textured plane at depth z, true pose (sideways
    move of 2 px at z); the correlation summed over groups peaks at the bin nearest z."""
    torch.manual_seed(0)
    h, w, z = 16, 40, 8.0
    K = _K(h, w)
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 2 * z / K[0, 0, 0]  # fx tx / z = 2 px
    ref = F.normalize(torch.randn(1, 32, h, w), dim=1)
    src = torch.zeros_like(ref)
    src[..., 2:] = ref[..., :-2]  # source pixel u + 2 sees what target pixel u sees
    hyp = mism.hypotheses(torch.full((1, 1, h, w), 1.1 * z), 1.0, 16)
    score = mism.group_correlation(ref, mism.warp_to_target(src, hyp, T, K, torch.inverse(K))).sum(2)
    nearest = (hyp - z).abs().argmin(1)
    inner = (slice(None), slice(2, -2), slice(2, w - 8))  # every shift tried stays inside the image
    assert torch.equal(score.argmax(1)[inner], nearest[inner])


# ------------------------------------------------------------------------ 8.13 local max
def test_local_max_one_hot_and_half_half_and_clamped_window():
    D = 8
    depths = torch.linspace(20, 5, D).view(1, D, 1, 1).repeat(1, 1, 1, 3)
    prob = torch.zeros(1, D, 1, 3)
    prob[0, 5, 0, 0] = 1  # one-hot at k = 5
    prob[0, 2, 0, 1] = prob[0, 3, 0, 1] = 0.5  # half on k = 2, 3
    prob[0, 0, 0, 2], prob[0, 1, 0, 2] = 0.6, 0.4  # k* = 0: the window (0, 0, 1) is clamped
    d = mism.local_soft_argmax(prob, depths)[0, 0, 0]
    assert d.shape == (3,)
    assert torch.isclose(d[0], depths[0, 5, 0, 0])
    assert torch.isclose(d[1], (depths[0, 2, 0, 0] + depths[0, 3, 0, 0]) / 2)
    # MISM clamps the indices: the end bin counts twice
    expected = (2 * 0.6 * depths[0, 0, 0, 0] + 0.4 * depths[0, 1, 0, 0]) / (2 * 0.6 + 0.4)
    assert torch.isclose(d[2], expected)
    prob = torch.zeros(1, D, 1, 1)
    prob[0, D - 1] = 1
    assert torch.isclose(mism.local_soft_argmax(prob, depths[..., :1])[0, 0, 0, 0], depths[0, -1, 0, 0])


# ------------------------------------------------------------------------ 8.14 convex upsampling
def test_convex_upsampling_keeps_a_constant_inside_and_stays_within_each_neighbourhood():
    torch.manual_seed(0)
    up = mism.ConvexUpsample(32, 4).eval()
    context = torch.randn(2, 32, 6, 10)
    with torch.no_grad():
        const = up(torch.full((2, 1, 6, 10), 7.5), context)
        assert const.shape == (2, 1, 24, 40)
        assert torch.allclose(const[..., 4:-4, 4:-4], torch.tensor(7.5), rtol=1e-6)
        assert const[..., :4, :].max() < 7.5  # MISM's zero padding pulls the border towards 0
        replicate = mism.ConvexUpsample(32, 4, padding="replicate")
        replicate.load_state_dict(up.state_dict())
        assert torch.allclose(replicate(torch.full((2, 1, 6, 10), 7.5), context), torch.tensor(7.5), rtol=1e-6)
        depth = torch.rand(2, 1, 6, 10) * 10 + 1
        out = up(depth, context)
    patches = F.unfold(depth, 3, padding=1).view(2, 9, 6, 10)  # the zero-padded 3x3 neighbourhoods
    lo = patches.amin(1, keepdim=True).repeat_interleave(4, 2).repeat_interleave(4, 3)
    hi = patches.amax(1, keepdim=True).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


def test_convex_weights_are_laid_out_neighbour_then_subrow_then_subcolumn():
    """Channel k*16 + i*4 + j weighs neighbour k (row-major offsets (-1,-1)..(1,1)) for the
    sub-pixel (i, j): rows i >= 2 pick the pixel below, the others the centre."""
    up = mism.ConvexUpsample(4, 4)
    with torch.no_grad():
        first, last = up.upsample_mask[0].weight, up.upsample_mask[2].weight
        first.zero_()
        first[0] = 1.0  # hidden channel 0 = sum of the context window (> 0)
        last.zero_()
        for i in range(4):
            for j in range(4):
                k = 7 if i >= 2 else 4  # (dy, dx) = (1, 0) or (0, 0)
                last[k * 16 + i * 4 + j, 0] = 100.0
        depth = torch.arange(12.0).view(1, 1, 3, 4) + 1
        out = up(depth, torch.ones(1, 4, 3, 4))[0, 0]
    below = torch.cat([depth[0, 0, 1:], torch.zeros(1, 4)])  # zero padding under the last row
    for i in range(4):
        expect = (below if i >= 2 else depth[0, 0]).repeat_interleave(4, 1)
        assert torch.allclose(out[i::4], expect, atol=1e-4), i


# ------------------------------------------------------------------------ MNet: 8.15, 8.16, 8.17
def _mnet_inputs(B, H, W, dtype=torch.float32, seed=0):
    h, w = H // 4, W // 4
    ref, src = _smooth(B, 3, H, W, seed).to(dtype), _smooth(B, 3, H, W, seed + 1).to(dtype)
    prior = (3 + 17 * _smooth(B, 1, H, W, seed + 2, low=(3, 5))).to(dtype)  # in [3, 20]
    K = _K(h, w, B, dtype)
    return ref, src, prior, K, torch.inverse(K)


def test_low_res_mnet_depth_lies_in_the_pads_range_around_the_prior():
    """8.15 with random weights and a random F map."""
    torch.manual_seed(0)
    net = mism.MNet(64, 128)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net.pads.copy_(0.2 + 1.3 * torch.rand(16, 32, generator=g))
        ref, src, prior, K, invK = _mnet_inputs(2, 64, 128)
        out = net(ref, src, prior, _pose(2), K, invK)
    d_p = net.prior_low(prior)
    d = out["depth_low"]
    assert (d >= d_p / (1 + net.pads) * (1 - 1e-6)).all() and (d <= d_p * (1 + net.pads) * (1 + 1e-6)).all()
    assert torch.allclose(out["hypotheses"][:, :1], d_p * (1 + net.pads))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mnet_is_scale_equivariant(dtype):
    """8.16: prior x s and translation x s give d_m x s (rtol 1e-4; measured max relative
    spread 4e-7 in float32, 2e-11 in float64, the latter from Project3D's 1e-7 added to z).
    It holds while s d_p stays inside the prior clamp [0.1, 100]."""
    torch.manual_seed(0)
    net = mism.MNet(64, 128).to(dtype).eval()
    ref, src, prior, K, invK = _mnet_inputs(2, 64, 128, dtype)
    s = 2.5
    with torch.no_grad():
        a = net(ref, src, prior, _pose(2, dtype), K, invK)
        b = net(ref, src, prior * s, _pose(2, dtype, scale=s), K, invK)
    assert torch.equal(a["prob"].argmax(1), b["prob"].argmax(1))
    for key in ("depth", "depth_low"):
        assert torch.allclose(b[key], a[key] * s, rtol=1e-4, atol=0), key


def test_mnet_runs_under_bf16_autocast_with_float32_geometry_and_probabilities():
    torch.manual_seed(0)
    net = mism.MNet(64, 128)
    ref, src, prior, K, invK = _mnet_inputs(2, 64, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(ref, src, prior, _pose(2), K, invK)
    assert out["hypotheses"].dtype == out["prob"].dtype == out["depth_low"].dtype == torch.float32
    assert torch.isfinite(out["depth"]).all() and out["depth"].min() > 0
    out["depth"].float().mean().backward()
    assert net.m_encoder.out.weight.grad.abs().sum() > 0


def test_pads_update_is_0_99_f_where_mnet_agrees_and_adds_0_012_where_the_ratio_is_2():
    """8.17, with the ratio taken as the batch maximum and both ways (2 and 1/2)."""
    net = mism.MNet(64, 128)
    prior = torch.full((2, 1, 64, 128), 6.0)
    net.update_pads(prior.clone(), prior)  # d_m = d_p
    assert torch.allclose(net.pads, torch.full((16, 32), 0.99))
    d_m = torch.full((2, 1, 16, 32), 6.0)  # given at h x w: the bilinear resize is the identity
    d_m[1, 0, 3, 4] = 12.0  # ratio 2 in one image of the batch
    d_m[0, 0, 5, 6] = 3.0  # ratio 1/2: also 2
    before = net.pads.clone()
    net.update_pads(d_m, prior)
    expect = 0.99 * before
    expect[3, 4] += 0.012
    expect[5, 6] += 0.012
    assert torch.allclose(net.pads, expect, atol=1e-7)
    fixed = mism.MNet(64, 128, adaptive_range=False)
    fixed.update_pads(d_m, prior)
    assert torch.equal(fixed.pads, torch.ones(16, 32))


def test_pads_map_is_a_persistent_buffer_of_reg3d_that_strict_loading_requires():
    net = mism.MNet(64, 128, depth_bin_fac=0.7)
    state = net.reg3d.state_dict()
    assert state["depth_bin_facs"].shape == (16, 32) and torch.all(state["depth_bin_facs"] == 0.7)
    assert "reg3d.depth_bin_facs" in net.state_dict()
    state["depth_bin_facs"] = torch.full((16, 32), 1.3)
    other = mism.MNet(64, 128)
    other.reg3d.load_state_dict(state)
    assert torch.all(other.pads == 1.3)
    del state["depth_bin_facs"]
    with pytest.raises(RuntimeError, match="depth_bin_facs"):
        other.reg3d.load_state_dict(state)


def test_masked_rerun_reuses_source_features_and_hypotheses():
    """Reusing src_feats, ref_feats and hypotheses reproduces the pass; a masked reference
    changes the depth (mostly in the hole) without recomputing the source."""
    torch.manual_seed(0)
    net = mism.MNet(64, 128).eval()
    ref, src, prior, K, invK = _mnet_inputs(2, 64, 128)
    T = _pose(2)
    with torch.no_grad():
        out = net(ref, src, prior, T, K, invK)
        again = net(None, None, None, T, K, invK, src_feats=out["src_feats"], ref_feats=out["ref_feats"],
                    hypotheses=out["hypotheses"])
        keep = mism.random_hole_mask(2, 64, 128, generator=torch.Generator().manual_seed(0))
        masked = net(ref * keep, None, None, T, K, invK, src_feats=out["src_feats"], hypotheses=out["hypotheses"])
    assert torch.equal(again["depth"], out["depth"])
    assert masked["src_feats"] is out["src_feats"] and masked["hypotheses"] is out["hypotheses"]
    assert not torch.equal(masked["depth_low"], out["depth_low"])


def test_random_hole_is_one_third_by_one_third_rectangle_shared_by_the_batch():
    keep = mism.random_hole_mask(3, 96, 320, generator=torch.Generator().manual_seed(5))
    assert keep.shape == (3, 1, 96, 320) and set(keep.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(keep[0], keep[1]) and torch.equal(keep[0], keep[2])
    rows, cols = torch.nonzero(keep[0, 0] == 0, as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (32, 106)
    assert int((keep[0] == 0).sum()) == 32 * 106  # one solid rectangle
    again = mism.random_hole_mask(3, 96, 320, generator=torch.Generator().manual_seed(5))
    assert torch.equal(keep, again)
    low = mism.keep_mask_at(keep, 24, 80)
    assert low.dtype == torch.bool and low.shape == (3, 1, 24, 80)
    assert 0 < int((~low[0]).sum()) < 8 * 27  # the hole's inside at 1/4 resolution, its rim kept


def test_mnet_losses_reach_every_mnet_module_but_not_the_prior():
    torch.manual_seed(0)
    net = mism.MNet(64, 128)
    ref, src, prior, K, invK = _mnet_inputs(2, 64, 128)
    prior.requires_grad_(True)
    out = net(ref, src, prior, _pose(2), K, invK)
    out["depth"].mean().backward()
    for name in ("m_encoder", "reg3d", "up"):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    assert prior.grad is None


def test_mnet_weights_use_mism_file_layout():
    net = mism.MNet(64, 128)
    enc = net.m_encoder.state_dict()
    assert enc["conv0.0.conv.weight"].shape == (8, 3, 3, 3) and "conv0.0.conv.bias" not in enc
    assert enc["conv1.0.conv.weight"].shape == (16, 8, 5, 5) and enc["conv3.2.bn.running_var"].shape == (64,)
    assert enc["inner1.weight"].shape == (64, 32, 1, 1) and enc["inner1.bias"].shape == (64,)
    assert enc["out.weight"].shape == (32, 64, 3, 3) and "out.bias" not in enc
    reg = net.reg3d.state_dict()
    assert reg["conv0.conv.weight"].shape == (16, 16, 3, 3, 3) and reg["conv5.conv.weight"].shape == (128, 64, 3, 3, 3)
    assert reg["conv7.0.weight"].shape == (128, 64, 3, 3, 3) and reg["conv11.1.running_mean"].shape == (16,)
    assert reg["prob.weight"].shape == (1, 16, 3, 3, 3) and "prob.bias" not in reg
    assert {k: tuple(v.shape) for k, v in net.up.state_dict().items()} == {
        "upsample_mask.0.weight": (64, 32, 3, 3), "upsample_mask.2.weight": (144, 64, 1, 1)}


# ------------------------------------------------------------------------ SNet: 8.20
def _snet_opt(*extra):
    return MonodepthOptions().parse(["--encoder", "hrnet18_raw", "--depth_decoder", "msf", "--scales", "0",
                                     "--weights_init", "scratch", "--height", "192", "--width", "640", *extra])


def test_hrnet18_raw_and_msf_give_five_levels_and_one_full_resolution_disparity():
    """8.20 at 192 x 640, B = 1."""
    torch.manual_seed(0)
    opt = _snet_opt()
    enc = build_encoder(opt)
    assert type(enc) is HRNet18Encoder and enc.num_ch_enc.tolist() == [64, 18, 36, 72, 144]
    assert not any(k.startswith("context") for k in enc.state_dict())
    dec = build_depth_decoder(opt, enc.num_ch_enc)
    assert isinstance(dec, msf_decoder.MSFDecoder)
    x = torch.rand(1, 3, 192, 640)
    with torch.no_grad():  # train mode: batch statistics (random BN running stats blow up in eval)
        feats = enc(x)
        out = dec(feats)
        assert torch.equal(enc.encoder(x)[0], feats[0])  # raw input: no normalisation
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 96, 320), (18, 48, 160), (36, 24, 80), (72, 12, 40),
                                                   (144, 6, 20)]
    assert list(out) == [("disp", 0)] and out[("disp", 0)].shape == (1, 1, 192, 640)
    assert 0 < out[("disp", 0)].min() and out[("disp", 0)].max() < 1


def test_msf_refuses_six_levels_and_other_scales_by_name():
    with pytest.raises(SystemExit, match="--encoder hrnet18 gives 6.*--encoder hrnet18_raw"):
        build_depth_decoder(_snet_opt("--encoder", "hrnet18"), [64, 64, 18, 36, 72, 144])
    with pytest.raises(SystemExit, match=r"--scales is \[0, 1, 2, 3\].*--scales 0"):
        build_depth_decoder(_snet_opt("--scales", "0", "1", "2", "3"), [64, 18, 36, 72, 144])


def test_msf_weights_use_mism_s_depth_layout():
    dec = msf_decoder.MSFDecoder([64, 18, 36, 72, 144])
    state = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert len(dec.decoder) == 25 and len(state) == 50
    assert state["decoder.0.conv.conv.weight"] == (18, 18, 3, 3)  # round 0, branch 1
    assert state["decoder.4.conv.conv.weight"] == (18, 36, 1, 1)  # round 0, 2 -> 1
    assert state["decoder.9.conv.conv.weight"] == (18, 144, 1, 1)  # round 0, 4 -> 1
    assert state["decoder.15.conv.conv.weight"] == (18, 72, 1, 1)  # round 1, 3 -> 1
    assert state["decoder.19.conv.conv.weight"] == (64, 64, 3, 3)  # round 3, e0
    assert state["decoder.21.conv.conv.weight"] == (64, 18, 1, 1)  # round 3, 1 -> 0
    assert state["decoder.22.conv.conv.weight"] == (32, 64, 3, 3)
    assert state["decoder.23.conv.conv.weight"] == (16, 32, 3, 3)
    assert state["decoder.24.conv.weight"] == (1, 16, 3, 3)


def test_msf_fusion_sums_nearest_upsampled_coarse_branches():
    """With every 1x1 block's output made constant c_j (zero weights, bias b), each round's
    fused finer branch is its own 3x3 output plus sum ELU(b_j): checks the wiring."""
    torch.manual_seed(0)
    dec = msf_decoder.MSFDecoder([8, 4, 4, 4, 4])
    with torch.no_grad():
        for key, idx in dec.index.items():
            if key[0] == "conv1x1":
                dec.decoder[idx].conv.conv.weight.zero_()
                dec.decoder[idx].conv.conv.bias.fill_(0.1 * key[2])  # depends on the source branch j
        feats = [torch.randn(1, c, 32 // 2 ** i, 64 // 2 ** i) for i, c in enumerate([8, 4, 4, 4, 4])]
        fused = dec._round(0, dict(enumerate(feats)))
        own = dec.decoder[dec.index[("parallel_conv", 0, 1)]](feats[1])
    assert sorted(fused) == [1, 2, 3]
    assert torch.allclose(fused[1], own + 0.2 + 0.3 + 0.4)  # ELU(b) = b for b > 0
