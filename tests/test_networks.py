"""Networks: shapes, channels, pose conventions, monodepth2 weight layout (checks 14-16)."""
import json
import os

import pytest
import torch

import networks
from helpers.batch import fake_batch
from networks.resnet_encoder import ResnetEncoder

LAYOUT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "design", "monodepth2_weight_layout.json")


def test_depth_outputs_at_192x640():
    enc = ResnetEncoder(18, False)
    dec = networks.DepthDecoder(enc.num_ch_enc)
    out = dec(enc(torch.rand(2, 3, 192, 640)))
    for s in range(4):
        d = out[("disp", s)]
        assert d.shape == (2, 1, 192 // 2 ** s, 640 // 2 ** s)
        assert d.min() > 0 and d.max() < 1


def test_resnet50_channels():
    enc = ResnetEncoder(50, False)
    feats = enc(torch.rand(1, 3, 64, 96))
    assert enc.num_ch_enc.tolist() == [64, 256, 512, 1024, 2048]
    assert [f.shape[1] for f in feats] == [64, 256, 512, 1024, 2048]


def test_pretrained_two_image_encoder_matches_one_image_on_repeated_input(tmp_path):
    # a stand-in for the ImageNet file: any ResNet-18 state dict, loaded from a local file
    state = ResnetEncoder(18, False).encoder.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    one = ResnetEncoder(18, True, 1, weights_file=str(path)).eval()
    two = ResnetEncoder(18, True, 2, weights_file=str(path)).eval()
    x = torch.rand(1, 3, 64, 96)
    a = one.encoder.conv1((x - 0.45) / 0.225)
    b = two.encoder.conv1((torch.cat([x, x], 1) - 0.45) / 0.225)
    assert torch.allclose(a, b, atol=1e-5)


def test_pretrained_offline_without_cache_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torchvision.models as models

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="--weights_init scratch"):
        ResnetEncoder(18, True)


def test_pose_pairs_ordering_and_scale():
    """f=-1: pose([I_-1, I_0]) inverted; f=+1: pose([I_0, I_1]); outputs are 0.01 x raw."""
    from options import MonodepthOptions
    from methods.monodepth2 import Monodepth2
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "96",
                                    "--batch_size", "1"])
    m = Monodepth2(opt).eval()
    imgs = {f: torch.rand(1, 3, 64, 96) for f in (0, -1, 1)}
    inputs = {("color_aug", f, 0): v for f, v in imgs.items()}
    out = m.predict_poses(inputs, None)
    aa, t = m.models["pose"]([m.models["pose_encoder"](torch.cat([imgs[-1], imgs[0]], 1))])
    from layers import transformation_from_parameters
    assert torch.allclose(out[("cam_T_cam", 0, -1)], transformation_from_parameters(aa[:, 0], t[:, 0], True))
    aa1, t1 = m.models["pose"]([m.models["pose_encoder"](torch.cat([imgs[0], imgs[1]], 1))])
    assert torch.allclose(out[("translation", 0, 1)], t1)
    # raw decoder output x 0.01
    dec = m.models["pose"]
    feats = [m.models["pose_encoder"](torch.cat([imgs[0], imgs[1]], 1))]
    x = torch.cat([dec.relu(dec.net[0](feats[0][-1]))], 1)
    raw = dec.net[3](dec.relu(dec.net[2](dec.relu(dec.net[1](x))))).mean(3).mean(2).view(-1, 2, 1, 6)
    assert torch.allclose(aa1, 0.01 * raw[..., :3], atol=1e-7)


def test_parameter_names_and_shapes_match_monodepth2_files():
    from conftest import require_shared
    with open(require_shared(LAYOUT, "monodepth2's weight layout")) as f:
        layout = json.load(f)
    enc = ResnetEncoder(18, False)
    models = {"encoder.pth": enc, "depth.pth": networks.DepthDecoder(enc.num_ch_enc),
              "pose_encoder.pth": ResnetEncoder(18, False, 2),
              "pose.pth": networks.PoseDecoder(enc.num_ch_enc, 1, 2)}
    for key, expected in layout.items():
        model = models[key.split(" ")[0]]
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == expected, key


@pytest.mark.parametrize("pose_type", ["separate_resnet", "shared", "posecnn"])
def test_every_pose_model_type_trains_a_step(pose_type):
    from options import MonodepthOptions
    from methods.monodepth2 import Monodepth2
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "96",
                                    "--batch_size", "2", "--pose_model_type", pose_type])
    m = Monodepth2(opt)
    inputs = fake_batch(opt)
    out = m(inputs)
    terms, logs = m.compute_losses(inputs, out)
    loss = sum(terms.values())
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"loss/0", "loss/1", "loss/2", "loss/3"}
    grads = [p.grad for p in m.models["pose"].parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("flags", [["--v1_multiscale"], ["--avg_reprojection"], ["--no_ssim"],
                                   ["--disable_automasking", "--predictive_mask"],
                                   ["--use_stereo", "--frame_ids", "0"], ["--use_stereo"],
                                   ["--pose_model_input", "all"]])
def test_ablation_flags_give_finite_losses(flags):
    from options import MonodepthOptions
    from methods.monodepth2 import Monodepth2
    opt = MonodepthOptions().parse(["--weights_init", "scratch", "--height", "64", "--width", "96",
                                    "--batch_size", "2"] + flags)
    m = Monodepth2(opt)
    inputs = fake_batch(opt)
    terms, _ = m.compute_losses(inputs, m(inputs))
    total = sum(terms.values())
    assert torch.isfinite(total) and 0 < total.item() < 1
    assert ("pose" in m.models) == (opt.frame_ids != [0, "s"])
