"""pointcloud.py (back-projection, PLY, preview) and test_simple.py --save_pointcloud end to
end on a model whose depth is a known scene."""
import numpy as np
import pytest
from PIL import Image

from pointcloud import backproject, read_ply, render_preview, write_ply
from tests.test_metric_scale import H, W, network_size_image, scene_folder

K = np.array([[0.58 * W, 0, 0.5 * W], [0, 1.92 * H, 0.5 * H], [0, 0, 1.0]])


def test_backproject_by_hand():
    depth = np.zeros((2, 3))
    depth[1, 2] = 4.0
    K_small = np.array([[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]])
    points = backproject(depth, K_small)
    assert points.shape == (6, 3) and np.all(points[:5] == 0)
    # pixel (u, v) = (2, 1): X = 4 (2 - 1) / 2, Y = 4 (1 - 0.5) / 4, Z = 4
    assert points[5] == pytest.approx([2.0, 0.5, 4.0])
    # the project's training geometry: layers.BackprojectDepth gives the same points
    import torch

    from layers import BackprojectDepth
    depth = np.random.default_rng(0).uniform(1, 10, (H, W))
    K4 = np.eye(4)
    K4[:3, :3] = K
    theirs = BackprojectDepth(1, H, W)(torch.from_numpy(depth)[None, None], torch.from_numpy(np.linalg.inv(K4))[None])
    assert np.allclose(backproject(depth, K), theirs[0, :3].T.numpy(), rtol=1e-10)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    rng = np.random.default_rng(1)
    points = rng.normal(0, 20, (500, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    write_ply(tmp_path / "c.ply", points, colors, ["units: metres", "two\nlines"], binary=binary)
    back, back_colors, comments = read_ply(tmp_path / "c.ply")
    assert np.array_equal(back, points) and np.array_equal(back_colors, colors)  # float32 kept exactly
    assert comments == ["units: metres", "two", "lines"]
    header = (tmp_path / "c.ply").read_bytes()[:200].decode("ascii", "replace")
    assert header.startswith("ply\nformat " + ("binary_little_endian" if binary else "ascii") + " 1.0\n")
    assert "element vertex 500\nproperty float x" in header
    (tmp_path / "bad.ply").write_text("not a ply")
    with pytest.raises(ValueError, match="not a PLY file"):
        read_ply(tmp_path / "bad.ply")


def test_preview_has_its_size_and_draws_the_points(tmp_path):
    # a red square 10 m ahead, 4 m across, at the camera's height: seen in both views
    xs, ys = np.meshgrid(np.linspace(-2, 2, 50), np.linspace(-2, 2, 50))
    points = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 10.0)], 1)
    colors = np.tile([[255, 0, 0]], (len(points), 1)).astype(np.uint8)
    render_preview(points, colors, tmp_path / "p.png", size=300)
    picture = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert picture.shape == (300, 600, 3)
    red = (picture[..., 0] == 255) & (picture[..., 1] == 0) & (picture[..., 2] == 0)
    assert red[:, :300].sum() > 50 and red[:, 300:].sum() > 50
    # bird's-eye: x from -far/2 to far/2 across (far = 1.2 x 10 m), the square's 4 m a third of the width
    cols = np.nonzero(red[:, :300].any(0))[0]
    assert (cols.max() - cols.min()) / 299 == pytest.approx(4 / 12, abs=0.03)


def test_test_simple_saves_the_point_cloud_of_its_depth(tmp_path, capsys):
    import test_simple
    from pointcloud import backproject as back
    folder = scene_folder(tmp_path / "scene", scene_road_height=0.1)
    out = tmp_path / "images"
    out.mkdir()
    image = network_size_image(out / "frame.png", seed=3)
    test_simple.main(["--image_path", image, "--load_weights_folder", folder, "--metric_from_camera_height", "1.65",
                      "--save_pointcloud", "--no_cuda"])
    assert "frame_pointcloud.ply" in capsys.readouterr().out
    points, colors, comments = read_ply(out / "frame_pointcloud.ply")
    depth = np.load(out / "frame_depth.npy")[0, 0]
    assert len(points) == H * W
    assert np.allclose(points, back(depth, K), rtol=1e-6, atol=1e-6)
    # the image is at the network's size: its pixels, row by row, are the colours
    assert np.array_equal(colors, np.asarray(Image.open(image).convert("RGB")).reshape(-1, 3))
    assert any(c.startswith("units: metres (road plane 1.65 m below the camera: depth x 16.5") for c in comments)
    assert Image.open(out / "frame_pointcloud.png").size == (800, 400)
    # the folder again: the preview PNG beside the image is an output, never read back as an input
    written = test_simple.main(["--image_path", str(out), "--ext", "png", "--load_weights_folder", folder, "--no_cuda"])
    assert written == [str(out / "frame_disp.jpeg")]


def test_point_cloud_units_follow_what_the_model_knows(tmp_path, capsys):
    import test_simple
    from tests.helpers.scene_method import SceneMethod
    image = network_size_image(tmp_path / "frame.png")
    scene = SceneMethod.road_depth(H, W, 0.1).clamp(max=5.0).numpy()
    scene[SceneMethod.box_mask(H, W).numpy()] *= 0.5
    for name, options, factor, units in (("mono", {}, 1.0, "units: the model's units (a monocular model: not metric)"),
                                         ("stereo", {"use_stereo": True}, 5.4,
                                          "units: metres (stereo-trained: depth x 5.4)")):
        folder = scene_folder(tmp_path / name, scene_road_height=0.1, **options)
        test_simple.main(["--image_path", image, "--load_weights_folder", folder, "--save_pointcloud", "--ply_ascii",
                          "--output_dir", str(tmp_path / name), "--no_cuda"])
        points, _, comments = read_ply(tmp_path / name / "frame_pointcloud.ply")
        assert units in comments, comments
        assert np.allclose(points, backproject(factor * scene, K), rtol=1e-6, atol=1e-6)
        assert (tmp_path / name / "frame_pointcloud.ply").read_bytes().startswith(b"ply\nformat ascii 1.0\n")
    assert "point clouds in the model's units" in capsys.readouterr().out


def test_a_method_reading_its_own_items_gives_their_K(tmp_path):
    """Methods with their own prediction dataset (e.g. a sequence with its calibration):
    the point cloud and the road fit use each item's K."""
    import test_simple
    from metric_scale import scale_from_camera_height
    from tests.helpers.scene_method import ITEM_K
    images = tmp_path / "images"
    images.mkdir()
    network_size_image(images / "a.png")
    folder = scene_folder(tmp_path / "scene", scene_road_height=0.1)
    with open(tmp_path / "scene" / "opt.json") as f:
        options = f.read().replace("tests.helpers.scene_method", "tests.helpers.scene_method_items")
    (tmp_path / "scene" / "opt.json").write_text(options)
    test_simple.main(["--image_path", str(images), "--load_weights_folder", folder, "--save_pointcloud",
                      "--metric_from_camera_height", "1.65", "--no_cuda"])
    item_K = np.array([np.array(ITEM_K[0]) * W, np.array(ITEM_K[1]) * H, [0, 0, 1]])
    points, _, comments = read_ply(images / "a_pointcloud.ply")
    depth = np.load(images / "a_depth.npy")[0, 0]
    assert np.allclose(points, backproject(depth, item_K), rtol=1e-6, atol=1e-6)
    assert "K (pixels): " + " ".join(f"{v:.6g}" for v in item_K.ravel()) in comments
    # the scene's road was drawn with KITTI's K: seen through the items' K it is another plane,
    # and the scale is the one the fit gives with that K
    from tests.helpers.scene_method import SceneMethod
    raw = SceneMethod(scene_options(folder)).scene(1, H, W)[0, 0].numpy()
    expected = scale_from_camera_height(raw, item_K, 1.65).scale
    assert np.allclose(depth, expected * raw, rtol=1e-5)


def scene_options(folder):
    from methods.base import folder_options
    from options import options_for_inference
    return options_for_inference(folder_options(folder))
