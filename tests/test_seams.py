"""The seams that let a paper be one file in methods/ plus its networks and a preset: a
method defined outside the project's folders trains through train.py with its own option
and parameter groups, resumes exactly with its own state, and is evaluated and used for
prediction from its weight folder alone; every registered network runs; the Trainer and
evaluate_depth.py name no paper and no dataset."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import networks
from methods import METHODS, load_for_inference, method_class
from options import MonodepthOptions
from tests.helpers.cli import evaluate_folder, small_split

networks.load_network_modules()  # the registries, for the parametrisations below

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = "tests.helpers.toy_method"


def _toy_args(world, log_dir, steps, *extra):
    split = small_split(world, os.path.join(os.path.dirname(str(log_dir)), "split"), 8)  # 4 steps per epoch
    return ["--method", TOY, "--data_path", world.out, "--split", split,
            "--png", "--height", "64", "--width", "192", "--weights_init", "scratch", "--batch_size", "2",
            "--num_epochs", "2", "--num_workers", "0", "--log_dir", str(log_dir), "--model_name", "toy",
            "--log_frequency", "1000", "--max_steps", str(steps), "--no_progress", "--no_cuda", "--deterministic",
            "--toy_decoder_lr", "3e-4", "--pose_model_type", "posecnn", "--keep_weights", "1", *extra]


def _train(args):
    res = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _losses(run_dir):
    out = {}
    for line in (run_dir / "toy" / "train_steps.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def toy_runs(static_world, tmp_path_factory):
    """8 steps (2 epochs of 4) straight, and the same run stopped after 6 steps (inside
    epoch 1) and resumed."""
    tmp = tmp_path_factory.mktemp("toy")
    _train(_toy_args(static_world, tmp / "ref", 8))
    _train(_toy_args(static_world, tmp / "run", 6))
    _train(_toy_args(static_world, tmp / "run", 8, "--resume"))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)  # ~1.5 GB of weights and states: not kept to the session's end


@pytest.mark.slow  # 44 s with the next one; the scripts' independence from papers is checked statically below
def test_outside_method_trains_with_its_option_and_two_learning_rates(toy_runs):
    folder = toy_runs / "ref" / "toy" / "models" / "weights_1"
    saved = json.loads((folder / "opt.json").read_text())
    assert saved["method"] == TOY and saved["toy_decoder_lr"] == 3e-4 and saved["toy_smoothness_scale"] == 2.0
    adam = torch.load(folder / "adam.pth", weights_only=True)
    groups = adam["param_groups"]
    assert [g["name"] for g in groups] == ["encoder", "decoder_pose"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 3e-4]) and [g["initial_lr"] for g in groups] == \
        pytest.approx([1e-4, 3e-4])
    method = load_for_inference(str(folder))
    encoder = [p for p in method.models["encoder"].parameters() if p.requires_grad]
    assert len(groups[0]["params"]) == len(encoder)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(method.parameters_to_train())


def test_outside_method_resumes_exactly_with_its_own_state(toy_runs):
    ref, run = _losses(toy_runs / "ref"), _losses(toy_runs / "run")
    assert sorted(ref) == sorted(run) == list(range(8))
    for step in range(6, 8):
        assert run[step] == pytest.approx(ref[step], rel=1e-6, abs=1e-7), step
    state = torch.load(toy_runs / "run" / "toy" / "state" / "last.pt", weights_only=False)
    method_state = state["method_state"]
    # the hooks ran once per step and epoch across the interruption; the resumed run started
    # epoch 1 at batch 2 (6 = 4 + 2)
    assert method_state["steps_seen"] == 8 and method_state["epochs_ended"] == [0, 1]
    assert method_state["epochs_started"] == [(0, 0), (1, 0), (1, 2)]


@pytest.mark.slow
def test_outside_method_is_evaluated_and_predicts_from_its_folder_alone(toy_runs, static_world, tmp_path):
    folder = str(toy_runs / "ref" / "toy" / "models" / "weights_1")
    res, metrics = evaluate_folder(folder, static_world, tmp_path / "m.json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ToyMethod" in res.stdout
    assert metrics["num_images"] == 4 and 0 < metrics["abs_rel"] < 2
    # the same numbers as the method built in this process from the folder
    method = load_for_inference(folder)
    assert type(method).__name__ == "ToyMethod" and method.opt.toy_decoder_lr == 3e-4 and not method.training
    image = os.path.join(static_world.out, "2000_01_01", "2000_01_01_drive_0002_sync", "image_02", "data",
                         "0000000003.png")
    target = tmp_path / "frame.png"
    target.write_bytes(open(image, "rb").read())
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", str(target), "--load_weights_folder",
                          folder, "--save_npy"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    disp = torch.from_numpy(__import__("numpy").load(tmp_path / "frame_disp.npy"))
    assert disp.shape == (1, 1, 64, 192) and (tmp_path / "frame_disp.jpeg").is_file()


def test_trainer_and_evaluation_script_name_no_paper_and_no_dataset():
    names = set(METHODS) | {"use_depth_hints", "depth_hint", "kitti", "eigen", "cityscapes", "nyu", "make3d",
                            "srd", "bdedepth", "mism", "manydepth", "odom"}
    for script in ("trainer.py", "evaluate_depth.py"):
        text = open(os.path.join(ROOT, script)).read().lower()
        found = sorted(n for n in names if re.search(rf"\b{re.escape(n)}", text))
        assert not found, (script, found)


def test_method_options_belong_to_their_method(tmp_path):
    with pytest.raises(SystemExit):
        MonodepthOptions().parse(["--toy_decoder_lr", "1e-3"])  # not an option of monodepth2
    opt = MonodepthOptions().parse(["--method", TOY, "--toy_decoder_lr", "1e-3"])
    assert opt.toy_decoder_lr == 1e-3 and opt.pose_model_type == "separate_resnet"  # with its base's options
    with pytest.raises(SystemExit, match="registered: .*depth_hints.*monodepth2"):
        MonodepthOptions().parse(["--method", "nope"])
    # the monodepth2 selector flag and a preset's method: both pick Depth Hints
    assert MonodepthOptions().parse(["--use_stereo", "--use_depth_hints"]).method == "depth_hints"
    preset = tmp_path / "p.yaml"
    preset.write_text("method: depth_hints\nuse_stereo: true\ntoy_decoder_lr: 1\n")
    with pytest.raises(SystemExit, match="unknown option 'toy_decoder_lr' for --method depth_hints"):
        MonodepthOptions().parse(["--config", str(preset)])
    preset.write_text("method: depth_hints\nuse_stereo: true\n")
    assert MonodepthOptions().parse(["--config", str(preset)]).method == "depth_hints"
    assert method_class("depth_hints").selector == "use_depth_hints"


@pytest.mark.parametrize("encoder", sorted(networks.ENCODERS) + ["efficientnet_b0", "timm:convnext_atto"])
def test_every_encoder_with_every_decoder_on_a_tiny_input(encoder):
    """Every encoder with every decoder of its kind: 5 levels (strides 2-32) or 6 levels
    (stride 1 first: BDEdepth's context encoders, grid decoder); a decoder of the other
    kind refuses the encoder by name."""
    opt = MonodepthOptions().parse(["--encoder", encoder, "--weights_init", "scratch", "--height", "64",
                                    "--width", "96"])
    enc = networks.build_encoder(opt)
    x = torch.rand(2, 3, 64, 96)
    features = enc(x)
    assert [f.shape[1] for f in features] == list(enc.num_ch_enc)
    widths = [f.shape[-1] for f in features]
    assert widths in ([48, 24, 12, 6, 3], [96, 48, 24, 12, 6, 3])  # strides 2 to 32, or 1 to 32
    works = 0
    for name in sorted(networks.DEPTH_DECODERS):
        if (name == "grid") != (len(widths) == 6) or (name == "msf" and len(widths) == 6):
            with pytest.raises(SystemExit, match="--depth_decoder"):
                networks.build_depth_decoder(opt, enc.num_ch_enc, name)
            continue
        scales = [0] if name == "msf" else opt.scales  # the MSF decoder has one output (--scales 0)
        out = networks.build_depth_decoder(argparse.Namespace(**{**vars(opt), "scales": scales}),
                                           enc.num_ch_enc, name)(features)
        works += 1
        for s in scales:
            assert out[("disp", s)].shape == (2, 1, 64 // 2 ** s, 96 // 2 ** s), (encoder, name, s)
            assert 0 < out[("disp", s)].min() and out[("disp", s)].max() < 1
    assert works >= 1


def test_swin_encoder_is_built_at_the_training_size():
    opt = MonodepthOptions().parse(["--encoder", "swin_tiny_patch4_window7_224", "--weights_init", "scratch",
                                    "--height", "96", "--width", "320"])
    enc = networks.build_encoder(opt)
    features = enc(torch.rand(1, 3, 96, 320))
    assert list(enc.num_ch_enc) == [64, 96, 192, 384, 768]  # a stride-2 level made from stride 4
    assert [tuple(f.shape[-2:]) for f in features] == [(48, 160), (24, 80), (12, 40), (6, 20), (3, 10)]


def test_unknown_encoder_is_refused_by_name():
    opt = MonodepthOptions().parse(["--encoder", "resnet_17", "--weights_init", "scratch"])
    with pytest.raises(SystemExit, match="resnet_17.*registered encoder"):
        networks.build_encoder(opt)


def test_monodepth2_folder_without_options_loads_with_its_resnet_depth(tmp_path):
    """A folder in monodepth2's published format (no opt.json): ResNet-34 read from encoder.pth."""
    opt = MonodepthOptions().parse(["--num_layers", "34", "--weights_init", "scratch", "--height", "64",
                                    "--width", "96"])
    from methods import build_method
    source = build_method(opt)
    source.save_weights(str(tmp_path), {"height": 64, "width": 96, "use_stereo": False})
    method = load_for_inference(str(tmp_path))
    assert type(method).__name__ == "Monodepth2" and method.opt.num_layers == 34
    assert (method.opt.height, method.opt.width) == (64, 96)
    x = {("color", 0, 0): torch.rand(1, 3, 64, 96)}
    with torch.no_grad():
        assert torch.equal(method.predict(x)["depth"], source.eval().predict(x)["depth"])
    os.remove(tmp_path / "depth.pth")
    with pytest.raises(SystemExit, match="missing depth.pth"):
        load_for_inference(str(tmp_path))


def test_builtin_table_names_every_method_and_its_module():
    from methods import BUILTIN, SELECTORS, load_all_methods
    load_all_methods()
    assert set(BUILTIN) == set(METHODS)
    for name, module in BUILTIN.items():
        assert METHODS[name].__module__ == f"methods.{module}", name
    for flag, owner in SELECTORS.items():
        assert METHODS[owner].selector == flag
    assert {cls.selector for cls in METHODS.values() if cls.selector} == set(SELECTORS)


def _imported_modules(*command):
    """Top-level packages a command imports (python -X importtime)."""
    res = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=ROOT, capture_output=True, text=True)
    names = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return res, names


def test_help_and_option_parsing_load_no_backbone_library():
    res, names = _imported_modules("train.py", "--help")
    assert res.returncode == 0 and "--learning_rate" in res.stdout
    assert not names & {"torch", "torchvision", "timm", "h5py", "scipy", "cv2", "tensorboardX", "matplotlib"}, names
    for method in ("srd", "mism_student", "dynamic_mf"):  # every built-in's --help is PyTorch-free too
        res, names = _imported_modules("train.py", "--method", method, "--help")
        assert res.returncode == 0 and "--learning_rate" in res.stdout and "torch" not in names, (method, names)
    # a method other than the default loads its own file, not the others'
    res, names = _imported_modules("-c", "from options import MonodepthOptions; "
                                   "MonodepthOptions().parse(['--method', 'srd', '--help'])")
    assert "timm" not in names and "h5py" not in names


def _parser_summary(parser):
    return parser.format_help(), sorted((a.dest, repr(a.default), tuple(a.option_strings)) for a in parser._actions), \
        sorted((k, repr(v)) for k, v in parser._defaults.items())


def test_option_groups_build_the_same_parser_as_the_method_classes():
    """--help and parsing take a built-in method's options from methods/option_groups.py without
    importing its class: the parser must be the one its class hierarchy's add_options builds."""
    from methods import BUILTIN, is_builtin_base, load_all_methods, method_class
    from options import build_parser
    load_all_methods()
    for name in BUILTIN:
        by_name, by_class = build_parser(method_name=name), build_parser(method_class(name))
        assert _parser_summary(by_name) == _parser_summary(by_class), name
        for other in BUILTIN:
            expected = other != name and issubclass(method_class(other), method_class(name))
            assert is_builtin_base(name, other) == expected, (name, other)
