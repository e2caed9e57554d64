"""The synthetic world: formats, geometric and photometric consistency, determinism, errors."""
import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from datasets import kitti_utils
from datasets import synthetic_world as sw

DRIVE = f"{sw.DATE}/{sw.DATE}_drive_0001_sync"


def _drive_dir(cfg, drive=DRIVE):
    return os.path.join(cfg.out, drive)


def _load_rgb(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1].astype(np.float32) / 255


def _depth(cfg, frame, drive=DRIVE):
    return np.load(os.path.join(_drive_dir(cfg, drive), "depth_dense", "image_02", "data", f"{frame:010d}.npy"))


def _smooth_region(depth, rel=0.03):
    """Pixels whose 3x3 neighbourhood has no depth edge (and no sky)."""
    padded = np.pad(depth, 1, mode="edge")
    stack = np.stack([padded[dy:dy + depth.shape[0], dx:dx + depth.shape[1]]
                      for dy in range(3) for dx in range(3)])
    return (stack.min(0) > 0) & (stack.max(0) < stack.min(0) * (1 + rel))


def _warp(source, depth, K, T_src_tgt):
    """Sample `source` at the projection of every target pixel (depth, K, 4x4 T)."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    pix = np.stack([u, v, np.ones_like(u)], 0).reshape(3, -1).astype(np.float64)
    cam = np.linalg.inv(K) @ pix * depth.reshape(1, -1)
    cam = T_src_tgt[:3, :3] @ cam + T_src_tgt[:3, 3:]
    proj = K @ cam
    z = proj[2]
    x = (proj[0] / np.maximum(z, 1e-6)).reshape(h, w).astype(np.float32)
    y = (proj[1] / np.maximum(z, 1e-6)).reshape(h, w).astype(np.float32)
    inside = (z.reshape(h, w) > 0.1) & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    return cv2.remap(source, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), inside


def test_layout_and_formats(world):
    d = _drive_dir(world)
    calib = kitti_utils.read_calib_file(os.path.join(world.out, sw.DATE, "calib_cam_to_cam.txt"))
    assert calib["P_rect_02"].shape == (12,) and calib["R_rect_00"].shape == (9,)
    assert calib["S_rect_02"].tolist() == [1242, 375]
    # baseline between image_02 and image_03 is 0.54 m
    P2, P3 = calib["P_rect_02"].reshape(3, 4), calib["P_rect_03"].reshape(3, 4)
    assert abs((P2[0, 3] - P3[0, 3]) / P2[0, 0] - 0.54) < 1e-9
    for sub, ext in (("image_02/data", "png"), ("image_03/data", "png"), ("image_02/data", "jpg"),
                     ("velodyne_points/data", "bin"), ("oxts/data", "txt")):
        files = sorted(os.listdir(os.path.join(d, sub)))
        assert [f for f in files if f.endswith(ext)][:2] == [f"0000000000.{ext}", f"0000000001.{ext}"]
        assert len([f for f in files if f.endswith(ext)]) == world.frames
    img = cv2.imread(os.path.join(d, "image_02", "data", "0000000000.png"))
    assert img.shape == (375, 1242, 3)
    scan = np.fromfile(os.path.join(d, "velodyne_points", "data", "0000000000.bin"), np.float32)
    scan = scan.reshape(-1, 4)
    assert 60000 < len(scan) < 130000  # a 64-beam scan, like KITTI's ~120k points
    assert np.linalg.norm(scan[:, :3], axis=1).max() <= sw.LIDAR_RANGE + 1e-3
    packet = kitti_utils.read_oxts_file(os.path.join(d, "oxts", "data", "0000000000.txt"))
    assert abs(packet.lat - 49.0) < 0.01
    with open(os.path.join(d, "oxts", "timestamps.txt")) as f:
        stamps = f.read().split("\n")
    assert stamps[0].startswith("2000-01-01 12:00:00.000000") and stamps[1].startswith("2000-01-01 12:00:00.1")
    gt = cv2.imread(os.path.join(d, "proj_depth", "groundtruth", "image_02", "0000000005.png"), -1)
    assert gt.dtype == np.uint16 and gt.shape == (375, 1242)
    # the sky has no lidar return and no depth
    depth = _depth(world, 0)
    assert (depth == 0).mean() > 0.02 and depth[-1].min() > 0  # bottom row: road


def test_velodyne_projects_onto_rendered_depth(world):
    """Standard KITTI velodyne->image projection lands where the rendered depth agrees (1 %)."""
    calib_dir = os.path.join(world.out, sw.DATE)
    P, (h, w) = kitti_utils.velo_to_cam_matrices(calib_dir, cam=2)
    checked = 0
    for frame in (0, 6, 11):
        depth = _depth(world, frame)
        pts = kitti_utils.load_velodyne_points(
            os.path.join(_drive_dir(world), "velodyne_points", "data", f"{frame:010d}.bin"))
        proj = pts @ P.T
        z = proj[:, 2]
        front = z > 0.5
        u, v, z = proj[front, 0] / z[front], proj[front, 1] / z[front], z[front]
        inside = (u >= 0) & (v >= 0) & (u < w - 1) & (v < h - 1)
        u, v, z = u[inside], v[inside], z[inside]
        smooth = _smooth_region(depth)
        ui, vi = np.round(u).astype(int), np.round(v).astype(int)
        keep = smooth[vi, ui]
        # bilinear interpolation of inverse depth is exact on planes
        inv = np.where(depth > 0, 1 / np.maximum(depth, 1e-6), 0)
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        a, b = u - u0, v - v0
        interp = ((1 - a) * (1 - b) * inv[v0, u0] + a * (1 - b) * inv[v0, u0 + 1]
                  + (1 - a) * b * inv[v0 + 1, u0] + a * b * inv[v0 + 1, u0 + 1])
        signed = (z[keep] - 1 / interp[keep]) / z[keep]
        occluded = signed > 0.01  # seen by the scanner, hidden behind a nearer surface here
        assert keep.sum() > 5000 and occluded.mean() < 0.02
        assert np.mean(np.abs(signed[~occluded]) < 0.01) > 0.999, np.percentile(np.abs(signed), [50, 99])
        checked += keep.sum()
    assert checked > 15000


def test_improved_gt_decodes_to_rendered_depth(world):
    d = _drive_dir(world)
    for frame in (0, 5, 11):
        png = cv2.imread(os.path.join(d, "proj_depth", "groundtruth", "image_02", f"{frame:010d}.png"), -1)
        depth = _depth(world, frame)
        valid = png > 0
        assert np.abs(png[valid] / 256.0 - depth[valid]).max() <= 1 / 256
        # denser than the single scan projected into the image
        single = kitti_utils.generate_depth_map(os.path.join(world.out, sw.DATE),
                                                os.path.join(d, "velodyne_points", "data", f"{frame:010d}.bin"),
                                                cam=2, convention="exact")
        assert valid.sum() > 1.5 * (single > 0).sum()


def test_stereo_pair_is_consistent_with_baseline(world):
    d = _drive_dir(world)
    K = sw.intrinsics(1242, 375)
    for frame in (2, 9):
        left = _load_rgb(os.path.join(d, "image_02", "data", f"{frame:010d}.png"))
        right = _load_rgb(os.path.join(d, "image_03", "data", f"{frame:010d}.png"))
        depth = _depth(world, frame)
        T = np.eye(4)
        T[0, 3] = -sw.BASELINE  # left-camera points seen from the right camera
        warped, inside = _warp(right, depth, K, T)
        valid = inside & _smooth_region(depth)
        err = np.abs(warped - left).mean(-1)[valid]
        wrong, _ = _warp(right, np.full_like(depth, 8.0), K, T)  # a wrong depth for contrast
        err_wrong = np.abs(wrong - left).mean(-1)[valid]
        assert valid.mean() > 0.5
        assert np.median(err) < 0.01 and np.percentile(err, 90) < 0.03, np.percentile(err, [50, 90])
        assert np.median(err_wrong) > 4 * np.median(err) + 0.01


def test_consecutive_frames_match_oxts_and_odometry_poses(world):
    d = _drive_dir(world)
    calib_dir = os.path.join(world.out, sw.DATE)
    T_w_cam = kitti_utils.camera_poses_from_oxts(d, calib_dir, range(world.frames), cam=2)
    odo = kitti_utils.read_poses_file(os.path.join(world.out, "odometry", "poses", "00.txt"))
    np.testing.assert_allclose(odo[0], np.eye(4), atol=1e-9)
    K = sw.intrinsics(1242, 375)
    for frame in (3, 8):
        T_src_tgt = np.linalg.inv(T_w_cam[frame + 1]) @ T_w_cam[frame]
        # the odometry poses (cam0) give the same relative motion
        T_odo = np.linalg.inv(odo[frame + 1]) @ odo[frame]
        np.testing.assert_allclose(T_odo[:3, 3], T_src_tgt[:3, 3], atol=2e-3)
        assert 0.6 < np.linalg.norm(T_src_tgt[:3, 3]) < 1.4  # about a metre per frame
        target = _load_rgb(os.path.join(d, "image_02", "data", f"{frame:010d}.png"))
        source = _load_rgb(os.path.join(d, "image_02", "data", f"{frame + 1:010d}.png"))
        depth = _depth(world, frame)
        mask_path = os.path.join(d, "mvobj_mask", "image_02", "data", f"{frame:010d}.png")
        static = cv2.imread(mask_path, 0) == 0
        warped, inside = _warp(source, depth, K, T_src_tgt)
        valid = inside & _smooth_region(depth) & static
        err = np.abs(warped - target).mean(-1)[valid]
        ident = np.abs(source - target).mean(-1)[valid]
        assert np.median(err) < 0.012 and np.percentile(err, 90) < 0.04, np.percentile(err, [50, 90])
        assert np.median(ident) > 3 * np.median(err)


def test_moving_objects_have_masks_and_move(world):
    d = _drive_dir(world)
    areas = []
    for frame in range(world.frames):
        mask = cv2.imread(os.path.join(d, "mvobj_mask", "image_02", "data", f"{frame:010d}.png"), 0)
        areas.append((mask > 0).mean())
    assert max(areas) > 0.002  # the car ahead is always in view
    odo_mask = np.load(os.path.join(world.out, "odometry", "sequences", "00", "mvobj_mask", "000004.npy"))
    assert odo_mask.shape == (375, 1242) and abs(odo_mask.mean() - areas[4]) < 1e-6
    # a box that moves with the camera keeps its image position: static warping fails on it
    K = sw.intrinsics(1242, 375)
    T_w_cam = kitti_utils.camera_poses_from_oxts(d, os.path.join(world.out, sw.DATE), (4, 5), cam=2)
    T = np.linalg.inv(T_w_cam[1]) @ T_w_cam[0]
    depth = _depth(world, 4)
    mask = cv2.imread(os.path.join(d, "mvobj_mask", "image_02", "data", f"{4:010d}.png"), 0) > 0
    target = _load_rgb(os.path.join(d, "image_02", "data", f"{4:010d}.png"))
    source = _load_rgb(os.path.join(d, "image_02", "data", f"{5:010d}.png"))
    warped, inside = _warp(source, depth, K, T)
    smooth = _smooth_region(depth)
    err_moving = np.abs(warped - target).mean(-1)[mask & inside & smooth]
    err_static = np.abs(warped - target).mean(-1)[~mask & inside & smooth]
    assert np.median(err_moving) > 3 * np.median(err_static)


def test_split_files_point_at_generated_frames(world):
    split_dir = os.path.join(world.out, "splits", "synthetic")
    lines = {}
    for name in ("train", "val", "test"):
        with open(os.path.join(split_dir, f"{name}_files.txt")) as f:
            lines[name] = [ln.split() for ln in f.read().splitlines()]
        assert lines[name]
        for folder, frame, side in lines[name]:
            assert side in ("l", "r")
            img = "image_02" if side == "l" else "image_03"
            assert os.path.isfile(os.path.join(world.out, folder, img, "data", f"{int(frame):010d}.png"))
            assert 1 <= int(frame) <= world.frames - 2  # both temporal neighbours exist
    train_drives = {ln[0] for ln in lines["train"]}
    assert train_drives.isdisjoint({ln[0] for ln in lines["test"]})
    assert {(a, b) for a, b, _ in lines["val"]}.isdisjoint({(a, b) for a, b, _ in lines["test"]})
    odom = os.path.join(world.out, "splits", "synthetic_odom", "train_files.txt")
    with open(odom) as f:
        seq, frame, side = f.readline().split()
    assert os.path.isfile(os.path.join(world.out, "odometry", "sequences", f"{int(seq):02d}",
                                       "image_2", f"{int(frame):06d}.png"))


def _hash_tree(root):
    digest = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                digest[os.path.relpath(path, root)] = hashlib.sha1(fh.read()).hexdigest()
    return digest


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    def make(name, seed):
        sw.generate(sw.Config(out=str(tmp_path / name), seed=seed, drives=1, frames=3, height=64,
                              width=208, workers=1), progress=False)
        return _hash_tree(tmp_path / name)
    a, b, c = make("a", 5), make("b", 5), make("c", 6)
    assert len(a) > 10 and a == b
    images = [k for k in a if k.endswith(".png") and "image_02" in k]
    assert images and all(a[k] != c[k] for k in images)


def test_drives_differ(world):
    a = _load_rgb(os.path.join(_drive_dir(world), "image_02", "data", "0000000000.png"))
    b = _load_rgb(os.path.join(_drive_dir(world, f"{sw.DATE}/{sw.DATE}_drive_0002_sync"),
                               "image_02", "data", "0000000000.png"))
    assert np.abs(a - b).mean() > 0.05


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--frames"):
        sw.generate(sw.Config(out=str(tmp_path / "x"), frames=-1), False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((ValueError, PermissionError), match="--out"):
        sw.generate(sw.Config(out=str(blocker / "sub"), frames=3), False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        sw.generate(sw.Config(out=str(full), frames=3), False)
    with pytest.raises(FileExistsError, match="not a synthetic world"):
        sw.generate(sw.Config(out=str(full), frames=3, overwrite=True), False)
    assert (full / "mine.txt").read_text() == "keep me"
    # the command line reports the same in one line and exits with status 2
    res = subprocess.run([sys.executable, "-m", "datasets.synthetic_world", "--out", str(full)],
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 2 and "--overwrite" in res.stderr
