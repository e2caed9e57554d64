"""Training end to end on the synthetic world: weight folders, fine-tuning, prediction,
evaluation from a weights folder; and (slow) that learning beats trivial predictors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import networks
from options import MonodepthOptions
from trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _opt(world, tmp_path, *extra):
    split = os.path.join(world.out, "splits", "synthetic")
    return MonodepthOptions().parse([
        "--data_path", world.out, "--split", split, "--png", "--height", "64", "--width", "192",
        "--weights_init", "scratch", "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0",
        "--log_dir", str(tmp_path), "--model_name", "m", "--log_frequency", "2", "--max_steps", "3",
        "--no_progress", *extra])


@pytest.fixture(scope="module")
def trained(static_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    trainer = Trainer(_opt(static_world, tmp)).train()
    yield trainer, os.path.join(tmp, "m", "models", "weights_0")
    shutil.rmtree(tmp, ignore_errors=True)  # not kept to the session's end


def test_weight_folder_in_monodepth2_format_loads_strictly(trained):
    trainer, folder = trained
    assert sorted(os.listdir(folder)) == ["adam.pth", "depth.pth", "encoder.pth", "opt.json", "pose.pth",
                                          "pose_encoder.pth"]
    enc_state = torch.load(os.path.join(folder, "encoder.pth"), weights_only=True)
    assert (enc_state["height"], enc_state["width"], enc_state["use_stereo"]) == (64, 192, False)
    enc = networks.ResnetEncoder(18, False)
    enc.load_state_dict({k: v for k, v in enc_state.items() if k not in ("height", "width", "use_stereo")},
                        strict=True)
    dec = networks.DepthDecoder(enc.num_ch_enc)
    dec.load_state_dict(torch.load(os.path.join(folder, "depth.pth"), weights_only=True), strict=True)
    pose_enc = networks.ResnetEncoder(18, False, 2)
    pose_enc.load_state_dict(torch.load(os.path.join(folder, "pose_encoder.pth"), weights_only=True), strict=True)
    pose = networks.PoseDecoder(enc.num_ch_enc, 1, 2)
    pose.load_state_dict(torch.load(os.path.join(folder, "pose.pth"), weights_only=True), strict=True)
    # the saved weights are the trained ones
    ours = trainer.method.models["depth"].state_dict()
    assert all(torch.equal(ours[k].cpu(), v) for k, v in dec.state_dict().items())
    with open(os.path.join(os.path.dirname(folder), "opt.json")) as f:
        assert json.load(f)["height"] == 64
    assert trainer.step == 3
    logs = os.listdir(os.path.join(os.path.dirname(os.path.dirname(folder)), "train"))
    assert any(f.startswith("events.out.tfevents") for f in logs)


def test_models_last_names_the_newest_weight_folder(trained, tmp_path):
    from training.checkpoints import point_last
    _, folder = trained
    models = os.path.dirname(folder)
    last = os.path.join(models, "last")
    assert os.path.islink(last) and os.readlink(last) == "weights_0"
    assert os.path.samefile(last, folder)
    # re-pointed atomically at the next epoch's folder; a real folder named last is never touched
    os.makedirs(tmp_path / "weights_3")
    os.symlink("weights_0", tmp_path / "last")
    assert point_last(str(tmp_path), "weights_3") and os.readlink(tmp_path / "last") == "weights_3"
    assert not os.path.exists(tmp_path / "last.tmp")
    os.remove(tmp_path / "last")
    os.makedirs(tmp_path / "last")
    assert not point_last(str(tmp_path), "weights_3") and not os.path.islink(tmp_path / "last")
    # a new run into a folder with higher epochs left by an earlier one: the new folder stays
    from training.checkpoints import prune_weight_folders
    for e in (0, 17, 18, 19):
        os.makedirs(tmp_path / f"weights_{e}", exist_ok=True)
    prune_weight_folders(str(tmp_path), 3, protect="weights_0")
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("weights_")) == \
        ["weights_0", "weights_18", "weights_19"]


def test_fine_tune_loads_weights_and_keeps_learning_rate(trained, static_world, tmp_path):
    _, folder = trained
    opt = _opt(static_world, tmp_path, "--load_weights_folder", folder, "--learning_rate", "1e-5")
    t = Trainer(opt)
    ref = torch.load(os.path.join(folder, "depth.pth"), weights_only=True)
    assert all(torch.equal(t.method.models["depth"].state_dict()[k].cpu(), v) for k, v in ref.items())
    assert t.optimizer.param_groups[0]["lr"] == 1e-5


def test_fine_tune_of_some_networks_starts_the_optimiser_afresh(trained, static_world, tmp_path):
    """adam.pth holds the moments of every network of its run: it is read when every trained
    network is loaded, not when only the pose networks are (a pose start for another run)."""
    _, folder = trained
    t = Trainer(_opt(static_world, tmp_path, "--load_weights_folder", folder))
    assert len(t.optimizer.state) == sum(1 for g in t.optimizer.param_groups for _ in g["params"])
    t = Trainer(_opt(static_world, tmp_path, "--load_weights_folder", folder, "--model_name", "p",
                     "--models_to_load", "pose_encoder", "pose"))
    assert len(t.optimizer.state) == 0
    ref = torch.load(os.path.join(folder, "pose.pth"), weights_only=True)
    assert all(torch.equal(t.method.models["pose"].state_dict()[k].cpu(), v) for k, v in ref.items())


def test_fused_adam_is_used_only_where_pytorch_has_it(monkeypatch):
    """PyTorch before 2.4 has no fused Adam on the CPU (its constructor raises): the loop then."""
    import trainer as trainer_module
    real = torch.optim.Adam

    def old_adam(params, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kwargs)
    monkeypatch.setattr(torch.optim, "Adam", old_adam)
    assert not trainer_module.fused_adam_supported(torch.device("cpu"))
    assert not trainer_module.fused_adam_supported(torch.device("meta"))


def test_profile_counts_the_first_batch_once_and_every_later_wait_as_data_wait(static_world, tmp_path):
    from training.profile import TIMELINE
    before = dict(TIMELINE.counts)
    Trainer(_opt(static_world, tmp_path, "--max_steps", "4", "--log_frequency", "100", "--profile")).train()
    added = {k: TIMELINE.counts.get(k, 0) - before.get(k, 0) for k in ("first_batch", "data_wait", "step")}
    assert added == {"first_batch": 1, "data_wait": 3, "step": 4}
    with open(tmp_path / "m" / "profile.json") as f:
        assert json.load(f)["data_wait"] > 0


@pytest.mark.parametrize("fast", [False, True])
def test_ground_truth_is_read_only_for_the_batches_of_log_steps(static_world, tmp_path, fast):
    extra = ["--fast_loader", "--cache_dir", str(tmp_path / "cache")] if fast else []
    trainer = Trainer(_opt(static_world, tmp_path, "--max_steps", "7", "--log_frequency", "3", *extra))
    with_gt, logged = [], []
    process_batch, log, scalars = trainer.process_batch, trainer.log, trainer.logger.scalars
    def training_batch(inputs, *a, **kw):
        if trainer.method.training:
            with_gt.append("depth_gt" in inputs)
        return process_batch(inputs, *a, **kw)
    trainer.process_batch = training_batch
    trainer.log = lambda mode, inputs, *a: (logged.append((mode, a[-1], "depth_gt" in inputs)), log(mode, inputs, *a))
    keys = []
    trainer.logger.scalars = lambda mode, values, step: (keys.append((mode, set(values))), scalars(mode, values, step))
    trainer.train()
    assert with_gt == [True, False, False, True, False, False, True]
    assert [(step, gt) for mode, step, gt in logged if mode == "train"] == [(0, True), (3, True), (6, True)]
    train_keys = [k for mode, k in keys if mode == "train"]
    assert len(train_keys) == 3 and all("de/abs_rel" in k and "da/a1" in k for k in train_keys)
    # an item asked for without the flag still has it (evaluation, the first-item check)
    assert "depth_gt" in trainer.train_dataset[0] and "depth_gt" not in trainer.train_dataset[(0, 0, False)]


def test_adam_is_fused_on_the_cpu_unless_deterministic(trained, static_world, tmp_path):
    """The trained fixture ran with the fused update wherever this PyTorch has it (2.4 on);
    the update it uses is the per-parameter loop's (float rounding): 3 steps of each from the
    same weights and gradients."""
    import trainer as trainer_module
    trainer, folder = trained
    fused = trainer_module.fused_adam_supported(torch.device("cpu"))
    assert trainer.device.type == "cpu" and bool(trainer.optimizer.defaults.get("fused")) is fused
    # --deterministic fine-tuning from the fused run's adam.pth keeps the loop: the saved
    # groups' "fused" flag does not come back with the moments
    t = Trainer(_opt(static_world, tmp_path, "--deterministic", "--load_weights_folder", folder))
    assert not t.optimizer.defaults["fused"]
    assert len(t.optimizer.state) > 0 and not any(g.get("fused") for g in t.optimizer.param_groups)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]][:20]
    torch.manual_seed(0)
    grads = [torch.randn_like(p) for p in params]
    results = []
    for implementation in (trainer.optimizer.defaults.get("fused"), False):
        copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for c, g in zip(copies, grads):
            c.grad = g.clone()
        optimiser = torch.optim.Adam(copies, lr=1e-3, fused=implementation)
        for _ in range(3):
            optimiser.step()
        results.append(copies)
    assert max((a - b).abs().max().item() for a, b in zip(*results)) < 1e-6


def test_test_simple_writes_depth_images(trained, static_world, tmp_path):
    _, folder = trained
    import shutil
    src = os.path.join(static_world.out, "2000_01_01", "2000_01_01_drive_0001_sync", "image_02", "data")
    for name in ("0000000001.png", "0000000002.png"):
        shutil.copy(os.path.join(src, name), tmp_path / name)
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", str(tmp_path), "--ext", "png",
                          "--load_weights_folder", folder, "--save_npy"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    from PIL import Image
    img = Image.open(tmp_path / "0000000001_disp.jpeg")
    assert img.size == (640, 192)
    npy = np.load(tmp_path / "0000000001_disp.npy")
    assert npy.shape == (1, 1, 64, 192) and (npy > 0.01 - 1e-6).all() and (npy < 10 + 1e-6).all()


def test_evaluate_from_weights_folder_and_refuses_stereo_scaling_of_mono_model(trained, static_world, tmp_path):
    _, folder = trained
    split = os.path.join(static_world.out, "splits", "synthetic")
    from export_gt_depth import export_gt_depths
    export_gt_depths(static_world.out, split, "velodyne", "exact", progress=False)
    out_json = tmp_path / "metrics.json"
    base = [sys.executable, "evaluate_depth.py", "--load_weights_folder", folder, "--eval_split", split,
            "--data_path", static_world.out, "--png", "--num_workers", "0"]
    res = subprocess.run(base + ["--eval_mono", "--output_json", str(out_json), "--post_process"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    m = json.loads(out_json.read_text())
    assert 0 < m["abs_rel"] < 2 and 0 <= m["a1"] <= 1 and m["num_images"] == 4
    res = subprocess.run(base + ["--eval_stereo"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0 and "--eval_mono" in res.stderr


def test_stereo_training_has_no_pose_network(static_world, tmp_path):
    Trainer(_opt(static_world, tmp_path, "--use_stereo", "--frame_ids", "0", "--max_steps", "1")).train()
    folder = os.path.join(tmp_path, "m", "models", "weights_0")
    assert sorted(os.listdir(folder)) == ["adam.pth", "depth.pth", "encoder.pth", "opt.json"]
    assert torch.load(os.path.join(folder, "encoder.pth"), weights_only=True)["use_stereo"] is True


def test_config_preset_and_explicit_flags(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("height: 96\nwidth: 320\nframe_ids: [0, -1, 1]\nuse_stereo: true\n")
    opt = MonodepthOptions().parse(["--config", str(cfg), "--width", "640"])
    assert (opt.height, opt.width, opt.frame_ids) == (96, 640, [0, -1, 1, "s"])
    cfg.write_text("heigth: 96\n")
    with pytest.raises(SystemExit, match="heigth"):
        MonodepthOptions().parse(["--config", str(cfg)])
    for preset in os.listdir(os.path.join(ROOT, "configs")):
        if "mism_student" in preset:  # stage 2 needs stage 1's folder: said by name
            with pytest.raises(SystemExit, match="--teacher_weights_folder"):
                MonodepthOptions().parse(["--config", os.path.join(ROOT, "configs", preset)])
            continue
        MonodepthOptions().parse(["--config", os.path.join(ROOT, "configs", preset)])
    # a preset by name, with or without .yaml; a wrong name lists the presets
    mono = MonodepthOptions().parse(["--config", "synthetic_mono"])
    assert (mono.frame_ids, mono.use_stereo, mono.height) == ([0, -1, 1], False, 96)
    assert MonodepthOptions().parse(["--config", "synthetic_quickstart.yaml"]).frame_ids == [0, "s"]
    with pytest.raises(SystemExit, match="no such file; presets in configs/:.*synthetic_mono"):
        MonodepthOptions().parse(["--config", "synthetic_mnoo"])
    with pytest.raises(SystemExit, match="--keep_weights must be >= 0"):
        MonodepthOptions().parse(["--keep_weights", "-1"])


@pytest.mark.slow
def test_quickstart_learns_beyond_untrained_and_constant_predictors(tmp_path):
    """The README's first command on a fresh default world (about 6 minutes on 2 cores)."""
    import quickstart
    metric, trained, untrained, constant = quickstart.main(["--data_path", str(tmp_path / "world"),
                                                            "--log_dir", str(tmp_path / "runs")])
    print(f"\nabs_rel: trained {trained['abs_rel']:.3f} | untrained {untrained['abs_rel']:.3f} | "
          f"constant depth {constant['abs_rel']:.3f}")
    assert trained["abs_rel"] < 0.8 * min(untrained["abs_rel"], constant["abs_rel"])
    assert metric["abs_rel"] < 0.3  # metric depth from the stereo scale, no median scaling
    assert (tmp_path / "runs" / "quickstart" / "example_disp.jpeg").is_file()
