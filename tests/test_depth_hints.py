"""Depth Hints: SGM candidates, fusion, the hint loss and training with hints (check 24-25)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import precompute_depth_hints as pdh
from datasets import KITTIRAWDataset
from methods.depth_hints import MISSING_HINT_COST, DepthHintTarget, hint_depth_loss, hint_selection
from options import MonodepthOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_disparity_to_depth_constant_and_invalid():
    d = pdh.disparity_to_depth(np.array([8.0, 0.0, -1.0]), 1024)
    assert d[0] == pytest.approx(7.424) and d[1] == 0 and d[2] == 0


def test_fusion_keeps_the_correct_candidate_and_never_an_invalid_one():
    rng = np.random.default_rng(0)
    h, w, shift = 64, 256, 12
    tex = cv2.GaussianBlur(rng.random((h, w + 64, 3)).astype(np.float32), (0, 0), 1.5)
    left = (tex[:, 32:32 + w] * 255).astype(np.uint8)
    right = (tex[:, 32 + shift:32 + shift + w] * 255).astype(np.uint8)  # left shifted by 12 px
    cands = np.stack([pdh.disparity_to_depth(np.full((h, w), d, np.float32), w) for d in (shift - 4, shift, shift + 5)]
                     + [np.zeros((h, w), np.float32)])  # an invalid candidate (no disparity)
    fused = pdh.fuse_candidates(cands, left, right, base_is_left=True)
    truth = pdh.disparity_to_depth(np.array([float(shift)]), w)[0]
    interior = fused[4:-4, shift + 8:-8]
    assert np.mean(np.isclose(interior, truth)) > 0.95
    assert (fused > 0).all()  # the zero-depth candidate never wins


def test_hint_selection_rules():
    r = torch.tensor([0.5, 0.2, 0.5, 0.5]).view(1, 1, 1, 4)
    i = torch.tensor([0.4, 0.5, 0.1, 0.5]).view(1, 1, 1, 4)
    h = torch.tensor([0.3, 0.3, 0.3, 0.1 + MISSING_HINT_COST]).view(1, 1, 1, 4)
    photo, hint = hint_selection(r, i, h)
    assert hint.flatten().tolist() == [1, 0, 0, 0]  # only where it beats both
    assert photo.flatten().tolist() == [1, 1, 0, 1]  # identity won at pixel 2
    photo, hint = hint_selection(r, None, h)  # --disable_automasking works
    assert hint.flatten().tolist() == [1, 0, 1, 0] and photo.min() == 1  # no identity candidate


def test_hint_loss_zero_when_prediction_equals_hint():
    d = torch.rand(2, 1, 8, 8) + 1
    mask = torch.ones_like(d)
    assert hint_depth_loss(d, d, mask, mask) == 0
    assert hint_depth_loss(d * 2, d, mask, mask) > 0.3


def _write_hints(world, lines, tmp_path, height, width):
    for line in lines:
        folder, frame, side = line.split()
        path = pdh.hint_path(str(tmp_path), folder, frame, side)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hint = np.tile(np.linspace(1, 2, width, dtype=np.float32), (1, height, 1))
        np.save(path, hint)


def test_dataset_hint_is_mirrored_with_the_image(world, tmp_path, monkeypatch):
    with open(os.path.join(world.out, "splits", "synthetic", "train_files.txt")) as f:
        line = f.readline().strip()
    _write_hints(world, [line], tmp_path, 32, 96)
    import datasets.mono_dataset as md
    items = {}
    for flip in (False, True):
        ds = KITTIRAWDataset(world.out, [line], 32, 96, [0, "s"], 1, is_train=True, img_ext=".png",
                             targets=[DepthHintTarget(str(tmp_path))])
        monkeypatch.setattr(md.random, "random", lambda f=flip: 1.0 if f else 0.0)
        items[flip] = ds[0]
    a, b = items[False]["depth_hint"], items[True]["depth_hint"]
    assert a.shape == (1, 32, 96) and torch.equal(a, torch.flip(b, [2]))
    assert items[False]["depth_hint_mask"].min() == 1


def test_missing_hint_file_names_it(world, tmp_path):
    with open(os.path.join(world.out, "splits", "synthetic", "train_files.txt")) as f:
        line = f.readline().strip()
    ds = KITTIRAWDataset(world.out, [line], 32, 96, [0, "s"], 1, img_ext=".png",
                         targets=[DepthHintTarget(str(tmp_path))])
    with pytest.raises(FileNotFoundError, match="precompute_depth_hints.py"):
        ds[0]


@pytest.mark.slow  # an accuracy check of the SGM hints (17 s)
def test_precomputed_hints_agree_with_rendered_depth(world, tmp_path):
    split = tmp_path / "lines.txt"
    folder = "2000_01_01/2000_01_01_drive_0001_sync"
    split.write_text(f"{folder} 3 l\n{folder} 4 r\n{folder} 99 l\n")
    save = tmp_path / "hints"
    res = subprocess.run([sys.executable, "precompute_depth_hints.py", "--data_path", world.out, "--filenames",
                          str(split), "--save_path", str(save), "--png", "--num_workers", "1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "0000000099.png not found" in res.stdout and "2 hints written" in res.stdout
    hint = np.load(pdh.hint_path(str(save), folder, 3, "l"))
    assert hint.shape == (1, 320, 1024) and hint.dtype == np.float32
    dense = np.load(os.path.join(world.out, folder, "depth_dense", "image_02", "data", "0000000003.npy"))
    dense = cv2.resize(dense, (1024, 320), interpolation=cv2.INTER_NEAREST)
    metric = hint[0] * 5.4  # training units -> metres (0.1 units = 0.54 m)
    valid = (metric > 0) & (dense > 0)
    rel = np.abs(metric[valid] - dense[valid]) / dense[valid]
    coverage = valid.sum() / (dense > 0).sum()
    print(f"\nhint coverage {coverage:.1%}, median relative error {np.median(rel):.2%}")
    assert coverage > 0.5 and np.median(rel) < 0.05
    # resumable: a second run skips the finished files
    res = subprocess.run([sys.executable, "precompute_depth_hints.py", "--data_path", world.out, "--filenames",
                          str(split), "--save_path", str(save), "--png", "--num_workers", "1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert "2 already there" in res.stdout


def test_real_kitti_stereo_pair_bad_pixels(real_sample):
    d = os.path.join(real_sample, "stereo2015")
    left = cv2.imread(os.path.join(d, "000001_10_l.png"))[..., ::-1].copy()
    right = cv2.imread(os.path.join(d, "000001_10_r.png"))[..., ::-1].copy()
    gt = cv2.imread(os.path.join(d, "000001_10_disp.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    w = left.shape[1]
    fused = pdh.fuse_candidates(pdh.sgbm_candidates(left, right, True), left, right, True)
    disp = np.where(fused > 0, pdh.KITTI_FX_NORM * w * pdh.STEREO_BASELINE / np.maximum(fused, 1e-6), 0)
    valid = gt > 0
    err = np.abs(disp[valid] - gt[valid])
    bad = (err > 3) & (err > 0.05 * gt[valid])
    print(f"\nKITTI 2015 pair: {bad.mean():.1%} bad pixels, {np.mean(disp[valid] > 0):.1%} of GT pixels have a hint")
    assert bad.mean() < 0.20


def _hint_args(world, tmp_path, *extra):
    split = os.path.join(world.out, "splits", "synthetic")
    return ["--data_path", world.out, "--split", split, "--png", "--height", "64", "--width", "192",
            "--weights_init", "scratch", "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0",
            "--log_dir", str(tmp_path), "--model_name", "dh", "--max_steps", "3", "--no_progress",
            "--use_stereo", "--frame_ids", "0", "--use_depth_hints", "--depth_hint_path", str(tmp_path / "hints"),
            *extra]


def _hints_for_split(world, tmp_path):
    split = os.path.join(world.out, "splits", "synthetic")
    lines = []
    for name in ("train_files.txt", "val_files.txt"):
        with open(os.path.join(split, name)) as f:
            lines += f.read().splitlines()
    _write_hints(world, lines, tmp_path / "hints", 64, 192)


def test_fast_loader_hints_equal_default_path(static_world, tmp_path):
    from trainer import Trainer
    _hints_for_split(static_world, tmp_path)
    batches = {}
    for name, extra in (("default", []), ("fast", ["--fast_loader"])):
        t = Trainer(MonodepthOptions().parse(_hint_args(static_world, tmp_path / name, *extra[:1])
                                             + ["--depth_hint_path", str(tmp_path / "hints"), "--batch_size", "8"]))
        batches[name] = t._to_device(next(iter(t.train_loader)))
    a, b = batches["default"], batches["fast"]
    for key in ("depth_hint", "depth_hint_mask"):
        assert a[key].shape == b[key].shape == (8, 1, 64, 192)
        assert torch.equal(a[key], b[key]), key
    # the written hints rise from left to right: the batch holds flipped (falling) ones too
    rising = (a["depth_hint"][:, 0, 0, -1] > a["depth_hint"][:, 0, 0, 0]).tolist()
    assert any(rising) and not all(rising)
    assert torch.equal(a["stereo_T"], b["stereo_T"])


def test_stereo_training_with_hints_runs(static_world, tmp_path):
    from trainer import Trainer
    _hints_for_split(static_world, tmp_path)
    for extra in ([], ["--fast_loader"]):
        opt = MonodepthOptions().parse(_hint_args(static_world, tmp_path / f"run{len(extra)}", *extra)
                                       + ["--depth_hint_path", str(tmp_path / "hints")])
        t = Trainer(opt).train()
        assert type(t.method).__name__ == "DepthHints" and len(t.loss_history) == 3
        assert np.isfinite(t.loss_history).all()
    opt_nomask = MonodepthOptions().parse(["--use_stereo", "--use_depth_hints", "--disable_automasking",
                                           "--weights_init", "scratch", "--height", "64", "--width", "96"])
    from methods import build_method
    from helpers.batch import fake_batch
    m = build_method(opt_nomask)
    batch = fake_batch(opt_nomask)
    batch["depth_hint"] = torch.rand(2, 1, 64, 96) + 1
    batch["depth_hint_mask"] = torch.ones(2, 1, 64, 96)
    terms, logs = m.compute_losses(batch, m(batch))
    assert torch.isfinite(sum(terms.values())) and "depth_hint_loss/0" in logs


def test_precompute_finds_png_images_and_fails_loudly_when_it_writes_nothing(static_world, tmp_path, capsys):
    """The static world has .png images only: without --png they are found; a run that
    writes no hint exits non-zero and says what to check."""
    split = tmp_path / "lines.txt"
    split.write_text("2000_01_01/2000_01_01_drive_0001_sync 3 l\n")
    counts = pdh.main(["--data_path", static_world.out, "--filenames", str(split), "--save_path",
                       str(tmp_path / "hints"), "--num_workers", "1", "--height", "64", "--width", "192"])
    assert counts["done"] == 1 and "reading .png images" in capsys.readouterr().out
    assert np.load(pdh.hint_path(str(tmp_path / "hints"), "2000_01_01/2000_01_01_drive_0001_sync", 3, "l")).shape \
        == (1, 64, 192)
    with pytest.raises(SystemExit, match="no hint written.*--data_path"):
        pdh.main(["--data_path", str(tmp_path / "nowhere"), "--filenames", str(split), "--save_path",
                  str(tmp_path / "hints2"), "--num_workers", "1"])
