"""MonoDataset / KITTI datasets on the synthetic world and the real sample (checks 2-4)."""
import os

import numpy as np
import pytest
import torch

from datasets import KITTIDepthDataset, KITTIOdomDataset, KITTIRAWDataset
from datasets import synthetic_world as sw
from datasets.augment import apply_color_jitter, sample_color_jitter
from PIL import Image


def lines(world, name="train"):
    with open(os.path.join(world.out, "splits", "synthetic", f"{name}_files.txt")) as f:
        return f.read().splitlines()


def test_train_item_keys_shapes_and_ranges(world):
    ds = KITTIRAWDataset(world.out, lines(world), 192, 640, [0, -1, 1, "s"], 4, is_train=True, img_ext=".png")
    item = ds[0]
    colors = [k for k in item if isinstance(k, tuple) and k[0] in ("color", "color_aug")]
    assert len(colors) == 32
    for k in colors:
        s = k[2]
        assert item[k].shape == (3, 192 // 2 ** s, 640 // 2 ** s)
        assert 0 <= item[k].min() and item[k].max() <= 1
    assert not any(isinstance(k, tuple) and k[-1] == -1 for k in item)
    assert item["depth_gt"].shape == (1, 375, 1242) and (item["depth_gt"] > 0).sum() > 5000
    assert torch.allclose(item[("K", 0)] @ item[("inv_K", 0)], torch.eye(4), atol=1e-5)


@pytest.mark.parametrize("side,flip,expected", [("l", False, -0.1), ("r", False, 0.1),
                                                ("l", True, 0.1), ("r", True, -0.1)])
def test_stereo_T_sign(world, side, flip, expected, monkeypatch):
    line = lines(world)[0].rsplit(" ", 1)[0] + " " + side
    ds = KITTIRAWDataset(world.out, [line], 96, 320, [0, "s"], 1, is_train=True, img_ext=".png")
    import datasets.mono_dataset as md
    monkeypatch.setattr(md.random, "random", lambda: 1.0 if flip else 0.0)  # > 0.5: flip
    item = ds[0]
    T = item["stereo_T"]
    assert T[0, 3].item() == pytest.approx(expected)
    T[0, 3] = 0
    assert torch.equal(T, torch.eye(4))


def test_eval_items_are_not_augmented(world):
    ds = KITTIRAWDataset(world.out, lines(world, "test"), 96, 320, [0], 4, is_train=False, img_ext=".png")
    item = ds[0]
    for s in range(4):
        assert torch.equal(item[("color", 0, s)], item[("color_aug", 0, s)])
    # the same native image, resized: no flip happened
    native = Image.open(os.path.join(world.out, lines(world, "test")[0].split()[0], "image_02", "data",
                                     f"{int(lines(world, 'test')[0].split()[1]):010d}.png"))
    ref = np.asarray(native.resize((320, 96), Image.LANCZOS)).astype(np.float32) / 255
    assert np.abs(item[("color", 0, 0)].permute(1, 2, 0).numpy() - ref).mean() < 0.01


def test_jitter_is_shared_by_all_frames():
    img = Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8))
    import random
    params = sample_color_jitter(random.Random(0))
    a = np.asarray(apply_color_jitter(img, params))
    b = np.asarray(apply_color_jitter(img.copy(), params))
    assert np.array_equal(a, b) and not np.array_equal(a, np.asarray(img))


def test_missing_image_names_file_and_split_line(world, tmp_path):
    bad = f"{sw.DATE}/{sw.DATE}_drive_0001_sync 500 l"
    ds = KITTIRAWDataset(world.out, [bad], 96, 320, [0], 1, img_ext=".png", split_file="my_split.txt")
    with pytest.raises(FileNotFoundError, match=r"0000000500\.png.*line 1 of my_split.txt"):
        ds[0]
    # the training sampler's (index, epoch) items and the fast loader name the line too
    ds = KITTIRAWDataset(world.out, lines(world)[:1] + [bad], 96, 320, [0, -1, 1], 1, is_train=True,
                         img_ext=".png", split_file="my_split.txt")
    with pytest.raises(FileNotFoundError, match=r"0000000500\.png.*line 2 of my_split.txt: '.*500 l'"):
        ds[(1, 3)]
    ds.input_path = "fast"
    with pytest.raises(FileNotFoundError, match=r"0000000500\.png.*line 2 of my_split.txt"):
        ds[(1, 0)]
    assert ds[(0, 0)][("color_u8", 0)].shape == (3, 96, 320)
    ds = KITTIRAWDataset(str(tmp_path), lines(world)[:1], 96, 320, [0], 1, img_ext=".jpg")
    with pytest.raises(FileNotFoundError, match="image not found"):
        ds[0]


def test_missing_calibration_names_file_and_line(world, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(world.out, root, ignore=shutil.ignore_patterns("*.jpg", "depth_dense", "proj_depth"))
    os.remove(root / sw.DATE / "calib_velo_to_cam.txt")
    ds = KITTIRAWDataset(str(root), lines(world)[:1], 96, 320, [0], 1, img_ext=".png", split_file="train_files.txt")
    with pytest.raises(FileNotFoundError, match=r"calib_velo_to_cam.txt.*line 1 of train_files.txt"):
        ds[0]


def test_jpg_and_missing_jpg_hint(world, tmp_path):
    ds = KITTIRAWDataset(world.out, lines(world)[:1], 96, 320, [0], 1, img_ext=".jpg")
    assert ds[0][("color", 0, 0)].shape == (3, 96, 320)  # the world was written with --jpg


def test_improved_depth_and_odometry_datasets(world):
    ds = KITTIDepthDataset(world.out, lines(world, "test"), 96, 320, [0], 1, img_ext=".png")
    item = ds[0]
    assert item["depth_gt"].shape == (1, 375, 1242)
    folder, frame, _ = lines(world, "test")[0].split()
    dense = np.load(os.path.join(world.out, folder, "depth_dense", "image_02", "data", f"{int(frame):010d}.npy"))
    gt = item["depth_gt"][0].numpy()
    valid = gt > 0
    assert valid.sum() > 10000 and np.abs(gt[valid] - dense[valid]).max() <= 1 / 256
    odom = KITTIOdomDataset(os.path.join(world.out, "odometry"), ["0 3 l", "0 4 r"], 96, 320, [0, -1, 1], 1,
                            img_ext=".png")
    assert odom[1][("color", 1, 0)].shape == (3, 96, 320) and "depth_gt" not in odom[0]


def test_real_kitti_sample_depth_gt(real_sample, tmp_path):
    """The real sample has images and scans for frames 0-4 of one 2011_09_26 drive."""
    line = "2011_09_26/2011_09_26_drive_0000_sync 2 l"
    # the sample ships PNG images only
    ds = KITTIRAWDataset(os.path.join(real_sample, "raw"), [line], 192, 640, [0, -1, 1], 4, img_ext=".png")
    item = ds[0]
    gt = item["depth_gt"][0].numpy()
    assert gt.shape == (375, 1242)
    valid = gt > 0
    assert 10000 < valid.sum() < 25000 and 2 < gt[valid].min() and gt[valid].max() < 90


def test_batched_colour_jitter_equals_torchvision_per_item():
    """The fast path's jitter (rows grouped by operation, keys of one shape in one batch, no
    host-device waits) gives torchvision's per-image adjust_* in each row's own random order,
    grey and saturated pixels included; rows drawn off stay as they were."""
    from datasets.augment import ColorJitter, augmented_key

    rng = np.random.default_rng(0)
    aug = ColorJitter()
    x = torch.rand(12, 3, 48, 64)
    x[0, :, :4] = 0.5  # no chroma: hue undefined
    x[1, :, :2], x[1, :, 2:4] = 0, 1  # black and white
    x[2, 0, :, :8], x[2, 1, :, :8] = 1, 0  # saturated red: hue wraps around 0
    rows = [torch.cat([torch.tensor([float(i != 3)]), aug.pack(aug.sample(rng))[1:]]) for i in range(12)]
    params = torch.stack(rows)
    orders = {tuple(int(v) for v in r[5:9]) for r in rows}
    assert len(orders) >= 6  # many operation orders in one batch
    batch = {("color", 0, 0): x.clone(), ("color", 1, 0): x.flip(0), ("color", 0, 1): x[:, :, ::2, ::2].clone()}
    aug.apply_batch(batch, params, list(batch))
    for key in list(k for k in batch if k[0] == "color"):
        src = batch[key]
        expected = torch.stack([apply_color_jitter(src[i], aug.unpack(params[i, 1:].tolist()))
                                if params[i, 0] > 0.5 else src[i] for i in range(12)])
        # measured: 1.5e-6 at most (float rounding of the HSV round trip)
        torch.testing.assert_close(batch[augmented_key(key)], expected, rtol=0, atol=1e-5)
    assert torch.equal(batch[augmented_key(("color", 0, 0))][3], x[3])
    assert (batch[augmented_key(("color", 0, 0))] - x).abs().mean() > 0.01  # it did jitter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device waits exist on CUDA only")
def test_batched_colour_jitter_never_waits_for_the_gpu():
    """On CUDA, with the draws on the host (as finish_batch passes them), the jitter queues its
    work without one synchronisation (PyTorch raises on any under sync debug mode "error")."""
    from datasets.augment import ColorJitter

    rng = np.random.default_rng(1)
    aug = ColorJitter()
    params = torch.stack([aug.pack(aug.sample(rng)) for _ in range(8)])
    batch = {("color", f, s): torch.rand(8, 3, 64 // 2 ** s, 192 // 2 ** s, device="cuda")
             for f in (0, -1, 1) for s in range(2)}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug.apply_batch(batch, params, list(batch))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(batch[("color_aug", 0, 0)]).all()
