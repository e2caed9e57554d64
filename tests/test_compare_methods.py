"""benchmarks/compare_methods.py: the summary's numbers from finished runs (default suite), and
--quick end to end (a small world, a short shared start, two rows, one seed) with resuming a
killed comparison (slow: ~2 minutes)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

QUICK = ["--quick", "--quick_steps", "2", "--height", "64", "--width", "192"]


def _run(out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "benchmarks/compare_methods.py", *QUICK, "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    res = _run(out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    yield out, res
    shutil.rmtree(out, ignore_errors=True)  # worlds, runs and weights (the suite's disk peak)


@pytest.mark.slow
def test_quick_comparison_writes_the_table_the_plot_and_the_diagnostics(quick):
    out, res = quick
    for name in ("table.md", "results.json", "results.csv", "compare.png"):
        assert (out / name).stat().st_size > 100, name
    records = json.loads((out / "results.json").read_text())
    assert sorted(r["row"] for r in records) == ["monodepth2_mono", "srd"]
    for r in records:
        assert 0 < r["abs_rel"] < 5 and 0 <= r["a1"] <= 1
        assert 0 <= r["moving/abs_rel"] < 5  # the world has moving objects: their region is scored
        diag = r["diagnostics"]
        assert 0 <= diag["abs_rel_static"] < 5 and 0 <= diag["abs_rel_zoom_1.6x"] < 5
        assert diag["scale_spread"] >= 0 and diag["pose_metres_per_frame"] > 0
    # the table's paired difference is srd - monodepth2_mono on the same seed
    by = {r["row"]: r for r in records}
    delta = by["srd"]["abs_rel"] - by["monodepth2_mono"]["abs_rel"]
    table = (out / "table.md").read_text()
    line = next(l for l in table.splitlines() if l.startswith("| srd |"))
    assert f"{delta:.3f} ± 0.000 (n=1)" in line
    # each run started from the shared start, recorded in its preset
    preset = (out / "presets" / "srd_s0.yaml").read_text()
    assert "pretrained_encoder:" in preset and "seed: 0" in preset
    # the multi-frame rows' parallax table (printed when they ran), from the quick world's test drive
    import compare_methods
    text = compare_methods.summarize_parallax(compare_methods.parse_args(QUICK + ["--out", str(out)]))
    small = next(l for l in text.splitlines() if l.startswith("| 192x64 | 48x16 |"))
    large = next(l for l in text.splitlines() if l.startswith("| 640x192 | 160x48 |"))
    ratio = float(large.split("|")[3]) / float(small.split("|")[3])
    # a match moves radially: its x part grows with the width (x 3.33), its y part with the height (x 3)
    assert 192 / 64 - 0.05 < ratio < 640 / 192 + 0.05, ratio
    assert json.loads((out / "parallax.json").read_text())["sizes"].keys() == {"192x64", "640x192"}


@pytest.mark.slow
def test_a_second_call_reuses_finished_runs_and_resumes_a_killed_one(quick):
    out, _ = quick
    # a run killed before its evaluation: its evaluation and diagnostics are redone, nothing retrained
    (out / "runs" / "srd_s0" / "eval.json").unlink()
    before = (out / "runs" / "monodepth2_mono_s0" / "eval.json").stat().st_mtime_ns
    res = _run(out)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (out / "runs" / "srd_s0" / "eval.json").is_file()
    assert (out / "runs" / "monodepth2_mono_s0" / "eval.json").stat().st_mtime_ns == before
    log = (out / "logs" / "srd_s0.log").read_text()
    assert log.count("train.py") == 1  # trained once: the finished training was read back


def _fake_run(out, name, abs_rel, a1, moving, curve, best_epoch, diag):
    run = out / "runs" / name
    (run / "models").mkdir(parents=True)
    results = [{"abs_rel": abs_rel, "a1": a1, "rmse": 1.0},
               {"region": "dynamic", "abs_rel": moving, "a1": 0.5, "rmse": 2.0}]
    (run / "eval.json").write_text(json.dumps({"results": results}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"abs_rel": c}) + "\n" for c in curve))
    (run / "models" / "best.json").write_text(json.dumps({"epoch": best_epoch}))
    (run / "diag.json").write_text(json.dumps(diag))


def test_summary_of_finished_runs_has_mean_std_and_paired_differences(tmp_path):
    import compare_methods
    # two seeds of the baseline and of SRD; a third SRD seed without its baseline is not paired
    _fake_run(tmp_path, "monodepth2_mono_s0", 0.20, 0.70, 0.40, [0.3, 0.2], 1, {"scale_spread": 0.1})
    _fake_run(tmp_path, "monodepth2_mono_s1", 0.30, 0.60, 0.50, [0.4, 0.3], 1, {"scale_spread": 0.3})
    _fake_run(tmp_path, "srd_s0", 0.15, 0.80, 0.35, [0.2, 0.15], 1, {"scale_spread": 0.2})
    _fake_run(tmp_path, "srd_s1", 0.27, 0.65, 0.45, [0.3, 0.27], 1, {"scale_spread": 0.2})
    _fake_run(tmp_path, "srd_s2", 0.90, 0.10, 0.95, [0.9], 0, {})
    args = compare_methods.parse_args(["--out", str(tmp_path), "--rows", "monodepth2_mono", "srd",
                                       "--seeds", "0", "1", "2", "--summary_only"])
    records = compare_methods.summarize(args)
    assert len(records) == 5
    table = (tmp_path / "table.md").read_text()
    base = next(l for l in table.splitlines() if l.startswith("| monodepth2_mono |"))
    # mean 0.25, sample std sqrt(((0.05)^2 * 2) / 1) = 0.0707
    assert "| 2 | 0.250 ± 0.071 | 0.650 ± 0.071 | 0.450 ± 0.071 |" in base
    srd = next(l for l in table.splitlines() if l.startswith("| srd |"))
    # three seeds: mean (0.15 + 0.27 + 0.90) / 3 = 0.44; paired over seeds 0 and 1: -0.05, -0.03
    assert "| 3 | 0.440 ± 0.403 |" in srd
    assert "| monodepth2_mono | -0.040 ± 0.014 (n=2) | 1,1,0 |" in srd
    assert "| srd | scale_spread | 0.200 ± 0.000 | 2 |" in table
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("row,seed,") and len(rows) == 6
    assert (tmp_path / "compare.png").stat().st_size > 1000
    by = {(r["row"], r["seed"]): r for r in json.loads((tmp_path / "results.json").read_text())}
    assert by[("srd", 1)]["val_curve"] == [0.3, 0.27] and by[("srd", 1)]["moving/abs_rel"] == 0.45


def test_srd_mask_precision_reads_a_distilled_epoch_when_the_best_has_no_teacher():
    from diagnostics import srd_student_epoch
    assert srd_student_epoch([0, 1, 2], 2) == 2  # the best epoch and its teacher, epoch 1
    assert srd_student_epoch([0, 1, 2], 1) == 1
    assert srd_student_epoch([0, 1, 2], 0) == 2  # epoch 0 had no teacher: the last distilled epoch
    assert srd_student_epoch([0, 1, 2], None) == 2
    assert srd_student_epoch([0, 2, 3], 2) == 3  # epoch 1's weights are gone: 2 has no teacher on disk
    assert srd_student_epoch([0], 0) is None and srd_student_epoch([0, 2], 2) is None


def _true_geometry_batch(world, frame=5, width=320, height=96):
    """A test line's frames -1, 0, +1 at the network size, its K, and the world's depth."""
    import cv2
    import numpy as np
    import torch
    from synthetic_world.calibration import intrinsics
    from synthetic_world.constants import DATE, drive_name
    folder = f"{DATE}/{drive_name(0)}"
    inputs = {}
    for f in (-1, 0, 1):
        image = cv2.imread(os.path.join(world.out, folder, "image_02", "data", f"{frame + f:010d}.jpg"))
        image = cv2.resize(image[:, :, ::-1], (width, height), interpolation=cv2.INTER_AREA)
        inputs[("color", f, 0)] = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    K = np.eye(4, dtype=np.float32)
    K[:3, :3] = intrinsics(width, height)
    inputs[("K", 0)] = torch.from_numpy(K)[None]
    inputs[("inv_K", 0)] = torch.from_numpy(np.linalg.inv(K))[None]
    gt = np.load(os.path.join(world.out, folder, "depth_dense", "image_02", "data", f"{frame:010d}.npy"))
    gt = cv2.resize(gt.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)[None]
    return inputs, gt, f"{folder} {frame} l"


def test_photometric_loss_at_the_worlds_true_geometry(world):
    """The diagnostic that tells an unconverged network from an objective whose minimum is not
    the world's geometry: at the true depth and pose the loss is a tenth of the unwarped
    frames' (0.015 vs 0.150-0.156 on frames 3, 5, 8 of this world); twice the true translation
    raises it 6.6-7.1x; a 'network' whose outputs are the truth at another scale scores
    exactly the truth."""
    import torch
    from diagnostics import min_photometric, photometric_at_truth, true_poses
    from losses import ReprojectionLoss
    from types import SimpleNamespace
    inputs, gt, line = _true_geometry_batch(world)
    method = SimpleNamespace(reprojection=ReprojectionLoss(False))
    poses = true_poses(world.out, line, (-1, 1))
    assert set(poses) == {-1, 1} and 0.5 < abs(poses[1][2, 3]) < 1.6  # the camera moves ~1 m per frame
    true_pose = {f: torch.from_numpy(T).float()[None] for f, T in poses.items()}
    depth = torch.from_numpy(gt.clip(0.1, None)).float()[:, None]
    depth[depth <= 0.1] = 1000.0
    truth, identity = min_photometric(method, inputs, depth, true_pose)
    truth, identity = truth.mean().item(), identity.mean().item()
    assert truth < 0.2 * identity, (truth, identity)
    doubled = {f: T.clone() for f, T in true_pose.items()}
    for T in doubled.values():
        T[:, :3, 3] *= 2
    assert min_photometric(method, inputs, depth, doubled)[0].mean().item() > 3 * truth
    scale = 3.0
    outputs = {("depth", 0, 0): depth / scale}
    for f, T in true_pose.items():
        T = T.clone()
        T[:, :3, 3] /= scale
        outputs[("cam_T_cam", 0, f)] = T
    acc = {}
    photometric_at_truth(method, inputs, outputs, gt, [line], world.out, acc)
    for name in ("prediction", "true_depth", "true_pose"):
        assert abs(acc[f"photometric_{name}"][0] - acc["photometric_truth"][0]) < 1e-4, name
    assert abs(acc["photometric_truth"][0] - truth) < 1e-4
    # a second depth of the same outputs (ManyDepth's single-frame network) under its own names:
    # the truth at the outputs' scale scores the truth, a flat depth the unwarped frames' loss or more
    outputs[("mono_depth", 0, 0)] = torch.full_like(depth, 5.0)
    photometric_at_truth(method, inputs, outputs, gt, [line], world.out, acc, key=("mono_depth", 0, 0),
                         prefix="single_")
    assert abs(acc["single_photometric_truth"][0] - truth) < 1e-4
    assert acc["single_photometric_prediction"][0] > 3 * truth
    assert len(acc["photometric_prediction"]) == 1  # the first depth's numbers are left as they were
    assert true_poses(world.out, f"{line.split()[0]} 0 l", (-1, 1)) is None  # no frame -1


def test_diagnostics_of_an_older_version_or_cut_short_are_measured_again(tmp_path):
    import compare_methods
    import diagnostics
    path = tmp_path / "diag.json"
    assert not compare_methods.diagnostics_current(str(path))
    path.write_text(json.dumps({"abs_rel_static": 0.2}))  # version 1 files carry no version
    assert not compare_methods.diagnostics_current(str(path))
    path.write_text(json.dumps({"abs_rel_static": 0.2, "diagnostics_version": diagnostics.VERSION}))
    assert compare_methods.diagnostics_current(str(path))
    path.write_text('{"abs_rel_static": 0.2, "diagnostics_vers')
    assert not compare_methods.diagnostics_current(str(path))


def test_rows_with_a_pose_network_start_it_from_the_shared_pose_start(tmp_path):
    import compare_methods
    from options import read_preset
    start = tmp_path / "start"
    (start / "pose").mkdir(parents=True)
    mono, _ = read_preset("synthetic_mono")
    stereo, _ = read_preset("synthetic_quickstart")
    dynamic, _ = read_preset("synthetic_dynamic_mf")
    assert compare_methods.pose_start(str(start), mono) == {}  # no pose.pth: the pose networks start as before
    (start / "pose" / "pose.pth").write_bytes(b"")
    options = compare_methods.pose_start(str(start), mono)
    assert options == {"load_weights_folder": str(start / "pose"), "models_to_load": ["pose_encoder", "pose"],
                       "min_depth": 0.1, "disp_bias_init": -3.0}
    for preset in ("synthetic_srd", "synthetic_bdedepth", "synthetic_manydepth", "synthetic_mism_teacher",
                   "synthetic_mism_student"):
        assert compare_methods.pose_start(str(start), read_preset(preset)[0]) == options, preset
    assert compare_methods.pose_start(str(start), stereo) == {}  # stereo only: no pose network
    assert compare_methods.pose_start(str(start), dynamic) == {}  # given poses


def test_measuring_again_keeps_what_only_the_older_diagnostics_could_measure(tmp_path, monkeypatch):
    """An SRD run whose teacher epoch was pruned after its first diagnostics: measured again by
    a newer version, its mask precision (which needs that epoch) is kept from the older file."""
    import compare_methods
    import diagnostics
    run_dir = tmp_path / "srd_s0"
    run_dir.mkdir()
    (run_dir / "diag.json").write_text(json.dumps({"srd_mask_precision": 0.3, "abs_rel_static": 0.5}))

    def measure(command, log, threads):  # what the newer diagnostics.py writes without the teacher
        out = command[command.index("--json") + 1]
        with open(out, "w") as f:
            json.dump({"abs_rel_static": 0.4, "diagnostics_version": diagnostics.VERSION}, f)
    monkeypatch.setattr(compare_methods, "run", measure)
    args = compare_methods.parse_args(["--out", str(tmp_path), "--world", str(tmp_path / "world")])
    row = next(r for r in compare_methods.ROWS if r.name == "srd")
    compare_methods.diagnose(args, row, str(run_dir), None, 1)
    assert json.loads((run_dir / "diag.json").read_text()) == {
        "srd_mask_precision": 0.3, "abs_rel_static": 0.4, "diagnostics_version": diagnostics.VERSION}
    compare_methods.diagnose(args, row, str(run_dir), None, 1)  # current: not measured again


def _records_setup(tmp_path):
    """A finished baseline run (seed 0) with its preset, a shared start of small weight files
    and a world description: what --records fingerprints."""
    import compare_methods
    import torch
    start = tmp_path / "start"
    (start / "pose").mkdir(parents=True)
    torch.save({"conv.weight": torch.arange(6.0).view(2, 3)}, start / "resnet18.pth")
    torch.save({"fc.weight": torch.ones(2)}, start / "pose" / "pose.pth")
    world = tmp_path / "world"
    world.mkdir()
    (world / "synthetic_world.json").write_text(json.dumps({"seed": 0, "height": 375, "width": 1242}))
    out = tmp_path / "out"
    _fake_run(out, "monodepth2_mono_s0", 0.20, 0.70, 0.40, [0.3, 0.2], 1,
              {"scale_spread": 0.1, "abs_rel_static": 0.25,  # not in sorted order, as a run writes them
               "diagnostics_version": __import__("diagnostics").VERSION})
    args = compare_methods.parse_args(["--out", str(out), "--world", str(world), "--pretrained", str(start),
                                       "--rows", "monodepth2_mono", "--seeds", "0", "--records",
                                       str(tmp_path / "records")])
    row = next(r for r in compare_methods.ROWS if r.name == "monodepth2_mono")
    (out / "presets").mkdir()
    (out / "presets" / "monodepth2_mono_s0.yaml").write_text(
        f"data_path: {world}\nlog_dir: {out / 'runs'}\npretrained_encoder: {start}\nlearning_rate: 0.0002\n"
        f"seed: 0\nload_weights_folder: {start / 'pose'}\n")
    return compare_methods, args, row, start, out


def test_records_keep_a_finished_runs_numbers_without_machine_paths_and_rebuild_its_table(tmp_path):
    compare_methods, args, row, start, out = _records_setup(tmp_path)
    (out / "runs" / "monodepth2_mono_s0" / "eval.json").write_text(json.dumps(
        {"results": [{"abs_rel": 0.2, "a1": 0.7, "weights": str(out / "runs" / "monodepth2_mono_s0" / "models")},
                     {"region": "dynamic", "abs_rel": 0.4, "a1": 0.5}]}))
    compare_methods.summarize(args)
    path = tmp_path / "records" / "monodepth2_mono_s0.json"
    text = path.read_text()
    assert str(tmp_path) not in text  # the machine's paths stay on the machine
    record = json.loads(text)
    assert record["options"] == {"learning_rate": 0.0002, "seed": 0}
    assert set(record["start"]) == {"resnet18.pth", "pose/pose.pth"} and len(record["start"]["resnet18.pth"]) == 16
    # a run that does not load the pose start (stereo) does not depend on it
    assert set(compare_methods.start_fingerprint(str(start), {"load_weights_folder": None})) == {"resnet18.pth"}
    assert record["eval"]["results"][0]["weights"] == "runs/monodepth2_mono_s0/models"
    table = (out / "table.md").read_text()
    assert table.index("abs_rel_static") < table.index("scale_spread")
    shutil.rmtree(out / "runs")  # the runs gone: only the records
    (out / "table.md").unlink()
    records = compare_methods.summarize(args)
    assert records[0]["source"] == "records" and records[0]["abs_rel"] == 0.2 and records[0]["val_curve"] == [0.3, 0.2]
    checked = "\n1 of 1 runs read from the records (each checked: same options, start and world)\n"
    assert (out / "table.md").read_text().replace(checked, "") == table  # the same rows and diagnostics, same order
    assert "| monodepth2_mono | Monodepth2 (mono) | 1 | 0.200 ± 0.000 | 0.700 ± 0.000 | 0.400 ± 0.000 |" in table
    args.out = str(tmp_path / "elsewhere")  # a folder that does not exist yet, as on a fresh clone
    records = compare_methods.summarize(args)
    assert records[0]["source"] == "records, unchecked"
    assert "1 of 1 runs read from the records (1 unchecked" in (tmp_path / "elsewhere" / "table.md").read_text()
    args.out = str(out)  # this machine again, with the run's preset: a record of other options is left out
    preset = out / "presets" / "monodepth2_mono_s0.yaml"
    preset.write_text(preset.read_text().replace("0.0002", "0.0001"))
    assert compare_methods.summarize(args) == []


def test_a_recorded_run_is_read_not_trained_unless_its_options_start_or_world_differ(tmp_path, monkeypatch):
    import torch
    compare_methods, args, row, start, out = _records_setup(tmp_path)
    compare_methods.summarize(args)
    shutil.rmtree(out / "runs")
    assert compare_methods.recorded(args, row, 0, str(start))
    trained = []
    monkeypatch.setattr(compare_methods, "train", lambda *a: trained.append(a))
    monkeypatch.setattr(compare_methods, "row_preset", lambda *a: str(out / "presets" / "monodepth2_mono_s0.yaml"))
    compare_methods.run_row(args, row, 0, str(start), 1)
    assert trained == []  # read from the records
    preset = out / "presets" / "monodepth2_mono_s0.yaml"
    preset.write_text(preset.read_text().replace("0.0002", "0.0001"))  # another learning rate
    assert not compare_methods.recorded(args, row, 0, str(start))
    preset.write_text(preset.read_text().replace("0.0001", "0.0002"))
    assert compare_methods.recorded(args, row, 0, str(start))
    torch.save({"fc.weight": torch.ones(2) * 2}, start / "pose" / "pose.pth")  # another pose start
    assert not compare_methods.recorded(args, row, 0, str(start))
    torch.save({"fc.weight": torch.ones(2)}, start / "pose" / "pose.pth")  # the same tensors, a new file
    assert compare_methods.recorded(args, row, 0, str(start))
    (tmp_path / "world" / "synthetic_world.json").write_text(json.dumps({"seed": 1}))  # another world
    assert not compare_methods.recorded(args, row, 0, str(start))


def test_a_finished_run_whose_options_or_start_changed_is_kept_aside_and_trained_again(tmp_path, monkeypatch):
    compare_methods, args, row, start, out = _records_setup(tmp_path)
    (out / "runs" / "monodepth2_mono_s0" / "trained.json").write_text(json.dumps(
        {"seconds": 1.0, "start": compare_methods.start_fingerprint(str(start), {"load_weights_folder": "x"})}))
    compare_methods.summarize(args)
    record = json.loads((tmp_path / "records" / "monodepth2_mono_s0.json").read_text())
    torch = __import__("torch")
    torch.save({"conv.weight": torch.zeros(2, 3)}, start / "resnet18.pth")  # the start rebuilt after the run
    compare_methods.summarize(args)  # the record keeps the start the run trained from
    assert json.loads((tmp_path / "records" / "monodepth2_mono_s0.json").read_text())["start"] == record["start"]
    trained = []
    monkeypatch.setattr(compare_methods, "train", lambda *a: trained.append(a[1]))
    monkeypatch.setattr(compare_methods, "evaluate", lambda *a: None)
    monkeypatch.setattr(compare_methods, "diagnose", lambda *a: None)
    monkeypatch.setattr(compare_methods, "write_record", lambda *a: None)
    monkeypatch.setattr(__import__("training.checkpoints").checkpoints, "prune_weight_folders", lambda *a, **k: None)
    monkeypatch.setattr(compare_methods, "row_preset", lambda *a: str(out / "presets" / "monodepth2_mono_s0.yaml"))
    compare_methods.run_row(args, row, 0, str(start), 1)  # trained from another start: kept aside, trained again
    assert len(trained) == 1 and not (out / "runs" / "monodepth2_mono_s0").exists()
    assert (out / "replaced" / "monodepth2_mono_s0-0" / "eval.json").is_file()
    # options that changed after a run finished: the preset is rewritten and the run kept aside
    _fake_run(out, "monodepth2_mono_s1", 0.20, 0.70, 0.40, [0.3, 0.2], 1, {})
    monkeypatch.undo()
    args = compare_methods.parse_args(["--out", str(out), "--world", str(tmp_path / "world")])
    first = compare_methods.row_preset(args, row, row.preset, row.overrides, None, 1, "monodepth2_mono_s1")
    assert (out / "runs" / "monodepth2_mono_s1").is_dir()  # the first preset of a run moves nothing
    compare_methods.row_preset(args, row, row.preset, dict(row.overrides, learning_rate=3e-4), None, 1,
                               "monodepth2_mono_s1")
    assert not (out / "runs" / "monodepth2_mono_s1").exists()
    assert (out / "replaced" / "monodepth2_mono_s1-0" / "eval.json").is_file() and os.path.isfile(first)


def _lr_factors(preset_path):
    """The learning-rate factor of each epoch as the trained options give it (the preset over
    its method's defaults), recomputed here: step x decay_rate every step_size epochs, or
    exponential x decay_rate per epoch."""
    from options import MonodepthOptions
    opt = MonodepthOptions().parse(["--config", preset_path])
    if opt.lr_sche_type == "exponential":
        return opt.lr_sche_type, [opt.decay_rate ** e for e in range(opt.num_epochs + 1)]
    assert opt.lr_sche_type == "step" and opt.decay_step in ([0], 0)
    return opt.lr_sche_type, [opt.decay_rate ** (e // opt.scheduler_step_size) for e in range(opt.num_epochs + 1)]


def test_every_raw_row_compresses_its_recipes_learning_rate_schedule_into_the_budget(tmp_path):
    """The recipes' 20-epoch schedules compressed into the comparison's epochs, read from the
    options each run trains with: a step at 75 % (15 of 20: epoch 2 of 3, where ManyDepth also
    freezes its teacher); SRD's x0.9 per epoch (its method's default, not in its preset) at a
    rate that ends the budget at the recipe's 0.9^20."""
    import compare_methods
    import yaml
    args = compare_methods.parse_args(["--out", str(tmp_path), "--world", str(tmp_path / "world")])
    kinds = {}
    for row in compare_methods.ROWS:
        if row.kind != "raw":
            continue
        path = compare_methods.row_preset(args, row, row.preset, row.overrides, None, 0, row.name)
        kind, factors = _lr_factors(path)
        kinds[row.name] = kind
        if kind == "step":
            assert factors[:3] == [1.0, 1.0, 0.1], row.name
        else:
            assert factors[3] == pytest.approx(0.9 ** 20, rel=1e-4) and factors[1] == pytest.approx(0.4954, abs=1e-4)
        if row.name == "manydepth":
            assert yaml.safe_load(open(path))["freeze_teacher_epoch"] == 2
    assert kinds["srd"] == kinds["srd_no_distill"] == "exponential" and kinds["monodepth2_mono"] == "step"
    args = compare_methods.parse_args(["--out", str(tmp_path), "--world", str(tmp_path / "world"), "--epochs", "8"])
    mono = next(r for r in compare_methods.ROWS if r.name == "monodepth2_mono")
    assert _lr_factors(compare_methods.row_preset(args, mono, mono.preset, {}, None, 0, "x"))[1][5:8] == [1.0, 0.1, 0.1]
    srd = next(r for r in compare_methods.ROWS if r.name == "srd")
    assert _lr_factors(compare_methods.row_preset(args, srd, srd.preset, {}, None, 0, "y"))[1][8] == pytest.approx(
        0.9 ** 20, rel=1e-4)
