"""BDEdepth's networks: the 6-level encoders (check C18), the grid decoder (C19), the HRNet
ImageNet file (C20), short trainings with them, loading their weight folders for inference,
and test_video.py (C29)."""
import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

import networks
from helpers.batch import fake_batch
from networks.bdedepth_encoders import HRNET_FILE, HRNet18Encoder, ResnetContextEncoder
from networks.grid_decoder import GridDecoder
from options import MonodepthOptions

STRIDES = [1, 2, 4, 8, 16, 32]
HRNET_CHANNELS = [64, 64, 18, 36, 72, 144]
R18_CHANNELS = [64, 64, 64, 128, 256, 512]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: on a shared 2-core machine two OpenMP threads
    spin against the other processes (a 2-step HRNet training measured 77 s instead of 6 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _options(*extra):
    return MonodepthOptions().parse(["--height", "64", "--width", "192", "--batch_size", "2", *extra])


@pytest.fixture(scope="module")
def hrnet():
    torch.manual_seed(0)
    return HRNet18Encoder().eval()


def _check_pyramid(feats, channels, h, w, b=2):
    assert [f.shape[1] for f in feats] == channels
    assert [tuple(f.shape[2:]) for f in feats] == [(h // s, w // s) for s in STRIDES]
    assert all(f.shape[0] == b for f in feats)


# ------------------------------------------------------------------ C18: encoder features
@pytest.mark.parametrize("size", [(192, 640), (96, 320)])
def test_hrnet18_gives_six_levels_at_strides_1_to_32(hrnet, size):
    h, w = size
    with torch.no_grad():
        feats = hrnet(torch.rand(2, 3, h, w))
    assert hrnet.num_ch_enc.tolist() == HRNET_CHANNELS and isinstance(hrnet.num_ch_enc, np.ndarray)
    _check_pyramid(feats, HRNET_CHANNELS, h, w)
    # the raw branch outputs: no classification-head modules, fusion upsampling is bilinear
    assert not any(k.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier"))
                   for k in hrnet.encoder.state_dict())
    ups = [m for m in hrnet.encoder.modules() if isinstance(m, nn.Upsample)]
    # one per (finer, coarser) branch pair and module: stage 2 (1 x 1), 3 (4 x 3), 4 (3 x 6)
    assert len(ups) == 1 + 12 + 18 and all(m.mode == "bilinear" and m.align_corners for m in ups)


def test_resnet_context_gives_six_levels_at_strides_1_to_32():
    enc = networks.build_encoder(_options("--weights_init", "scratch", "--encoder", "resnet_context"))
    assert isinstance(enc, ResnetContextEncoder) and enc.num_ch_enc.tolist() == R18_CHANNELS
    with torch.no_grad():
        _check_pyramid(enc.eval()(torch.rand(2, 3, 96, 320)), R18_CHANNELS, 96, 320)


def test_context_branches_are_copies_of_the_first_convolution(hrnet):
    """Equal tensors (not shared ones), and in eval mode, with the stem's BN statistics, the
    context feature sampled every other pixel is exactly the stride-2 stem feature (same
    kernel, same centres)."""
    hrnet = copy.deepcopy(hrnet)  # its BN statistics are changed below
    enc = ResnetContextEncoder(18, False).eval()
    pairs = [(hrnet.context_conv, hrnet.context_bn, hrnet.encoder.conv1, hrnet.encoder.bn1),
             (enc.conv1, enc.bn1, enc.encoder.conv1, enc.encoder.bn1)]
    for conv, bn, conv1, bn1 in pairs:
        assert conv.stride == (1, 1) and conv1.stride == (2, 2) and conv.kernel_size == conv1.kernel_size
        assert torch.equal(conv.weight, conv1.weight) and conv.weight.data_ptr() != conv1.weight.data_ptr()
        for key in ("weight", "bias"):
            assert torch.equal(getattr(bn, key), getattr(bn1, key)), key
    # make BN statistics non-trivial, copy them, and compare the features
    with torch.no_grad():
        for m in (hrnet.encoder.bn1, enc.encoder.bn1):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 1.5)
        hrnet.context_bn.load_state_dict(hrnet.encoder.bn1.state_dict())
        enc.bn1.load_state_dict(enc.encoder.bn1.state_dict())
        x = torch.rand(1, 3, 64, 96)
        for model in (hrnet, enc):
            context, stem = model(x)[:2]
            assert torch.allclose(context[:, :, ::2, ::2], stem, atol=1e-5)


def test_context_bn_takes_the_stems_affine_terms_but_not_its_statistics(tmp_path):
    """As the released code: the context branch built from an ImageNet-like stem (a weights
    file whose bn1 holds non-trivial running statistics) copies conv1's weight and bn1's
    weight and bias, and its BN keeps fresh statistics (mean 0, variance 1, 0 batches seen);
    so in eval mode at init its feature is relu(gamma conv(x) + beta), not the stem's."""
    import torchvision
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    state["bn1.running_mean"] = torch.rand(64) - 0.5
    state["bn1.running_var"] = torch.rand(64) * 2 + 0.5
    state["bn1.num_batches_tracked"] = torch.tensor(1000)
    state["bn1.weight"] = torch.rand(64) + 0.5
    state["bn1.bias"] = torch.rand(64) - 0.5
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    enc = ResnetContextEncoder(18, True, weights_file=str(path)).eval()
    assert torch.equal(enc.encoder.bn1.running_mean, state["bn1.running_mean"])  # the stem got the file
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])
    assert torch.equal(enc.bn1.weight, state["bn1.weight"]) and torch.equal(enc.bn1.bias, state["bn1.bias"])
    assert torch.equal(enc.bn1.running_mean, torch.zeros(64)) and torch.equal(enc.bn1.running_var, torch.ones(64))
    assert int(enc.bn1.num_batches_tracked) == 0
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        context = enc(x)[0]
        conv = nn.functional.conv2d((x - 0.45) / 0.225, state["conv1.weight"], padding=3)
        expected = torch.relu(conv / (1 + 1e-5) ** 0.5 * state["bn1.weight"][:, None, None]
                              + state["bn1.bias"][:, None, None])
    assert torch.allclose(context, expected, atol=1e-5)


# ------------------------------------------------------------------ C19: grid decoder
def test_grid_decoder_outputs_only_the_asked_scales():
    torch.manual_seed(3)
    feats = [torch.randn(2, c, 96 // s, 320 // s) for c, s in zip(HRNET_CHANNELS, STRIDES)]
    with torch.no_grad():
        out = GridDecoder(HRNET_CHANNELS, [0])(feats)
        assert list(out) == [("disp", 0)] and out[("disp", 0)].shape == (2, 1, 96, 320)
        d = out[("disp", 0)]
        assert d.min() > 0 and d.max() < 1
        out = GridDecoder(HRNET_CHANNELS, [0, 1, 2, 3])(feats)
    assert {k: tuple(v.shape) for k, v in out.items()} == {("disp", s): (2, 1, 96 // 2 ** s, 320 // 2 ** s)
                                                         for s in range(4)}
    assert all(v.min() > 0 and v.max() < 1 for v in out.values())


def test_grid_channels_init_and_options():
    assert GridDecoder(HRNET_CHANNELS).grid_ch == [16, 32, 9, 18, 36, 72]
    assert GridDecoder(R18_CHANNELS).grid_ch == [16, 32, 32, 64, 128, 256]
    dec = networks.build_depth_decoder(_options("--depth_decoder", "grid", "--scales", "0", "1",
                                                "--disp_bias_init", "-3"), np.array(HRNET_CHANNELS))
    weights = torch.cat([m.weight.flatten() for m in dec.modules() if isinstance(m, nn.Conv2d)])
    assert 0.018 < weights.std().item() < 0.022 and abs(weights.mean().item()) < 1e-3
    for s in (0, 1):
        assert torch.all(dec.block("dispconv", s).conv.bias == -3)
    others = [m.bias for m in dec.modules() if isinstance(m, nn.Conv2d) and m.out_channels != 1]
    assert others and all(torch.all(b == 0) for b in others)
    with torch.no_grad():  # sigmoid(-3) = 0.0474 everywhere when the weights are ~0
        feats = [torch.zeros(1, c, 64 // s, 192 // s) for c, s in zip(HRNET_CHANNELS, STRIDES)]
        assert torch.allclose(dec(feats)[("disp", 0)], torch.full((1, 1, 64, 192), 0.0474), atol=1e-3)
    with pytest.raises(SystemExit, match="--scales 0 6"):
        networks.build_depth_decoder(_options("--depth_decoder", "grid", "--scales", "0", "6"),
                                     np.array(HRNET_CHANNELS))
    with pytest.raises(SystemExit, match="--depth_decoder grid takes an encoder with 6 features"):
        networks.build_depth_decoder(_options("--depth_decoder", "grid"), np.array([64, 64, 128, 256, 512]))


def test_grid_wiring_matches_the_node_formula():
    """x[i, j] = Lat[i, j](x[i, j-1]) + Up[i+1, j](x[i+1, j]), x[i, -1] = feature i,
    disp_i = sigmoid(disp conv of x[i, 2]), computed node by node here."""
    torch.manual_seed(1)
    dec = GridDecoder(HRNET_CHANNELS, [0, 2]).eval()
    # larger weights so that every path matters, small enough that the sigmoid never saturates
    # (logits' std about 1; at 0.2 they reach +-300 and the maps are 0 or 1, on some machines all 0)
    for p in dec.parameters():
        p.data.normal_(0, 0.08)
    feats = [torch.randn(1, c, 64 // s, 96 // s) for c, s in zip(HRNET_CHANNELS, STRIDES)]
    memo = {}

    def node(i, j):
        if j < 0:
            return feats[i]
        if (i, j) not in memo:
            x = dec.block("lateral", i, j)(node(i, j - 1))
            if i < 5:
                x = x + dec.block("upconv", i, j)(node(i + 1, j))
            memo[i, j] = x
        return memo[i, j]
    with torch.no_grad():
        out = dec(feats)
        for s in (0, 2):
            expected = torch.sigmoid(dec.block("dispconv", s)(node(s, 2)))
            assert torch.allclose(out[("disp", s)], expected, atol=1e-6)
            assert out[("disp", s)].std() > 0.02  # not a constant map (measured 0.099 and 0.163)
    # Up blocks map level i+1 to i: bilinear x2, PReLU, conv g[i+1] -> g[i]
    up = dec.block("upconv", 2, 0)
    assert isinstance(up[0], nn.Upsample) and up[0].mode == "bilinear" and not up[0].align_corners
    assert (up[2].in_channels, up[2].out_channels) == (18, 9)  # level 3 (g = 18) -> level 2 (g = 9)


def test_five_level_decoders_refuse_six_level_encoders():
    for decoder in ("monodepth2", "srd"):
        opt = _options("--encoder", "hrnet18", "--depth_decoder", decoder)
        with pytest.raises(SystemExit, match=rf"--depth_decoder {decoder} takes .* --encoder hrnet18 gives 6 .*"
                                             "--depth_decoder grid"):
            networks.build_depth_decoder(opt, np.array(HRNET_CHANNELS))


# ------------------------------------------------------------------ C20: the HRNet ImageNet file
def test_hrnet_weights_missing_file_and_offline_hub_fail_clearly(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere" / HRNET_FILE)
    with pytest.raises(SystemExit) as err:
        networks.build_encoder(_options("--encoder", "hrnet18", "--imagenet_weights", missing))
    assert missing in str(err.value) and "--imagenet_weights" in str(err.value)
    assert "--weights_init scratch" in str(err.value)
    import timm
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kwargs)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(SystemExit) as err:
        networks.build_encoder(_options("--encoder", "hrnet18"))
    assert HRNET_FILE in str(err.value) and "--imagenet_weights" in str(err.value) and "no network" in str(err.value)
    # scratch never reads the file
    enc = networks.build_encoder(_options("--encoder", "hrnet18", "--weights_init", "scratch",
                                          "--imagenet_weights", missing))
    assert enc.load_report is None


def test_hrnet_weights_file_in_the_official_layout_loads(tmp_path, capsys):
    """A file with every tensor of a classification HRNet-W18 (the official file's keys:
    timm's names are the official ones), filled with random values."""
    import timm
    torch.manual_seed(2)
    official = {k: (torch.rand_like(v) + 0.5 if v.is_floating_point() else v)
                for k, v in timm.create_model("hrnet_w18").state_dict().items()}
    official_keys = {"conv1.weight", "bn1.running_var", "transition1.1.0.0.weight", "stage2.0.fuse_layers.0.1.0.weight",
                     "stage4.2.branches.3.3.conv2.weight", "incre_modules.0.0.conv1.weight", "classifier.weight"}
    assert official_keys <= set(official)
    path = tmp_path / HRNET_FILE
    torch.save(official, path)
    enc = networks.build_encoder(_options("--encoder", "hrnet18", "--imagenet_weights", str(path)))
    own = enc.encoder.state_dict()
    head = [k for k in official if k not in own]
    assert len(own) == 1830 and len(head) == 126
    assert all(k.startswith(("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")) for k in head)
    assert enc.load_report == {"loaded": 1830, "missing": 0, "unexpected": 126}
    assert ("loaded 1830 tensors, 0 missing, 126 unexpected (126 of them the classification head)"
            in capsys.readouterr().out)
    for k, v in own.items():
        assert torch.equal(v, official[k]), k
    assert torch.equal(enc.context_conv.weight, official["conv1.weight"])
    for key in ("weight", "bias"):  # the affine terms only, as the released code
        assert torch.equal(enc.context_bn.state_dict()[key], official[f"bn1.{key}"])
    assert torch.equal(enc.context_bn.running_mean, torch.zeros(64))
    assert torch.equal(enc.context_bn.running_var, torch.ones(64))
    # a file of another shape stops with the tensor named
    torch.save({"conv1.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(SystemExit, match=r"conv1.weight: \(32, 3, 3, 3\) in the file, \(64, 3, 3, 3\) here"):
        networks.build_encoder(_options("--encoder", "hrnet18", "--imagenet_weights", str(path)))
    path.unlink()


# ------------------------------------------------------------------ pipeline
def test_shared_pose_uses_the_last_level_of_a_six_level_encoder():
    from methods.monodepth2 import Monodepth2
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "96", "--batch_size",
                                    "1", "--encoder", "resnet_context", "--depth_decoder", "grid", "--scales", "0",
                                    "--pose_model_type", "shared"])
    m = Monodepth2(opt)
    assert m.models["pose"].net[0].in_channels == 512 and "pose_encoder" not in m.models
    inputs = fake_batch(opt, b=1)
    terms, _ = m.compute_losses(inputs, m(inputs))
    loss = sum(terms.values())
    loss.backward()
    assert torch.isfinite(loss) and m.models["pose"].net[3].weight.grad.abs().sum() > 0
    assert m.models["encoder"].conv1.weight.grad.abs().sum() > 0  # the context branch is trained


@pytest.fixture(scope="module")
def trained(static_world, tmp_path_factory):
    """Two steps of Monodepth2 with each 6-level encoder and the grid decoder (default pose
    network: its own ResNet-18), 64 x 192."""
    from trainer import Trainer
    tmp = tmp_path_factory.mktemp("bde")
    runs = {}
    for encoder in ("hrnet18", "resnet_context"):
        opt = MonodepthOptions().parse([
            "--data_path", static_world.out, "--split", "synthetic", "--png", "--height", "64", "--width", "192",
            "--weights_init", "scratch", "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0",
            "--log_dir", str(tmp / encoder), "--model_name", "m", "--log_frequency", "1000", "--max_steps", "2",
            "--no_progress", "--no_cuda", "--keep_weights", "1", "--encoder", encoder, "--depth_decoder", "grid",
            "--scales", "0"])
        with pytest.MonkeyPatch.context() as mp:  # the resumable state (~0.3 GB) is not needed here
            mp.setattr(Trainer, "save_state", lambda self: None)
            trainer = Trainer(opt).train()
        runs[encoder] = (trainer, str(tmp / encoder / "m" / "models" / "weights_0"))
    yield runs
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow  # trains two small models (the suite's time budget)
@pytest.mark.parametrize("encoder", ["hrnet18", "resnet_context"])
def test_six_level_encoders_train_with_the_grid_decoder(trained, encoder):
    trainer, folder = trained[encoder]
    assert trainer.step == 2
    records = [json.loads(line) for line in open(os.path.join(os.path.dirname(os.path.dirname(folder)),
                                                              "train_steps.jsonl"))]
    assert len(records) == 2 and all(0 < r["loss"] < 1 for r in records)
    models = trainer.method.models
    assert type(models["encoder"]) is {"hrnet18": HRNet18Encoder, "resnet_context": ResnetContextEncoder}[encoder]
    assert isinstance(models["depth"], GridDecoder) and models["depth"].scales == [0]
    pose_enc = torch.load(os.path.join(folder, "pose_encoder.pth"), weights_only=True)
    assert tuple(pose_enc["encoder.conv1.weight"].shape) == (64, 6, 7, 7)  # the baseline ResNet pose net
    with open(os.path.join(folder, "opt.json")) as f:
        saved = json.load(f)
    assert (saved["encoder"], saved["depth_decoder"], saved["scales"]) == (encoder, "grid", [0])


@pytest.mark.slow  # trains two small models (the suite's time budget)
@pytest.mark.parametrize("encoder", ["hrnet18", "resnet_context"])
def test_weight_folder_rebuilds_for_inference(trained, encoder):
    from methods import load_for_inference
    trainer, folder = trained[encoder]
    method = load_for_inference(folder)
    assert type(method.models["encoder"]) is type(trainer.method.models["encoder"])
    x = torch.rand(1, 3, 64, 192)
    with torch.no_grad():
        ours = method.predict({("color", 0, 0): x})["disp"]
        theirs = trainer.method.eval().predict({("color", 0, 0): x})["disp"]
    assert ours.shape == (1, 1, 64, 192) and torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.slow  # trains two small models (the suite's time budget)
def test_test_simple_and_evaluate_depth_load_a_grid_model(trained, static_world, tmp_path):
    import evaluate_depth
    import test_simple
    from export_gt_depth import export_gt_depths
    _, folder = trained["hrnet18"]
    src = os.path.join(static_world.out, "2000_01_01", "2000_01_01_drive_0001_sync", "image_02", "data")
    shutil.copy(os.path.join(src, "0000000001.png"), tmp_path / "0000000001.png")
    written = test_simple.main(["--image_path", str(tmp_path), "--ext", "png", "--load_weights_folder", folder,
                                "--save_npy", "--no_cuda"])
    from PIL import Image
    assert written == [str(tmp_path / "0000000001_disp.jpeg")]
    assert Image.open(written[0]).size == (640, 192)
    assert np.load(tmp_path / "0000000001_disp.npy").shape == (1, 1, 64, 192)
    split = os.path.join(static_world.out, "splits", "synthetic")
    export_gt_depths(static_world.out, split, "velodyne", "exact", progress=False)
    metrics = evaluate_depth.evaluate(evaluate_depth.parse_args([
        "--load_weights_folder", folder, "--eval_mono", "--eval_split", split, "--data_path", static_world.out,
        "--png", "--num_workers", "0", "--no_cuda"]))
    assert metrics["num_images"] == 4 and 0 < metrics["abs_rel"] < 2 and 0 <= metrics["a1"] <= 1


@pytest.mark.slow  # trains two small models (the suite's time budget)
# ------------------------------------------------------------------ C29: test_video.py
def test_video_has_every_frame_in_name_order(trained, tmp_path):
    import cv2
    from PIL import Image

    import test_video
    trainer, folder = trained["resnet_context"]
    frames = tmp_path / "clip"
    frames.mkdir()
    rng = np.random.default_rng(0)
    levels = [0.15, 0.3, 0.45, 0.6, 0.75]  # brightness by file name; written in another order
    for k in (3, 0, 4, 1, 2):
        image = np.clip(levels[k] + rng.uniform(-0.05, 0.05, (80, 240, 3)), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(frames / f"frame_{k:02d}.png")
    gif, mp4 = test_video.main(["--image_path", str(frames), "--load_weights_folder", folder, "--ext", "png",
                                "--output_dir", str(tmp_path / "out"), "--no_cuda"])
    assert gif == str(tmp_path / "out" / "clip.gif") and mp4 == str(tmp_path / "out" / "clip.mp4")
    video = Image.open(gif)
    assert video.n_frames == 5 and video.size == (192, 128)  # network width x 2 x network height
    assert video.info["duration"] == 150 and video.info["loop"] == 0
    # the bottom halves: the model's colourised disparity of each frame (as test_simple's); the
    # trained model predicts as its weight folder does (test_weight_folder_rebuilds_for_inference)
    from utils import colorize_disparity

    import test_simple
    method = trainer.method.eval()
    images = [Image.open(frames / f"frame_{k:02d}.png").convert("RGB") for k in range(5)]
    with torch.no_grad():
        disp, _ = test_simple.predict_disparity(method, test_simple.network_input(method, images, "cpu"))
    tops = []
    for k in range(5):
        video.seek(k)
        rgb = np.asarray(video.convert("RGB"), dtype=np.float64) / 255
        tops.append(rgb[:64].mean())
        expected = colorize_disparity(disp[k, 0].numpy()) / 255
        assert rgb.shape == (128, 192, 3) and np.abs(rgb[64:] - expected).mean() < 0.02, k
    assert np.allclose(tops, levels, atol=0.03), tops
    capture = cv2.VideoCapture(mp4)
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    assert len(read) == 5 and read[0].shape == (128, 192, 3)
    assert np.allclose([f[:64].mean() / 255 for f in read], levels, atol=0.03)


@pytest.mark.slow  # trains two small models (the suite's time budget)
def test_video_errors_name_the_problem(trained, tmp_path, monkeypatch, capsys):
    import cv2
    from PIL import Image

    import test_video
    _, folder = trained["resnet_context"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no \*.png images"):
        test_video.main(["--image_path", str(tmp_path / "empty"), "--load_weights_folder", folder, "--ext", "png"])
    (tmp_path / "two").mkdir()
    for k in range(2):
        Image.new("RGB", (96, 32), (100 * k, 0, 0)).save(tmp_path / "two" / f"{k}.png")
    with pytest.raises(SystemExit, match="--load_weights_folder .*nope: no such folder"):
        test_video.main(["--image_path", str(tmp_path / "two"), "--load_weights_folder", str(tmp_path / "nope"),
                         "--ext", "png"])
    with pytest.raises(SystemExit, match="a file, not a folder"):
        test_video.main(["--image_path", str(tmp_path / "two" / "0.png"), "--load_weights_folder", folder])
    # no MP4 writer: one line, and the GIF is still written (beside the frames by default)

    class Closed:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False
    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    gif, mp4 = test_video.main(["--image_path", str(tmp_path / "two"), "--load_weights_folder", folder,
                                "--ext", "png", "--no_cuda"])
    assert (gif, mp4) == (str(tmp_path / "two.gif"), None) and Image.open(gif).n_frames == 2
    assert not (tmp_path / "two.mp4").exists()
    assert sum("could not open an 'mp4v' video writer" in line for line in capsys.readouterr().out.splitlines()) == 1


def test_hrnet_weights_file_is_not_given_to_the_pose_resnet(tmp_path):
    """--encoder hrnet18 --imagenet_weights HRNET_FILE: the HRNet file initialises the depth
    encoder only; the separate pose ResNet takes torchvision's ResNet-18 weights (here from
    torch hub's cache)."""
    import timm
    import torchvision
    from methods import build_method
    hrnet_state = timm.create_model("hrnet_w18").state_dict()
    torch.save(hrnet_state, tmp_path / HRNET_FILE)
    resnet_state = torchvision.models.resnet18().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.save(resnet_state, cache / os.path.basename(url))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        method = build_method(MonodepthOptions().parse([
            "--method", "bdedepth", "--height", "64", "--width", "192", "--batch_size", "2",
            "--weights_init", "pretrained", "--imagenet_weights", str(tmp_path / HRNET_FILE)]))
    finally:
        torch.hub.set_dir(old)
    assert torch.equal(method.models["encoder"].encoder.state_dict()["conv1.weight"], hrnet_state["conv1.weight"])
    pose = method.models["pose_encoder"].encoder.state_dict()
    assert torch.equal(pose["layer1.0.conv1.weight"], resnet_state["layer1.0.conv1.weight"])
