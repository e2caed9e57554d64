"""Cityscapes, NYUv2 and Make3D: loaders on the synthetic world's fixtures (--formats), the
protocols on hand-computed cases (checks C25 and C27), the Cityscapes triplet loader (C28),
prepare_cityscapes.py, and one evaluate_depth.py run over every test set given a path (C26)."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import evaluate_depth as ed
from datasets import DATASETS
from datasets.augment import HorizontalFlip
from evaluation import PROTOCOLS
from evaluation.cityscapes import CityscapesTest
from evaluation.make3d import Make3DTest
from evaluation.nyuv2 import NYUv2Test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CS_K = dict(fx=2262.52, fy=2265.3017905988554, u0=1096.98, v0=513.137)  # the fixture's camera JSON


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    """A small KITTI world (2 drives x 6 frames, 640 x 192) plus the three other formats at
    their real sizes."""
    from synthetic_world import Config, generate
    cfg = Config(out=str(tmp_path_factory.mktemp("formats") / "world"), drives=2, frames=6, seed=2, height=192,
                 width=640, formats="cityscapes,nyuv2,make3d", workers=2)
    generate(cfg, progress=False)
    return cfg


def _path(cfg, *parts):
    return os.path.join(cfg.out, *parts)


# ---------------------------------------------------------------- protocols (C25, C27)
def test_median_scaling_makes_each_protocol_invariant_to_pred_times_k():
    rng = np.random.default_rng(0)
    for name, shape in (("nyuv2", (427, 561)), ("make3d", (21, 305)), ("cityscapes", (768, 2048))):
        p = PROTOCOLS[name]
        gt = rng.uniform(1, 9, shape).astype(np.float32)
        metrics, ratios = p.evaluate([1 / (2 * gt)], [gt])  # pred = 2 gt
        assert all(abs(metrics[n]) < 1e-6 for n in ("abs_rel", "sq_rel", "rmse", "rmse_log")), name
        assert ratios[0] == pytest.approx(0.5, rel=1e-5)
        assert tuple(metrics) == p.metric_names
    assert PROTOCOLS["make3d"].metric_names == ("abs_rel", "sq_rel", "rmse", "rmse_log")
    assert len(PROTOCOLS["nyuv2"].metric_names) == 7


def test_cityscapes_crop_mask_two_pixels_and_align_corners():
    p = PROTOCOLS["cityscapes"]
    assert p.crop_box(768, 2048) == (256, 768, 192, 1856)
    rows, cols = np.nonzero(p.crop_mask(768, 2048))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (512, 1664)  # C27
    gt = np.zeros((768, 2048), np.float32)
    gt[300, 500], gt[700, 1800] = 10, 20  # inside the crop
    gt[100, 1000], gt[500, 100], gt[500, 1900] = 5, 5, 5  # outside the crop: ignored
    gt[400, 400] = 85  # outside the depth range: ignored
    disp = np.full((768, 2048), 0.1, np.float32)  # pred = 10 m
    (abs_rel, sq_rel, rmse, *_), _ = p.score(disp, gt, median_scaling=False)
    assert abs_rel == pytest.approx((0 + 10 / 20) / 2) and rmse == pytest.approx(np.sqrt(100 / 2))
    (abs_rel, *_), ratio = p.score(disp, gt, median_scaling=True)  # ratio 15 / 10
    assert ratio == pytest.approx(1.5) and abs_rel == pytest.approx((5 / 10 + 5 / 20) / 2)
    small = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)  # bilinear, align_corners=True
    up = p.resize(small, 768, 2048)
    assert up[0, 0] == 1 and up[-1, -1] == 5 and up[-1, 0] == 3
    assert up[1, 0] == pytest.approx(1 + 2 / 767) and up[0, 1] == pytest.approx(1 + 1 / 2047)


def test_make3d_log10_rmse_cap_and_range_mask_by_hand():
    p = PROTOCOLS["make3d"]
    gt = np.full((21, 305), 75.0, np.float32)  # >= 70: ignored
    gt[3, 10], gt[15, 200] = 2, 8
    gt[5, 5] = 0  # no laser return: ignored
    disp = np.full((21, 305), 0.25, np.float32)  # pred = 4 m
    errors, _ = p.score(disp, gt, median_scaling=False)
    assert errors == pytest.approx([(1 + 0.5) / 2, (4 / 2 + 16 / 8) / 2, np.sqrt(10), np.log10(2)])
    errors, ratio = p.score(disp, gt, median_scaling=True)  # median 5 / 4
    assert ratio == pytest.approx(1.25) and errors[3] == pytest.approx(
        np.sqrt((np.log10(2 / 5) ** 2 + np.log10(8 / 5) ** 2) / 2))
    capped = np.full((21, 305), 80.0, np.float32)
    capped[0, 0] = 50
    errors, _ = p.score(np.full((21, 305), 0.01, np.float32), capped, median_scaling=False)  # 100 m -> 70
    assert errors[0] == pytest.approx(20 / 50)
    up = p.resize(np.array([[1, 2], [3, 4]], np.float32), 21, 305)  # nearest: no new values
    assert set(np.unique(up)) == {1, 2, 3, 4}


def test_nyuv2_range_mask_and_cap():
    p = PROTOCOLS["nyuv2"]
    gt = np.full((427, 561), 4.0, np.float32)
    gt[:10] = 12  # beyond 10 m: ignored
    gt[10:20] = 0  # no depth: ignored
    disp = 1 / (2 * gt.clip(0.1))
    disp[:20] = 7.0  # wrong only where the GT is ignored
    metrics, _ = p.evaluate([disp], [gt])
    assert metrics["abs_rel"] < 1e-6 and metrics["a1"] == 1
    gt[100, 100] = 9.0
    errors, _ = p.score(np.full((427, 561), 0.05, np.float32), gt, median_scaling=False)  # 20 m -> 10
    n = ((gt > 0) & (gt < 10)).sum()
    assert errors[0] == pytest.approx(((n - 1) * 6 / 4 + 1 / 9) / n)


# ---------------------------------------------------------------- test sets on the fixtures
def test_nyuv2_test_set_reads_h5_and_crops_image_and_gt(fw):
    root = _path(fw, "nyuv2")
    test_set = NYUv2Test(root)
    assert len(test_set) == 2
    gts = test_set.ground_truth()
    with h5py.File(os.path.join(root, "nyu_test", "00001.h5"), "r") as f:
        rgb, depth = np.asarray(f["rgb"]), np.asarray(f["depth"])
    assert rgb.shape == (3, 480, 640) and rgb.dtype == np.uint8 and depth.shape == (480, 640)
    assert gts[0].shape == (427, 561) and np.array_equal(gts[0], depth[44:471, 40:601])  # C27
    ds = test_set.dataset(96, 128, (0,))
    native = ds.get_color(*ds.parse_line(0), False)
    assert native.size == (561, 427) and np.array_equal(np.asarray(native), rgb.transpose(1, 2, 0)[44:471, 40:601])
    item = ds[0]
    assert item[("color", 0, 0)].shape == (3, 96, 128)
    K = item[("K", 0)].numpy()
    assert K[0, 0] == pytest.approx(518.8579 / 561 * 128, rel=1e-5)
    assert K[1, 2] == pytest.approx((253.7362 - 44) / 427 * 96, rel=1e-5)


def test_make3d_test_set_crops_image_and_grid(fw):
    root = _path(fw, "make3d")
    test_set = Make3DTest(root)
    image_id = test_set.ids[0]
    grid = scipy.io.loadmat(os.path.join(root, "Gridlaserdata", f"depth_sph_corr-{image_id}.mat"))["Position3DGrid"]
    assert grid.shape == (55, 305, 4)
    gts = test_set.ground_truth()
    assert gts[0].shape == (21, 305) and np.array_equal(gts[0], grid[17:38, :, 3].astype(np.float32))  # C27
    ds = test_set.dataset(64, 192, (0,))
    raw = Image.open(os.path.join(root, "Test134", f"img-{image_id}.jpg")).convert("RGB")
    assert raw.size == (1704, 2272)
    native = ds.get_color(*ds.parse_line(0), False)
    assert native.size == (1704, 852) and np.array_equal(np.asarray(native), np.asarray(raw)[710:1562])
    assert ds[1][("color", 0, 0)].shape == (3, 64, 192)


def test_cityscapes_test_set_top_75_percent_and_camera_K(fw):
    root = _path(fw, "cityscapes")
    test_set = CityscapesTest(root)
    assert len(test_set) == 2 and test_set.test_file.startswith(root)  # the data folder's own list
    gt = np.load(os.path.join(root, "splits", "cityscapes", "gt_depths", "000_depth.npy"))
    assert gt.shape == (1024, 2048)
    assert np.array_equal(test_set.ground_truth()[0], gt[:768])
    ds = test_set.dataset(192, 512, (0,))
    native = ds.get_color(*ds.parse_line(0), False)
    assert native.size == (2048, 768)
    K = ds[0][("K", 0)].numpy()
    assert K[0, 0] == pytest.approx(CS_K["fx"] / 2048 * 512, rel=1e-5)
    assert K[1, 1] == pytest.approx(CS_K["fy"] / 768 * 192, rel=1e-5)
    assert K[0, 2] == pytest.approx(CS_K["u0"] / 2048 * 512, rel=1e-5)
    assert K[1, 2] == pytest.approx(CS_K["v0"] / 768 * 192, rel=1e-5)


# ---------------------------------------------------------------- Cityscapes triplets (C28)
def _triplet(folder, name, values, cam):
    """A 1024 x 1152 PNG of three constant 1024 x 384 frames, and its _cam.txt."""
    os.makedirs(folder, exist_ok=True)
    image = np.concatenate([np.full((384, 1024, 3), v, np.uint8) for v in values])
    image[:, :8] = 0  # a left edge mark: after a flip it is on the right
    Image.fromarray(image).save(os.path.join(folder, name + ".png"))
    fx, fy, cx, cy = cam
    with open(os.path.join(folder, name + "_cam.txt"), "w") as f:
        f.write(f"{fx},0.,{cx},0.,{fy},{cy},0.,0.,1.\n")


def test_cityscapes_triplet_loader_order_K_flip_and_fast_path(tmp_path):
    _triplet(str(tmp_path / "ulm"), "ulm_000001_000010", (40, 130, 220), (1100.0, 1105.0, 540.0, 250.0))
    _triplet(str(tmp_path / "ulm"), "ulm_000002_000010", (10, 20, 30), (1000.0, 1000.0, 512.0, 200.0))
    lines = ["ulm ulm_000001_000010", "ulm ulm_000002_000010"]
    cls = DATASETS["cityscapes_preprocessed"]
    ds = cls(str(tmp_path), lines, 192, 512, [0, -1, 1], 1, is_train=False, img_ext=".png")
    frames = {f: ds.get_color(*ds.parse_line(0)[:1], f, None, False) for f in (-1, 0, 1)}
    assert all(frames[f].size == (1024, 384) for f in frames)
    assert [int(np.asarray(frames[f])[200, 500, 0]) for f in (-1, 0, 1)] == [40, 130, 220]  # top to bottom
    item = ds[0]
    means = [int(round(item[("color", f, 0)][0, 100, 300].item() * 255)) for f in (-1, 0, 1)]
    assert means == [40, 130, 220]
    K = item[("K", 0)].numpy()
    expected = np.array([[1100 / 1024 * 512, 0, 540 / 1024 * 512], [0, 1105 / 384 * 192, 250 / 384 * 192]])
    assert np.allclose(K[:2, :3], expected, rtol=1e-5)
    assert not np.allclose(ds[1][("K", 0)].numpy(), K)  # per-sample K
    flipped = cls(str(tmp_path), lines, 192, 512, [0, -1, 1], 1, is_train=True, img_ext=".jpg",
                  augmentations=[HorizontalFlip(1.0)], seed=0)  # .jpg asked, the .png is found
    item_f = flipped[0]
    assert item_f[("K", 0)][0, 2].item() == pytest.approx((1 - 540 / 1024) * 512, rel=1e-5)
    assert item_f[("color", -1, 0)][0, 100, 0] > 0.1 and item_f[("color", -1, 0)][0, 100, -1] < 0.05
    fast = cls(str(tmp_path), lines, 192, 512, [0, -1, 1], 1, is_train=False, img_ext=".png", input_path="fast",
               cache_dir=str(tmp_path / "cache"))
    item = fast[0]
    assert [int(item[("color_u8", f)][0, 100, 300]) for f in (-1, 0, 1)] == [40, 130, 220]
    assert os.path.isfile(tmp_path / "cache" / "512x192" / "ulm" / "ulm_000001_000010.png#-1.npy")
    side = np.concatenate([np.full((384, 1024, 3), v, np.uint8) for v in (40, 130, 220)], 1)  # ManyDepth's layout
    Image.fromarray(side).save(tmp_path / "ulm" / "ulm_000001_000010.png")
    ds = cls(str(tmp_path), lines, 192, 512, [0, -1, 1], 1, is_train=False, img_ext=".png")
    frames = {f: ds.get_color(*ds.parse_line(0)[:1], f, None, False) for f in (-1, 0, 1)}
    assert [(frames[f].size, int(np.asarray(frames[f])[200, 500, 0])) for f in (-1, 0, 1)] == [
        ((1024, 384), 40), ((1024, 384), 130), ((1024, 384), 220)]


def test_prepare_cityscapes_on_the_fixture_writes_triplets_the_loader_reads(fw, tmp_path, capsys):
    import prepare_cityscapes
    out = tmp_path / "prepared"
    assert prepare_cityscapes.main(["--dataset_dir", str(tmp_path / "none"), "--dump_root", str(out)]) == 2
    assert "leftImg8bit_sequence" in capsys.readouterr().err
    src = _path(fw, "cityscapes")
    assert prepare_cityscapes.main(["--dataset_dir", src, "--dump_root", str(out), "--num_threads", "2",
                                    "--no_progress"]) == 0
    lines = (out / "splits" / "cityscapes_preprocessed" / "train_files.txt").read_text().splitlines()
    assert lines == ["synthcity synthcity_000002_000019"]  # frames 17..21: only 19 has -2 and +2
    stacked = np.asarray(Image.open(out / "synthcity" / "synthcity_000002_000019.png"))
    assert stacked.shape == (1152, 1024, 3)
    raw_dir = os.path.join(src, "leftImg8bit_sequence", "train", "synthcity")
    for part, frame in enumerate((17, 19, 21)):
        raw = Image.open(os.path.join(raw_dir, f"synthcity_000002_{frame:06d}_leftImg8bit.png")).convert("RGB")
        expected = np.asarray(raw.resize((1024, 512), Image.LANCZOS))[:384]
        assert np.array_equal(stacked[384 * part:384 * (part + 1)], expected)
    cam = [float(v) for v in (out / "synthcity" / "synthcity_000002_000019_cam.txt").read_text().split(",")]
    assert cam == pytest.approx([CS_K["fx"] / 2, 0, CS_K["u0"] / 2, 0, CS_K["fy"] / 2, CS_K["v0"] / 2, 0, 0, 1])
    ds = DATASETS["cityscapes_preprocessed"](str(out), lines, 192, 512, [0, -1, 1], 1, is_train=False,
                                             img_ext=".png")
    K = ds[0][("K", 0)].numpy()
    assert K[1, 2] == pytest.approx(CS_K["v0"] / 2 / 384 * 192, rel=1e-5)  # cy at 1024 x 512, / 384


# ---------------------------------------------------------------- NYUv2 training lines
def test_nyuv2_training_lines_undistort_crop_and_K(fw):
    from datasets.nyu_dataset import TRAIN_K
    from synthetic_world.formats import _drive, nyu_train_pose, render, FORMATS
    root = _path(fw, "nyuv2")
    lines = open(os.path.join(root, "splits", "synthetic", "train_files.txt")).read().splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 9 for line in lines)
    ds = DATASETS["nyuv2"](root, lines, 96, 128, [0, -2, -1, 1, 2], 1, is_train=False)
    item = ds[0]
    assert item[("color", -2, 0)].shape == (3, 96, 128)
    K = item[("K", 0)].numpy()
    assert K[0, 0] == pytest.approx(518.8579 / 608 * 128, rel=1e-5)
    assert K[1, 1] == pytest.approx(519.4696 / 448 * 96, rel=1e-5)
    assert K[0, 2] == pytest.approx((325.5824 - 16) / 608 * 128, rel=1e-5)
    assert K[1, 2] == pytest.approx((253.7362 - 16) / 448 * 96, rel=1e-5)
    assert np.allclose(TRAIN_K[:2, :3], K[:2, :3] / np.array([[128], [96]]))
    # frame 0 of line 0 is raw frame 4: undistorted, it is the pinhole view, 16 px cropped
    native = np.asarray(ds.get_color(*ds.parse_line(0)[:1], 0, None, False)).astype(np.float32)
    assert native.shape == (448, 608, 3)
    drive = _drive(fw, FORMATS.index("nyuv2"))
    pinhole, _ = render(drive, nyu_train_pose(drive, 4),
                        np.array([[518.8579, 0, 325.5824], [0, 519.4696, 253.7362], [0, 0, 1]]), 640, 480)
    pinhole = pinhole[16:-16, 16:-16].astype(np.float32)
    raw = np.asarray(Image.open(os.path.join(root, lines[0].split()[0])).convert("RGB"))[16:-16, 16:-16]
    inner = (slice(40, -40), slice(40, -40))
    err, err_raw = np.abs(native - pinhole)[inner].mean(), np.abs(raw - pinhole)[inner].mean()
    assert err < 1.0 and err < 0.3 * err_raw  # measured: 0.36 against 3.4 for the raw frame


# ---------------------------------------------------------------- selection and the one run (C26)
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from methods import build_method
    from options import MonodepthOptions
    from training.checkpoints import options_json
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "192", "--num_layers",
                                    "18"])
    folder = tmp_path_factory.mktemp("weights") / "weights_0"
    torch.manual_seed(0)
    build_method(opt).save_weights(str(folder), {"height": 64, "width": 192, "use_stereo": False})
    (folder / "opt.json").write_bytes(options_json(opt))
    return str(folder)


@pytest.fixture(scope="module")
def eigen_splits(fw, tmp_path_factory):
    """A splits/ folder whose eigen and eigen_benchmark are the synthetic test split, with GT."""
    import shutil
    from export_gt_depth import export_gt_depths
    splits = tmp_path_factory.mktemp("splits")
    for name, source in (("eigen", "velodyne"), ("eigen_benchmark", "improved")):
        os.makedirs(splits / name)
        shutil.copy(_path(fw, "splits", "synthetic", "test_files.txt"), splits / name / "test_files.txt")
        export_gt_depths(fw.out, str(splits / name), source, "exact", progress=False)
    return splits


def _names(argv):
    from evaluation import TEST_SETS
    args = ed.parse_args(argv)
    return [s.name for cls in TEST_SETS.values() for s in cls.from_args(args)]


def test_selective_evaluation_and_one_run_over_all_test_sets(fw, weights, eigen_splits, monkeypatch, capsys,
                                                             tmp_path):
    import options
    monkeypatch.setattr(options, "SPLITS_DIR", str(eigen_splits))
    paths = ["--cityscapes_path", _path(fw, "cityscapes"), "--nyuv2_path", _path(fw, "nyuv2"), "--make3d_path",
             _path(fw, "make3d")]
    assert _names(["--kitti_path", fw.out]) == ["eigen", "eigen_benchmark"]  # C26: the others skipped
    assert _names(["--nyuv2_path", _path(fw, "nyuv2")]) == ["nyuv2"]  # KITTI skipped too
    assert _names([]) == ["eigen"]  # monodepth2's default, as before
    assert _names(["--data_path", fw.out, "--make3d_path", _path(fw, "make3d")]) == ["eigen", "make3d"]
    assert _names(["--kitti_path", fw.out, "--eval_split", "eigen_benchmark"]) == ["eigen_benchmark"]
    os.remove(eigen_splits / "eigen_benchmark" / "gt_depths.npz")
    assert _names(["--kitti_path", fw.out]) == ["eigen"]
    assert "eigen_benchmark: skipped" in capsys.readouterr().out
    from export_gt_depth import export_gt_depths
    export_gt_depths(fw.out, str(eigen_splits / "eigen_benchmark"), "improved", progress=False)
    with pytest.raises(SystemExit, match="single images"):
        ed.check_frames([NYUv2Test(_path(fw, "nyuv2"))], (0, -1))
    out_json = tmp_path / "all.json"
    args = ed.parse_args(["--load_weights_folder", weights, "--eval_mono", "--kitti_path", fw.out, "--png",
                          "--num_workers", "0", "--no_cuda", "--json", str(out_json), *paths])
    capsys.readouterr()
    ed.evaluate(args)
    stdout = capsys.readouterr().out
    results = json.loads(out_json.read_text())["results"]
    assert [r["split"] for r in results] == ["eigen", "eigen_benchmark", "make3d", "nyuv2", "cityscapes"]
    assert stdout.count("abs_rel |") == 5 and stdout.count("Scaling ratios | med:") == 5
    assert [r["num_images"] for r in results] == [2, 2, 2, 2, 2]
    for r in results:
        assert 0 < r["abs_rel"] < 5 and np.isfinite(r["rmse"]) and r["ratio_median"] > 0
    assert "a1" not in results[2] and "a1" in results[3]


def test_cli_on_true_depth_of_every_test_set_gives_zero_errors(fw, tmp_path):
    """evaluate_depth.py with --ext_disp_to_eval FOLDER: disparities made from the files as
    written (crops by hand), so a wrong crop or order in a test set shows as an error."""
    from export_gt_depth import export_gt_depths
    disps = {}
    _, gts = export_gt_depths(fw.out, _path(fw, "splits", "synthetic"), "velodyne", "exact", progress=False)
    disps["synthetic"] = [np.where(g > 0, 1 / np.maximum(g, 1e-3), 1.0) for g in gts]
    disps["nyuv2"] = []
    for name in open(_path(fw, "nyuv2", "splits", "nyuv2", "test_files.txt")).read().split():
        with h5py.File(_path(fw, "nyuv2", name), "r") as f:
            d = np.asarray(f["depth"])[44:471, 40:601]
        disps["nyuv2"].append(1 / (3 * np.maximum(d, 1e-3)))
    disps["make3d"] = [1 / scipy.io.loadmat(_path(fw, "make3d", "Gridlaserdata", f"depth_sph_corr-{i}.mat"))
                       ["Position3DGrid"][17:38, :, 3]
                       for i in open(_path(fw, "make3d", "splits", "make3d", "test_files.txt")).read().split()]
    disps["cityscapes"] = [1 / np.maximum(np.load(_path(fw, "cityscapes", "splits", "cityscapes", "gt_depths",
                                                        f"{i:03d}_depth.npy"))[:768], 1e-3) for i in range(2)]
    folder = tmp_path / "disps"
    folder.mkdir()
    for name, d in disps.items():
        np.save(folder / f"disps_{name}_split.npy", np.stack(d).astype(np.float32))
    out_json = tmp_path / "m.json"
    res = subprocess.run([sys.executable, "evaluate_depth.py", "--ext_disp_to_eval", str(folder), "--eval_mono",
                          "--kitti_path", fw.out, "--eval_split", "synthetic", "--cityscapes_path",
                          _path(fw, "cityscapes"), "--nyuv2_path", _path(fw, "nyuv2"), "--make3d_path",
                          _path(fw, "make3d"), "--json", str(out_json)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    results = {r["split"]: r for r in json.loads(out_json.read_text())["results"]}
    assert list(results) == ["synthetic", "make3d", "nyuv2", "cityscapes"]
    for name, r in results.items():
        assert r["abs_rel"] < 1e-5 and r["rmse_log"] < 1e-5, name
    assert results["nyuv2"]["ratio_median"] == pytest.approx(1 / 3, rel=1e-4)
    assert res.stdout.count("abs_rel |") == 4
    bad = tmp_path / "bad"
    bad.mkdir()
    uncropped = []  # the classic mistake: the GT not cropped to 427 x 561
    for name in open(_path(fw, "nyuv2", "splits", "nyuv2", "test_files.txt")).read().split():
        with h5py.File(_path(fw, "nyuv2", name), "r") as f:
            uncropped.append(1 / np.maximum(np.asarray(f["depth"]), 1e-3))
    np.save(bad / "disps_nyuv2_split.npy", np.stack(uncropped).astype(np.float32))
    res = subprocess.run([sys.executable, "evaluate_depth.py", "--ext_disp_to_eval", str(bad), "--eval_mono",
                          "--nyuv2_path", _path(fw, "nyuv2"), "--json", str(out_json)], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(out_json.read_text())["abs_rel"] > 0.02


def test_formats_option():
    from synthetic_world.formats import parse_formats
    from synthetic_world.generate import parse_args
    assert parse_args(["--out", "x"]).formats == "kitti"
    assert parse_formats("kitti") == ("kitti",) and parse_formats("make3d,cityscapes") == ("kitti", "cityscapes",
                                                                                         "make3d")
    with pytest.raises(ValueError, match="nyu"):
        parse_formats("nyu")


def test_pointcloud_and_edge_families_on_nyuv2_cityscapes_make3d(fw):
    """The camera matrices of NYUv2 (its colour camera, less the evaluation crop) and
    Cityscapes (each image's camera file); on NYUv2 a prediction of the true depth / 3 gives
    Chamfer 0 and F-score 100; Make3D and Cityscapes refuse what they cannot give."""
    from evaluation.families import family_metrics
    from evaluation.protocols import Unavailable
    nyu = NYUv2Test(_path(fw, "nyuv2"))
    K, size = nyu.intrinsics()[0]
    assert size == (427, 561)
    assert np.allclose(K, [[518.8579, 0, 325.5824 - 40], [0, 519.4696, 253.7362 - 44], [0, 0, 1]], atol=1e-3)
    gts = list(nyu.ground_truth())
    disps = [1 / (3 * np.maximum(g, 1e-3)) for g in gts]
    ratios = []
    PROTOCOLS["nyuv2"].evaluate(disps, gts, 1.0, True, None, ratios)
    cloud, count = family_metrics("pointcloud", nyu, disps, gts, 1.0, True, ratios)
    assert count == 2 and cloud["chamfer"] < 1e-4 and cloud["fscore"] == 100 and cloud["iou_20"] == 100
    assert np.array_equal(nyu.dense_ground_truth()[1], gts[1])  # the labelled depth is dense
    with pytest.raises(Unavailable, match="no image of nyuv2 has ground-truth depth edges"):
        family_metrics("edges", nyu, disps, gts, 1.0, True, ratios)  # the fixture's room: none within 10 m
    cs = CityscapesTest(_path(fw, "cityscapes"))
    K, size = cs.intrinsics()[1]
    assert size == (768, 2048)
    assert np.allclose(K, [[CS_K["fx"], 0, CS_K["u0"]], [0, CS_K["fy"], CS_K["v0"]], [0, 0, 1]], rtol=1e-5)
    with pytest.raises(Unavailable, match="stereo disparity"):
        cs.dense_ground_truth()
    with pytest.raises(Unavailable, match="Make3D publishes no camera intrinsics"):
        Make3DTest(_path(fw, "make3d")).intrinsics()
