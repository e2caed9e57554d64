"""What a new user meets first: short errors that name the wrong input, resume from the
run's name alone, released models by name (download, checksum, cache), split names, bad
files in the middle of a run, failed writes, help texts, the time estimate."""
import argparse
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch

import model_zoo
from options import MonodepthOptions
from trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PoseCNN instead of a second ResNet-18: weight folders and states of ~180 MB instead of ~310 MB
SMALL = ["--pose_model_type", "posecnn"]


def _args(world, log_dir, *extra, steps=3):
    return ["--data_path", world.out, "--split", "synthetic", "--png", "--height", "64", "--width", "192",
            "--weights_init", "scratch", "--batch_size", "2", "--num_epochs", "2", "--num_workers", "0",
            "--log_dir", str(log_dir), "--model_name", "m", "--log_frequency", "1000", "--max_steps", str(steps),
            "--no_progress", "--no_cuda", *SMALL, *extra]


def _run(args, script="train.py"):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _losses(run_dir):
    out = {}
    for line in (run_dir / "m" / "train_steps.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


# ------------------------------------------------------------------ short errors, early
@pytest.mark.parametrize("case", ["data_path", "split", "weights_folder", "image_format"])
def test_wrong_inputs_are_named_in_a_few_lines_before_anything_slow(static_world, tmp_path, case):
    """--weights_init pretrained (the default) would need ImageNet weights: the user's own
    mistake must be reported first, in at most three lines."""
    args = _args(static_world, tmp_path)
    args[args.index("--weights_init") + 1] = "pretrained"
    expected = {"data_path": "--data_path", "split": "split 'synthetc' not found",
                "weights_folder": "--load_weights_folder", "image_format": "pass --png"}[case]
    if case == "data_path":
        args[args.index("--data_path") + 1] = str(tmp_path / "no_such_world")
    elif case == "split":
        args[args.index("--split") + 1] = "synthetc"
    elif case == "weights_folder":
        args += ["--load_weights_folder", str(tmp_path / "no_such_folder")]
    else:
        args.remove("--png")
    res = _run(args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and expected in res.stderr and len(lines) <= 3, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "ImageNet" not in res.stderr


def test_split_names_of_the_synthetic_world(static_world):
    from options import SPLITS_DIR, resolve_split_dir
    assert resolve_split_dir("synthetic", static_world.out) == os.path.join(static_world.out, "splits", "synthetic")
    assert resolve_split_dir("eigen", static_world.out) == os.path.join(SPLITS_DIR, "eigen")
    with pytest.raises(SystemExit) as e:
        resolve_split_dir("nope", static_world.out)
    listed = str(e.value).split("available: ")[1].split(", ")
    assert "synthetic" in listed and "eigen_zhou" in listed and not any(n.endswith(".txt") for n in listed)


# ------------------------------------------------------------------ resume by name
def test_resume_refuses_changed_options_and_a_missing_run(static_world, tmp_path):
    models = tmp_path / "run" / "m" / "models"
    models.mkdir(parents=True)
    opt = MonodepthOptions().parse(_args(static_world, tmp_path / "run"))
    (models / "opt.json").write_text(json.dumps(vars(opt), default=str))
    resumed = MonodepthOptions().parse(["--log_dir", str(tmp_path / "run"), "--model_name", "m", "--resume"])
    assert (resumed.height, resumed.max_steps) == (64, 3)
    with pytest.raises(SystemExit, match=r"--height \(run: 64, given: 96\)"):
        MonodepthOptions().parse(["--log_dir", str(tmp_path / "run"), "--model_name", "m", "--resume", "--height", "96"])
    with pytest.raises(SystemExit, match="no run to continue"):
        MonodepthOptions().parse(["--log_dir", str(tmp_path / "nothing"), "--model_name", "m", "--resume"])


@pytest.mark.slow  # three trainings (the default suite's time budget; resume: test_scaling.py)
def test_resume_from_the_model_name_alone_continues_the_same_run(static_world, tmp_path):
    options = ["--scheduler_step_size", "1", "--disparity_smoothness", "0.01", "--deterministic"]
    Trainer(MonodepthOptions().parse(_args(static_world, tmp_path / "ref", *options, steps=12))).train()
    assert _run(_args(static_world, tmp_path / "run", *options, steps=6)).returncode == 0
    res = _run(["--log_dir", str(tmp_path / "run"), "--model_name", "m", "--resume", "--max_steps", "12",
                "--no_progress"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--max_steps 6 -> 12" in res.stdout
    ref, run = _losses(tmp_path / "ref"), _losses(tmp_path / "run")
    assert sorted(run) == list(range(12))
    for step in range(6, 12):  # the run's own options (LR steps every epoch, smoothness) were restored
        assert run[step] == pytest.approx(ref[step], rel=1e-6, abs=1e-7), step
    res = _run(["--log_dir", str(tmp_path / "run"), "--model_name", "m", "--resume", "--height", "96"])
    assert res.returncode != 0 and "--height (run: 64, given: 96)" in res.stderr
    res = _run(["--log_dir", str(tmp_path / "nothing"), "--model_name", "m", "--resume"])
    assert res.returncode != 0 and "no run to continue" in res.stderr


# ------------------------------------------------------------------ released models
@pytest.fixture
def model_server(tmp_path):
    """A zip of a (random) monodepth2 weight folder served on 127.0.0.1, and its MD5."""
    from methods import build_method
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "192"])
    folder = tmp_path / "served_model"
    build_method(opt).save_weights(str(folder), {"height": 64, "width": 192, "use_stereo": True})
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "tiny.zip", "w") as z:
        for name in ("encoder.pth", "depth.pth"):
            z.write(folder / name, f"tiny/{name}")
    md5 = hashlib.md5((site / "tiny.zip").read_bytes()).hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(site), **k)

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tiny.zip", md5
    server.shutdown()


def test_released_model_is_downloaded_checked_cached_and_predicts(model_server, tmp_path, monkeypatch):
    url, md5 = model_server
    cache = tmp_path / "cache"
    table = {"tiny_640x192": (url, md5), "tiny_bad": (url, "0" * 32), "tiny_offline": ("http://127.0.0.1:9/x.zip", md5)}
    folder = model_zoo.released_model("tiny_640x192", str(cache), table, progress=False)
    assert sorted(os.listdir(folder)) == ["depth.pth", "encoder.pth"]
    unreachable = {"tiny_640x192": ("http://127.0.0.1:9/gone.zip", md5)}
    assert model_zoo.released_model("tiny_640x192", str(cache), unreachable, progress=False) == folder  # cached
    with pytest.raises(SystemExit, match="has MD5 .* not 0000"):
        model_zoo.released_model("tiny_bad", str(cache), table, progress=False)
    assert not os.path.exists(cache / "tiny_bad") and not [f for f in os.listdir(cache) if f.endswith(".zip")]
    with pytest.raises(SystemExit, match=r"could not download .*unzip it into .*tiny_offline"):
        model_zoo.released_model("tiny_offline", str(cache), table, progress=False)
    # test_simple --model_name, with --output_dir
    monkeypatch.setattr(model_zoo, "RELEASED", table)
    monkeypatch.setenv("DEPTHKIT_CACHE", str(tmp_path / "cache2"))
    import test_simple
    out = tmp_path / "out"
    written = test_simple.main(["--image_path", os.path.join(ROOT, "assets", "test_image.jpg"), "--model_name",
                                "tiny_640x192", "--output_dir", str(out), "--save_npy", "--no_cuda"])
    assert written == [str(out / "test_image_disp.jpeg")]
    assert np.load(out / "test_image_disp.npy").shape == (1, 1, 64, 192)
    from PIL import Image
    assert Image.open(written[0]).size == (1242, 375)


# ------------------------------------------------------------------ bad files, failed writes
def _world_with_a_truncated_image(world, tmp_path):
    root = tmp_path / "world"
    shutil.copytree(world.out, root, ignore=shutil.ignore_patterns("depth_dense", "proj_depth"))
    with open(root / "splits" / "synthetic" / "train_files.txt") as f:
        line = f.read().splitlines()[5]
    folder, frame, side = line.split()
    image = root / folder / f"image_0{2 if side == 'l' else 3}" / "data" / f"{int(frame):010d}.png"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 3])
    return root, image


@pytest.mark.slow  # 23 s: a whole run with --skip_bad_items
def test_unreadable_image_mid_run_is_named_and_the_state_is_kept(static_world, tmp_path):
    root, image = _world_with_a_truncated_image(static_world, tmp_path)
    args = _args(static_world, tmp_path / "run", steps=8)  # one epoch: every item, the bad one too
    args[args.index("--data_path") + 1] = str(root)
    res = _run(args)
    assert res.returncode == 1
    message = res.stderr.strip().splitlines()
    assert str(image) in res.stderr and "line 6 of" in res.stderr and "Traceback" not in res.stderr
    assert len(message) <= 4, message
    state = torch.load(tmp_path / "run" / "m" / "state" / "last.pt", weights_only=False)
    assert state["step"] >= 0 and "optimizer" in state  # resumable from the last completed step
    # --skip_bad_items: training goes on, and the logs count what was skipped
    res = _run(args[:] + ["--skip_bad_items", "--model_name", "skip"])
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [json.loads(line) for line in (tmp_path / "run" / "skip" / "train_steps.jsonl").read_text().splitlines()]
    assert len(steps) == 8 and steps[-1]["skipped_items"] >= 1
    assert "-> skipped:" in res.stderr and str(image) in res.stderr


def test_a_failed_write_keeps_the_previous_weights_and_state(static_world, tmp_path, monkeypatch):
    t = Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, "--state_frequency", "1", steps=2)))
    t.train()
    models = tmp_path / "m" / "models"
    state_dir = tmp_path / "m" / "state"
    before = {p.name: p.read_bytes() for p in (models / "weights_0").iterdir()}
    last = (state_dir / "last.pt").read_bytes()
    import utils

    def full_disk(path, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(utils, "atomic_write_bytes", full_disk)
    import training.checkpoints as ck
    monkeypatch.setattr(ck, "atomic_write_bytes", full_disk)
    t.step += 1  # a new state and a new weight folder for the same epoch
    with pytest.raises(OSError, match="No space"):
        t.save_model()
    with pytest.raises(OSError, match="No space"):
        t.save_state()
    assert {p.name: p.read_bytes() for p in (models / "weights_0").iterdir()} == before
    assert (state_dir / "last.pt").read_bytes() == last
    assert not [p for p in models.iterdir() if p.name.endswith(".tmp")]  # no half-written folder left
    monkeypatch.undo()
    resumed = Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, "--resume", steps=2)))
    assert resumed.step == 2


# ------------------------------------------------------------------ help and time left
class _Stop(Exception):
    pass


def _parser_of(call, monkeypatch):
    """The (last) parser with a help option that `call` builds before parsing."""
    seen = []

    def capture(self, args=None, namespace=None):
        if self.add_help:
            seen.append(self)
            raise _Stop
        return original(self, args, namespace)
    original = argparse.ArgumentParser.parse_known_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Stop):
        call()
    monkeypatch.undo()
    return seen[-1]


def test_every_script_has_its_own_options_each_with_help_and_default(monkeypatch):
    import evaluate_pose
    import export_gt_depth
    import precompute_depth_hints
    import quickstart
    import test_simple
    from methods import METHODS, load_all_methods, method_class
    from options import build_parser
    from synthetic_world import parse_args as world_args
    load_all_methods()
    parsers = {f"train --method {name}": build_parser(method_class(name)) for name in list(METHODS)}
    for name, call in (("test_simple", lambda: test_simple.parse_args([])),
                       ("evaluate_pose", lambda: evaluate_pose.parse_args([])),
                       ("export_gt_depth", lambda: export_gt_depth.main([])),
                       ("precompute_depth_hints", lambda: precompute_depth_hints.main([])),
                       ("quickstart", lambda: quickstart.main([])),
                       ("synthetic_world", lambda: world_args([]))):
        parsers[name] = _parser_of(call, monkeypatch)
    for name, parser in parsers.items():
        assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter, name  # defaults shown
        for action in parser._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 8, (name, action.option_strings)



def test_evaluate_help_lists_every_method_option_in_under_90_lines(capsys):
    import evaluate_depth
    from methods import METHODS, load_all_methods
    with pytest.raises(SystemExit) as done:
        evaluate_depth.parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--learning_rate" not in text and len(text.splitlines()) < 90  # 78 lines
    load_all_methods()
    options = {o for cls in METHODS.values() for o in cls.inference_options}
    assert {"eval_teacher", "single_frame", "eval_branch", "mnet_weights_folder"} <= options
    for option in options:
        assert f"--{option}" in text, option
    for line in text.splitlines():
        if line.strip().startswith("--") and "default" not in line:
            assert "(default: None)" not in line


def test_time_left_counts_steps_and_validations(static_world, tmp_path):
    t = Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, steps=0)))
    t.num_total_steps, t.step, t.epoch = 16, 0, 0
    t.step_times.extend([2.0])
    assert t.time_left() == pytest.approx(2.0 * 15)  # at batch 0: the first step's time, not zero
    t.val_seconds = 5.0
    assert t.time_left() == pytest.approx(2.0 * 15 + 5.0 * 2)
    t.step, t.epoch = 9, 1
    t.step_times.extend([1.0] * 49)
    assert t.time_left() == pytest.approx(np.mean([2.0] + [1.0] * 49) * 6 + 5.0)


# ------------------------------------------------------------------ runs that never mix
def test_a_second_run_into_a_run_folder_is_refused_and_overwrite_starts_afresh(static_world, tmp_path, capsys):
    Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, steps=1))).train()
    out = capsys.readouterr().out
    assert "-> finished at step 1" in out and str(tmp_path / "m" / "models") in out  # the closing line
    with pytest.raises(SystemExit) as refused:
        Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, steps=1)))
    message = str(refused.value)
    assert "--resume" in message and "--overwrite" in message and "--model_name" in message
    assert len(message.splitlines()) == 1
    # --overwrite: the earlier run's files are gone, the logs hold the new run only
    (tmp_path / "m" / "notes.txt").write_text("kept")  # not a run file
    Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, "--overwrite", steps=2))).train()
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "train_steps.jsonl").read_text().splitlines()]
    assert steps == [0, 1]
    assert (tmp_path / "m" / "notes.txt").read_text() == "kept"
    assert len(os.listdir(tmp_path / "m" / "train")) == 1  # one TensorBoard event file


def test_overwrite_refuses_to_remove_what_the_run_reads(static_world, tmp_path):
    Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, steps=1))).train()
    weights = tmp_path / "m" / "models" / "weights_0"
    with pytest.raises(SystemExit, match="--load_weights_folder"):
        Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, "--overwrite", "--load_weights_folder",
                                               str(weights), steps=1)))
    assert weights.is_dir()


def test_progress_bar_ends_at_max_steps(static_world, tmp_path, monkeypatch):
    import trainer as trainer_module
    totals = []

    class Bar:
        def __init__(self, *args, total=None, **kwargs):
            totals.append(total)

        def update(self, *args):
            pass

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    t = Trainer(MonodepthOptions().parse(_args(static_world, tmp_path, steps=2)))
    assert len(t.train_loader) > 2
    monkeypatch.setattr(trainer_module, "tqdm", type("T", (), {"__new__": lambda cls, *a, **k: Bar(*a, **k),
                                                               "write": staticmethod(print)}))
    t.train()
    assert totals[0] == 2


def test_unreadable_image_in_a_folder_is_named_and_the_others_predicted(static_world, tmp_path, capsys):
    Trainer(MonodepthOptions().parse(_args(static_world, tmp_path / "run", steps=1))).train()
    folder = tmp_path / "images"
    folder.mkdir()
    drive = os.path.join(static_world.out, "2000_01_01", "2000_01_01_drive_0001_sync", "image_02", "data")
    for frame in (1, 2):
        shutil.copy(os.path.join(drive, f"{frame:010d}.png"), folder / f"{frame:010d}.png")
    (folder / "0000000001b.png").write_text("not an image")
    import test_simple
    with pytest.raises(SystemExit) as failed:
        test_simple.main(["--image_path", str(folder), "--ext", "png", "--load_weights_folder",
                          str(tmp_path / "run" / "m" / "models" / "weights_0"), "--no_cuda"])
    assert "1 of 3 image(s) could not be read" in str(failed.value) and "0000000001b.png" in str(failed.value)
    out = capsys.readouterr().out
    assert "0000000001b.png: not a readable image" in out and "Traceback" not in out
    assert sorted(p.name for p in folder.glob("*_disp.jpeg")) == ["0000000001_disp.jpeg", "0000000002_disp.jpeg"]
