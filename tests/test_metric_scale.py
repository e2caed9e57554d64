"""The road-plane scale of metric_scale.py on constructed depth, and test_simple.py
--metric_from_camera_height end to end on a model whose depth is a known scene."""
import os

import numpy as np
import pytest

from metric_scale import fit_ground_plane, lower_region, scale_from_camera_height
from pointcloud import pixel_rays

H, W = 96, 320
K = np.array([[0.58 * W, 0, 0.5 * W], [0, 1.92 * H, 0.5 * H], [0, 0, 1.0]])  # KITTI's, in pixels
CAMERA_HEIGHT = 1.65


def road_scene(seed, units_per_metre=1 / 23.7, pitch_deg=0.0, outliers=0.3, noise=0.01):
    """Depth (in model units: metres x units_per_metre) of a flat road 1.65 m below a KITTI
    camera pitched down by pitch_deg, 80 m above its horizon; `outliers` of the pixels
    brought nearer by a random 10-80 %, multiplicative noise of std `noise`."""
    rng = np.random.default_rng(seed)
    rays = pixel_rays(H, W, K).reshape(H, W, 3)
    pitch = np.radians(pitch_deg)
    normal = np.array([0.0, np.cos(pitch), -np.sin(pitch)])  # the road's normal in camera coordinates
    along = rays @ normal
    depth = np.minimum(np.where(along > 1e-6, CAMERA_HEIGHT / np.maximum(along, 1e-6), 80.0), 80.0)
    hit = rng.random((H, W)) < outliers
    depth[hit] *= rng.uniform(0.2, 0.9, hit.sum())
    depth *= 1 + noise * rng.standard_normal((H, W))
    return depth * units_per_metre, normal


def test_lower_region_back_projects_the_lower_rows_with_K():
    depth = np.full((H, W), 2.0)
    depth[-1, 5] = 0  # invalid: left out
    points, rows, cols = lower_region(depth, K, lower=0.3)
    first = round(H * 0.7)
    assert rows.min() == first and len(points) == (H - first) * W - 1
    k = np.nonzero((rows == H - 1) & (cols == 7))[0][0]
    # X = d (u - cx) / fx, Y = d (v - cy) / fy, Z = d, by hand
    assert points[k] == pytest.approx([2 * (7 - 160) / 185.6, 2 * (95 - 48) / 184.32, 2.0], rel=1e-12)


@pytest.mark.parametrize("pitch_deg", [0.0, 5.0])
def test_fit_recovers_a_known_road_plane_and_scale_among_outliers(pitch_deg):
    errors = []
    for seed in range(5):
        depth, normal = road_scene(seed, pitch_deg=pitch_deg)
        result = scale_from_camera_height(depth, K, CAMERA_HEIGHT)
        errors.append(abs(result.scale / 23.7 - 1))
        # 30 % outliers: the inliers are about 70 % of the lower image (measured 67-70 %)
        assert 0.6 < result.plane.inlier_share < 0.75
        assert np.degrees(np.arccos(result.plane.normal @ normal)) < 0.2
        assert result.plane.tilt_deg == pytest.approx(pitch_deg, abs=0.2)
        assert result.spread < 0.01 and result.confident and "confidence ok" in result.describe()
    assert max(errors) < 0.01  # 1 % depth noise: measured at most 0.2 % over 20 seeds


def test_exact_plane_gives_the_exact_scale():
    depth, _ = road_scene(0, units_per_metre=0.1, outliers=0.0, noise=0.0)
    result = scale_from_camera_height(depth, K, CAMERA_HEIGHT)
    # 0.1 units per metre: the road is 0.165 units below, the scale 1.65 / 0.165 = 10 metres per unit
    assert result.scale == pytest.approx(10.0, rel=1e-9) and result.plane.distance == pytest.approx(0.165, rel=1e-9)
    assert result.checks["left half"] == pytest.approx(10.0, rel=1e-9) and result.spread < 1e-9


def test_no_road_plane_is_said_not_guessed():
    # a wall 3 m ahead fills the image: its normal is 90 degrees from level
    result = scale_from_camera_height(np.full((H, W), 3.0), K, CAMERA_HEIGHT)
    assert result.scale is None and result.plane is None and not result.confident
    assert "no road plane" in result.describe()
    # a road pitched 25 degrees (beyond the 15 allowed): whatever plane is found, the confidence is low
    depth, _ = road_scene(0, pitch_deg=25.0)
    result = scale_from_camera_height(depth, K, CAMERA_HEIGHT)
    assert result.scale is None or (not result.confident and "confidence LOW" in result.describe())
    # too few points
    assert fit_ground_plane(np.zeros((50, 3))) is None
    with pytest.raises(ValueError, match="camera height must be positive"):
        scale_from_camera_height(depth, K, 0.0)


# ---------------------------------------------------------------- test_simple.py end to end
def scene_folder(path, **options):
    """A weight folder of tests.helpers.scene_method (a known scene, no weight files)."""
    import json
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "opt.json"), "w") as f:
        json.dump({"method": "tests.helpers.scene_method", "height": H, "width": W, **options}, f)
    return str(path)


def network_size_image(path, seed=0):
    import PIL.Image as pil
    rng = np.random.default_rng(seed)
    pil.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_test_simple_writes_metric_depth_with_the_road_at_its_distance(tmp_path, capsys):
    import test_simple
    from tests.helpers.scene_method import SceneMethod
    folder = scene_folder(tmp_path / "scene", scene_road_height=0.1)
    image = network_size_image(tmp_path / "frame.png")
    test_simple.main(["--image_path", image, "--load_weights_folder", folder, "--metric_from_camera_height", "1.65",
                      "--output_dir", str(tmp_path / "out"), "--no_cuda"])
    out = capsys.readouterr().out
    assert "frame.png: scale 16.5 " in out and "confidence ok" in out
    depth = np.load(tmp_path / "out" / "frame_depth.npy")
    assert depth.shape == (1, 1, H, W)
    road = SceneMethod.road_depth(H, W, CAMERA_HEIGHT).numpy()
    # road pixels: below the horizon, nearer than the scene's far wall (5 units = 82.5 m), not the box
    on_road = (road < 5 * 16.5 * 0.99) & ~SceneMethod.box_mask(H, W).numpy()
    assert on_road.sum() > 2000
    assert np.allclose(depth[0, 0][on_road], road[on_road], rtol=1e-4)
    box = SceneMethod.box_mask(H, W).numpy()
    assert np.allclose(depth[0, 0][box], 0.5 * road[box], rtol=1e-4)


def test_test_simple_names_the_image_without_a_road(tmp_path, capsys):
    import test_simple
    # everything 0.05 units away: a wall, no road (and no box, whose step to the wall could pass for a plane)
    folder = scene_folder(tmp_path / "scene", scene_road_height=0.1, scene_far=0.05, scene_box=0)
    image = network_size_image(tmp_path / "frame.png")
    with pytest.raises(SystemExit, match=r"1 of 1 image\(s\) had no road plane .*frame.png"):
        test_simple.main(["--image_path", image, "--load_weights_folder", folder, "--metric_from_camera_height",
                          "1.65", "--no_cuda"])
    assert "frame.png: no road plane in the lower image" in capsys.readouterr().out
    assert not (tmp_path / "frame_depth.npy").exists() and (tmp_path / "frame_disp.jpeg").is_file()
    with pytest.raises(SystemExit):
        test_simple.parse_args(["--image_path", image, "--load_weights_folder", folder,
                                "--metric_from_camera_height", "-1"])
    assert "--metric_from_camera_height -1.0: the camera's height above the road" in capsys.readouterr().err
