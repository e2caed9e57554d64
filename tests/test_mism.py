"""MISM as methods: the two stages' losses and their acceptance checks (8.18-8.23), PADS in
training only, both stages trained, resumed, evaluated and predicted through the baseline's
commands (MNet and the MSF decoder themselves: test_mism_networks.py)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from losses import masked_silog
from methods import build_method, load_for_inference
from methods.mism import MNET_MODELS, SNET_MODELS, distillation_mask, masked_consistency
from options import MonodepthOptions
from tests.helpers.batch import fake_batch
from tests.helpers.cli import ROOT, evaluate_folder, kill_after_steps, small_split, train_steps
from trainer import Trainer

FOLDER = "2000_01_01/2000_01_01_drive_0001_sync"


def _opt(method="mism_teacher", *extra):
    return MonodepthOptions().parse(["--method", method, "--height", "64", "--width", "192",
                                     "--weights_init", "scratch", "--batch_size", "2", *extra])


# ----------------------------------------------------------------------------- losses
def test_stage_one_automask_on_exact_ties(monkeypatch):
    """SNet's auto-mask in stage 1 is the released code's: the minimum over sources of the
    identity errors plus one draw per pixel (forced here), a pixel kept where the
    reprojection error is <= that (a tie keeps it; the loss is the mean over kept pixels).
    All frames share a black top half: errors exactly 0 there."""
    torch.manual_seed(0)
    method = build_method(_opt("mism_teacher", "--snet", "resnet")).train()
    inputs = fake_batch(method.opt)
    for key in [k for k in inputs if k[0] in ("color", "color_aug")]:
        inputs[key][:, :, :inputs[key].shape[2] // 2] = 0
    outputs = method(inputs)
    z = torch.randint(-1, 2, (2, 1, 64, 192), generator=torch.Generator().manual_seed(1)).float()
    shapes = []

    def forced(like, **kwargs):
        shapes.append(tuple(like.shape))
        return z.clone()

    monkeypatch.setattr(torch, "randn_like", forced)
    terms, _ = method.compute_losses(inputs, outputs)
    monkeypatch.undo()
    assert shapes == [(2, 1, 64, 192)]
    target = inputs[("color", 0, 0)]
    identity = torch.cat([method.reprojection(inputs[("color", f, 0)], target) for f in (-1, 1)], 1)
    identity = identity.min(1, keepdim=True)[0]
    r = outputs["snet_errors"].detach().min(1, keepdim=True)[0]
    keep = (r <= identity + 1e-5 * z).float()
    assert torch.equal(outputs[("automask", 0)], keep)
    assert int(((r == identity) & (z == 0)).sum()) > 1000  # exact ties decided by `<=` alone (kept)
    assert float(terms["reprojection"].detach()) == pytest.approx(float((r * keep).sum() / (keep.sum() + 1e-7)), rel=1e-6)


def test_masked_image_loss_regions_and_weights():
    """8.18: reference mode uses only the pixels outside the hole with weight 100 and passes
    gradients to both depths; the default uses the hole's pixels, weight 10, target detached."""
    torch.manual_seed(0)
    keep = torch.ones(1, 1, 64, 192)
    keep[..., 16:40, 64:128] = 0  # the hole: rows 4-9, cols 16-31 at 1/4
    low = torch.rand(1, 1, 16, 48, requires_grad=True)
    masked = torch.rand(1, 1, 16, 48, requires_grad=True)
    # "outside": where the keep mask, bilinearly resized (align_corners=True), is non-zero
    outside = torch.nn.functional.interpolate(keep, (16, 48), mode="bilinear", align_corners=True) > 0
    assert not outside[..., 5:9, 18:30].any() and outside[..., :3, :].all() and outside[..., :, 34:].all()
    ref = masked_consistency(masked, low, keep, 10.0, "reference")
    expected = 100 * torch.nn.functional.smooth_l1_loss(masked[outside], low[outside])
    assert ref.item() == pytest.approx(expected.item(), rel=1e-6)
    # changing the depths inside the hole does not change the reference loss
    changed = masked.detach().clone()
    changed[..., 5:9, 18:30] += 3
    assert float(masked_consistency(changed, low, keep, 10.0, "reference")) == pytest.approx(float(ref), rel=1e-6)
    ref.backward()
    assert low.grad.abs().sum() > 0  # no stop-gradient in the reference
    low.grad = None
    fixed = masked_consistency(masked, low, keep, 10.0, "fixed")
    inside = ~outside
    expected = 10 * torch.nn.functional.smooth_l1_loss(masked[inside], low[inside])
    assert float(fixed) == pytest.approx(float(expected), rel=1e-6)
    fixed.backward()
    assert low.grad is None and masked.grad[..., inside[0, 0]].abs().sum() > 0
    # no hole: 0, not NaN
    zero = masked_consistency(masked, low, torch.ones(1, 1, 64, 192), 10.0, "fixed")
    assert float(zero) == 0.0


def test_silog_is_scale_invariant_and_guarded():
    """8.21: lambda = 1 makes SILog invariant to scaling the student; an empty mask gives 0."""
    torch.manual_seed(0)
    student, teacher = torch.rand(2, 1, 8, 8) + 0.5, torch.rand(2, 1, 8, 8) + 0.5
    mask = torch.rand(2, 1, 8, 8) > 0.3
    a = masked_silog(student, teacher, mask, 1.0)
    for s in (0.1, 3.0, 57.0):
        assert float(masked_silog(student * s, teacher, mask, 1.0)) == pytest.approx(float(a), rel=1e-4)
    g = (torch.log(student) - torch.log(teacher))[mask]
    assert float(a) == pytest.approx(float(g.std(unbiased=False)), rel=1e-5)
    empty = masked_silog(student.requires_grad_(), teacher, torch.zeros_like(mask), 1.0)
    assert float(empty) == 0.0 and not torch.isnan(empty)
    empty.backward()
    assert torch.isfinite(student.grad).all()
    # identical maps: variance 0 exactly, clamped instead of a NaN gradient
    x = (torch.rand(1, 1, 4, 4) + 1).requires_grad_()
    same = masked_silog(x, x.detach() * 2, torch.ones(1, 1, 4, 4, dtype=torch.bool), 1.0)
    same.backward()
    assert float(same) < 1e-5 and torch.isfinite(x.grad).all()


def test_distillation_mask_numbers():
    """8.22: e_T = 0.1, e_S = 0.2 -> used; e_T = 0.3 -> not used."""
    e_s = torch.tensor([0.2, 0.2]).view(1, 1, 1, 2)
    e_t = torch.tensor([0.1, 0.3]).view(1, 1, 1, 2)
    assert distillation_mask(e_t, e_s).flatten().tolist() == [True, False]


def test_stage_one_gradients_never_mix():
    """8.19: MNet's losses give zero gradients in s_encoder / s_depth / pose, and SNet's
    losses zero gradients in m_encoder / reg3d / up."""
    torch.manual_seed(0)
    opt = _opt()
    method = build_method(opt).train()
    inputs = fake_batch(opt)
    outputs = method(inputs)
    terms, _ = method.compute_losses(inputs, outputs)
    groups = {"snet": SNET_MODELS, "mnet": MNET_MODELS}
    losses = {"snet": terms["reprojection"] + terms["smoothness"],
              "mnet": terms["mnet_reprojection"] + terms["mnet_smoothness"] + terms["masked_consistency"]}
    for loss_name, loss in losses.items():
        method.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for group, names in groups.items():
            total = sum(float(p.grad.abs().sum()) for n in names for p in method.models[n].parameters()
                        if p.grad is not None)
            if group == loss_name:
                assert total > 0, (loss_name, group)
            else:
                assert total == 0, (loss_name, group, total)
    assert [g["name"] for g in method.param_groups()] == ["snet_pose", "mnet"]


def test_pads_moves_after_training_steps_only():
    torch.manual_seed(0)
    opt = _opt()
    method = build_method(opt).train()
    inputs = fake_batch(opt)
    start = method.mnet.pads.clone()
    outputs = method(inputs)
    method.on_train_step_end(0, inputs, outputs)
    trained = method.mnet.pads.clone()
    assert not torch.equal(start, trained) and float(trained.min()) >= 0.99 - 1e-6
    method.eval()
    with torch.no_grad():
        method(inputs)
        method.predict(inputs)
    assert torch.equal(method.mnet.pads, trained)
    assert "depth_bin_facs" in method.models["reg3d"].state_dict()


def test_presets_and_option_checks(tmp_path):
    opt = MonodepthOptions().parse(["--config", "mism_teacher_hrnet18_640x192"])
    assert (opt.method, opt.encoder, opt.depth_decoder, opt.scales, opt.num_depth_bins) == \
        ("mism_teacher", "hrnet18_raw", "msf", [0], 16)
    assert (opt.batch_size, opt.learning_rate, opt.num_epochs, opt.scheduler_step_size) == (12, 2e-4, 20, 15)
    assert opt.adaptive_range and opt.convex_up and opt.masked_loss == "fixed"
    opt = MonodepthOptions().parse(["--config", "synthetic_mism_teacher", "--no_adaptive_range", "--no_convex_up",
                                    "--snet", "resnet"])
    assert not opt.adaptive_range and not opt.convex_up and (opt.encoder, opt.depth_decoder) == ("resnet", "monodepth2")
    with pytest.raises(SystemExit, match="--teacher_weights_folder"):
        MonodepthOptions().parse(["--config", "mism_student_hrnet18_640x192"])
    with pytest.raises(SystemExit, match="missing s_encoder.pth"):
        MonodepthOptions().parse(["--config", "mism_student_hrnet18_640x192", "--teacher_weights_folder",
                                  str(tmp_path)])
    assert build_method(_opt("mism_teacher", "--ssim_lw", "0.5")).reprojection.ssim_weight == 0.5
    with pytest.raises(SystemExit, match="--prior_scale 3"):
        _opt("mism_teacher", "--prior_scale", "3")
    with pytest.raises(SystemExit, match="--num_depth_bins 12"):
        _opt("mism_teacher", "--num_depth_bins", "12")


# ----------------------------------------------------------------------------- CLI: both stages
ITEMS_PER_EPOCH = 4  # 2 steps per epoch


def _train_args(world, log_dir, preset, *extra):
    split = small_split(world, os.path.join(os.path.dirname(str(log_dir)), "split"), ITEMS_PER_EPOCH)
    return ["--config", preset, "--data_path", world.out, "--split", split, "--height", "64", "--width", "192",
            "--batch_size", "2", "--num_epochs", "2", "--num_workers", "0", "--log_dir", str(log_dir),
            "--model_name", "m", "--log_frequency", "1000", "--no_progress", "--no_cuda", "--keep_weights", "0",
            "--deterministic", "--snet", "hrnet", *extra]  # the papers' HRNet-18 SNet (the presets use ResNet-18)


@pytest.fixture(scope="module")
def mism_runs(static_world, tmp_path_factory):
    """Stage 1 for two epochs, then stage 2 for two epochs from its weights_1."""
    tmp = tmp_path_factory.mktemp("mism")
    teacher = Trainer(MonodepthOptions().parse(_train_args(static_world, tmp / "t", "synthetic_mism_teacher")))
    teacher.train()
    teacher_folder = str(tmp / "t" / "m" / "models" / "weights_1")
    student_args = _train_args(static_world, tmp / "s", "synthetic_mism_student", "--teacher_weights_folder",
                               teacher_folder)
    student = Trainer(MonodepthOptions().parse(student_args))
    student.train()
    yield {"teacher": (teacher, tmp / "t", teacher_folder), "student": (student, tmp / "s", student_args)}
    shutil.rmtree(tmp, ignore_errors=True)


def _resume_matches(trainer, ref_dir, args, run_dir, kill_at):
    ref = train_steps(ref_dir)
    per_epoch = len(trainer.train_loader)
    kill_after_steps(args + ["--state_frequency", "1"], run_dir, kill_at)
    resumed = Trainer(MonodepthOptions().parse(["--resume", "--log_dir", str(run_dir), "--model_name", "m"]))
    k = resumed.step
    assert 0 < k < 2 * per_epoch, k
    resumed.train()
    after = train_steps(run_dir)
    for s in range(k, 2 * per_epoch):
        for name, value in ref[s]["terms"].items():
            assert after[s]["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-8), (s, name)
    return resumed


@pytest.mark.slow  # two more trainings (the default suite's time budget)
def test_teacher_resume_inside_epoch_one_reproduces_losses_and_pads(mism_runs, static_world, tmp_path):
    trainer, ref_dir, _ = mism_runs["teacher"]
    per_epoch = len(trainer.train_loader)
    args = _train_args(static_world, tmp_path / "run", "synthetic_mism_teacher")
    resumed = _resume_matches(trainer, ref_dir, args, tmp_path / "run", per_epoch + 1)
    assert torch.equal(resumed.method.mnet.pads, trainer.method.mnet.pads)  # F after the last step
    assert float(trainer.method.mnet.pads.mean()) != 1.0


@pytest.mark.slow
def test_student_resume_reproduces_losses(mism_runs, static_world, tmp_path):
    trainer, ref_dir, args = mism_runs["student"]
    args = [a if a != str(ref_dir) else str(tmp_path / "run") for a in args]
    _resume_matches(trainer, ref_dir, args, tmp_path / "run", 2)


def test_student_folder_is_the_bundle(mism_runs):
    """The student's weight folders hold the frozen teacher's MNet (F included) and teacher
    networks bit-identical to stage 1's files; its own SNet and pose differ from the teacher's."""
    _, _, teacher_folder = mism_runs["teacher"]
    _, s_dir, _ = mism_runs["student"]
    student_folder = s_dir / "m" / "models" / "weights_1"
    for name in MNET_MODELS + SNET_MODELS:
        a = torch.load(os.path.join(teacher_folder, f"{name}.pth"), weights_only=True)
        theirs = name if name in MNET_MODELS else "teacher_" + name
        b = torch.load(student_folder / f"{theirs}.pth", weights_only=True)
        for k in a:
            if torch.is_tensor(a[k]):
                assert torch.equal(a[k], b[k]), (name, k)
    a = torch.load(os.path.join(teacher_folder, "s_depth.pth"), weights_only=True)
    b = torch.load(student_folder / "s_depth.pth", weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    assert "depth_bin_facs" in torch.load(student_folder / "reg3d.pth", weights_only=True)


def test_evaluate_prints_single_and_multi_frame_blocks(mism_runs, static_world, tmp_path):
    """8.24 (the structure): one command on the student's folder prints the multi-frame
    (bundle) and the single-frame (SNet) blocks."""
    _, s_dir, _ = mism_runs["student"]
    folder = str(s_dir / "m" / "models" / "weights_1")
    res, m = evaluate_folder(folder, static_world, tmp_path / "metrics.json")
    assert res.returncode == 0, res.stderr[-2000:]
    outputs = {r["output"]: r for r in m["results"]}
    assert set(outputs) == {"multi_frame", "single_frame"} and outputs["multi_frame"]["num_images"] == 4


@pytest.mark.slow  # four more evaluations (the default suite's time budget)
def test_single_frame_and_two_folder_bundles_evaluate(mism_runs, static_world, tmp_path):
    """8.23: --single_frame needs only s_encoder / s_depth and gives the single-frame block;
    without it the folder is refused by name; SNet + pose from one folder with MNet from
    stage 1's (--mnet_weights_folder) give the bundle's multi-frame block."""
    _, s_dir, _ = mism_runs["student"]
    folder = str(s_dir / "m" / "models" / "weights_1")
    res, m = evaluate_folder(folder, static_world, tmp_path / "metrics.json")
    assert res.returncode == 0, res.stderr[-2000:]
    outputs = {r["output"]: r for r in m["results"]}
    # SNet alone from a folder with only its two files
    only = tmp_path / "snet_only"
    only.mkdir()
    for name in ("s_encoder.pth", "s_depth.pth", "opt.json"):
        shutil.copy(os.path.join(folder, name), only / name)
    res, single = evaluate_folder(str(only), static_world, tmp_path / "single.json", "--single_frame")
    assert res.returncode == 0, res.stderr[-2000:]
    assert single["output"] == "single_frame"
    assert single["abs_rel"] == pytest.approx(outputs["single_frame"]["abs_rel"], abs=1e-6)
    res, _ = evaluate_folder(str(only), static_world, tmp_path / "multi.json")
    assert res.returncode != 0 and "missing pose_encoder.pth" in res.stdout + res.stderr
    # a bundle assembled from two folders: SNet + pose from one, MNet from stage 1's
    _, _, teacher_folder = mism_runs["teacher"]
    for name in ("pose_encoder.pth", "pose.pth"):
        shutil.copy(os.path.join(folder, name), only / name)
    res, two = evaluate_folder(str(only), static_world, tmp_path / "two.json", "--mnet_weights_folder", teacher_folder)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {r["output"]: r for r in two["results"]}["multi_frame"]["abs_rel"] == \
        pytest.approx(outputs["multi_frame"]["abs_rel"], abs=1e-6)


def test_missing_pads_fails_loudly(mism_runs, tmp_path):
    """8.23: a reg3d.pth without depth_bin_facs (F) does not load."""
    _, s_dir, _ = mism_runs["student"]
    folder = tmp_path / "w"
    shutil.copytree(s_dir / "m" / "models" / "weights_1", folder)
    state = torch.load(folder / "reg3d.pth", weights_only=True)
    del state["depth_bin_facs"]
    torch.save(state, folder / "reg3d.pth")
    with pytest.raises(SystemExit, match="reg3d.pth does not fit.*depth_bin_facs"):
        load_for_inference(str(folder))


@pytest.mark.slow
def test_predict_a_mism_folder(mism_runs, static_world, tmp_path):
    _, s_dir, _ = mism_runs["student"]
    folder = str(s_dir / "m" / "models" / "weights_1")
    src = os.path.join(static_world.out, FOLDER, "image_02", "data")
    run = lambda *a: subprocess.run([sys.executable, "test_simple.py", "--load_weights_folder", folder,  # noqa: E731
                                     "--save_npy", *a], cwd=ROOT, capture_output=True, text=True)
    res = run("--image_path", os.path.join(src, "0000000003.png"), "--source_image_path",
              os.path.join(src, "0000000002.png"), "--output_dir", str(tmp_path / "multi"))
    assert res.returncode == 0, res.stderr[-2000:]
    multi = np.load(tmp_path / "multi" / "0000000003_disp.npy")
    res = run("--image_path", os.path.join(src, "0000000003.png"), "--single_frame", "--output_dir",
              str(tmp_path / "single"))
    assert res.returncode == 0, res.stderr[-2000:]
    single = np.load(tmp_path / "single" / "0000000003_disp.npy")
    assert multi.shape == single.shape == (1, 1, 64, 192) and not np.allclose(multi, single)


def test_a_reference_style_teacher_folder_loads(mism_runs, tmp_path):
    """MISM's own folders: opt.json without a method, s_encoder.pth with the official HRNet
    names (no `encoder.` prefix): loaded as a MISM teacher, the prediction unchanged."""
    _, _, teacher_folder = mism_runs["teacher"]
    theirs = tmp_path / "theirs"
    shutil.copytree(teacher_folder, theirs)
    options = json.loads((theirs / "opt.json").read_text())
    del options["method"]
    (theirs / "opt.json").write_text(json.dumps(options))
    state = torch.load(theirs / "s_encoder.pth", weights_only=True)
    torch.save({k[len("encoder."):]: v for k, v in state.items()}, theirs / "s_encoder.pth")
    ours, loaded = load_for_inference(teacher_folder), load_for_inference(str(theirs))
    assert type(loaded).__name__ == "MISMTeacher"
    torch.manual_seed(0)
    inputs = fake_batch(ours.opt)
    with torch.no_grad():
        assert torch.equal(ours.predict(inputs)["depth"], loaded.predict(inputs)["depth"])


def test_student_error_includes_the_identity_terms(tmp_path):
    """8.22 in the method: e_S is the minimum over the identity and the reprojection errors,
    so where the sources equal the target (identity error 0) the teacher is never used."""
    _teacher_folder(tmp_path)
    student = build_method(_opt("mism_student", "--teacher_weights_folder", str(tmp_path))).train()
    inputs = fake_batch(student.opt)
    outputs = student(inputs)
    _, logs = student.compute_losses(inputs, outputs)
    assert 0 < float(logs["distill_fraction"]) < 1
    for f in (-1, 1):
        for key in ("color", "color_aug"):
            inputs[(key, f, 0)] = inputs[(key, 0, 0)]
    outputs = student(inputs)
    _, logs = student.compute_losses(inputs, outputs)
    # identity errors are 0 (+-1e-5 noise): the teacher wins only where its error is below that
    assert float(logs["distill_fraction"]) < 0.01


def test_ssim_distillation_numbers():
    """--msc_loss_type ssim: 0.85 SSIM dissimilarity + 0.15 L1 over the mask (the reference
    takes its L1 over every pixel: --msc_ssim_l1_everywhere); identical maps give 0, an
    empty mask 0 without NaN."""
    from layers import SSIM
    from losses import masked_ssim_l1
    torch.manual_seed(0)
    ssim = SSIM()
    a, b = torch.rand(2, 1, 8, 8) + 0.5, torch.rand(2, 1, 8, 8) + 0.5
    mask = torch.rand(2, 1, 8, 8) > 0.5
    d, l1 = ssim(a, b), (a - b).abs()
    assert float(masked_ssim_l1(a, b, mask, ssim)) == pytest.approx(
        float(0.85 * d[mask].mean() + 0.15 * l1[mask].mean()), rel=1e-6)
    assert float(masked_ssim_l1(a, b, mask, ssim, l1_everywhere=True)) == pytest.approx(
        float(0.85 * d[mask].mean() + 0.15 * l1.mean()), rel=1e-6)
    assert float(masked_ssim_l1(a, a.clone(), mask, ssim)) < 1e-6
    x = a.clone().requires_grad_()
    empty = masked_ssim_l1(x, b, torch.zeros_like(mask), ssim)
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.isfinite(x.grad).all()
    assert float(masked_ssim_l1(a, b, torch.zeros_like(mask), ssim, l1_everywhere=True)) == pytest.approx(
        float(0.15 * l1.mean()), rel=1e-6)


def _teacher_folder(tmp_path, *extra):
    torch.manual_seed(0)
    teacher = build_method(_opt("mism_teacher", *extra)).eval()
    teacher.save_weights(str(tmp_path), {"height": 64, "width": 192, "use_stereo": False})
    (tmp_path / "opt.json").write_text(json.dumps({**vars(teacher.opt)}))
    return teacher


def test_resnets_have_no_classifier_and_folders_with_it_still_load(tmp_path):
    """MISM's ResNets (the pose encoder; SNet with --snet resnet) hold no ImageNet classifier,
    as the released code: ResNet-18's parameters less fc's 513,000 (the pose encoder's conv1
    takes two frames). Weight folders and training states written with `encoder.fc.*` still
    load, with the same predictions, in both stages."""
    import torchvision
    new, old = tmp_path / "new", tmp_path / "old"
    teacher = _teacher_folder(new, "--snet", "resnet")
    full = torchvision.models.resnet18()
    fc = sum(p.numel() for p in full.fc.parameters())
    plain = sum(p.numel() for p in full.parameters()) - fc
    assert fc == 513000
    counts = {n: sum(p.numel() for p in teacher.models[n].parameters()) for n in ("s_encoder", "pose_encoder")}
    assert counts == {"s_encoder": plain, "pose_encoder": plain + 64 * 3 * 7 * 7}
    for n in ("s_encoder", "pose_encoder"):
        assert not any(k.startswith("encoder.fc.") for k in teacher.models[n].state_dict())
        assert not any(k.startswith("encoder.fc.") for k in torch.load(new / f"{n}.pth", weights_only=True))
    # an older folder: the same tensors plus a classifier in both ResNets' files
    shutil.copytree(new, old)
    classifier = {"encoder.fc.weight": torch.randn(1000, 512), "encoder.fc.bias": torch.randn(1000)}
    for n in ("s_encoder", "pose_encoder"):
        torch.save({**torch.load(old / f"{n}.pth", weights_only=True), **classifier}, old / f"{n}.pth")
    loaded = load_for_inference(str(old))
    torch.manual_seed(0)
    inputs = fake_batch(teacher.opt)
    with torch.no_grad():
        assert torch.equal(teacher.predict(inputs)["depth"], loaded.predict(inputs)["depth"])
    # a training state (resume) with the classifiers loads strictly
    state = teacher.state_dict()
    state.update({f"models.{n}.{k}": v for n in ("s_encoder", "pose_encoder") for k, v in classifier.items()})
    assert not loaded.load_state_dict(state).unexpected_keys
    with torch.no_grad():
        assert torch.equal(teacher.predict(inputs)["depth"], loaded.predict(inputs)["depth"])
    # stage 2 takes the older folder as its teacher
    student = build_method(_opt("mism_student", "--snet", "resnet", "--teacher_weights_folder", str(old)))
    for n in ("s_encoder", "pose_encoder"):
        mine, theirs = student.models["teacher_" + n].state_dict(), teacher.models[n].state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not any(k.startswith("encoder.fc.") for k in student.models["pose_encoder"].state_dict())


def test_student_ssim_distillation_term(tmp_path):
    _teacher_folder(tmp_path)
    from losses import masked_ssim_l1
    values = {}
    for extra in ((), ("--msc_ssim_l1_everywhere",)):
        torch.manual_seed(1)
        student = build_method(_opt("mism_student", "--teacher_weights_folder", str(tmp_path),
                                    "--msc_loss_type", "ssim", *extra)).train()
        inputs = fake_batch(student.opt)
        outputs = student(inputs)
        terms, _ = student.compute_losses(inputs, outputs)
        expected = 0.1 * masked_ssim_l1(outputs[("depth", 0, 0)], outputs["teacher_depth"],
                                        outputs["distill_mask"].bool(), student.depth_ssim,
                                        l1_everywhere=bool(extra))
        assert float(terms["distillation"]) == pytest.approx(float(expected), rel=1e-6)
        values[bool(extra)] = float(terms["distillation"])
    assert 0 < float(outputs["distill_mask"].mean()) < 1
    assert values[True] != pytest.approx(values[False], rel=1e-3)


def test_matching_ids_choose_mnet_source(tmp_path):
    """--matching_ids 0 1: MNet matches against the next frame (its pose too); frame -1 then
    only feeds the photometric losses. The student inherits the teacher's ids."""
    torch.manual_seed(0)
    method = build_method(_opt("mism_teacher", "--matching_ids", "0", "1")).eval()
    assert method.inference_frames == (0, 1)
    inputs = fake_batch(method.opt)
    with torch.no_grad():
        base = method.predict(inputs)["depth"]
        changed = dict(inputs)
        changed[("color", -1, 0)] = torch.rand_like(inputs[("color", -1, 0)])
        assert torch.equal(method.predict(changed)["depth"], base)
        changed[("color", 1, 0)] = torch.rand_like(inputs[("color", 1, 0)])
        assert not torch.allclose(method.predict(changed)["depth"], base)
    default = build_method(_opt("mism_teacher")).eval()
    assert default.inference_frames == (0, -1)
    with pytest.raises(SystemExit, match="--matching_ids 1 -1"):
        _opt("mism_teacher", "--matching_ids", "1", "-1")
    with pytest.raises(SystemExit, match="frame 2"):
        _opt("mism_teacher", "--matching_ids", "0", "2")
    _teacher_folder(tmp_path, "--matching_ids", "0", "1")
    student = _opt("mism_student", "--teacher_weights_folder", str(tmp_path))
    assert student.matching_ids == [0, 1]
    with pytest.raises(SystemExit, match="add it to --frame_ids"):
        _opt("mism_student", "--teacher_weights_folder", str(tmp_path), "--frame_ids", "0", "-1")
    with pytest.raises(SystemExit, match="drop --matching_ids"):
        _opt("mism_student", "--teacher_weights_folder", str(tmp_path), "--matching_ids", "0", "-2",
             "--frame_ids", "0", "-1", "1", "-2")
    # the teacher's depths are read with the student's range: another one is refused, naming both
    saved = _opt("mism_student", "--teacher_weights_folder", str(tmp_path)).min_depth
    with pytest.raises(SystemExit, match=f"--min_depth {saved * 10}: the teacher .* --min_depth {saved}"):
        _opt("mism_student", "--teacher_weights_folder", str(tmp_path), "--min_depth", str(saved * 10))


def test_channels_last_leaves_the_3d_convolutions_alone():
    """--channels_last on MISM: Module.to(memory_format=channels_last) fails on MNet's 5-D
    (Conv3d) weights; to_channels_last converts the 4-D ones only and the outputs stay the same."""
    import copy

    from trainer import to_channels_last
    torch.manual_seed(0)
    method = build_method(_opt("mism_teacher", "--snet", "resnet")).eval()
    inputs = fake_batch(method.opt)
    fast = to_channels_last(copy.deepcopy(method))
    ranks = {}
    for p in fast.parameters():
        ranks[p.dim()] = ranks.get(p.dim(), 0) + 1
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
        else:
            assert p.is_contiguous()
    assert ranks.get(4, 0) > 50 and ranks.get(5, 0) >= 2, ranks
    with torch.no_grad():
        a, b = method(inputs), fast(inputs)
    keys = [k for k in a if isinstance(a[k], torch.Tensor) and k[0] in ("disp", "depth")]
    assert keys
    for k in keys:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
