"""BDEdepth: splitting-permuting and resizing-cropping as item augmentations on both input
paths, the virtual camera, SI-log, the loss composition (the spec's checks C11-C17), and
training with both augmentations."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets import KITTIRAWDataset
from datasets import kitti_utils
from datasets import synthetic_world as sw
from datasets.augment import (LocalCrop, PatchReshuffle, default_augmentations, local_grid,
                              reshuffle_split, unpermute)
from layers import BackprojectDepth, Project3D, disp_to_depth, warp, zoom_camera, zoom_camera_reference
from losses import ReprojectionLoss, scale_invariant_log
from methods import build_method
from options import MonodepthOptions
from tests.helpers.batch import fake_batch
from tests.helpers.cli import ROOT, evaluate_folder, kill_after_steps, small_split, train_steps
from trainer import Trainer

H, W = 96, 320
FOLDER = f"{sw.DATE}/{sw.DATE}_drive_0001_sync"


@pytest.fixture
def single_thread():
    """One intra-op thread for one test (not the module-wide `one_thread`: this module's resume
    tests compare in-process losses with a train.py subprocess's, bit for bit, at the default
    thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _roll(x, rho_x, rho_y):
    """PatchReshuffle's definition on a C x H x W tensor."""
    h, w = x.shape[-2:]
    wi, hi = reshuffle_split(rho_x, rho_y, h, w)
    return torch.roll(x, [-hi, -wi], [1, 2]), torch.tensor([[w - wi, h - hi]])


# ----------------------------------------------------------------------------- split-permute (C11, C12)
@pytest.mark.parametrize("size", [(96, 320), (97, 321), (5, 7)])
@pytest.mark.parametrize("channels", [1, 3])
def test_unpermute_restores_exactly(size, channels):
    """C11: reshuffle then un-permute is the identity for any rho, odd or even sizes, 1 or 3 channels."""
    x = torch.rand(channels, *size)
    for rho_x in np.linspace(0.1, 0.9, 9):
        for rho_y in (0.1, 0.37, 0.5, 0.9):
            rolled, split = _roll(x, rho_x, rho_y)
            assert torch.equal(unpermute(rolled[None], split)[0], x)
    rolled, split = _roll(x, 0.3, 0.3)
    assert not torch.equal(rolled, x)


def test_reshuffle_definition_and_sources_untouched(static_world):
    """C12: the view is roll(-h_i, -w_i) of frame 0 at scale 0 (before jitter), split_xy =
    (W - w_i, H - h_i); every other image of the item is what the default augmentations give."""
    split = [f"{FOLDER} {i} l" for i in (2, 3, 4, 5)]
    reshuffle = PatchReshuffle(H, W)
    plain = KITTIRAWDataset(static_world.out, split, H, W, [0, -1, 1], 2, is_train=True, img_ext=".png", seed=5)
    aug = KITTIRAWDataset(static_world.out, split, H, W, [0, -1, 1], 2, is_train=True, img_ext=".png", seed=5,
                          augmentations=default_augmentations() + [reshuffle])
    for index in range(len(split)):
        a, b = plain[(index, 1)], aug[(index, 1)]
        for key, value in a.items():
            assert torch.equal(value, b[key]), key
        sx, sy = b["split_xy"].tolist()
        w_i, h_i = W - sx, H - sy
        assert 0.1 * W - 1 <= w_i <= 0.9 * W and 0.1 * H - 1 <= h_i <= 0.9 * H
        x, view = b[("color", 0, 0)], b[("color_reshuffle", 0, 0)]
        assert torch.equal(view, torch.roll(x, [-h_i, -w_i], [1, 2]))
        assert torch.equal(view[:, :, W - w_i:][:, H - h_i:], x[:, :h_i, :w_i])  # top-left block moved
        assert torch.equal(unpermute(view[None], b["split_xy"][None])[0], x)
        if not torch.equal(b[("color_aug", 0, 0)], x):  # jittered: the view has the same jitter
            assert torch.allclose(unpermute(b[("color_reshuffle_aug", 0, 0)][None], b["split_xy"][None])[0],
                                  b[("color_aug", 0, 0)], atol=1e-6)


# ----------------------------------------------------------------------------- resize-crop (C13, C14)
def test_local_grid_metadata():
    """C13: ratio in [1.2, 2], grid 2 x H x W strictly increasing and inside [-1, 1]."""
    crop_aug = LocalCrop(H, W)

    rng = random.Random(0)
    for _ in range(50):
        params = crop_aug.sample(rng)
        item = {}
        crop_aug.apply_meta(item, params)
        ratio, ox, oy = item["crop_local"]
        assert 1.2 <= ratio <= 2.0 and item["ratio_local"][0] == ratio
        grid = local_grid(torch.from_numpy(item["crop_local"])[None].double(), H, W)[0]
        assert grid.shape == (H, W, 2)
        assert (grid[:, 1:, 0] > grid[:, :-1, 0]).all() and (grid[1:, :, 1] > grid[:-1, :, 1]).all()
        assert grid.min() > -1 and grid.max() < 1
        # the grid spans W / r original pixels: its step is 2 / (W r)
        assert abs(float(grid[0, 1, 0] - grid[0, 0, 0]) - 2 / (W * ratio)) < 1e-6


def test_local_view_is_one_window_of_every_frame(static_world):
    """C13: every frame's zoomed view (cut from its native image) is the same window of that
    frame: it matches a bilinear sample of the frame's network-size image at the grid
    (within resampling differences), and a window moved by 4 pixels does not."""
    aug = LocalCrop(H, W)
    ds = KITTIRAWDataset(static_world.out, [f"{FOLDER} 4 l"], H, W, [0, -1, 1], 1, is_train=True,
                         img_ext=".png", seed=2, augmentations=[aug])
    item = ds[(0, 0)]
    crop = item["crop_local"][None]
    grid = local_grid(crop, H, W)
    moved = crop.clone()
    moved[0, 1] += 4
    for f in (0, -1, 1):
        view = item[("color_local", f, 0)]
        near = F.grid_sample(item[("color", f, 0)][None], grid, align_corners=False, padding_mode="border")[0]
        far = F.grid_sample(item[("color", f, 0)][None], local_grid(moved, H, W), align_corners=False,
                            padding_mode="border")[0]
        err, err_moved = (view - near).abs().mean(), (view - far).abs().mean()
        print(f"frame {f}: |view - sampled| {err:.4f}, moved window {err_moved:.4f}")
        assert err < 0.03 and err_moved > 2 * err


def test_zoom_camera_gives_the_crop_pixel():
    """C14: projecting Rc P with K gives P's pixel in the zoomed crop within 1e-3 px, and
    Rc P's depth is Z / r; also with a principal point away from the centre and per-sample K."""
    torch.manual_seed(0)
    B = 3
    K = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    K[:, 0, 0] = torch.tensor([185.6, 300.0, 150.0])
    K[:, 1, 1] = torch.tensor([184.3, 280.0, 160.0])
    K[:, 0, 2] = torch.tensor([160.0, 120.3, 200.9])  # centred, then off-centre
    K[:, 1, 2] = torch.tensor([48.0, 30.2, 70.1])
    ratio = torch.tensor([1.2, 1.7, 2.0], dtype=torch.float64)
    ox, oy = (W - W / ratio) * torch.tensor([0.0, 0.3, 1.0]), (H - H / ratio) * torch.tensor([0.5, 1.0, 0.2])
    crop = torch.stack([ratio, ox, oy], 1)
    P = torch.cat([torch.rand(B, 2, 100) * 20 - 10, torch.rand(B, 1, 100) * 60 + 1, torch.ones(B, 1, 100)],
                  1).double()
    pix = K[:, :3] @ P
    x, y = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2]
    # a crop pixel u' (centre) sees x = ox + (u' + 0.5) / r - 0.5
    u = (x - ox[:, None] + 0.5) * ratio[:, None] - 0.5
    v = (y - oy[:, None] + 0.5) * ratio[:, None] - 0.5
    Pv = zoom_camera(K, crop) @ P
    pix_v = K[:, :3] @ Pv
    assert (pix_v[:, 0] / pix_v[:, 2] - u).abs().max() < 1e-3
    assert (pix_v[:, 1] / pix_v[:, 2] - v).abs().max() < 1e-3
    assert torch.allclose(Pv[:, 2], P[:, 2] / ratio[:, None])
    # and the local grid agrees with the same window
    grid = local_grid(crop, H, W)
    assert abs(float((grid[1, 0, 7, 0] + 1) * W / 2 - 0.5) - float(ox[1] + 7.5 / ratio[1] - 0.5)) < 1e-9


def _true_pose(world, frame, source):
    T_w_cam = kitti_utils.camera_poses_from_oxts(os.path.join(world.out, FOLDER), os.path.join(world.out, sw.DATE),
                                                 [frame, source])
    return np.linalg.inv(T_w_cam[1]) @ T_w_cam[0]


def test_local_warp_with_true_depth_reproduces_the_local_target(static_world):
    """C15: in the synthetic world, warping the zoomed sources with depth Z / r (the true depth
    at the crop's pixels) and Rc T Rc^-1 reproduces the zoomed target; T itself does not."""
    frame = 5
    ds = KITTIRAWDataset(static_world.out, [f"{FOLDER} {frame} l"], H, W, [0, -1, 1], 1, is_train=True,
                         img_ext=".png", seed=4, augmentations=[LocalCrop(H, W)])
    item = ds[(0, 0)]
    crop = item["crop_local"][None]
    dense = np.load(os.path.join(static_world.out, FOLDER, "depth_dense", "image_02", "data", f"{frame:010d}.npy"))
    dense = torch.from_numpy(np.where(dense == 0, 1e4, dense)).float()[None, None]
    depth = F.grid_sample(dense, local_grid(crop, H, W), mode="nearest", align_corners=False) / crop[0, 0]
    K, inv_K = item[("K", 0)][None], item[("inv_K", 0)][None]
    Rc = zoom_camera(K, crop)
    pe = ReprojectionLoss()
    target = item[("color_local", 0, 0)][None]
    inner = torch.zeros(1, 1, H, W, dtype=torch.bool)
    inner[..., 6:-6, 12:-12] = True
    for f in (-1, 1):
        T = torch.from_numpy(_true_pose(static_world, frame, frame + f)).float()[None]
        source = item[("color_local", f, 0)][None]
        errors = {}
        for name, T_used in (("virtual", Rc @ T @ torch.linalg.inv(Rc)), ("original", T)):
            grid = Project3D(1, H, W)(BackprojectDepth(1, H, W)(depth, inv_K), K, T_used)
            errors[name] = pe(warp(source, grid), target)[inner]
        identity = pe(source, target)[inner]
        print(f"frame {f}: median error virtual camera {errors['virtual'].median():.4f}, original pose "
              f"{errors['original'].median():.4f}, identity {identity.median():.4f}")
        assert errors["virtual"].median() < 0.03
        assert errors["virtual"].mean() < 0.5 * identity.mean()
        assert errors["virtual"].mean() < 0.7 * errors["original"].mean()


# ----------------------------------------------------------------------------- SI-log (C16)
def test_scale_invariant_log_values():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 9) * 10 + 0.5
    assert float(scale_invariant_log(x, x)) == 0.0
    for c in (0.1, 0.7, -1.3):
        assert abs(float(scale_invariant_log(x * np.exp(c), x)) - 0.5 * c ** 2) < 1e-5
    noisy = x * torch.exp(0.2 * torch.randn_like(x))
    assert float(scale_invariant_log(noisy, x)) > 0.01


def _opt(*extra, height=H, width=W):
    return MonodepthOptions().parse(["--method", "bdedepth", "--height", str(height), "--width", str(width),
                                     "--batch_size", "2", "--weights_init", "scratch", "--scales", "0",
                                     "--encoder", "resnet", "--depth_decoder", "monodepth2", *extra])


def _views_batch(opt, b=2, seed=0):
    """A random batch with both views (as the datasets make them)."""
    torch.manual_seed(seed)
    inputs = fake_batch(opt, b)
    inputs["crop_local"] = torch.tensor([[1.5, 30.0, 10.0], [1.9, 100.0, 40.0]])[:b]
    inputs["ratio_local"] = inputs["crop_local"][:, :1]
    inputs["split_xy"] = torch.tensor([[200, 50], [41, 17]])[:b]
    for f in opt.frame_ids:
        inputs[("color_local", f, 0)] = inputs[("color_local_aug", f, 0)] = torch.rand(b, 3, opt.height, opt.width)
    inputs[("color_reshuffle", 0, 0)] = inputs[("color_reshuffle_aug", 0, 0)] = torch.rand(b, 3, opt.height,
                                                                                           opt.width)
    return inputs


def test_local_consistency_is_zero_for_the_zoomed_depth():
    """C16: the local consistency term is ~0 when the crop's depth is the original's at the
    window divided by r."""
    opt = _opt("--use_local_crop")
    method = build_method(opt)
    crop = torch.tensor([[1.5, 30.0, 10.0], [1.9, 100.0, 40.0]])
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    original = (5 + 20 * xx + 10 * yy ** 2)[None, None].repeat(2, 1, 1, 1)
    local = F.grid_sample(original, local_grid(crop, H, W), align_corners=False, padding_mode="border") / crop[:, 0,
                                                                                                             None,
                                                                                                             None,
                                                                                                             None]
    term = method.consistency("local", {"crop_local": crop}, {("depth", 0, 0): local}, {("depth", 0, 0): original})
    assert abs(float(term)) < 1e-6
    wrong = method.consistency("local", {"crop_local": crop}, {("depth", 0, 0): local * crop[:, 0, None, None, None]},
                               {("depth", 0, 0): original})
    assert float(wrong) > 0.01  # depth not divided by r: 0.5 log(r)^2 on average


# ----------------------------------------------------------------------------- loss composition (C17)
def test_flags_off_equals_monodepth2_exactly():
    """C17: both flags off -> the loss is Monodepth2's, term by term, with no consistency term."""
    inputs = _views_batch(_opt())
    torch.manual_seed(1)
    ours = build_method(_opt())
    torch.manual_seed(1)
    base = build_method(MonodepthOptions().parse(["--height", str(H), "--width", str(W), "--batch_size", "2",
                                                  "--weights_init", "scratch", "--scales", "0"]))
    ours.load_state_dict(base.state_dict())
    plain = {k: v for k, v in inputs.items()
             if not (isinstance(k, tuple) and k[0].startswith(("color_local", "color_reshuffle")))}
    with torch.no_grad():  # the same auto-mask tie noise for both
        torch.manual_seed(3)
        terms, _ = ours.compute_losses(plain, ours(plain))
        torch.manual_seed(3)
        base_terms, _ = base.compute_losses(plain, base(plain))
    assert set(terms) == set(base_terms) == {"reprojection", "smoothness"}
    for k in terms:
        assert torch.equal(terms[k], base_terms[k])


def test_both_views_loss_composition():
    """C17: both on -> (L_orig + L_local + L_reshuffle) / 3 + 0.07 (SI_local + SI_reshuffle),
    each part recomputed here from the views' own outputs."""
    opt = _opt("--use_local_crop", "--use_patch_reshuffle")
    torch.manual_seed(2)
    method = build_method(opt)
    inputs = _views_batch(opt)
    with torch.no_grad():
        outputs = method(inputs)
        terms, _ = method.compute_losses(inputs, outputs)
        parts = []
        from methods.monodepth2 import Monodepth2
        for view_inputs, view_outputs in [(inputs, outputs)] + list(outputs["views"].values()):
            t, _ = Monodepth2.compute_losses(method, view_inputs, dict(view_outputs))
            parts.append(t["reprojection"] + t["smoothness"])
        local_in, local_out = outputs["views"]["local"]
        dl = scale_invariant_log(local_out[("depth", 0, 0)] * local_in["crop_local"][:, 0, None, None, None],
                                 F.grid_sample(outputs[("depth", 0, 0)], local_grid(local_in["crop_local"], H, W),
                                               align_corners=False, padding_mode="border"))
        dr = scale_invariant_log(outputs["views"]["reshuffle"][1][("depth", 0, 0)], outputs[("depth", 0, 0)])
    total = sum(terms.values())
    expected = sum(parts) / 3 + 0.07 * (dl + dr)
    assert set(terms) == {"reprojection", "smoothness", "consistency"}
    assert abs(float(total - expected)) < 1e-6 * float(expected)
    assert float(dl) > 0 and float(dr) > 0


def test_reshuffled_depth_is_unpermuted_before_the_losses():
    """The reshuffle view's depth, un-permuted, lines up with the original image: with a
    network that sees the reshuffled image, rolling the un-permuted disparity back gives the
    network's raw output (exact at scale 0)."""
    opt = _opt("--use_patch_reshuffle")
    method = build_method(opt)
    inputs = _views_batch(opt)
    with torch.no_grad():
        outputs = method(inputs)
        raw = method.depth_of(inputs[("color_reshuffle_aug", 0, 0)])[("disp", 0)]
    restored = outputs["views"]["reshuffle"][1][("disp", 0)]
    split = inputs["split_xy"]
    for i in range(2):
        sx, sy = split[i].tolist()
        assert torch.equal(torch.roll(restored[i], [-(H - sy), -(W - sx)], [1, 2]), raw[i])


# ----------------------------------------------------------------------------- both input paths
@pytest.mark.slow  # several Trainers (the suite's time budget)
def test_fast_path_views_match_the_default_path(static_world, tmp_path):
    """The same items through the fast path (frames cached at the network size, views made
    on the device): identical metadata and reshuffle view; the zoomed view differs only by
    resampling (native Lanczos vs a bilinear zoom of the network-size frame)."""
    split = os.path.join(static_world.out, "splits", "synthetic")
    common = ["--data_path", static_world.out, "--split", split, "--png", "--height", "64", "--width", "192",
              "--weights_init", "scratch", "--batch_size", "2", "--num_workers", "0", "--no_progress",
              "--use_local_crop", "--use_patch_reshuffle", "--log_dir", str(tmp_path), "--scales", "0"]
    batches = {}
    for name, extra in (("default", []), ("fast", ["--fast_loader", "--cache_dir", str(tmp_path / "cache")])):
        t = Trainer(_opt(*common, "--model_name", name, *extra, height=64, width=192))
        t.train_sampler.set_epoch(0)
        batches[name] = t._to_device(next(iter(t.train_loader)))
    a, b = batches["default"], batches["fast"]
    assert torch.equal(a["crop_local"], b["crop_local"]) and torch.equal(a["split_xy"], b["split_xy"])
    for batch in (a, b):
        assert torch.equal(unpermute(batch[("color_reshuffle", 0, 0)], batch["split_xy"]), batch[("color", 0, 0)])
    for f in (0, -1, 1):
        d = (a[("color_local", f, 0)] - b[("color_local", f, 0)]).abs().mean()
        print(f"frame {f}: zoomed view, default vs fast path: mean |diff| {d:.4f}")
        assert d < 0.03


@pytest.mark.slow  # several Trainers (the suite's time budget)
def test_training_with_both_views_on_both_paths(static_world, tmp_path):
    split = os.path.join(static_world.out, "splits", "synthetic")
    for name, extra in (("default", []), ("fast", ["--fast_loader"])):
        t = Trainer(_opt("--data_path", static_world.out, "--split", split, "--png", "--num_workers", "0",
                         "--no_progress", "--use_local_crop", "--use_patch_reshuffle", "--log_dir", str(tmp_path),
                         "--model_name", name, "--max_steps", "2", "--num_epochs", "1", "--keep_weights", "1",
                         *extra, height=64, width=192))
        t.train()
        with open(os.path.join(tmp_path, name, "train_steps.jsonl")) as f:
            records = [json.loads(line) for line in f]
        assert len(records) == 2
        for r in records:
            assert set(r["terms"]) == {"reprojection", "smoothness", "consistency"}
            assert np.isfinite(r["loss"]) and r["terms"]["consistency"] > 0


def test_step_schedule_with_milestones():
    """C23 and the NYUv2 recipe: --decay_step 15 gives 1e-4 for epochs 0-14 then 1e-5;
    --decay_step 26 36 multiplies by 0.1 at epochs 26 and 36 only."""
    from types import SimpleNamespace
    for decay_step, expected in (([15], {0: 1e-4, 14: 1e-4, 15: 1e-5, 19: 1e-5}),
                                 ([26, 36], {0: 1e-4, 25: 1e-4, 26: 1e-5, 35: 1e-5, 36: 1e-6, 49: 1e-6})):
        opt = _opt("--decay_step", *map(str, decay_step), "--num_epochs", "50")
        model = torch.nn.Linear(1, 1)
        fake = SimpleNamespace(opt=opt, train_loader=[None] * 10, group_lrs=[1e-4],
                               method=SimpleNamespace(schedule_epoch=lambda epoch: epoch),
                               optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4))
        scheduler = Trainer._build_scheduler(fake)
        lrs = []
        for step in range(500):
            lrs.append(fake.optimizer.param_groups[0]["lr"])
            fake.optimizer.step()
            scheduler.step()
        for epoch, lr in expected.items():
            assert all(abs(x - lr) < 1e-12 for x in lrs[epoch * 10:(epoch + 1) * 10]), (decay_step, epoch)


# ----------------------------------------------------------------------------- the paper's networks, CLI
ITEMS_PER_EPOCH = 4  # 2 steps per epoch


def _train_args(world, log_dir, *extra):
    split = small_split(world, os.path.join(os.path.dirname(str(log_dir)), "split"), ITEMS_PER_EPOCH)
    return ["--config", "bdedepth_resnet18_640x192", "--data_path", world.out, "--split", split,
            "--png", "--height", "64", "--width", "192", "--weights_init", "scratch", "--batch_size", "2",
            "--num_epochs", "2", "--num_workers", "0", "--log_dir", str(log_dir), "--model_name", "m",
            "--log_frequency", "1000", "--no_progress", "--no_cuda", "--keep_weights", "1", *extra]


@pytest.fixture(scope="module")
def bde_run(static_world, tmp_path_factory):
    """Two deterministic epochs of the ResNet-18 recipe (context conv, grid decoder, both views)."""
    import shutil
    tmp = tmp_path_factory.mktemp("bde")
    trainer = Trainer(MonodepthOptions().parse(_train_args(static_world, tmp / "ref", "--deterministic")))
    trainer.train()
    yield trainer, tmp / "ref"
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow  # several Trainers (the suite's time budget)
def test_resume_inside_epoch_one_reproduces_the_losses(bde_run, static_world, tmp_path):
    """SIGKILL inside epoch 1, then --resume: the views (drawn from (seed, epoch, index)) and
    so every later loss term equal the uninterrupted run's."""
    trainer, ref_dir = bde_run
    assert trainer.opt.encoder == "resnet_context" and trainer.opt.depth_decoder == "grid"
    ref = train_steps(ref_dir)
    per_epoch = len(trainer.train_loader)
    total = 2 * per_epoch
    for rec in ref.values():
        assert set(rec["terms"]) == {"reprojection", "smoothness", "consistency"}
    run_dir = tmp_path / "run"
    args = _train_args(static_world, run_dir, "--deterministic", "--state_frequency", "1")
    kill_after_steps(args, run_dir, per_epoch + 1)
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(run_dir), "--model_name", "m"]))
    k = resumed.step
    assert per_epoch <= k < total, (k, per_epoch)
    resumed.train()
    after = train_steps(run_dir)
    for s in range(k, total):
        for name, value in ref[s]["terms"].items():
            assert after[s]["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-8), (s, name)


def test_evaluate_and_predict_a_bdedepth_folder_with_the_baselines_commands(bde_run, static_world, tmp_path):
    _, log_dir = bde_run
    folder = str(log_dir / "m" / "models" / "weights_1")
    res, m = evaluate_folder(folder, static_world, tmp_path / "metrics.json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert 0 < m["abs_rel"] < 2 and m["num_images"] == 4
    src = os.path.join(static_world.out, FOLDER, "image_02", "data", "0000000001.png")
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", src, "--load_weights_folder", folder,
                          "--output_dir", str(tmp_path), "--save_npy"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    npy = np.load(tmp_path / "0000000001_disp.npy")
    assert npy.shape == (1, 1, 64, 192) and np.isfinite(npy).all()


def test_presets_parse_with_the_papers_settings():
    for name, encoder in (("bdedepth_hrnet18_640x192", "hrnet18"), ("bdedepth_resnet18_640x192", "resnet_context")):
        opt = MonodepthOptions().parse(["--config", name])
        assert (opt.method, opt.encoder, opt.depth_decoder, opt.scales) == ("bdedepth", encoder, "grid", [0])
        assert opt.use_local_crop and opt.use_patch_reshuffle and opt.optimizer == "adamw"
        assert (opt.height, opt.width, opt.split, opt.decay_step, opt.num_epochs) == (192, 640, "eigen_zhou", [15], 20)
    opt = MonodepthOptions().parse(["--config", "synthetic_bdedepth"])
    assert opt.use_local_crop and opt.use_patch_reshuffle and opt.encoder == "resnet_context"
    # the method's defaults are the paper's networks
    opt = MonodepthOptions().parse(["--method", "bdedepth"])
    assert (opt.encoder, opt.depth_decoder, opt.scales, opt.weight_decay) == ("hrnet18", "grid", [0], 0.01)
    opt = MonodepthOptions().parse(["--config", "bdedepth_resnet18_cityscapes_512x192"])
    assert (opt.dataset, opt.width, opt.height, opt.batch_size) == ("cityscapes_preprocessed", 512, 192, 12)
    opt = MonodepthOptions().parse(["--config", "bdedepth_hrnet18_nyuv2_384x288"])
    assert (opt.dataset, opt.max_depth, opt.decay_step, opt.num_epochs) == ("nyuv2", 10.0, [26, 36], 50)
    assert opt.use_local_crop and not opt.use_patch_reshuffle


def test_the_baselines_option_checks_still_apply():
    """Each class of a method's hierarchy checks its own options: Monodepth2's checks run
    for BDEdepth and SRD too."""
    for method in ("bdedepth", "srd"):
        with pytest.raises(SystemExit, match="--predictive_mask"):
            MonodepthOptions().parse(["--method", method, "--predictive_mask"])
        with pytest.raises(SystemExit, match="--frame_ids 0 alone"):
            MonodepthOptions().parse(["--method", method, "--frame_ids", "0", "--distill_filter", "none"]
                                     if method == "srd" else ["--method", method, "--frame_ids", "0"])
    with pytest.raises(SystemExit, match="--use_local_crop / --use_patch_reshuffle do not support --v1_multiscale"):
        MonodepthOptions().parse(["--method", "bdedepth", "--use_local_crop", "--v1_multiscale"])
    with pytest.raises(SystemExit, match="--srd_decoder_init kaiming applies to --depth_decoder srd only"):
        MonodepthOptions().parse(["--method", "srd", "--srd_decoder_init", "kaiming", "--depth_decoder", "monodepth2"])


# ----------------------------------------------------------------------------- --reference_zoom_geometry
# draws whose zoomed size W r x H r is whole (320 x 96 at r = 1.25, 1.5, 1.75), so that the released
# pipeline's integer resize-crop and this code's exact window are the same window
REF_DRAWS = [(1.25, 37, 11), (1.75, 201, 60)]  # (r, w0, h0): the window's first zoomed pixel


def _released_grid(r, w0, h0):
    """The released dataset's grid_local: the align_corners=True coordinates of the zoomed
    image's pixels (meshgrid of linspace(-1, 1, W r), linspace(-1, 1, H r)), cropped at (w0, h0)."""
    wr, hr = round(W * r), round(H * r)
    gx, gy = np.meshgrid(np.linspace(-1, 1, wr), np.linspace(-1, 1, hr))
    return np.stack([gx, gy])[:, h0:h0 + H, w0:w0 + W]


def _zoom_batch():
    """K per item (item 1: another focal length and an off-centre principal point), the crops
    of REF_DRAWS in this code's terms (r, w0 / r, h0 / r) and the released grids."""
    K = torch.eye(4).repeat(2, 1, 1)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = 0.58 * W, 1.92 * H, 0.5 * W, 0.5 * H
    K[1, 0, 0], K[1, 1, 1], K[1, 0, 2], K[1, 1, 2] = 0.7 * W, 2.1 * H, 0.55 * W, 0.45 * H
    crop = torch.tensor([[r, w0 / r, h0 / r] for r, w0, h0 in REF_DRAWS])
    return K, crop, [_released_grid(*d) for d in REF_DRAWS]


@pytest.mark.usefixtures("single_thread")
def test_reference_virtual_camera_is_built_from_the_sampling_grid():
    """zoom_camera_reference = the released construction, recomputed here from its grid: centre
    (g_x, g_y) = means of the grid's first and last entries, s = half the x span, focal lengths
    of item 0 in image units, Rc = [[1, 0, -g_x / 2f_x], [0, 1, -g_y / 2f_y], [0, 0, s]]. It
    differs from the exact camera by s = (W-1)/(W r-1) instead of 1/r, and, for item 1, by its
    own K's focal length and principal point."""
    K, crop, grids = _zoom_batch()
    Rc = zoom_camera_reference(K, crop, H, W)
    fx, fy = float(K[0, 0, 0]) / W, float(K[0, 1, 1]) / H
    for b, g in enumerate(grids):
        cx = (g[0, 0, -1] + g[0, 0, 0]) / 2
        cy = (g[1, -1, 0] + g[1, 0, 0]) / 2
        s = (g[0, 0, -1] - g[0, 0, 0]) / 2
        expected = np.eye(4)
        expected[:3, 2] = [-cx / (2 * fx), -cy / (2 * fy), s]
        assert np.abs(Rc[b].numpy() - expected).max() < 1e-6, b
        r = float(crop[b, 0])
        assert abs(s - (W - 1) / (W * r - 1)) < 1e-12 and abs(s - 1 / r) > 1e-4
    exact = zoom_camera(K, crop)
    assert (Rc[:, 2, 2] - exact[:, 2, 2]).abs().min() > 1e-4
    # item 0 (KITTI's centred K): the centre offsets differ by the half-pixel conventions only
    assert (Rc[0, :2, 2] - exact[0, :2, 2]).abs().max() < 0.01
    # item 1: the released construction uses item 0's focal lengths and no principal point
    assert (Rc[1, :2, 2] - exact[1, :2, 2]).abs().max() > 0.05


def _zoom_method(*extra):
    method = build_method(_opt("--use_local_crop", *extra))
    method.eval()
    return method


def _zoom_inputs(seed=0):
    """A batch for local_view / consistency: REF_DRAWS's crops, a road-like disparity (depth
    2-30 m), two poses (~0.5 m forward), and the zoomed view's disparity: the original depth
    sampled at the crop, / r, with 2 % noise."""
    g = torch.Generator().manual_seed(seed)
    K, crop, grids = _zoom_batch()
    inputs = {("K", 0): K, ("inv_K", 0): torch.linalg.inv(K), "crop_local": crop}
    for f in (0, -1, 1):
        inputs[("color_local", f, 0)] = torch.rand(2, 3, H, W, generator=g)
    inputs[("color_local_aug", 0, 0)] = inputs[("color_local", 0, 0)]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    disp = (0.006 + 0.04 * yy ** 2 + 0.004 * torch.sin(9 * xx))[None, None].repeat(2, 1, 1, 1)
    disp = disp * (1 + 0.05 * torch.rand(2, 1, H, W, generator=g))
    depth = disp_to_depth(disp, 0.1, 100.0)[1]
    outputs = {("disp", 0): disp, ("depth", 0, 0): depth}
    for f, tx in ((-1, 0.05), (1, -0.04)):
        T = torch.eye(4).repeat(2, 1, 1)
        T[:, 0, 3], T[:, 2, 3] = tx, -0.5 * f
        T[1, 0, 2], T[1, 2, 0] = 0.02, -0.02
        outputs[("cam_T_cam", 0, f)] = T
    zoomed = F.grid_sample(depth, local_grid(crop, H, W), align_corners=False, padding_mode="border")
    zoomed = zoomed / crop[:, 0, None, None, None] * (1 + 0.02 * torch.rand(2, 1, H, W, generator=g))
    disp_local = (1 / zoomed - 1 / 100.0) / (1 / 0.1 - 1 / 100.0)  # the disparity giving that depth
    return inputs, outputs, disp_local, grids


@pytest.mark.usefixtures("single_thread")
def test_reference_zoom_warp_uses_the_released_virtual_camera():
    """With --reference_zoom_geometry the zoomed view warps with Rc T Rc^-1 of the released
    construction: its sampling grids equal a projection recomputed here (pixel p of the crop,
    depth D: K Rc T Rc^-1 D K^-1 p, normalised with align_corners=True) within 1e-3 px; the
    exact camera's grids differ from them (measured: 0.03-0.07 px for item 0's KITTI K at
    320 x 96, 5-10 px for item 1's own K)."""
    inputs, outputs, disp_local, grids = _zoom_inputs()
    K, inv_K, crop = inputs[("K", 0)], inputs[("inv_K", 0)], inputs["crop_local"]
    samples = {}
    for flag in (True, False):
        method = _zoom_method(*(["--reference_zoom_geometry"] if flag else []))
        method.depth_of = lambda image: {("disp", 0): disp_local}
        with torch.no_grad():
            _, view_outputs = method.local_view(inputs, dict(outputs))
        samples[flag] = {f: view_outputs[("sample", f, 0)] for f in (-1, 1)}
    fx, fy = float(K[0, 0, 0]) / W, float(K[0, 1, 1]) / H
    depth = disp_to_depth(disp_local, 0.1, 100.0)[1].double()
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    p = torch.stack([xs.flatten(), ys.flatten(), torch.ones(H * W, dtype=torch.float64)])
    scale = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64)
    for b, g in enumerate(grids):
        Rc = torch.eye(4, dtype=torch.float64)
        gx, gy = (g[0, 0, -1] + g[0, 0, 0]) / 2, (g[1, -1, 0] + g[1, 0, 0]) / 2
        Rc[:3, 2] = torch.tensor([-gx / (2 * fx), -gy / (2 * fy), (g[0, 0, -1] - g[0, 0, 0]) / 2])
        Kb = K[b].double()
        for f in (-1, 1):
            T = Rc @ outputs[("cam_T_cam", 0, f)][b].double() @ torch.linalg.inv(Rc)
            X = depth[b, 0].flatten() * (torch.linalg.inv(Kb)[:3, :3] @ p)
            q = (Kb @ T)[:3, :3] @ X + (Kb @ T)[:3, 3:]
            pix = (q[:2] / (q[2:] + 1e-7)).T.reshape(H, W, 2)
            expected = pix / scale - 1
            got = samples[True][f][b].double()
            assert ((got - expected) * scale).abs().max() < 1e-3, (b, f)
            moved = float(((samples[False][f][b].double() - expected) * scale).abs().max())
            print(f"item {b}, frame {f}: exact camera's grid differs by up to {moved:.3f} px")
            assert moved > (0.01 if b == 0 else 1.0), (b, f)


@pytest.mark.usefixtures("single_thread")
def test_reference_zoom_consistency_uses_the_rounded_window():
    """With --reference_zoom_geometry the zoomed view's SI-log term is, recomputed here per item:
    x0 = round(W (G_x[0] + 1) / 2), y0 = round(H (G_y[0] + 1) / 2), w = round(W / r),
    h = round(H / r); the zoomed disparity resized bilinearly to h x w, as depth, times r, against
    the original depth cropped at (y0, x0); SI-log with lambda 0.5, mean over the batch. It
    differs from the default term (original depth sampled at the crop's pixel centres): for a
    zoomed depth that is the original's with 2 % noise, 1.7e-4 against 0.8e-4."""
    inputs, outputs, disp_local, grids = _zoom_inputs(seed=1)
    crop = inputs["crop_local"]
    expected = []
    for b, g in enumerate(grids):
        r = float(crop[b, 0])
        x0, y0 = round(W * (g[0, 0, 0] + 1) / 2), round(H * (g[1, 0, 0] + 1) / 2)
        w, h = round(W / r), round(H / r)
        d = F.interpolate(disp_local[b:b + 1], [h, w], mode="bilinear", align_corners=False)
        local = disp_to_depth(d, 0.1, 100.0)[1] * crop[b, 0]
        original = disp_to_depth(outputs[("disp", 0)][b:b + 1, :, y0:y0 + h, x0:x0 + w], 0.1, 100.0)[1]
        diff = (torch.log(local + 1e-8) - torch.log(original + 1e-8)).double()
        n = h * w
        expected.append(float((diff ** 2).sum() / n - 0.5 * diff.sum() ** 2 / n ** 2))
    expected = sum(expected) / len(expected)
    terms = {}
    for flag in (True, False):
        method = _zoom_method(*(["--reference_zoom_geometry"] if flag else []))
        view_inputs = {"crop_local": crop}
        view_outputs = {("disp", 0): disp_local, ("depth", 0, 0): disp_to_depth(disp_local, 0.1, 100.0)[1]}
        with torch.no_grad():
            terms[flag] = float(method.consistency("local", view_inputs, view_outputs, outputs))
    print(f"SI-log: released window {terms[True]:.6f} (recomputed {expected:.6f}), exact window {terms[False]:.6f}")
    assert abs(terms[True] - expected) < 1e-5 * expected
    assert terms[True] > 1.5 * terms[False]


@pytest.mark.usefixtures("single_thread")
def test_reference_window_stays_inside_at_the_far_edge():
    """The released integer windows always fit; this code's exact window at the far edge
    (u = 1) can round one pixel past it, and is moved back inside: over r in [1.2, 2] the window
    fits, and only the far-edge draws move (by at most 1 pixel)."""
    from methods.bdedepth import reference_window
    moved = 0
    for r in np.linspace(1.2, 2.0, 801):
        for u in (0.0, 0.5, 1.0):
            ox, oy = (W - W / r) * u, (H - H / r) * u
            x0, y0, w, h = reference_window(r, ox, oy, H, W)
            assert 0 <= x0 and x0 + w <= W and 0 <= y0 and y0 + h <= H
            raw = round(W * r * ox / (W * r - 1)), round(H * r * oy / (H * r - 1))
            assert 0 <= raw[0] - x0 <= 1 and 0 <= raw[1] - y0 <= 1
            moved += (raw[0] != x0) + (raw[1] != y0)
            if u < 1:
                assert (raw[0], raw[1]) == (x0, y0)
    assert moved > 0


@pytest.mark.usefixtures("single_thread")
def test_reference_zoom_geometry_options():
    """Both input paths (the geometry reads only the crop's (r, ox, oy) and K, which both give);
    a step's loss with both views is finite and has the consistency term; refused without
    --use_local_crop."""
    for extra in ([], ["--fast_loader"]):
        assert _opt("--use_local_crop", "--reference_zoom_geometry", *extra).reference_zoom_geometry
    opt = _opt("--use_local_crop", "--use_patch_reshuffle", "--reference_zoom_geometry")
    torch.manual_seed(2)
    method = build_method(opt)
    inputs = _views_batch(opt)
    terms, logs = method.compute_losses(inputs, method(inputs))
    assert set(terms) == {"reprojection", "smoothness", "consistency"}
    assert all(torch.isfinite(v) for v in terms.values()) and float(logs["local/consistency"]) > 0
    with pytest.raises(SystemExit, match="--reference_zoom_geometry changes the zoomed view of --use_local_crop"):
        _opt("--reference_zoom_geometry")


# ----------------------------------------------------------------------------- SyncBatchNorm under DDP
PAPER_PRESETS = ("bdedepth_hrnet18_640x192", "bdedepth_resnet18_640x192", "bdedepth_resnet18_cityscapes_512x192",
                 "bdedepth_hrnet18_nyuv2_384x288")


@pytest.mark.usefixtures("single_thread")
def test_presets_ask_for_sync_batchnorm_with_several_processes():
    """The released recipes convert BatchNorm to SyncBatchNorm whenever more than one process
    runs: the paper presets say --sync_bn auto; the decision: auto and on convert with two
    CUDA processes, nothing converts with one; on CPU, on stops and auto keeps BatchNorm with one
    message; true / false (older opt.json files) read as on / off."""
    from options import sync_bn_mode
    from trainer import use_sync_batchnorm
    for preset in PAPER_PRESETS:
        assert MonodepthOptions().parse(["--config", preset]).sync_bn == "auto", preset
    assert MonodepthOptions().parse(["--method", "bdedepth"]).sync_bn == "off"
    assert MonodepthOptions().parse(["--method", "bdedepth", "--sync_bn"]).sync_bn == "on"
    assert MonodepthOptions().parse(["--config", PAPER_PRESETS[0], "--sync_bn", "off"]).sync_bn == "off"
    assert (sync_bn_mode(True), sync_bn_mode(False), sync_bn_mode(None)) == ("on", "off", "off")
    said = []
    for mode, world, device, expected in (("auto", 2, "cuda", True), ("on", 2, "cuda", True), ("off", 2, "cuda", False),
                                          ("auto", 1, "cuda", False), ("on", 1, "cpu", False),
                                          ("auto", 2, "cpu", False), ("auto", 1, "cpu", False)):
        assert use_sync_batchnorm(mode, world, device, said.append) is expected, (mode, world, device)
    assert len(said) == 1 and "2 processes on cpu" in said[0] and "plain BatchNorm" in said[0]
    with pytest.raises(SystemExit, match="--sync_bn needs CUDA devices"):
        use_sync_batchnorm("on", 2, "cpu")


@pytest.mark.usefixtures("single_thread")
def test_sync_batchnorm_conversion_of_a_bdedepth_model():
    """to_sync_batchnorm turns every BatchNorm layer of the method (encoder, context branch,
    pose networks) into a SyncBatchNorm with the same parameters and statistics (no forward:
    SyncBatchNorm runs on CUDA only)."""
    from trainer import to_sync_batchnorm
    torch.manual_seed(0)
    method = build_method(_opt("--encoder", "resnet_context", "--depth_decoder", "grid"))
    bns = {name: m for name, m in method.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    before = {k: v.clone() for k, v in method.state_dict().items()}
    converted = to_sync_batchnorm(method)
    syncs = {name: m for name, m in converted.named_modules() if isinstance(m, torch.nn.SyncBatchNorm)}
    assert len(bns) > 40 and set(syncs) == set(bns)
    assert "models.encoder.bn1" in syncs  # the context branch's BN
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    after = converted.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.slow  # two processes building a Trainer: 16-19 s on the shared 2-core machine
def test_sync_bn_auto_reaches_the_trainer_of_a_two_process_run(static_world, tmp_path):
    """A 2-process gloo run (torchrun) of the real Trainer with a BDEdepth preset's --sync_bn
    auto: the option arrives as auto, the Trainer decides plain BatchNorm on CPU and says so
    once (rank 0), and the model under DDP holds BatchNorm layers and no SyncBatchNorm."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "record.json"
    split = small_split(static_world, str(tmp_path / "split"), 4)
    args = ["--config", "bdedepth_resnet18_640x192", "--data_path", static_world.out, "--split", split,
            "--height", "64", "--width", "192", "--weights_init", "scratch", "--batch_size", "1",
            "--num_workers", "0", "--log_dir", str(tmp_path), "--model_name", "m", "--no_cuda", "--no_progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "tests/helpers/sync_bn_check.py", str(out), *args],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record == {"world_size": 2, "sync_bn_option": "auto", "converted": False,
                      "batchnorm": record["batchnorm"], "syncbatchnorm": 0, "ddp": True}
    assert record["batchnorm"] > 40
    assert (res.stdout + res.stderr).count("--sync_bn auto: 2 processes on cpu") == 1
