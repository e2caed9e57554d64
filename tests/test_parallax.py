"""The cost volume's parallax measure: exact on motions with a closed form, at any frame size,
with the world's camera depth and forward motion, and linear in the network's size on real
KITTI depth."""
import math
import os

import numpy as np
import pytest

from benchmarks import parallax as px

K = np.array([[720.0, 0, 600], [0, 720.0, 180], [0, 0, 1]])


def _depth(value):
    depth = np.zeros((375, 1242))
    depth[100:300:20, 50:1200:50] = value
    return depth


def test_a_rotation_alone_has_no_parallax():
    c, s = math.cos(0.05), math.sin(0.05)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    shift, step = px.parallax(_depth(7.0), K, T, (1.0, 1.0))
    assert len(shift) == 230 and np.abs(shift).max() < 1e-9 and np.abs(step).max() < 1e-9


@pytest.mark.parametrize("z", [5.0, 20.0])
def test_a_sideways_step_shifts_every_pixel_by_f_t_over_z(z):
    T = np.eye(4)
    T[0, 3] = 0.54
    scale = (80 / 1242, 24 / 375)
    shift, step = px.parallax(_depth(z), K, T, scale)
    assert np.allclose(shift, 720 * 0.54 / z * scale[0], rtol=1e-9)
    assert np.allclose(step, 720 * 0.54 * (1 / z - 1 / (px.DEPTH_STEP * z)) * scale[0], rtol=1e-9)


def test_parallax_on_real_kitti_doubles_with_the_network_size(real_sample):
    out = px.measure(px.kitti_pairs(real_sample, every=900), [(320, 96), (640, 192)])
    small, large = out["320x96"], out["640x192"]
    assert small["pixels"] == large["pixels"] > 10000 and small["pairs"] == 5 * 6
    assert large["median_px"] == pytest.approx(2 * small["median_px"], rel=0.01)
    assert 0.3 < small["median_px"] < 5  # 1-2 cost-volume pixels at 10 Hz and ~1 m per frame
    assert large["share_resolvable_25pct"] > small["share_resolvable_25pct"]
    assert large["share_ge_1px"] > small["share_ge_1px"]


def test_the_scale_follows_the_frame_size_not_kittis():
    """A 640 x 192 frame (f 360 px) seen by a 320 x 96 network: a cost volume of 80 x 24."""
    K_small = np.array([[360.0, 0, 320], [0, 360.0, 96], [0, 0, 1]])
    depth = np.zeros((192, 640))
    depth[50:150:10, 20:620:30] = 10.0
    T = np.eye(4)
    T[0, 3] = 0.5
    out = px.measure([(depth, K_small, T)], [(320, 96)])["320x96"]
    assert out["median_px"] == pytest.approx(360 * 0.5 / 10 * 80 / 640, rel=1e-9)


def test_world_pairs_hold_camera_depth_and_the_step_back_to_the_previous_frame(world):
    lines = open(os.path.join(world.out, "splits", world.split_name, "test_files.txt")).read().split()
    pairs = list(px.world_pairs(world.out, world.split_name))
    assert len(pairs) == len(lines) // 3 > 0
    folder, frame = lines[0], int(lines[1])
    depth, K, T = pairs[0]
    dense = np.load(os.path.join(world.out, folder, "depth_dense", "image_02", "data", f"{frame:010d}.npy"))
    hit = (depth > 0) & (dense > 0)
    assert hit.sum() > 1000
    # camera z at the laser point's own pixel: within 1 % of the rendered depth almost everywhere
    # (the Eigen export's convention, the laser's x one pixel up-left, is within 1 % on ~20 %)
    assert np.mean(np.abs(depth[hit] - dense[hit]) / dense[hit] < 0.01) > 0.9
    # target -> source: the previous camera is 0.7-1.3 m behind, so points are farther from it
    assert 0.5 < T[2, 3] < 1.5 and abs(T[0, 3]) < 0.3
