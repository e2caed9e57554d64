"""The dynamic-scene method as a method: options and presets, its 16 loss terms, metric
prediction of both branches, and training, resuming and evaluating (overall and on the
moving objects) through the baseline's commands on the synthetic odometry tree (the data,
losses and networks themselves: test_dynamic_mf_data.py, test_dynamic_mf_networks.py)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from losses import dynamic_mf_total_loss
from methods import build_method
from methods.dynamic_mf import count_parameters
from options import MonodepthOptions
from tests.helpers.cli import ROOT, kill_after_steps, train_steps
from trainer import Trainer


def _opt(*extra):
    return MonodepthOptions().parse(["--method", "dynamic_mf", "--height", "64", "--width", "128",
                                     "--weights_init", "scratch", "--batch_size", "2", *extra])


def _batch(opt, b=2):
    torch.manual_seed(0)
    h, w = opt.height, opt.width
    inputs = {}
    for f in (0, -1, 1):
        x = torch.rand(b, 3, h, w)
        inputs[("color", f, 0)] = inputs[("color_aug", f, 0)] = x
    K = torch.tensor([[0.58 * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    inputs[("K", 0)], inputs[("inv_K", 0)] = K.repeat(b, 1, 1), torch.linalg.inv(K).repeat(b, 1, 1)
    for f in (-1, 1):
        T = torch.eye(4).repeat(b, 1, 1)
        T[:, 2, 3] = -0.8 * f
        inputs[("T", f)] = T
    depth = (torch.rand(b, 1, h, w) * 30 + 5) * (torch.rand(b, 1, h, w) > 0.7)
    inputs["depth_gt"] = depth
    inputs["inv_depth_gt"] = torch.where(depth > 0, 1 / depth.clamp(min=1e-6), torch.zeros_like(depth))
    return inputs


def test_presets_and_checks():
    opt = MonodepthOptions().parse(["--config", "dynamic_mf_resnet18_256x512"])
    assert (opt.method, opt.dataset, opt.height, opt.width, opt.backbone, opt.split) == \
        ("dynamic_mf", "kitti_odom_mf", 256, 512, "resnet18", "odom_mf")
    assert (opt.batch_size, opt.learning_rate, opt.amsgrad, opt.num_epochs, opt.scheduler_step_size) == \
        (8, 1e-4, True, 80, 65)
    opt = MonodepthOptions().parse(["--config", "dynamic_mf_effnetb5_256x512"])
    assert opt.backbone == "effnet_b5" and opt.freeze_backbone is False
    opt = MonodepthOptions().parse(["--config", "synthetic_dynamic_mf"])
    assert (opt.split, opt.height, opt.width) == ("odom_mf_synthetic", 96, 192)
    with pytest.raises(SystemExit, match="--frame_ids 0 -1 1"):
        _opt("--frame_ids", "0", "-1")
    with pytest.raises(SystemExit, match="kitti_odom_mf"):
        _opt("--dataset", "kitti")
    with pytest.raises(SystemExit, match="--cv_patch 4"):
        _opt("--cv_patch", "4")
    model = build_method(_opt("--no_flip_after_cv", "--cv_patch", "5")).models["model"]
    assert (model.flip_prob, model.cv_patch) == (0.0, 5)
    assert build_method(_opt()).models["model"].flip_prob == 0.5
    ref = _opt("--ref_compat")
    assert ref.reference_align_corners and ref.reference_scatter and ref.reference_vnl_intrinsics and ref.imagenet_stats
    assert ref.reference_cv_sampling
    assert build_method(ref).models["model"].align_corners is False
    assert build_method(ref).models["model"].reference_sampling is True
    assert build_method(_opt("--cv_match", "ssim_l1")).models["model"].cv_match == "ssim_l1"
    plain = _opt()
    assert not (plain.reference_align_corners or plain.reference_scatter or plain.reference_vnl_intrinsics
                or plain.reference_cv_sampling) and plain.cv_match == "ssim"
    # 7.22 through the method: the ResNet-18 model, frozen backbone by default
    total, trainable = count_parameters(build_method(_opt("--freeze_backbone")))
    assert (total, trainable) == (20_666_289, 8_976_777)


def test_loss_terms_are_the_papers_sum():
    """7.18: the Trainer's sum of the grouped terms is 4 x (8 SILog) + 1 x (8 VNL), the
    total of the loss function; each group is one branch and one kind over 4 scales."""
    opt = _opt()
    method = build_method(opt).train()
    inputs = _batch(opt)
    outputs = method(inputs)
    torch.manual_seed(1)
    terms, logs = method.compute_losses(inputs, outputs)
    torch.manual_seed(1)
    total, sixteen = dynamic_mf_total_loss(outputs["multi"], outputs["mono"], inputs["inv_depth_gt"],
                                           inputs["depth_gt"], inputs[("K", 0)])
    assert set(terms) == {"silog_multi", "silog_mono", "vnl_multi", "vnl_mono"} and len(sixteen) == 16
    assert sum(terms.values()).item() == pytest.approx(total.item(), rel=1e-5)
    silog = sum(v for k, v in sixteen.items() if k.startswith("silog/multi"))
    assert terms["silog_multi"].item() == pytest.approx(4 * silog.item(), rel=1e-5)


def test_predict_both_branches_metric_and_deterministic():
    opt = _opt()
    method = build_method(opt).eval()
    inputs = _batch(opt)
    with torch.no_grad():
        a, b = method.predict(inputs), method.predict(inputs)
    assert torch.equal(a["depth"], b["depth"]) and set(a["variants"]) == {"mono"}
    assert float(a["depth"].min()) >= 1 / 0.33 - 1e-3 and float(a["depth"].max()) <= 400 + 1e-2
    method.opt.eval_branch = "mono"
    with torch.no_grad():
        c = method.predict(inputs)
    assert torch.equal(c["depth"], a["variants"]["mono"]) and torch.equal(c["variants"]["multi"], a["depth"])
    assert method.depth_scale == 1.0 and method.output_name == "mono"


# ----------------------------------------------------------------------------- CLI
def _split(world, folder):
    os.makedirs(folder, exist_ok=True)
    for name, lines in (("train_files.txt", ["00 5 l", "00 6 l", "00 5 l", "00 6 l"]), ("val_files.txt", ["00 6 l"])):
        with open(os.path.join(folder, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(folder)


def _train_args(world, log_dir, *extra):
    split = _split(world, os.path.join(os.path.dirname(str(log_dir)), "split"))
    return ["--config", "synthetic_dynamic_mf", "--data_path", os.path.join(world.out, "odometry"), "--split", split,
            "--height", "64", "--width", "128", "--batch_size", "2", "--num_epochs", "2", "--num_workers", "0",
            "--log_dir", str(log_dir), "--model_name", "m", "--log_frequency", "1000", "--no_progress", "--no_cuda",
            "--keep_weights", "0", "--deterministic", *extra]


@pytest.fixture(scope="module")
def dmf_run(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dmf")
    trainer = Trainer(MonodepthOptions().parse(_train_args(world, tmp / "ref")))
    trainer.train()
    yield trainer, tmp / "ref"
    shutil.rmtree(tmp, ignore_errors=True)  # the module's weight folders and states (the suite's disk peak)


def test_trains_and_evaluates_overall_and_on_moving_objects(dmf_run, world, tmp_path):
    """Metric evaluation (no median scaling) of both branches, overall and on the moving
    objects, in one JSON; validation chose weights_best on the held-out keyframes."""
    trainer, log_dir = dmf_run
    folder = log_dir / "m" / "models" / "weights_1"
    assert (log_dir / "m" / "models" / "best.json").is_file()
    out = tmp_path / "metrics.json"
    res = subprocess.run([sys.executable, "evaluate_depth.py", "--load_weights_folder", str(folder), "--odom_path",
                          os.path.join(world.out, "odometry"), "--odom_test_seqs", "01", "--eval_dynamic",
                          "--num_workers", "0", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    assert "Metric evaluation - no median scaling" in res.stdout
    records = json.loads(out.read_text())["results"]
    keys = {(r.get("output"), r.get("region")) for r in records}
    assert keys == {("multi", None), ("multi", "dynamic"), ("mono", None), ("mono", "dynamic")}
    for r in records:
        assert r["num_images"] == 2 and 0 < r["abs_rel"] < 100 and "ratio_median" not in r
    # the same test set named as a split, the odometry root as --data_path
    out2 = tmp_path / "metrics_split.json"
    res = subprocess.run([sys.executable, "evaluate_depth.py", "--load_weights_folder", str(folder), "--eval_split",
                          "kitti_odom_mf", "--data_path", os.path.join(world.out, "odometry"), "--odom_test_seqs",
                          "01", "--eval_dynamic", "--num_workers", "0", "--json", str(out2)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    again = json.loads(out2.read_text())["results"]
    # the same numbers up to the kernels' rounding (on a GPU two processes may pick different
    # convolution algorithms: 2.0876684940 vs 2.0876684962 measured on an H200)
    assert [(r.get("output"), r.get("region")) for r in again] == [(r.get("output"), r.get("region")) for r in records]
    assert [r["abs_rel"] for r in again] == pytest.approx([r["abs_rel"] for r in records], rel=1e-6)


def method_width_over_height(folder):
    with open(os.path.join(folder, "opt.json")) as f:
        saved = json.load(f)
    return saved["width"] / saved["height"]


@pytest.mark.slow  # 12 s; test_simple on multi-frame items: test_export.py and test_manydepth.py
def test_predicts_a_sequence_with_test_simple(dmf_run, world, tmp_path):
    """test_simple.py on an odometry sequence: its keyframes (5 .. N-6) with frames -1, +1,
    the sequence's K and poses; --pred_metric_depth writes the metric depth itself (no x5.4),
    equal to predict() on the evaluation's items; a bare image folder is refused."""
    from methods import load_for_inference
    from evaluation.kitti_odom import KittiOdomMultiFrame
    _, log_dir = dmf_run
    folder = str(log_dir / "m" / "models" / "weights_1")
    odom = os.path.join(world.out, "odometry")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", os.path.join(odom, "sequences", "01"),
                          "--load_weights_folder", folder, "--output_dir", str(out), "--pred_metric_depth",
                          "--no_cuda"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    assert sorted(os.listdir(out)) == ["000005_depth.npy", "000005_disp.jpeg", "000006_depth.npy", "000006_disp.jpeg"]
    from PIL import Image
    with Image.open(out / "000006_disp.jpeg") as jpeg, \
            Image.open(os.path.join(odom, "sequences", "01", "image_2", "000006.png")) as frame:
        w0, h0 = frame.size
        assert jpeg.size == (round(h0 * method_width_over_height(folder)), h0)  # the centred crop
    method = load_for_inference(folder, torch.device("cpu"))
    items = KittiOdomMultiFrame(odom, ["01"]).dataset(method.opt.height, method.opt.width, method.inference_frames)
    item = items[1]  # keyframe 6
    inputs = {k: v[None] for k, v in item.items() if torch.is_tensor(v)}
    with torch.no_grad():
        expected = method.predict(inputs)["depth"].numpy()
    written = np.load(out / "000006_depth.npy")
    assert written.shape == expected.shape and np.allclose(written, expected, rtol=1e-5)
    assert 3.0 <= written.min() and written.max() <= 400.0  # metric, inside the model's range
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", os.path.join(odom, "sequences", "01",
                          "image_2", "000006.png"), "--load_weights_folder", folder, "--no_cuda"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0 and "KITTI odometry sequence" in res.stderr


@pytest.mark.slow  # another training (the default suite's time budget)
def test_resume_reproduces_the_losses(dmf_run, world, tmp_path):
    trainer, ref_dir = dmf_run
    ref = train_steps(ref_dir)
    run_dir = tmp_path / "run"
    kill_after_steps(_train_args(world, run_dir, "--state_frequency", "1"), run_dir, 2)
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(run_dir), "--model_name", "m"]))
    k = resumed.step
    assert 0 < k < 4
    resumed.train()
    after = train_steps(run_dir)
    for s in range(k, 4):
        for name, value in ref[s]["terms"].items():
            assert after[s]["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-8), (s, name)


def test_silog_pools_the_pixels_of_the_batch():
    """7.16: SILog is computed over the valid pixels of the whole batch, not per sample: two
    samples each exactly c_i x GT give 0 each alone but not together."""
    from losses import silog_loss_dmf
    gt = torch.rand(2, 1, 8, 8) * 0.3 + 0.01
    pred = gt.clone()
    pred[0] *= 1.5
    pred[1] *= 0.5
    alone = [float(silog_loss_dmf(pred[i:i + 1], gt[i:i + 1])) for i in range(2)]
    assert alone == pytest.approx([1.5704, 10 * 0.15 ** 0.5 * abs(torch.log(torch.tensor(0.5)).item())], abs=1e-3)
    g = torch.cat([torch.full((64,), -torch.log(torch.tensor(1.5))), torch.full((64,), -torch.log(torch.tensor(0.5)))])
    expected = 10 * torch.sqrt(g.var(unbiased=True) + 0.15 * g.mean() ** 2)
    assert float(silog_loss_dmf(pred, gt)) == pytest.approx(float(expected), rel=1e-4)


def _fake_sequences(root, lengths):
    for seq, n in lengths.items():
        folder = os.path.join(root, "sequences", f"{seq:02d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "times.txt"), "w") as f:
            f.write("".join(f"{0.1 * i:.6e}\n" for i in range(n)))


def test_odometry_splits_from_options(tmp_path):
    """--odom_train_seqs alone: the last 50 keyframes of each training sequence are held
    out (32 of them validate, 3 dropped before them); with --odom_val_seqs every training
    keyframe trains and the first --val_max_per_seq keyframes of each validation sequence
    validate. Overlaps and empty sequences are refused."""
    from datasets.kitti_odom_mf import splits_from_options
    root = str(tmp_path)
    _fake_sequences(root, {1: 200, 2: 120, 4: 60})
    held = splits_from_options(root, ["01", "2"])
    train, val = held["train"], held["val"]
    assert len([x for x in train if x.startswith("01 ")]) == 190 - 50 - 3
    assert train[0] == "01 5 l" and "01 141 l" in train and "01 142 l" not in train
    assert len(val) == 64 and val[0] == "01 145 l" and val[31] == "01 194 l" and val[-1] == "02 114 l"
    assert not set(train) & set(val)
    both = splits_from_options(root, ["01"], ["04"], val_max_per_seq=7)
    assert len(both["train"]) == 190 and both["train"][-1] == "01 194 l"
    assert both["val"] == [f"04 {k} l" for k in range(5, 12)]
    assert splits_from_options(root, None, ["04"], 3) == {"val": ["04 5 l", "04 6 l", "04 7 l"]}
    with pytest.raises(SystemExit, match="also in --odom_train_seqs"):
        splits_from_options(root, ["01"], ["01"])
    with pytest.raises(SystemExit, match="sequences/"):
        splits_from_options(root, ["09"])
    one = splits_from_options(root, ["02"], val_max_per_seq=1)
    assert one["val"] == ["02 65 l"] and len(one["train"]) == 110 - 50 - 3
    with pytest.raises(SystemExit, match="sequence numbers"):
        splits_from_options(root, ["01", "abc"])
    _fake_sequences(root, {5: 10})
    with pytest.raises(SystemExit, match="no train keyframes"):
        splits_from_options(root, ["05"])
    with pytest.raises(SystemExit, match="need --dataset kitti_odom_mf"):
        MonodepthOptions().parse(["--odom_train_seqs", "01", "--weights_init", "scratch"])


def test_training_on_sequences_writes_its_split(world, tmp_path):
    """The Trainer takes --odom_train_seqs / --odom_val_seqs instead of the split's files and
    writes the lines it used beside the run."""
    args = _train_args(world, tmp_path, "--odom_train_seqs", "00", "--odom_val_seqs", "01",
                       "--val_max_per_seq", "1", "--max_steps", "1", "--num_epochs", "1")
    trainer = Trainer(MonodepthOptions().parse(args))
    assert trainer.train_dataset.filenames == ["00 5 l", "00 6 l"]
    assert trainer.val_dataset.filenames == ["01 5 l"]
    trainer.train()
    split = tmp_path / "m" / "split"
    assert (split / "train_files.txt").read_text().split("\n")[:2] == ["00 5 l", "00 6 l"]
    assert (split / "val_files.txt").read_text().strip() == "01 5 l"
    # --resume reads the recorded split back (it is not rebuilt from the data)
    (split / "val_files.txt").write_text("01 6 l\n")
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(tmp_path), "--model_name", "m"]))
    assert resumed.val_dataset.filenames == ["01 6 l"] and resumed.train_dataset.filenames == ["00 5 l", "00 6 l"]


def test_resume_keeps_options_newer_than_the_run(tmp_path):
    """A run saved before --reference_cv_sampling existed, started with --ref_compat, resumes
    with the cost volume it had (the option's default), not the one --ref_compat sets now."""
    opt = _opt("--ref_compat")
    saved = {k: v for k, v in vars(opt).items() if k != "reference_cv_sampling"}
    models = tmp_path / "m" / "models"
    models.mkdir(parents=True)
    (models / "opt.json").write_text(json.dumps(saved, default=str))
    resumed = MonodepthOptions().parse(["--resume", "--log_dir", str(tmp_path), "--model_name", "m"])
    assert resumed.ref_compat and resumed.reference_align_corners and not resumed.reference_cv_sampling
    (models / "opt.json").write_text(json.dumps(vars(opt), default=str))
    assert MonodepthOptions().parse(["--resume", "--log_dir", str(tmp_path), "--model_name", "m"]).reference_cv_sampling
