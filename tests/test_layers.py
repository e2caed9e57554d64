"""Geometry and loss layers: the spec's acceptance checks 1, 5-13."""
import math

import numpy as np
import pytest
import torch

from datasets.kitti_dataset import KITTI_K
from layers import (SSIM, SSIM_C1, SSIM_C2, BackprojectDepth, Project3D, box_mean3, disp_to_depth,
                    get_smooth_loss, transformation_from_parameters, warp)
from losses import ReprojectionLoss, min_reprojection, smoothness_loss


def scaled_K(width, height, scale=0):
    K = KITTI_K.copy()
    K[0, :] *= width // 2 ** scale
    K[1, :] *= height // 2 ** scale
    return torch.from_numpy(K)[None]


def test_intrinsics_at_640x192_and_scale_3():
    K0 = scaled_K(640, 192)[0]
    assert torch.allclose(K0[[0, 1, 0, 1], [0, 1, 2, 2]], torch.tensor([371.2, 368.64, 320, 96]))
    K3 = scaled_K(640, 192, 3)[0]
    assert torch.allclose(K3[[0, 1, 0, 1], [0, 1, 2, 2]], torch.tensor([46.4, 46.08, 40, 12]))
    inv = torch.from_numpy(np.linalg.pinv(K0.numpy()))
    assert torch.allclose(K0 @ inv, torch.eye(4), atol=1e-6)


def test_disp_to_depth_range():
    _, d0 = disp_to_depth(torch.tensor(0.0), 0.1, 100)
    _, d1 = disp_to_depth(torch.tensor(1.0), 0.1, 100)
    assert math.isclose(d0.item(), 100, rel_tol=1e-6) and math.isclose(d1.item(), 0.1, rel_tol=1e-6)


def test_pose_from_axisangle():
    zero = torch.zeros(1, 1, 3)
    assert torch.allclose(transformation_from_parameters(zero, zero), torch.eye(4))
    aa = torch.tensor([[[0.1, -0.2, 0.3]]])
    t = torch.tensor([[[0.5, 0.1, -1.0]]])
    M = transformation_from_parameters(aa, t)
    Minv = transformation_from_parameters(aa, t, invert=True)
    assert torch.allclose(Minv @ M, torch.eye(4), atol=1e-5)
    R = transformation_from_parameters(torch.tensor([[[0, 0, math.pi / 2]]]), zero)
    assert torch.allclose(R[0, :3, :3] @ torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_identity_projection_and_sampling(dtype, tol):
    h, w = 24, 80
    K = scaled_K(w, h).to(dtype)
    inv_K = torch.linalg.pinv(K)
    depth = torch.rand(1, 1, h, w, dtype=dtype) * 50 + 1
    pts = BackprojectDepth(1, h, w)(depth, inv_K)
    grid = Project3D(1, h, w)(pts, K, torch.eye(4, dtype=dtype)[None])
    u = torch.arange(w, dtype=dtype)
    assert torch.allclose(grid[0, 5, :, 0], 2 * u / (w - 1) - 1, atol=1e-4)
    img = torch.rand(1, 3, h, w, dtype=dtype)
    assert torch.allclose(warp(img, grid), img, atol=tol)


def test_stereo_warp_with_known_disparity():
    """Left target, depth 0.1 fx / 8, right = left shifted 8 px to the left."""
    h, w = 32, 96
    K = scaled_K(w, h)
    left = torch.rand(1, 3, h, w)
    right = torch.zeros_like(left)
    right[..., :-8] = left[..., 8:]
    depth = torch.full((1, 1, h, w), 0.1 * K[0, 0, 0].item() / 8)
    T = torch.eye(4)[None]
    T[0, 0, 3] = -0.1
    grid = Project3D(1, h, w)(BackprojectDepth(1, h, w)(depth, torch.linalg.pinv(K)), K, T)
    out = warp(right, grid)
    assert torch.allclose(out[..., 8:], left[..., 8:], atol=1e-4)


def test_ssim_and_photometric_error():
    x = torch.rand(2, 3, 16, 20)
    y = torch.rand(2, 3, 16, 20)
    assert SSIM()(x, x).abs().max() < 1e-5
    s = SSIM()(x, y)
    assert s.min() >= 0 and s.max() <= 1 and s.mean() > 0.1
    assert ReprojectionLoss()(x, x).abs().max() < 1e-5
    l1 = ReprojectionLoss(no_ssim=True)(x, y)
    assert torch.allclose(l1, (x - y).abs().mean(1, True))


def _ssim_by_pooling(x, y):
    """The SSIM formula with avg_pool2d windows and nothing kept between calls."""
    x, y = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), torch.nn.functional.pad(y, (1, 1, 1, 1), mode="reflect")
    pool = lambda t: torch.nn.functional.avg_pool2d(t, 3, 1)  # noqa: E731
    mu_x, mu_y = pool(x), pool(y)
    sx, sy, sxy = pool(x * x) - mu_x ** 2, pool(y * y) - mu_y ** 2, pool(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sx + sy + SSIM_C2))
    return torch.clamp((1 - ssim) / 2, 0, 1)


@pytest.mark.parametrize("shape", [(2, 3, 16, 20), (3, 9, 7)])
def test_box_mean3_equals_average_pooling_in_values_and_gradients(shape):
    torch.manual_seed(0)
    t = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(*shape[:-2], shape[-2] - 2, shape[-1] - 2, dtype=torch.float64)
    ours = box_mean3(t)
    (ours * weights).sum().backward()
    grad, t.grad = t.grad.clone(), None
    pooled = torch.nn.functional.avg_pool2d(t, 3, 1)
    (pooled * weights).sum().backward()
    assert ours.shape == pooled.shape
    assert torch.allclose(ours, pooled, rtol=0, atol=1e-12)
    assert torch.allclose(grad, t.grad, rtol=0, atol=1e-12)


def test_ssim_keeps_the_targets_statistics_only_while_they_hold():
    """Values and gradients equal to the pooled formula over repeated calls with one target
    (float32 rounding: the division amplifies ~1e-7 differences of the window means), and a
    target changed in place, a new target or a target that needs a gradient is recomputed."""
    torch.manual_seed(0)
    ssim = SSIM()
    target = torch.rand(2, 3, 24, 32)
    for k in range(3):
        x = torch.rand(2, 3, 24, 32, requires_grad=True)
        ours = ssim(x, target)
        ours.sum().backward()
        grad, x.grad = x.grad.clone(), None
        ref = _ssim_by_pooling(x, target)
        ref.sum().backward()
        assert (ours - ref).abs().max() < 2e-5
        assert (grad - x.grad).abs().max() < 1e-5 * x.grad.abs().max()
    kept = ssim._kept[2]
    assert ssim(x, target) is not None and ssim._kept[2] is kept  # the same target: reused
    target.mul_(0.5)  # changed in place: its version moves on
    assert (ssim(x, target) - _ssim_by_pooling(x, target)).abs().max() < 2e-5
    assert ssim._kept[2] is not kept
    other = torch.rand(2, 3, 24, 32)
    assert (ssim(x, other) - _ssim_by_pooling(x, other)).abs().max() < 2e-5
    y = torch.rand(2, 3, 24, 32, requires_grad=True)
    ssim(x.detach(), y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert ssim._kept is None  # a target that needs a gradient is never kept


def test_ssim_runs_in_inference_mode_pickles_and_can_keep_nothing():
    import pickle
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 12, 16), torch.rand(2, 3, 12, 16)
    with torch.inference_mode():  # inference tensors have no version counter: nothing kept
        ssim = SSIM()
        out = ssim(x * 1, y * 1)
        assert ssim._kept is None
    assert (out - _ssim_by_pooling(x, y)).abs().max() < 2e-5
    ssim = SSIM()
    ssim(x, y)
    assert ssim._kept is not None
    copy = pickle.loads(pickle.dumps(ssim))  # the kept statistics stay behind
    assert copy._kept is None and torch.equal(copy(x, y), ssim(x, y))
    lean = SSIM(keep_target=False)
    assert torch.equal(lean(x, y), ssim(x, y)) and lean._kept is None


def test_automask_prefers_identity_for_static_sources():
    """Sources equal to the target under a non-zero motion: identity wins almost everywhere
    and those pixels give the depth network no gradient."""
    torch.manual_seed(0)
    target = torch.rand(1, 3, 32, 64)
    depth = torch.full((1, 1, 32, 64), 5.0, requires_grad=True)
    K = scaled_K(64, 32)
    T = torch.eye(4)[None]
    T[0, 2, 3] = 0.5
    pe = ReprojectionLoss()
    reproj = torch.cat([pe(warp(target, Project3D(1, 32, 64)(BackprojectDepth(1, 32, 64)(depth, torch.linalg.pinv(K)), K, T)), target)] * 2, 1)
    identity = torch.cat([pe(target, target)] * 2, 1)
    loss, automask = min_reprojection(reproj, identity)
    assert (1 - automask).mean() >= 0.99
    loss.mean().backward()
    assert depth.grad[automask == 0].abs().max() == 0
    # zero motion: reprojection equals identity; the noise breaks ties at random
    _, mask = min_reprojection(identity.clone(), identity)
    assert 0.2 < mask.mean() < 0.8


def test_min_reprojection_vs_average():
    a = torch.zeros(1, 1, 4, 8)
    b = torch.ones(1, 1, 4, 8)
    left = torch.cat([a[..., :4], b[..., 4:]], -1)  # source 1 matches the left half
    right = torch.cat([b[..., :4], a[..., 4:]], -1)  # source 2 matches the right half
    losses = torch.cat([left, right], 1)
    assert min_reprojection(losses)[0].mean() == 0
    assert min_reprojection(losses, avg_reprojection=True)[0].mean() > 0


def test_smoothness_properties():
    img = torch.rand(1, 3, 16, 16)
    assert get_smooth_loss(torch.full((1, 1, 16, 16), 0.3), img) == 0
    disp = torch.rand(1, 1, 16, 16) + 0.1
    assert torch.isclose(smoothness_loss(disp, img), smoothness_loss(3 * disp, img), rtol=1e-5)
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1
    flat = torch.zeros(1, 3, 16, 16)
    edge = step.repeat(1, 3, 1, 1)
    assert get_smooth_loss(step, edge) < get_smooth_loss(step, flat)
