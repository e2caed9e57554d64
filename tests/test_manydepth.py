"""ManyDepth as a method: sequence starts, matching augmentation, the freeze, trackers,
training, resume, evaluation and prediction through the baseline's commands (the cost
volume itself: test_manydepth_networks.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from datasets import KITTIRAWDataset
from methods import build_method
from options import MonodepthOptions
from tests.helpers.batch import fake_batch
from tests.helpers.cli import ROOT, evaluate_folder, kill_after_steps, small_split, train_steps
from trainer import Trainer

FOLDER = "2000_01_01/2000_01_01_drive_0001_sync"
TEACHER = ("mono_encoder", "mono_depth", "pose_encoder", "pose")


def _opt(*extra):
    return MonodepthOptions().parse(["--method", "manydepth", "--height", "64", "--width", "192",
                                     "--weights_init", "scratch", "--batch_size", "2", "--num_depth_bins", "16",
                                     *extra])


# ----------------------------------------------------------------------------- data
@pytest.mark.parametrize("input_path", ["default", "fast"])
def test_sequence_start_policies(static_world, input_path, tmp_path):
    """Frame 0 of a drive has no frame -1: "error" refuses it, "black" gives a black image,
    "duplicate" the target, each flagged as missing; frame 1 is not flagged."""
    lines = [f"{FOLDER} 0 l", f"{FOLDER} 1 l"]

    def item(policy, index):
        ds = KITTIRAWDataset(static_world.out, lines, 64, 192, [0, -1, 1], 1, is_train=False, img_ext=".png",
                             input_path=input_path, cache_dir=str(tmp_path / "cache") if input_path == "fast" else None)
        ds.missing_frames = policy
        out = ds[index]
        if input_path == "fast":
            batch = ds.finish_batch({k: v[None] if torch.is_tensor(v) else v for k, v in out.items()}, "cpu")
            out = {k: v[0] for k, v in batch.items()}
        return out

    with pytest.raises(FileNotFoundError, match="image not found.*line 1"):
        item("error", 0)
    black, dup, inside = item("black", 0), item("duplicate", 0), item("black", 1)
    assert float(black[("missing", -1)]) == 1.0 and float(black[("missing", 1)]) == 0.0
    assert black[("color", -1, 0)].abs().max() == 0 and black[("color", 1, 0)].mean() > 0.05
    assert torch.equal(dup[("color", -1, 0)], dup[("color", 0, 0)]) and float(dup[("missing", -1)]) == 1.0
    assert float(inside[("missing", -1)]) == 0.0
    assert not torch.equal(inside[("color", -1, 0)], inside[("color", 0, 0)])
    # K at the matching scale (1/4) whatever the number of scales
    K2 = black[("K", 2)]
    assert K2[0, 0] == pytest.approx(0.58 * 48) and K2[1, 2] == pytest.approx(0.5 * 16)


def test_missing_frame_batch_at_prediction():
    """The prediction scripts' side of the same policies: a missing neighbour (None) becomes
    its target, zeros under "black", the target itself under "duplicate" (and under "error",
    which the scripts report before); flags are 1.0 exactly where missing. A present
    neighbour's target is not read."""
    from methods.base import missing_frame_batch
    g = torch.Generator().manual_seed(0)
    neighbours = [torch.rand(3, 4, 6, generator=g), None, torch.rand(3, 4, 6, generator=g), None]
    targets = [None, torch.rand(3, 4, 6, generator=g) + 1, None, torch.rand(3, 4, 6, generator=g) + 1]
    for policy in ("black", "duplicate", "error"):
        batch, flags = missing_frame_batch(policy, neighbours, targets)
        assert flags.dtype == torch.float32 and flags.tolist() == [0.0, 1.0, 0.0, 1.0]
        assert batch.shape == (4, 3, 4, 6)
        assert torch.equal(batch[0], neighbours[0]) and torch.equal(batch[2], neighbours[2])
        for k in (1, 3):
            expected = torch.zeros(3, 4, 6) if policy == "black" else targets[k]
            assert torch.equal(batch[k], expected), (policy, k)


# ----------------------------------------------------------------------------- method
def test_matching_augmentation_kinds_and_masks():
    """8.8: about a quarter of the samples match against their own un-augmented target
    (static camera), a quarter get zero poses, each kind with an all-zero multi-frame
    reprojection mask R; the multi-frame photometric loss is sum(R e) / sum(R) over the
    minimum over sources (no auto-mask) and the consistency loss the plain mean of
    |D_multi - sg(D_mono)| (1 - R)."""
    torch.manual_seed(0)
    opt = _opt("--batch_size", "16")
    method = build_method(opt).train()
    inputs = fake_batch(opt, b=16)
    for f in (-1, 1):  # augmented frames differ from the originals
        inputs[("color_aug", f, 0)] = inputs[("color", f, 0)] * 0.9
    inputs[("color_aug", 0, 0)] = inputs[("color", 0, 0)] * 0.9
    seen = {}
    encoder = method.models["encoder"]
    original = encoder.forward

    def spy(current, lookups, poses, K, invK):
        seen.update(lookups=lookups, poses=poses)
        return original(current, lookups, poses, K, invK)

    encoder.forward = spy
    counts = np.zeros(3)
    for trial in range(3):
        outputs = method(inputs)
        terms, _ = method.compute_losses(inputs, outputs)
        kind = outputs["matching_augmentation"]
        for b in range(16):
            k = int(kind[b])
            counts[k] += 1
            lookup, pose = seen["lookups"][b, 0], seen["poses"][b, 0]
            if k == 1:
                assert torch.equal(lookup, inputs[("color", 0, 0)][b])
            else:
                assert torch.equal(lookup, inputs[("color_aug", -1, 0)][b])
            assert (pose.abs().sum() == 0) == (k == 2)
        R = outputs["reprojection_mask"]
        assert R[kind > 0].abs().max() == 0
        assert terms["consistency"].item() > 0 and torch.isfinite(terms["reprojection"].detach())
    # 48 draws per kind: 12 +- 3 (std) for static and zero pose, 24 +- 3.5 for none
    assert 3 <= counts[1] <= 21 and 3 <= counts[2] <= 21 and 13 <= counts[0] <= 35, counts


def test_multi_frame_loss_terms_at_one_scale():
    """The multi-frame photometric term at one scale is sum(R e_min) / sum(R) with no
    auto-mask (no identity errors in it), and the consistency term is the plain mean."""
    torch.manual_seed(0)
    opt = _opt("--scales", "0")
    method = build_method(opt).train()
    inputs = fake_batch(opt)
    outputs = method(inputs)
    terms, _ = method.compute_losses(inputs, outputs)
    errors = torch.cat([method.reprojection(outputs[("color", f, 0)], inputs[("color", 0, 0)])
                        for f in (-1, 1)], 1).min(1, keepdim=True)[0]
    R = outputs["consistency_mask"] * (1 - outputs["augmentation_mask"])
    assert float(terms["reprojection"]) == pytest.approx(float((R * errors).sum() / (R.sum() + 1e-7)), rel=1e-5)
    consistency = ((outputs[("depth", 0, 0)] - outputs[("mono_depth", 0, 0)]).abs() * (1 - R)).mean()
    assert float(terms["consistency"]) == pytest.approx(float(consistency), rel=1e-5)


def test_teacher_automask_on_exact_ties(monkeypatch):
    """The teacher's auto-mask at every scale is the released code's: the minimum over sources
    of the identity errors plus one fresh draw per pixel and scale (forced here), a pixel
    kept where the reprojection error is <= that (a tie keeps it). All frames share a black
    top half, so identity and reprojection errors are exactly 0 there."""
    torch.manual_seed(0)
    opt = _opt()
    method = build_method(opt).train()
    inputs = fake_batch(opt)
    for key in [k for k in inputs if k[0] in ("color", "color_aug")]:
        inputs[key][:, :, :inputs[key].shape[2] // 2] = 0
    outputs = method(inputs)
    g, draws = torch.Generator().manual_seed(1), []

    def forced(like, **kwargs):
        draws.append(torch.randint(-1, 2, like.shape, generator=g).to(like.dtype))
        return draws[-1]

    monkeypatch.setattr(torch, "randn_like", forced)
    terms, _ = method.compute_losses(inputs, outputs)
    monkeypatch.undo()
    assert [tuple(z.shape) for z in draws] == [(2, 1, 64, 192)] * len(opt.scales)
    target = inputs[("color", 0, 0)]
    identity = torch.cat([method.reprojection(inputs[("color", f, 0)], target) for f in (-1, 1)], 1)
    identity = identity.min(1, keepdim=True)[0]
    expected, ties_at_zero_draw = 0, 0
    for scale, z in zip(opt.scales, draws):
        r = torch.cat([method.reprojection(outputs[("mono_color", f, scale)], target) for f in (-1, 1)], 1)
        r = r.min(1, keepdim=True)[0]
        keep = (r <= identity + 1e-5 * z).float()
        assert torch.equal(outputs[("automask", scale)], keep)
        ties_at_zero_draw += int(((r == identity) & (z == 0)).sum())
        expected = expected + (r * keep).sum() / (keep.sum() + 1e-7) / len(opt.scales)
    assert ties_at_zero_draw > 1000  # exact ties decided by `<=` alone (kept)
    assert float(terms["teacher_reprojection"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def _snapshot(method):
    state = {f"{n}.{k}": v.clone() for n in TEACHER for k, v in method.models[n].state_dict().items()}
    enc = method.models["encoder"]
    state["trackers"] = torch.stack([enc.min_depth_bin, enc.max_depth_bin]).clone()
    return state


def test_freeze_keeps_teacher_pose_bn_and_trackers_bit_identical():
    """8.9 and the trackers: they move before the freeze; after it the teacher and pose
    weights, their BN statistics and the trackers stay bit-identical while the multi-frame
    network still learns; validation (eval forward + predict) never moves the trackers."""
    torch.manual_seed(0)
    opt = _opt("--freeze_teacher_step", "2")
    method = build_method(opt).train()
    inputs = fake_batch(opt)
    before = _snapshot(method)
    # an optimiser built before the freeze (as the Trainer's) keeps running after it
    optimiser = torch.optim.Adam(method.param_groups()[0]["params"], lr=1e-3)
    for step in range(5):
        outputs = method(inputs)
        terms, _ = method.compute_losses(inputs, outputs)
        optimiser.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimiser.step()
        method.on_train_step_end(step, inputs, outputs)
        if step == 1:
            assert method.frozen
            frozen = _snapshot(method)
            multi = {k: v.clone() for k, v in method.models["depth"].state_dict().items()}
    assert not torch.equal(before["trackers"], frozen["trackers"])  # moved during the first 2 steps
    assert any(not torch.equal(before[k], frozen[k]) for k in before if "running_mean" in k)
    after = _snapshot(method)
    for k in frozen:
        assert torch.equal(frozen[k], after[k]), k
    assert any(not torch.equal(multi[k], v) for k, v in method.models["depth"].state_dict().items())
    assert "teacher_reprojection" not in terms  # the teacher's loss stops with its training
    # the teacher's BN layers stay in eval mode when the Trainer calls train()
    method.train()
    assert not method.models["mono_encoder"].training and method.models["encoder"].training
    # validation batches never move the trackers
    method.eval()
    with torch.no_grad():
        method(inputs)
        method.predict(inputs)
    assert torch.equal(_snapshot(method)["trackers"], after["trackers"])


def test_tracker_update_rule_in_the_method():
    """8.6 through the method's hook: trackers (0.1, 10), mono depth 5 everywhere -> (0.144, 9.955)."""
    opt = _opt()
    method = build_method(opt)
    outputs = {("mono_depth", 0, 0): torch.full((2, 1, 64, 192), 5.0)}
    method.on_train_step_end(0, {}, outputs)
    enc = method.models["encoder"]
    assert float(enc.min_depth_bin) == pytest.approx(0.144, abs=1e-4)
    assert float(enc.max_depth_bin) == pytest.approx(9.955, abs=1e-4)


def test_missing_previous_frame_runs_single_frame_mode_at_test_time():
    """A black previous frame gets a zero pose at test time (the reference kept the predicted
    pose: --keep_missing_pose), which is the zero-cost-volume prediction."""
    torch.manual_seed(0)
    opt = _opt()
    method = build_method(opt).eval()
    inputs = fake_batch(opt)
    inputs[("color", -1, 0)] = torch.zeros_like(inputs[("color", -1, 0)])
    inputs[("missing", -1)] = torch.ones(2)
    with torch.no_grad():
        ours = method.predict(inputs)["depth"]
        method.opt.zero_cost_volume = True
        zero = method.predict(inputs)["depth"]
        method.opt.zero_cost_volume = False
        method.opt.keep_missing_pose = True
        kept = method.predict(inputs)["depth"]
    assert torch.equal(ours, zero)
    assert (ours - kept).abs().max() > 1e-6


def test_option_checks():
    with pytest.raises(SystemExit, match="--use_stereo"):
        _opt("--use_stereo", "--frame_ids", "0", "-1", "1")
    with pytest.raises(SystemExit, match=r"matching frames \[-2\]"):
        _opt("--num_matching_frames", "2")
    opt = MonodepthOptions().parse(["--config", "manydepth_resnet18_640x192"])
    assert (opt.method, opt.num_depth_bins, opt.depth_binning, opt.freeze_teacher_epoch) == ("manydepth", 96, "linear", 15)
    assert (opt.height, opt.width, opt.batch_size, opt.num_epochs, opt.split) == (192, 640, 12, 20, "eigen_zhou")
    opt = MonodepthOptions().parse(["--config", "synthetic_manydepth"])
    assert opt.method == "manydepth" and opt.freeze_teacher_epoch == 6


# ----------------------------------------------------------------------------- CLI
ITEMS_PER_EPOCH = 8


def _train_args(world, log_dir, *extra):
    split = small_split(world, os.path.join(os.path.dirname(str(log_dir)), "split"), ITEMS_PER_EPOCH)
    return ["--config", "synthetic_manydepth", "--data_path", world.out, "--split", split,
            "--height", "64", "--width", "192", "--batch_size", "2", "--num_depth_bins", "16",
            "--num_epochs", "2", "--freeze_teacher_epoch", "1", "--num_workers", "0", "--log_dir", str(log_dir),
            "--model_name", "m", "--log_frequency", "1000", "--no_progress", "--no_cuda", "--keep_weights", "0",
            *extra]


@pytest.fixture(scope="module")
def md_run(static_world, tmp_path_factory):
    """Two deterministic epochs; the teacher and pose freeze at epoch 1, with the reference's
    optimiser reset there (--freeze_resets_optimizer)."""
    import shutil
    tmp = tmp_path_factory.mktemp("manydepth")
    trainer = Trainer(MonodepthOptions().parse(_train_args(static_world, tmp / "ref", "--deterministic",
                                                           "--freeze_resets_optimizer")))
    trainer.train()
    yield trainer, tmp / "ref"
    shutil.rmtree(tmp, ignore_errors=True)


def test_trained_folders_freeze_and_trackers(md_run):
    """The weight folders of epochs 0 and 1: the teacher and pose are bit-identical across
    the frozen epoch (BN statistics included), the multi-frame network is not; the trackers
    are in encoder.pth and moved away from their start during epoch 0."""
    _, log_dir = md_run
    models = log_dir / "m" / "models"
    for name in TEACHER:
        a = torch.load(models / "weights_0" / f"{name}.pth", weights_only=True)
        b = torch.load(models / "weights_1" / f"{name}.pth", weights_only=True)
        for k in a:
            if torch.is_tensor(a[k]):
                assert torch.equal(a[k], b[k]), (name, k)
    a = torch.load(models / "weights_0" / "encoder.pth", weights_only=True)
    b = torch.load(models / "weights_1" / "encoder.pth", weights_only=True)
    assert torch.equal(a["min_depth_bin"], b["min_depth_bin"]) and torch.equal(a["max_depth_bin"], b["max_depth_bin"])
    assert float(a["max_depth_bin"]) != 10.0 and float(a["min_depth_bin"]) != 0.1
    assert not torch.equal(a["reduce_conv.0.weight"], b["reduce_conv.0.weight"])


@pytest.mark.slow  # another training (the default suite's time budget)
def test_resume_inside_epoch_zero_reproduces_the_losses(md_run, static_world, tmp_path):
    """SIGKILL inside epoch 0 (before the freeze), --resume: trackers, augmentation draws and
    every later loss term (the freeze at epoch 1 and its optimiser reset included) equal the
    uninterrupted run's."""
    trainer, ref_dir = md_run
    ref = train_steps(ref_dir)
    per_epoch = len(trainer.train_loader)
    run_dir = tmp_path / "run"
    args = _train_args(static_world, run_dir, "--deterministic", "--freeze_resets_optimizer", "--state_frequency", "1")
    kill_after_steps(args, run_dir, 2)
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(run_dir), "--model_name", "m"]))
    k = resumed.step
    assert 0 < k < per_epoch, (k, per_epoch)
    resumed.train()
    after = train_steps(run_dir)
    assert set(ref[per_epoch]["terms"]) == {"reprojection", "consistency", "smoothness"}  # frozen
    for s in range(k, 2 * per_epoch):
        for name, value in ref[s]["terms"].items():
            assert after[s]["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-8), (s, name)


@pytest.mark.slow  # the same evaluation blocks: test_mism.py's (default suite)
def test_evaluate_prints_multi_and_single_frame_blocks(md_run, static_world, tmp_path):
    _, log_dir = md_run
    folder = str(log_dir / "m" / "models" / "weights_1")
    res, m = evaluate_folder(folder, static_world, tmp_path / "metrics.json")
    assert res.returncode == 0, res.stderr[-2000:]
    outputs = {r.get("output"): r for r in m["results"]}
    assert set(outputs) == {"multi_frame", "single_frame"} and all(r["num_images"] == 4 for r in outputs.values())
    assert outputs["multi_frame"]["abs_rel"] != outputs["single_frame"]["abs_rel"]
    assert "output: single_frame" in res.stdout and "output: multi_frame" in res.stdout
    # --eval_teacher: the teacher alone, equal to the single-frame block
    res, t = evaluate_folder(folder, static_world, tmp_path / "teacher.json", "--eval_teacher")
    assert res.returncode == 0, res.stderr[-2000:]
    assert t["output"] == "single_frame"
    assert t["abs_rel"] == pytest.approx(outputs["single_frame"]["abs_rel"], abs=1e-6)


@pytest.mark.slow  # three predictions (the default suite's time budget)
def test_predict_with_the_previous_frame(md_run, static_world, tmp_path):
    _, log_dir = md_run
    folder = str(log_dir / "m" / "models" / "weights_1")
    src = os.path.join(static_world.out, FOLDER, "image_02", "data")
    run = lambda *a: subprocess.run([sys.executable, "test_simple.py", "--load_weights_folder", folder,  # noqa: E731
                                     "--save_npy", *a], cwd=ROOT, capture_output=True, text=True)
    res = run("--image_path", os.path.join(src, "0000000003.png"), "--source_image_path",
              os.path.join(src, "0000000002.png"), "--output_dir", str(tmp_path / "one"))
    assert res.returncode == 0, res.stderr[-2000:]
    one = np.load(tmp_path / "one" / "0000000003_disp.npy")
    res = run("--image_path", src, "--ext", "png", "--output_dir", str(tmp_path / "all"))
    assert res.returncode == 0, res.stderr[-2000:]
    seq = np.load(tmp_path / "all" / "0000000003_disp.npy")
    assert one.shape == (1, 1, 64, 192) and np.allclose(one, seq, atol=1e-5)
    first = np.load(tmp_path / "all" / "0000000000_disp.npy")
    assert np.isfinite(first).all()
    with open(tmp_path / "K.json", "w") as f:
        json.dump([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]], f)
    res = run("--image_path", os.path.join(src, "0000000003.png"), "--source_image_path",
              os.path.join(src, "0000000002.png"), "--intrinsics_json_path", str(tmp_path / "K.json"),
              "--output_dir", str(tmp_path / "k"))
    assert res.returncode == 0 and np.allclose(np.load(tmp_path / "k" / "0000000003_disp.npy"), one)


@pytest.mark.slow  # a prediction of its own (the default suite's time budget)
def test_video_stream_predicts_as_a_folder_of_frames(md_run, static_world):
    """test_video.py's stream (a video's frames, in batches that cut between a frame and the
    one before it) gives each frame the prediction test_simple.py gives it in a folder: the
    previous frame read, the first one black and flagged missing."""
    import glob

    from PIL import Image

    import test_simple
    import test_video
    from methods import load_for_inference
    _, log_dir = md_run
    method = load_for_inference(str(log_dir / "m" / "models" / "weights_1"))
    paths = sorted(glob.glob(os.path.join(static_world.out, FOLDER, "image_02", "data", "*.png")))[:4]
    images = [Image.open(p).convert("RGB") for p in paths]
    K = test_simple.read_intrinsics(None)
    got = {}
    count, _, _ = test_video.predict_stream(method, iter(images), torch.device("cpu"), 3, K,
                                            on_frame=lambda i, frame: got.__setitem__(i, frame))
    frames, missing = test_simple.neighbour_frames(method, paths, 0, 4, {}, torch.device("cpu"))
    assert missing[-1].tolist() == [1, 0, 0, 0]
    others = test_simple.multi_frame_inputs(method, frames, missing, K, torch.device("cpu"))
    batch = test_simple.network_input(method, images, torch.device("cpu"))
    with torch.no_grad():
        disp, _ = test_simple.predict_disparity(method, batch, others)
    assert count == 4 and sorted(got) == [0, 1, 2, 3]
    for i in range(4):
        expected = test_video.stack_frame(batch[i], disp[i, 0]).astype(np.float64)
        assert np.abs(got[i] - expected).max() <= 1, i  # batches of 3 + 1 against one of 4: rounding


def test_a_reference_style_folder_loads(md_run, tmp_path):
    """ManyDepth's own folders: opt.json without a method, trackers as Python floats in
    encoder.pth. The weight files say which method they are; the prediction is unchanged."""
    import shutil
    from methods import load_for_inference
    _, log_dir = md_run
    folder = log_dir / "m" / "models" / "weights_1"
    theirs = tmp_path / "theirs"
    shutil.copytree(folder, theirs)
    options = json.loads((theirs / "opt.json").read_text())
    del options["method"]
    (theirs / "opt.json").write_text(json.dumps(options))
    state = torch.load(theirs / "encoder.pth", weights_only=True)
    state["min_depth_bin"], state["max_depth_bin"] = float(state["min_depth_bin"]), float(state["max_depth_bin"])
    torch.save(state, theirs / "encoder.pth")
    ours, loaded = load_for_inference(str(folder)), load_for_inference(str(theirs))
    assert type(loaded).__name__ == "ManyDepth"
    assert float(loaded.models["encoder"].max_depth_bin) == pytest.approx(float(ours.models["encoder"].max_depth_bin))
    torch.manual_seed(0)
    inputs = fake_batch(ours.opt)
    with torch.no_grad():
        assert torch.equal(ours.predict(inputs)["depth"], loaded.predict(inputs)["depth"])


def test_validation_skips_the_teacher_pass():
    """The Trainer's validation scores "depth" alone (predict_variants False): the teacher
    network is not run, and the multi-frame depth is the same."""
    torch.manual_seed(0)
    opt = _opt()
    method = build_method(opt).eval()
    inputs = fake_batch(opt)
    with torch.no_grad():
        full = method.predict(inputs)
        assert set(full["variants"]) == {"single_frame"}
        method.predict_variants = False

        def refuse(*args, **kwargs):
            raise AssertionError("the teacher ran")
        method.models["mono_encoder"].forward = refuse
        lean = method.predict(inputs)
    assert "variants" not in lean and torch.equal(lean["depth"], full["depth"])



def test_trainer_validation_asks_for_depth_alone(md_run):
    trainer, _ = md_run
    seen = []
    predict = trainer.method.predict

    def spy(inputs):
        seen.append(trainer.method.predict_variants)
        return predict(inputs)
    trainer.method.predict = spy
    try:
        trainer.validate_epoch()
    finally:
        del trainer.method.predict
    assert seen and not any(seen) and trainer.method.predict_variants


def test_freeze_resets_optimizer_is_the_references_schedule(static_world, tmp_path):
    """--freeze_resets_optimizer: at the freeze epoch Adam's state is dropped and the step
    schedule restarts (the reference re-created both); by default the LR keeps decaying.
    A state restored after the freeze does not reset again."""
    def lrs(*extra):
        args = _train_args(static_world, tmp_path / "_".join(extra or ("plain",)), "--num_epochs", "4",
                           "--freeze_teacher_epoch", "2", "--scheduler_step_size", "1", *extra)
        trainer = Trainer(MonodepthOptions().parse(args))
        per_epoch, out = len(trainer.train_loader), []
        for step in range(4 * per_epoch):
            if step % per_epoch == 0:
                out.append(trainer.optimizer.param_groups[0]["lr"])
            trainer.optimizer.step()
            trainer.scheduler.step()
        return trainer, out

    _, plain = lrs()
    assert plain == pytest.approx([2e-4, 2e-5, 2e-6, 2e-7])  # the synthetic preset's LR
    trainer, reset = lrs("--freeze_resets_optimizer")
    assert reset == pytest.approx([2e-4, 2e-5, 2e-4, 2e-5])
    # Adam's moments: present before the freeze, gone after it
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.ones_like(p)
    trainer.optimizer.step()
    assert len(trainer.optimizer.state) == len(params)
    trainer.method.on_epoch_start(1, 0)
    trainer._reset_optimizer_if_asked()
    assert len(trainer.optimizer.state) == len(params)
    trainer.method.on_epoch_start(2, 0)
    assert trainer.method.frozen and trainer.method.reset_optimizer_state
    trainer._reset_optimizer_if_asked()
    assert len(trainer.optimizer.state) == 0 and not trainer.method.reset_optimizer_state
    restored = build_method(trainer.opt)
    restored.load_extra_state({"frozen": True})
    assert restored.frozen and not restored.reset_optimizer_state
    restored.on_epoch_start(3, 2)  # resumed inside a frozen epoch: the restored moments stay
    assert not restored.reset_optimizer_state
    for bad in (("--freeze_teacher_step", "5"), ("--freeze_teacher_and_pose",), ("--lr_sche_type", "cosine")):
        with pytest.raises(SystemExit, match="--freeze_resets_optimizer"):
            _opt("--freeze_resets_optimizer", *bad)


def test_freeze_reset_happens_inside_the_training_loop(md_run):
    """Through Trainer.train() (md_run: --freeze_resets_optimizer, the freeze at epoch 1):
    Adam's step count of the multi-frame depth decoder is the steps since the freeze (without
    the switch, every step: Adam's own count)."""
    trainer, _ = md_run
    p = next(trainer.method.models["depth"].parameters())
    assert int(trainer.optimizer.state[p]["step"]) == len(trainer.train_loader) == trainer.step // 2
