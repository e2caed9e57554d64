"""SRD: the offset-refinement decoder, the teacher snapshot, the geometric filter and the
distillation loss (the spec's checks C1-C10), the optimiser recipe, resume with the teacher,
and evaluation / prediction of an SRD weight folder with the baseline's commands."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import networks
from layers import multiview_consistency
from methods.srd import distillation_loss, distillation_mask
from networks.srd_decoder import SRDDecoder, resample_with_offsets
from options import MonodepthOptions
from tests.helpers.cli import evaluate_folder, kill_after_steps, small_split, train_steps
from trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the spec's channel lists (feature 0 at stride 2): ResNet-18, ResNet-50, MPViT-small, Swin-T
CHANNELS = {"resnet18": [64, 64, 128, 256, 512], "resnet50": [64, 256, 512, 1024, 2048],
            "mpvit_small": [64, 128, 216, 288, 288], "swin_t": [64, 96, 192, 384, 768]}


@pytest.fixture
def single_thread():
    """One intra-op thread for one test (not the module-wide `one_thread`: this module's resume
    tests compare in-process losses with a train.py subprocess's, bit for bit, at the default
    thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features(channels, batch, height, width):
    return [torch.randn(batch, c, height // 2 ** (i + 1), width // 2 ** (i + 1)) for i, c in enumerate(channels)]


# ----------------------------------------------------------------------------- decoder (C1-C4)
def test_decoder_shapes_and_ranges():
    """C1: B x 3 x 192 x 640 -> disp0..3 from 192x640 to 24x80 in (0, 1), delta0..2 B x 2."""
    torch.manual_seed(0)
    encoder = networks.ResnetEncoder(18, False)
    decoder = SRDDecoder(encoder.num_ch_enc)
    with torch.no_grad():
        out = decoder(encoder(torch.rand(2, 3, 192, 640)))
    for s in range(4):
        assert out[("disp", s)].shape == (2, 1, 192 // 2 ** s, 640 // 2 ** s)
        d = out[("disp", s)]
        assert d.min() > 0 and d.max() < 1
    for s in range(3):
        assert out[("delta", s)].shape == (2, 2, 192 // 2 ** s, 640 // 2 ** s)
    assert ("delta", 3) not in out


def test_fresh_offsets_are_zero_and_resampling_is_bilinear_upsampling():
    """C2: a fresh offset head gives delta = 0 everywhere, and the resampled coarse disparity
    is bilinear upsampling with align_corners=True."""
    torch.manual_seed(1)
    decoder = SRDDecoder(CHANNELS["resnet18"])
    with torch.no_grad():
        out = decoder(_features(CHANNELS["resnet18"], 2, 64, 96))
    for s in range(3):
        assert torch.count_nonzero(out[("delta", s)]) == 0
    coarse = torch.rand(2, 1, 6, 10)
    moved = resample_with_offsets(coarse, (12, 20), torch.zeros(2, 2, 12, 20))
    expected = F.interpolate(coarse, size=(12, 20), mode="bilinear", align_corners=True)
    assert torch.allclose(moved, expected, atol=1e-6)


def test_offset_units_are_fine_pixels():
    """C3: delta = (+1, 0) shifts a horizontal ramp by exactly one fine-resolution pixel."""
    h, w = 12, 20
    coarse = torch.linspace(0, 1, 10).view(1, 1, 1, 10).expand(1, 1, 6, 10).contiguous()
    up = resample_with_offsets(coarse, (h, w), torch.zeros(1, 2, h, w))
    delta = torch.zeros(1, 2, h, w)
    delta[:, 0] = 1.0
    shifted = resample_with_offsets(coarse, (h, w), delta)
    assert torch.allclose(shifted[..., :-1], up[..., 1:], atol=1e-6)
    delta_y = torch.zeros(1, 2, h, w)
    delta_y[:, 1] = 1.0  # a vertical offset leaves a horizontal ramp unchanged (inside the image)
    assert torch.allclose(resample_with_offsets(coarse, (h, w), delta_y)[:, :, :-1], up[:, :, :-1], atol=1e-6)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_decoder_takes_the_papers_encoder_channels(name):
    """C4: the decoder runs on ResNet-18/50, MPViT-small and Swin-T channel lists."""
    decoder = SRDDecoder(CHANNELS[name])
    with torch.no_grad():
        out = decoder(_features(CHANNELS[name], 1, 64, 128))
    assert out[("disp", 0)].shape == (1, 1, 64, 128)


def test_every_registered_encoder_and_a_timm_swin_work_with_the_decoder():
    """C4: every 5-level encoder of the registry (the 6-level ones, with a stride-1
    feature, are refused by name), and timm's Swin-T built at the training size."""
    from options import build_parser
    from methods import method_class
    opt = build_parser(method_class("srd")).parse_args(["--weights_init", "scratch", "--height", "64",
                                                        "--width", "96"])
    image = torch.rand(1, 3, 64, 96)
    networks.load_network_modules()
    for name in sorted(networks.ENCODERS):
        encoder = networks.build_encoder(opt, name)
        if len(encoder.num_ch_enc) == 6:
            with pytest.raises(SystemExit, match="--depth_decoder grid"):
                networks.build_depth_decoder(opt, encoder.num_ch_enc)
            continue
        decoder = networks.build_depth_decoder(opt, encoder.num_ch_enc)
        with torch.no_grad():
            assert decoder(encoder(image))[("disp", 0)].shape == (1, 1, 64, 96), name
    opt.height, opt.width = 96, 320  # built at the training size (timm pads the 7x7 windows)
    encoder = networks.build_encoder(opt, "swin_tiny_patch4_window7_224")
    assert list(encoder.num_ch_enc) == CHANNELS["swin_t"]
    decoder = networks.build_depth_decoder(opt, encoder.num_ch_enc)
    with torch.no_grad():
        assert decoder(encoder(torch.rand(1, 3, 96, 320)))[("disp", 0)].shape == (1, 1, 96, 320)


# ----------------------------------------------------------------------------- method on a batch
def _method_opt(*extra, method="srd"):
    return MonodepthOptions().parse(["--method", method, "--weights_init", "scratch", "--height", "64",
                                     "--width", "96", "--batch_size", "2", "--num_workers", "0",
                                     "--data_path", ROOT, "--split", "eigen_zhou", *extra])


def _batch(batch=2, height=64, width=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]])
    for s in range(4):
        Ks = K.clone()
        Ks[:2] /= 2 ** s
        inputs[("K", s)] = Ks.expand(batch, 4, 4).clone()
        inputs[("inv_K", s)] = torch.linalg.inv(Ks).expand(batch, 4, 4).clone()
    for f in (0, -1, 1):
        img = torch.rand(batch, 3, height, width, generator=g)
        for s in range(4):
            scaled = F.interpolate(img, size=(height // 2 ** s, width // 2 ** s), mode="bilinear",
                                   align_corners=False)
            inputs[("color", f, s)] = scaled
            inputs[("color_aug", f, s)] = scaled
    return inputs


def test_epoch_zero_loss_equals_the_baseline():
    """C5: without a teacher, SRD's loss is Monodepth2's with the same networks and batch."""
    from methods import build_method
    torch.manual_seed(0)
    srd = build_method(_method_opt())
    base = build_method(_method_opt("--depth_decoder", "srd", method="monodepth2"))
    base.load_state_dict(srd.state_dict())
    inputs = _batch()
    losses = []
    for method in (srd, base):
        method.train()
        torch.manual_seed(5)  # the auto-mask's tie-breaking noise
        terms, _ = method.compute_losses(inputs, method(inputs))
        losses.append(terms)
    assert set(losses[0]) == set(losses[1]) == {"reprojection", "smoothness"}
    for k in losses[0]:
        assert torch.equal(losses[0][k], losses[1][k]), k


def test_teacher_snapshot_is_frozen_and_outside_the_weights():
    """C6: the teacher equals the student at the end of the epoch, stays so while the student
    trains, is in eval mode, never gets a gradient, and is not in the weights or parameters."""
    from methods import build_method
    torch.manual_seed(0)
    method = build_method(_method_opt())
    method.train()
    method.on_epoch_end(0)
    teacher = method.teacher
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = method.models["encoder"].state_dict()
    assert all(torch.equal(student[k], snapshot["encoder." + k]) for k in student)
    assert not any(k.startswith("teacher") for k in method.state_dict())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in method.parameters()}
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    inputs = _batch()
    for _ in range(2):
        method.train()
        outputs = method(inputs)
        terms, logs = method.compute_losses(inputs, outputs)
        assert "distillation" in terms and terms["distillation"] > 0
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(after[k], snapshot[k]) for k in snapshot)  # BN statistics included
    moved = method.models["depth"].state_dict()
    assert any(not torch.equal(moved[k], snapshot["depth." + k]) for k in moved)


def test_distillation_loss_values():
    """C9: M = 0 gives 0; M = 1 gives 0.1 mean |D_s - D_T|; no gradient reaches the teacher."""
    torch.manual_seed(0)
    d = torch.rand(2, 1, 8, 12, requires_grad=True) * 10
    t = (torch.rand(2, 1, 8, 12) * 10).requires_grad_(True)
    assert distillation_loss(d, t, torch.zeros_like(d), 0.1).item() == 0
    loss = distillation_loss(d, t, torch.ones_like(d), 0.1)
    assert loss.item() == pytest.approx(0.1 * (d - t).abs().mean().item(), rel=1e-6)
    loss.backward()
    assert t.grad is None


# ----------------------------------------------------------------------------- filter (C7, C8, C10)
def _camera(height=48, width=64, batch=1):
    K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    return K.expand(batch, 4, 4).clone(), torch.linalg.inv(K).expand(batch, 4, 4).clone()


def _pose(tx=0.0, ty=0.0, tz=0.0, yaw=0.0, batch=1):
    T = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    T[0, 0], T[0, 2], T[2, 0], T[2, 2] = c, s, -s, c
    T[:3, 3] = torch.tensor([tx, ty, tz], dtype=torch.float64)
    return T.expand(batch, 4, 4).clone()


def _plane_depths(T, K, inv_K, height=48, width=64, depth=10.0):
    """A fronto-parallel wall at `depth` in the target camera and its true depth in the source."""
    d = torch.full((1, 1, height, width), depth, dtype=torch.float64)
    # the wall Z = depth in the target is the plane n.X = depth; in the source camera the
    # depth of a pixel q is depth_src(q) = (depth - n.R^T(-t)) / (n.R^T K^-1 q)
    R, t = T[0, :3, :3], T[0, :3, 3]
    n = torch.tensor([0, 0, 1.0], dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    rays = inv_K[0, :3, :3] @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(height * width,
                                                                                 dtype=torch.float64)])
    nr = n @ R.T
    src = (depth + nr @ t) / (nr @ rays)
    return d, src.view(1, 1, height, width)


def test_consistent_depth_passes_and_out_of_view_pixels_leave_the_mask():
    """C7: a wall seen after a sideways move: rel ~ 0 wherever the pixel lands in the source
    image; the columns that leave the source image are not in M."""
    K, inv_K = _camera()
    T = _pose(tx=-1.0)  # the source camera is 1 m to the right: points move left by fx/10 ~ 3.7 px
    d, d_src = _plane_depths(T, K, inv_K)
    rel, in_view = multiview_consistency(d, d_src, T, K, inv_K)
    assert rel[in_view].max() < 1e-9
    shift = K[0, 0, 0].item() * 1.0 / 10.0
    x_src = torch.arange(64, dtype=torch.float64) - shift
    assert torch.equal(in_view[0, 0, 0], x_src >= 0)
    mask = distillation_mask(d.float() + 0.01 * torch.rand_like(d.float()), d_src.float(), T.float(),
                             K.float(), inv_K.float())
    assert mask[0, 0][:, x_src < 0].sum() == 0
    assert mask.sum() > 0


def test_corrupted_source_depth_leaves_the_mask():
    """C8: scaling the source depth x3 in a region removes the pixels that land there."""
    K, inv_K = _camera()
    T = _pose(tz=0.5, yaw=0.01)
    d, d_src = _plane_depths(T, K, inv_K)
    noise = 1 + 0.002 * torch.randn(d.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = d * noise  # a little disagreement everywhere, so the mean is not dominated by the region
    corrupted = d_src.clone()
    corrupted[..., 10:30, 20:40] *= 3
    mask = distillation_mask(d.float(), corrupted.float(), T.float(), K.float(), inv_K.float())
    # target pixels whose projection lands well inside the corrupted block
    rel_clean, _ = multiview_consistency(d, d_src, T, K, inv_K)
    rel_bad, in_view = multiview_consistency(d, corrupted, T, K, inv_K)
    hit = (rel_bad > 1.0) & in_view
    assert hit.sum() > 100
    assert mask[hit].sum() == 0
    # elsewhere most pixels stay
    assert mask[~hit & in_view].mean() > 0.3
    assert rel_clean[in_view].max() < 0.02


def _numpy_reference(depth, depth_src, T, K):
    """Per-sample float64 NumPy version of the check, as the reference code computes it:
    back-project, project, sample the source depth bilinearly with cv2.remap's conventions
    (pixel centres at integers, 0 outside), return to the target camera."""
    B, _, H, W = depth.shape
    rel = np.zeros((B, H, W))
    for b in range(B):
        Kb, Tb = K[b, :3, :3], T[b]
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
        p = np.stack([xs.ravel(), ys.ravel(), np.ones(H * W)])
        X = depth[b, 0].ravel() * (np.linalg.inv(Kb) @ p)
        Xs = Tb[:3, :3] @ X + Tb[:3, 3:]
        q = Kb @ Xs
        u, v = q[0] / q[2], q[1] / q[2]
        src = np.pad(depth_src[b, 0], 1)  # zeros around: cv2.BORDER_CONSTANT
        x0, y0 = np.floor(u), np.floor(v)
        ax, ay = u - x0, v - y0
        val = np.zeros(H * W)
        for dy, wy in ((0, 1 - ay), (1, ay)):
            for dx, wx in ((0, 1 - ax), (1, ax)):
                xi = np.clip(x0 + dx, -1, W).astype(int) + 1
                yi = np.clip(y0 + dy, -1, H).astype(int) + 1
                val += wx * wy * src[yi, xi]
        back = val * (np.linalg.inv(Kb) @ np.stack([u, v, np.ones(H * W)]))
        Xt = Tb[:3, :3].T @ (back - Tb[:3, 3:])
        rel[b] = (np.abs(Xt[2] - depth[b, 0].ravel()) / depth[b, 0].ravel()).reshape(H, W)
    return rel


def test_batched_filter_matches_a_numpy_reference():
    """C10: the batched device filter equals a per-sample float64 NumPy check within 1e-4."""
    import cv2
    g = torch.Generator().manual_seed(3)
    B, H, W = 3, 48, 64
    K, inv_K = _camera(H, W, B)
    base = torch.rand(B, 1, 6, 8, generator=g, dtype=torch.float64) * 20 + 5
    depth = F.interpolate(base, size=(H, W), mode="bicubic", align_corners=False).clamp(min=3)
    depth_src = depth * (1 + 0.05 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64))
    T = torch.cat([_pose(0.3 * i - 0.3, 0.02, 0.8, 0.02 * (i - 1)) for i in range(B)])
    rel, in_view = multiview_consistency(depth.float(), depth_src.float(), T.float(), K.float(), inv_K.float())
    ref = _numpy_reference(depth.numpy(), depth_src.numpy(), T.numpy(), K.numpy())
    assert in_view.float().mean() > 0.5
    assert np.abs(rel[:, 0].numpy() - ref).max() < 1e-4
    # cv2.remap samples like the reference (to its 1/32-pixel fixed-point weights)
    b = 0
    Kb, Tb = K[b, :3, :3].numpy(), T[b].numpy()
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    X = depth[b, 0].numpy().ravel() * (np.linalg.inv(Kb) @ np.stack([xs.ravel(), ys.ravel(), np.ones(H * W)]))
    q = Kb @ (Tb[:3, :3] @ X + Tb[:3, 3:])
    mx, my = (q[0] / q[2]).reshape(H, W).astype(np.float32), (q[1] / q[2]).reshape(H, W).astype(np.float32)
    sampled = cv2.remap(depth_src[b, 0].numpy().astype(np.float32), mx, my, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    grid = torch.stack([torch.from_numpy(mx) / (W - 1) * 2 - 1, torch.from_numpy(my) / (H - 1) * 2 - 1], -1)
    ours = F.grid_sample(depth_src[b:b + 1].float(), grid[None], align_corners=True)[0, 0].numpy()
    inside = in_view[b, 0].numpy()
    assert np.abs(sampled - ours)[inside].max() < 0.05 * np.abs(np.gradient(depth_src[b, 0].numpy())).max() + 1e-3


# ----------------------------------------------------------------------------- recipe and CLI
def test_options_follow_the_paper_and_presets_parse():
    opt = _method_opt()
    assert (opt.depth_decoder, opt.optimizer, opt.weight_decay, opt.lr_sche_type, opt.decay_rate) == \
        ("srd", "adamw", 0.01, "exponential", 0.9)
    main = MonodepthOptions().parse(["--config", "srd_resnet50_640x192"])
    assert (main.method, main.num_layers, main.split, main.num_epochs, main.seed, main.height, main.width) == \
        ("srd", 50, "eigen_zhou", 20, 3407, 192, 640)
    for preset in ("srd_resnet18_640x192", "srd_swin_t_640x192", "synthetic_srd"):
        assert MonodepthOptions().parse(["--config", preset]).method == "srd"
    with pytest.raises(SystemExit, match="frame \\+1"):
        _method_opt("--frame_ids", "0", "-1")
    with pytest.raises(SystemExit, match="multiview_reference checks the teacher against frame \\+1"):
        _method_opt("--frame_ids", "0", "-1", "--distill_filter", "multiview_reference")


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("preset", ["srd_resnet18_640x192", "srd_resnet50_640x192", "srd_swin_t_640x192"])
def test_kitti_presets_read_jpg_and_carry_the_released_png_flag_commented(preset, tmp_path):
    """The released code reads .png frames: each KITTI preset reads .jpg by default and holds
    `# png: true` as a line to uncomment, which then parses to --png."""
    text = open(os.path.join(ROOT, "configs", preset + ".yaml")).read()
    assert not MonodepthOptions().parse(["--config", preset]).png
    lines = [line for line in text.splitlines() if line.startswith("# png: true")]
    assert len(lines) == 1
    path = tmp_path / "preset.yaml"
    path.write_text(text.replace("# png: true", "png: true", 1))
    assert MonodepthOptions().parse(["--config", str(path)]).png


ITEMS_PER_EPOCH = 8  # 4 steps of 2: three epochs in a few seconds


def _train_args(world, log_dir, *extra):
    split = small_split(world, os.path.join(os.path.dirname(str(log_dir)), "split"), ITEMS_PER_EPOCH)
    return ["--method", "srd", "--data_path", world.out, "--split", split,
            "--png", "--height", "64", "--width", "192", "--weights_init", "scratch", "--batch_size", "2",
            "--num_epochs", "3", "--num_workers", "0", "--log_dir", str(log_dir), "--model_name", "m",
            "--log_frequency", "1000", "--no_progress", "--no_cuda", "--keep_weights", "1",
            "--pose_model_type", "shared", *extra]


@pytest.fixture(scope="module")
def srd_run(static_world, tmp_path_factory):
    """Three deterministic epochs of SRD on the static world, with a state after every step."""
    import shutil
    tmp = tmp_path_factory.mktemp("srd")
    trainer = Trainer(MonodepthOptions().parse(_train_args(static_world, tmp / "ref", "--deterministic")))
    trainer.train()
    yield trainer, tmp / "ref"
    shutil.rmtree(tmp, ignore_errors=True)


def test_training_groups_schedule_and_distillation_from_epoch_one(srd_run):
    trainer, log_dir = srd_run
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["encoder", "decoder_pose"]
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and groups[0]["weight_decay"] == 0.01
    # after 3 epochs: x0.9 per epoch on both groups (the LR of the step after the last one)
    assert groups[0]["lr"] == pytest.approx(1e-4 * 0.9 ** 3, rel=1e-6)
    assert groups[1]["lr"] == pytest.approx(1e-4 * 0.9 ** 3, rel=1e-6)
    steps = train_steps(log_dir)
    per_epoch = len(trainer.train_loader)
    assert per_epoch == ITEMS_PER_EPOCH // 2
    for s, rec in steps.items():
        has = "distillation" in rec.get("terms", {})
        assert has == (s >= per_epoch), s
        if has:
            assert 0 < rec["terms"]["distillation"] < rec["loss"]
    # the teacher is the student at the end of the last epoch (the run ended there)
    assert trainer.method.teacher_epoch == 2
    teacher = trainer.method.teacher.state_dict()
    for name in ("encoder", "depth"):
        student = trainer.method.models[name].state_dict()
        assert all(torch.equal(student[k], teacher[f"{name}.{k}"]) for k in student)
    weights = os.listdir(log_dir / "m" / "models" / "weights_2")
    assert sorted(weights) == ["adam.pth", "depth.pth", "encoder.pth", "opt.json", "pose.pth"]


@pytest.mark.slow  # another training (the default suite's time budget)
def test_resume_inside_epoch_two_reproduces_the_losses_with_the_teacher(srd_run, static_world, tmp_path):
    trainer, ref_dir = srd_run
    ref = train_steps(ref_dir)
    per_epoch = len(trainer.train_loader)
    total = 3 * per_epoch
    run_dir = tmp_path / "run"
    args = _train_args(static_world, run_dir, "--deterministic", "--state_frequency", "1")
    kill_after_steps(args, run_dir, 2 * per_epoch + 2)
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(run_dir), "--model_name", "m"]))
    k = resumed.step
    assert 2 * per_epoch < k < total, (k, per_epoch)  # inside epoch 2, with a teacher from epoch 1
    assert resumed.method.teacher is not None and resumed.method.teacher_epoch == 1
    resumed.train()
    after = train_steps(run_dir)
    for s in range(k, total):
        assert after[s]["loss"] == pytest.approx(ref[s]["loss"], rel=1e-6, abs=1e-7), s
        assert after[s]["terms"]["distillation"] == pytest.approx(ref[s]["terms"]["distillation"], rel=1e-6), s


def test_evaluate_and_predict_an_srd_folder_with_the_baselines_commands(srd_run, static_world, tmp_path):
    _, log_dir = srd_run
    folder = str(log_dir / "m" / "models" / "weights_2")
    res, m = evaluate_folder(folder, static_world, tmp_path / "metrics.json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert 0 < m["abs_rel"] < 2 and m["num_images"] == 4
    src = os.path.join(static_world.out, "2000_01_01", "2000_01_01_drive_0001_sync", "image_02", "data",
                       "0000000001.png")
    res = subprocess.run([sys.executable, "test_simple.py", "--image_path", src, "--load_weights_folder", folder,
                          "--output_dir", str(tmp_path), "--save_npy"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    npy = np.load(tmp_path / "0000000001_disp.npy")
    assert npy.shape == (1, 1, 64, 192) and np.isfinite(npy).all()


def test_teacher_of_a_compiled_student_runs_its_own_weights():
    """--compile: the snapshot must not keep calling the student through the copied wrapper."""
    from methods import build_method
    torch.manual_seed(0)
    method = build_method(_method_opt())
    for model in method.models.values():
        model.compile(backend="eager")
    method.on_epoch_end(0)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = method.teacher["depth"](method.teacher["encoder"](image))[("disp", 0)]
        for p in method.models["depth"].parameters():
            p.add_(0.5)
        after = method.teacher["depth"](method.teacher["encoder"](image))[("disp", 0)]
        student = method.models["depth"](method.models["encoder"](image))[("disp", 0)]
    assert torch.equal(before, after)
    assert (student - after).abs().max() > 1e-3


def test_kaiming_init_keeps_the_decoder_features_alive():
    """--srd_decoder_init kaiming: the disparity features F0-F3 of a fresh decoder keep a
    useful scale (PyTorch's default init shrinks them to std 0.02-0.08 from unit-scale
    features; Kaiming gives 0.15-0.65, measured over 6 seeds), the offsets still start at
    zero and the disparity biases keep --disp_bias_init."""
    opt = _method_opt("--srd_decoder_init", "kaiming", "--disp_bias_init", "-3")
    ch = CHANNELS["resnet18"]
    for seed in range(3):
        torch.manual_seed(seed)
        feats = [torch.relu(torch.randn(2, c, 48 // 2 ** i, 160 // 2 ** i)) for i, c in enumerate(ch)]
        stds = []
        for init in ("default", "kaiming"):
            torch.manual_seed(100 + seed)
            decoder = networks.build_depth_decoder(_method_opt("--srd_decoder_init", init, "--disp_bias_init", "-3"),
                                                   ch)
            with torch.no_grad():
                stds.append([float(f.std()) for f in decoder.disparity_features(feats)])
        assert all(k > 3 * d for d, k in zip(*stds)), stds
    decoder = networks.build_depth_decoder(opt, ch)
    assert all(float(h.offset.weight.abs().max()) == 0 for h in decoder.offset_heads)
    assert all(float(c.conv.bias) == -3 for c in decoder.disp_convs)


# ----------------------------------------------------------------------------- fidelity with the released decoder
# parameters of the released decoder that its forward pass uses, on ResNet-18 features (it also
# holds four unused uncertainty heads and four unused up-convolutions)
RELEASED_USED_PARAMETERS_R18 = 6_097_295


class _ConvGate(nn.Module):
    """The channel-attention gate as earlier versions of the project built it: 1x1 convs."""

    def __init__(self, c):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(c, c // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(c // 16, c, 1, bias=False))

    def forward(self, x):
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


def _earlier_layout(decoder, seed=0):
    """`decoder` turned into the earlier layout (squeeze convs with a bias, 1x1-conv gates),
    with random squeeze biases and gates."""
    g = torch.Generator().manual_seed(seed)
    for node, conv in list(decoder.squeeze.items()):
        old = nn.Conv2d(conv.in_channels, conv.out_channels, 1)
        with torch.no_grad():
            old.weight.copy_(conv.weight)
            old.bias.copy_(0.5 * torch.randn(conv.out_channels, generator=g))
        decoder.squeeze[node] = old
    for adapter in decoder.adapters:
        c = adapter.conv.in_channels
        adapter.attention = _ConvGate(c)
        for m in adapter.attention.fc:
            if isinstance(m, nn.Conv2d):
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.out_channels) ** 0.5)
    return decoder


@pytest.mark.usefixtures("single_thread")
def test_squeeze_convs_have_no_bias_as_the_released_decoder():
    """The three squeeze 1x1 convs (nodes 02, 12, 03) have no bias: 256 parameters fewer than
    with one, and the decoder's count on ResNet-18 features is the released decoder's used count."""
    decoder = SRDDecoder(CHANNELS["resnet18"])
    assert sorted(decoder.squeeze) == ["02", "03", "12"]
    assert all(conv.bias is None for conv in decoder.squeeze.values())
    count = sum(p.numel() for p in decoder.parameters())
    assert count == RELEASED_USED_PARAMETERS_R18
    earlier = _earlier_layout(SRDDecoder(CHANNELS["resnet18"]))
    assert sum(p.numel() for p in earlier.parameters()) - count == 256


@pytest.mark.usefixtures("single_thread")
def test_earlier_decoder_weights_load_with_the_same_outputs(tmp_path):
    """A depth.pth of the earlier layout (squeeze biases, 1x1-conv gates of shape (out, in, 1, 1))
    loads strictly through the method's weight adaptation: the bias is folded into the next
    conv and the gates reshaped, and the disparities and offsets are those of the earlier
    network (float32 rounding: 6e-8 at most over 5 seeds)."""
    from methods import build_method
    torch.manual_seed(0)
    method = build_method(_method_opt())
    earlier = _earlier_layout(SRDDecoder(CHANNELS["resnet18"]), seed=1).eval()
    state = earlier.state_dict()
    assert state["squeeze.02.bias"].shape == (64,) and state["adapters.0.attention.fc.0.weight"].dim() == 4
    torch.save(state, tmp_path / "depth.pth")
    torch.save(method.models["encoder"].state_dict(), tmp_path / "encoder.pth")
    assert method.load_weights(str(tmp_path), ["encoder", "depth"], strict=True) == ["encoder", "depth"]
    decoder = method.models["depth"].eval()
    feats = [torch.relu(torch.randn(1, c, 64 // 2 ** (i + 1), 96 // 2 ** (i + 1))) for i, c in
             enumerate(CHANNELS["resnet18"])]
    with torch.no_grad():
        before, after = earlier(feats), decoder(feats)
    for key in before:
        assert torch.allclose(before[key], after[key], atol=1e-6, rtol=0), key
    # the biases mattered: dropping them instead of folding changes the output
    dropped = SRDDecoder(CHANNELS["resnet18"]).eval()
    plain = {k: v for k, v in SRDDecoder.upgrade_state_dict(state).items()}
    for node in ("02", "12", "03"):
        plain[f"nodes.{node}.conv.conv.bias"] = state[f"nodes.{node}.conv.conv.bias"]
    dropped.load_state_dict(plain)
    with torch.no_grad():
        assert (dropped(feats)[("disp", 0)] - before[("disp", 0)]).abs().max() > 1e-3


def _linear_default_bound(layer):
    return 1 / math.sqrt(layer.weight.shape[1])  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), +)


@pytest.mark.usefixtures("single_thread")
def test_default_init_is_pytorchs_default_everywhere_as_the_released_code():
    """--srd_decoder_init default: every gate is an nn.Linear with PyTorch's default init,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (std 1/sqrt(3 fan_in)); every other conv too (the
    released code's Kaiming loop touches none of them). kaiming: the gates are Kaiming-normal
    (fan_out, ReLU gain): std sqrt(2 / fan_out). Tolerance: the std of U(-b, b) estimated from
    n weights has a relative spread sqrt(0.2 / n), a normal's sqrt(1 / 2n); 5 spreads (n >= 256)."""
    decoder = networks.build_depth_decoder(_method_opt(), CHANNELS["resnet18"])
    kaiming = networks.build_depth_decoder(_method_opt("--srd_decoder_init", "kaiming"), CHANNELS["resnet18"])
    gates, ratios = 0, []
    for adapter, k_adapter in zip(decoder.adapters, kaiming.adapters):
        for layer, k_layer in zip(adapter.attention.fc, k_adapter.attention.fc):
            if not isinstance(layer, nn.Linear):
                continue
            gates += 1
            w, n = layer.weight.detach(), layer.weight.numel()
            bound = _linear_default_bound(layer)
            assert w.abs().max() <= bound
            assert abs(float(w.std()) * math.sqrt(3) / bound - 1) < 5 * math.sqrt(0.2 / n), (float(w.std()), bound)
            expected_kaiming = math.sqrt(2 / k_layer.weight.shape[0])  # fan_out = out features
            k_w = k_layer.weight.detach()
            assert abs(float(k_w.std()) / expected_kaiming - 1) < 5 / math.sqrt(2 * n)
            ratios.append(float(k_w.std() / w.std()))
    assert gates == 8
    # kaiming / default std: sqrt(96) ~ 9.8 for C -> C/16, sqrt(6 / 16) ~ 0.61 for C/16 -> C
    assert all(r > 7 for r in ratios[0::2]) and all(0.45 < r < 0.8 for r in ratios[1::2]), ratios
    for name, m in decoder.named_modules():
        w = m.weight.detach() if isinstance(m, nn.Conv2d) else None
        if w is not None and w.abs().max() > 0:  # the offset heads' last conv starts at 0
            fan_in = w[0].numel()
            assert w.abs().max() <= 1 / math.sqrt(fan_in), name
            if w.numel() >= 4096:
                assert abs(float(w.std()) * math.sqrt(3 * fan_in) - 1) < 0.05, name


# ----------------------------------------------------------------------------- the released filter rule
def _filter_case():
    """Two images: a 12 m wall with a near block (2.6 m) on the left, seen from a camera that
    moves ~2 m forward: 40 % of the pixels leave frame +1."""
    H, W = 48, 64
    K, inv_K = _camera(H, W, 2)
    g = torch.Generator().manual_seed(0)
    depth = torch.full((2, 1, H, W), 12.0, dtype=torch.float64)
    depth[..., :10] = 2.6
    depth = depth * (1 + 0.03 * torch.rand(2, 1, H, W, generator=g, dtype=torch.float64))
    T = torch.cat([_pose(tx=-0.3, tz=-2.2), _pose(tx=0.4, tz=-2.0, yaw=0.02)])
    depth_src = depth * (1 + 0.1 * torch.rand(2, 1, H, W, generator=g, dtype=torch.float64))
    return depth, depth_src, T, K, inv_K


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_reference_filter_rule_keeps_out_of_view_pixels_below_the_mean(factor):
    """--distill_filter multiview_reference: no in-view test; an out-of-view pixel reads depth
    0 in frame +1 and is kept where its relative error is below factor x the image's mean over
    all its pixels, recomputed here per image in float64 NumPy (zero outside the image)."""
    depth, depth_src, T, K, inv_K = _filter_case()
    args = (depth.float(), depth_src.float(), T.float(), K.float(), inv_K.float(), factor)
    reference = distillation_mask(*args, in_view_test=False)[:, 0].numpy().astype(bool)
    ours = distillation_mask(*args)[:, 0].numpy().astype(bool)
    _, in_view = multiview_consistency(*args[:5])
    out = ~in_view[:, 0].numpy()
    rel = _numpy_reference(depth.numpy(), depth_src.numpy(), T.numpy(), K.numpy())
    expected = rel < factor * rel.mean((1, 2), keepdims=True)
    near_threshold = np.abs(rel / (factor * rel.mean((1, 2), keepdims=True)) - 1) < 1e-4
    assert (reference != expected)[~near_threshold].sum() == 0
    assert 0.3 < out.mean() < 0.5
    assert reference[out].sum() > 100 and not ours[out].any()  # kept by the released rule only
    assert (expected[out] == False).sum() > 100  # noqa: E712  out-of-view pixels above the mean stay out
    assert np.array_equal(reference[~out], ours[~out])  # the rules differ only out of view


@pytest.mark.usefixtures("single_thread")
def test_method_uses_the_reference_rule_when_asked():
    """SRD's forward with --distill_filter multiview_reference gives the rule without the in-view
    test on the teacher's depths of frames 0 and +1; the default gives it with the test."""
    from methods import build_method
    inputs = _batch()
    torch.manual_seed(0)
    method = build_method(_method_opt("--distill_filter", "multiview_reference"))
    with torch.no_grad():  # a 5 cm sideways step (the teacher's depths are ~0.2 m): columns leave frame +1
        method.models["pose"].net[3].bias[3] = 5.0
    method.train()
    method.on_epoch_end(0)
    with torch.no_grad():
        depths = method.teacher_depths(torch.cat([inputs[("color_aug", 0, 0)], inputs[("color_aug", 1, 0)]]))
    masks = {}
    for rule in ("multiview_reference", "multiview"):
        method.opt.distill_filter = rule
        with torch.no_grad():
            outputs = method(inputs)
        T = outputs[("cam_T_cam", 0, 1)].float()
        for scale in method.opt.scales:
            expected = distillation_mask(depths[scale][:2], depths[scale][2:], T, inputs[("K", 0)],
                                         inputs[("inv_K", 0)], in_view_test=rule == "multiview")
            assert torch.equal(outputs[("distill_mask", scale)], expected), (rule, scale)
        masks[rule] = outputs[("distill_mask", 0)]
    assert (masks["multiview_reference"] >= masks["multiview"]).all()
    print("pixels kept by the released rule only:", int((masks["multiview_reference"] != masks["multiview"]).sum()))
    assert (masks["multiview_reference"] != masks["multiview"]).sum() > 20
