"""Robustness to corrupted inputs: the 18 KITTI-C corruptions (deterministic per image,
growing with severity, severity 0 = clean), RoboDepth's DEE / mCE / mRR by hand, and
evaluate_depth.py --corruptions on the synthetic world."""
import json
import os

import numpy as np
import pytest
import torch

import evaluate_depth as ed
from evaluation.corruptions import CORRUPTIONS, ROBODEPTH_ORDER, corrupt, corruption_rng
from evaluation.robustness import CorruptedDataset, dee, parse_corruptions, parse_severities, summarise

# the same image and severity always give the same output; these also need no random draw
DETERMINISTIC = {"brightness", "contrast", "defocus_blur", "zoom_blur", "color_quant", "pixelate", "jpeg_compression"}
# mean absolute difference to the clean image not increasing with severity on every image:
# ImageNet-C's frost lowers the image's weight as it raises the frost's, glass_blur's and
# pixelate's parameter tables are not monotonic in this measure
NOT_MONOTONIC = {"frost", "glass_blur", "pixelate"}


def _image(height=64, width=192, seed=0):
    """A small textured RGB image: smooth colour waves over random 16 px blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    waves = np.stack([0.5 + 0.25 * np.sin(xx / (5 + 3 * c) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1)
    blocks = rng.uniform(0.2, 0.8, (height // 16 + 1, width // 16 + 1, 3))[yy // 16, xx // 16]
    return np.clip((0.5 * waves + 0.5 * blocks) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corrupted():
    """{name: [the image at severities 1..5]} (image index 0)."""
    image = _image()
    return image, {n: [corrupt(image, n, s, corruption_rng(n, 0)) for s in range(1, 6)] for n in ROBODEPTH_ORDER}


def test_the_18_corruptions_of_kitti_c():
    assert len(ROBODEPTH_ORDER) == 18 and set(ROBODEPTH_ORDER) == set(CORRUPTIONS)
    families = {c.family for c in CORRUPTIONS.values()}
    assert families == {"weather & lighting", "sensor & movement", "data & processing"}
    assert parse_corruptions("all") == list(ROBODEPTH_ORDER)
    assert parse_corruptions("gaussian_noise,fog") == ["fog", "gaussian_noise"]  # RoboDepth's order
    with pytest.raises(SystemExit, match="unknown gauss"):
        parse_corruptions("gauss")
    assert parse_severities(None) == [1, 2, 3, 4, 5] and parse_severities(["1-3"]) == [1, 2, 3]
    assert parse_severities(["4", "0", "4"]) == [0, 4] and parse_severities(["2,5"]) == [2, 5]
    for bad in (["6"], ["x"], ["3-1"]):
        with pytest.raises(SystemExit, match="--severity"):
            parse_severities(bad)


def test_deterministic_per_image_and_different_between_images(corrupted):
    image, outs = corrupted
    for name in ROBODEPTH_ORDER:
        again = corrupt(image, name, 3, corruption_rng(name, 0))
        assert again.shape == image.shape and again.dtype == np.uint8, name
        assert np.array_equal(again, outs[name][2]), name  # same image index: identical
        other = corrupt(image, name, 3, corruption_rng(name, 1))  # another image index
        assert np.array_equal(other, again) == (name in DETERMINISTIC), name
    # the frame is part of the seed too (multi-frame methods' other frames)
    assert not np.array_equal(corrupt(image, "shot_noise", 2, corruption_rng("shot_noise", 0, -1)),
                              corrupt(image, "shot_noise", 2, corruption_rng("shot_noise", 0, 0)))


def test_each_severity_changes_the_image_more(corrupted):
    image, outs = corrupted
    for name in ROBODEPTH_ORDER:
        mad = [np.abs(o.astype(float) - image).mean() for o in outs[name]]
        assert min(mad) > 1.0, (name, mad)  # every level changes the image (gray levels, mean)
        if name not in NOT_MONOTONIC:
            assert all(np.diff(mad) > 0), (name, mad)


def test_severity_zero_is_the_clean_image(corrupted):
    image, _ = corrupted
    for name in ROBODEPTH_ORDER:
        assert corrupt(image, name, 0, corruption_rng(name, 0)) is image
    with pytest.raises(ValueError):
        corrupt(image, "fog", 6, corruption_rng("fog", 0))


def test_corrupted_dataset_items():
    image = torch.from_numpy(_image(32, 64)).permute(2, 0, 1).float() / 255

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {("color", 0, 0): image.clone(), ("color_aug", 0, 0): image.clone(), ("K", 0): torch.eye(4)}

    noisy = CorruptedDataset(Items(), "gaussian_noise", 2)
    a, b, again = noisy[0], noisy[1], noisy[0]
    assert torch.equal(a[("color", 0, 0)], again[("color", 0, 0)])  # deterministic
    assert not torch.equal(a[("color", 0, 0)], b[("color", 0, 0)])  # the same picture, another image index
    assert torch.equal(a[("color", 0, 0)], a[("color_aug", 0, 0)]) and torch.equal(a[("K", 0)], torch.eye(4))
    expected = corrupt((image * 255).round().byte().permute(1, 2, 0).numpy(), "gaussian_noise", 2,
                       corruption_rng("gaussian_noise", 1, 0))
    assert np.array_equal((b[("color", 0, 0)] * 255).round().byte().permute(1, 2, 0).numpy(), expected)
    clean = CorruptedDataset(Items(), "gaussian_noise", 0)[1]
    assert torch.equal(clean[("color", 0, 0)], image)


def _table(abs_rel, a1):
    return {"abs_rel": abs_rel, "sq_rel": 1.0, "rmse": 4.0, "rmse_log": 0.2, "a1": a1, "a2": 0.9, "a3": 0.95}


def test_dee_mce_mrr_by_hand():
    clean = _table(0.1, 0.9)  # DEE (0.1 - 0.9 + 1) / 2 = 0.1
    scores = {"fog": {1: _table(0.2, 0.8), 3: _table(0.3, 0.6)},  # mean 0.25, 0.7: DEE 0.275
              "gaussian_noise": {1: _table(0.1, 0.9), 3: _table(0.1, 0.9)}}  # DEE 0.1
    reference = {"clean": 0.2, "corruptions": {"fog": 0.55, "gaussian_noise": 0.2}}
    s = summarise(clean, scores, reference)
    fog = s["corruptions"]["fog"]
    assert fog["mean"]["abs_rel"] == pytest.approx(0.25) and fog["dee"] == pytest.approx(0.275)
    assert fog["rr"] == pytest.approx(0.725 / 0.9) and fog["ce"] == pytest.approx(0.5)
    assert s["corruptions"]["gaussian_noise"]["rr"] == pytest.approx(1) and s["corruptions"]["gaussian_noise"]["ce"] \
        == pytest.approx(0.5)
    assert s["mCE"] == pytest.approx(50) and s["mRR"] == pytest.approx(100 * (0.725 / 0.9 + 1) / 2)
    assert s["mean"]["abs_rel"] == pytest.approx((0.25 + 0.1) / 2)
    assert "mCE" not in summarise(clean, scores)
    # RoboDepth's published MonoDepth2 (mono, 640x192) row: clean 0.115 / 0.877 -> DEE 0.119,
    # brightness averaged over its levels 0.120 / 0.861 -> 0.130 (its tables round to 3 digits)
    assert dee(_table(0.115, 0.877)) == pytest.approx(0.119, abs=1e-3)
    assert dee(_table(0.120, 0.861)) == pytest.approx(0.130, abs=1e-3)
    assert dee({"abs_rel": 0.1}) is None


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained 64 x 192 monodepth2 weight folder (scoring is deterministic all the same)."""
    from methods import build_method
    from options import MonodepthOptions
    from training.checkpoints import options_json
    torch.manual_seed(0)
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "192"])
    folder = tmp_path_factory.mktemp("robust") / "weights_0"
    build_method(opt).save_weights(str(folder), {"height": 64, "width": 192, "use_stereo": False})
    (folder / "opt.json").write_bytes(options_json(opt))
    return str(folder)


def test_cli_severity_zero_is_the_clean_table_and_self_reference_is_100(world, weights, tmp_path, capsys):
    """Two test images of the synthetic world, an untrained model: the severity-0 level of a
    corruption is exactly the clean table; the model as its own reference (its JSON file, or
    its weight folder) scores mCE 100 %."""
    from export_gt_depth import export_gt_depths
    split = tmp_path / "two"
    split.mkdir()
    lines = open(os.path.join(world.out, "splits", "synthetic", "test_files.txt")).read().splitlines()[:2]
    (split / "test_files.txt").write_text("\n".join(lines) + "\n")
    export_gt_depths(world.out, str(split), "velodyne", "exact", progress=False)
    common = ["--load_weights_folder", weights, "--eval_mono", "--eval_split", str(split), "--data_path", world.out,
              "--num_workers", "0", "--no_cuda", "--corruptions", "gaussian_noise", "--severity", "0", "2"]

    def run(*extra, out="r.json"):
        ed.evaluate(ed.parse_args(common + ["--output_json", str(tmp_path / out)] + list(extra)))
        return json.loads((tmp_path / out).read_text())["results"]

    clean, robust = run(out="ref.json")
    r = robust["robustness"]
    entry = r["corruptions"]["gaussian_noise"]
    names = ed.DEPTH_METRIC_NAMES
    assert r["severities"] == [0, 2] and list(entry["levels"]) == ["0", "2"]
    assert {n: entry["levels"]["0"][n] for n in names} == {n: clean[n] for n in names}  # exactly the clean table
    assert entry["levels"]["2"]["abs_rel"] != clean["abs_rel"]  # the noise reaches the prediction
    assert entry["mean"]["abs_rel"] == pytest.approx((clean["abs_rel"] + entry["levels"]["2"]["abs_rel"]) / 2)
    assert entry["rr"] == pytest.approx((1 - entry["dee"]) / (1 - dee(clean))) and "mCE" not in r
    _, against_json = run("--reference_model", str(tmp_path / "ref.json"))
    assert against_json["robustness"]["mCE"] == pytest.approx(100)  # itself as the reference
    assert against_json["robustness"]["corruptions"]["gaussian_noise"]["levels"] == entry["levels"]
    with pytest.raises(SystemExit, match="severities \\[0, 2\\], not \\[2\\]"):
        ed.evaluate(ed.parse_args(common[:-2] + ["2", "--reference_model", str(tmp_path / "ref.json")]))
    with pytest.raises(SystemExit, match="no fog for two"):  # a corruption the reference was not scored on
        ed.evaluate(ed.parse_args(common[:-4] + ["fog,gaussian_noise", "--severity", "0", "2", "--reference_model",
                                                 str(tmp_path / "ref.json")]))
    _, against_folder = run("--reference_model", weights, "--severity", "2")
    assert against_folder["robustness"]["mCE"] == pytest.approx(100) and against_folder["reference_model"] == weights
    out = capsys.readouterr().out
    assert "mCE 100.00 % (reference: " in out and "gaussian_noise" in out and "clean" in out


def test_corruption_options_are_refused_where_they_cannot_apply(tmp_path):
    with pytest.raises(SystemExit, match="--severity: give --corruptions too"):
        ed.parse_args(["--severity", "3"])
    with pytest.raises(SystemExit, match="--reference_model: give --corruptions too"):
        ed.parse_args(["--reference_model", "x.json"])
    np.save(tmp_path / "d.npy", np.ones((1, 4, 4), np.float32))
    with pytest.raises(SystemExit, match="needs --load_weights_folder"):
        ed.evaluate(ed.parse_args(["--ext_disp_to_eval", str(tmp_path / "d.npy"), "--eval_mono", "--corruptions",
                                   "fog", "--eval_split", "eigen"]))
