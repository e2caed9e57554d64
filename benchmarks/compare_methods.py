"""Does each paper's method beat its baseline here? Every method's synthetic preset from one
shared pretrained start, the same examples seen, several seeds; each run scored on the test
drive at its best validation epoch, with each paper's mechanism measured against the
world's true depth (benchmarks/diagnostics.py).

    python benchmarks/compare_methods.py                      # the full comparison (README: its time)
    python benchmarks/compare_methods.py --jobs 2             # two trainings at once, one core each
    python benchmarks/compare_methods.py --rows monodepth2_mono srd --seeds 0 1 2
    python benchmarks/compare_methods.py --quick              # 1 seed, 2 rows, a few steps (a test)
    python benchmarks/compare_methods.py --device cuda --height 192 --width 640   # on a GPU

Before the runs it writes what they need once: the comparison's world (moving objects and an
odometry tree; drives 0-2 train, 3 validates, 4 tests), its ground truth, the Depth Hints,
and the shared start (benchmarks/pretrain_encoder.py; --imagenet_weights uses real ImageNet
weights instead; --scratch starts from random weights). Every row with a pose network starts
it from the shared start's pose folder, with its depth at that pose's unit (pose_start()).

Under --out (runs/compare): presets/<row>.yaml (each row's exact options), runs/<row>_s<seed>/
(a training run, its evaluation eval.json and diagnostics diag.json), and the summary:
results.json and results.csv (one line per run), table.md (mean +- std over seeds, the
difference to the row's baseline with its std), compare.png (one bar per row with the seeds'
spread, and the validation curves). Run again with the same options, it continues where it
stopped: a finished run is read back, a killed one resumes.

With --records DIR each finished run's numbers are also written to DIR/<row>_s<seed>.json
(options without machine paths, fingerprints of the shared start's tensors and of the world,
the code version; evaluation, diagnostics, validation curve, best epoch, training time). A
later comparison with the same --records, on this machine or another, reads a run from there
instead of training it when its options, start and world are the same, so a comparison can
be continued elsewhere and its published table rebuilt (--summary_only) without the weights:
    python benchmarks/compare_methods.py --jobs 2 --records benchmarks/results/compare
"""
import argparse
import csv
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def atomic_write_bytes(path, data):
    """utils.atomic_write_bytes, imported when first written (utils imports torch)."""
    from utils import atomic_write_bytes as write
    write(path, data)


WORLD_DRIVES = 5  # 0-2 train, 3 validates, 4 tests (synthetic_world's split rule for 3+ drives)
ODOM_TRAIN, ODOM_VAL, ODOM_TEST = ["00", "01", "02"], ["03"], ["04"]


@dataclass
class Row:
    name: str
    paper: str
    preset: str
    overrides: dict = field(default_factory=dict)
    baseline: str = None  # the row this one is compared with
    scoring: str = "mono"  # mono: median scaling; stereo: the stereo model's fixed factor; metric
    kind: str = "raw"  # raw: KITTI raw tree (synthetic split); odom: the odometry tree
    stage2: tuple = None  # (preset, overrides) of a second stage that starts from this one (MISM)


ROWS = [
    Row("monodepth2_mono", "Monodepth2 (mono)", "synthetic_mono"),
    Row("monodepth2_stereo", "Monodepth2 (stereo)", "synthetic_quickstart", scoring="stereo"),
    Row("depth_hints", "Depth Hints", "synthetic_quickstart", {"use_depth_hints": True},
        baseline="monodepth2_stereo", scoring="stereo"),
    Row("srd", "SRD", "synthetic_srd", baseline="monodepth2_mono"),
    Row("srd_no_distill", "SRD's networks, no self-distillation", "synthetic_srd", {"distill_start_epoch": 1000},
        baseline="monodepth2_mono"),
    Row("bdedepth", "BDEdepth", "synthetic_bdedepth", baseline="bdedepth_no_aug"),
    Row("bdedepth_no_crop", "BDEdepth without resizing-cropping", "synthetic_bdedepth",
        {"use_local_crop": False}, baseline="bdedepth_no_aug"),
    Row("bdedepth_no_reshuffle", "BDEdepth without splitting-permuting", "synthetic_bdedepth",
        {"use_patch_reshuffle": False}, baseline="bdedepth_no_aug"),
    Row("bdedepth_no_aug", "BDEdepth's networks, neither augmentation", "synthetic_bdedepth",
        {"use_local_crop": False, "use_patch_reshuffle": False}, baseline="monodepth2_mono"),
    Row("manydepth", "ManyDepth", "synthetic_manydepth", baseline="monodepth2_mono"),
    Row("mism", "MISM (teacher -> student)", "synthetic_mism_teacher", baseline="monodepth2_mono",
        stage2=("synthetic_mism_student", {})),
    Row("dynamic_mf", "Dynamic-scene multi-frame (CCF)", "synthetic_dynamic_mf", baseline="dynamic_mf_no_fusion",
        scoring="metric", kind="odom"),
    Row("dynamic_mf_mono_guide_multi", "Dynamic-scene, mono guides multi only", "synthetic_dynamic_mf",
        {"fusion": "mono_guide_multi"}, baseline="dynamic_mf_no_fusion", scoring="metric", kind="odom"),
    Row("dynamic_mf_multi_guide_mono", "Dynamic-scene, multi guides mono only", "synthetic_dynamic_mf",
        {"fusion": "multi_guide_mono"}, baseline="dynamic_mf_no_fusion", scoring="metric", kind="odom"),
    Row("dynamic_mf_no_fusion", "Dynamic-scene, no fusion", "synthetic_dynamic_mf", {"fusion": "none"},
        scoring="metric", kind="odom"),
]
QUICK_ROWS = ["monodepth2_mono", "srd"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="where everything is written (default runs/compare; --quick: runs/compare_quick)")
    p.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="rows to run (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs of the raw rows (drives 0-2: 348 items each); the odometry rows see as many examples")
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--world", help="the comparison's world, written if absent (default synthetic_bench; "
                   "--quick: a small one under --out)")
    p.add_argument("--pretrained", help="the shared start, written by benchmarks/pretrain_encoder.py if absent "
                   "(default runs/pretrained_synthetic; --quick: a short one under --out)")
    p.add_argument("--imagenet_weights", help="start from this torchvision ResNet-18 ImageNet file instead")
    p.add_argument("--scratch", action="store_true", help="start every run from random weights")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (threads are shared among them)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true",
                   help=f"rows {' and '.join(QUICK_ROWS)}, seed 0, --quick_steps steps each, a small world and a "
                        "short pretraining: checks the whole pipeline")
    p.add_argument("--quick_steps", type=int, default=200, help="training steps of each --quick run")
    p.add_argument("--no_diagnostics", action="store_true", help="skip the mechanism diagnostics")
    p.add_argument("--summary_only", action="store_true", help="only rebuild the summary from finished runs")
    p.add_argument("--records", help="a folder of finished runs' numbers (one json per run, no weights): each finished "
                   "run is written there, and a run found there with the same options, start and world is read "
                   "instead of trained again (the published table: benchmarks/results/compare)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows = args.rows or QUICK_ROWS
        args.seeds = args.seeds or [0]
        args.out = args.out or os.path.join("runs", "compare_quick")
        args.world = args.world or os.path.join(args.out, "world")
        args.pretrained = args.pretrained or os.path.join(args.out, "start")
    args.seeds = args.seeds or [0, 1, 2]
    args.out = args.out or os.path.join("runs", "compare")
    args.world = args.world or "synthetic_bench"
    args.pretrained = args.pretrained or os.path.join("runs", "pretrained_synthetic")
    return args


def rows_of(args):
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    return rows


def run(command, log=None, threads=None, check=True):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    with open(log, "a") if log else open(os.devnull, "w") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(command[1:3])} ... failed (exit {result.returncode}); see {log}")
    return result.returncode


# ---------------------------------------------------------------------------------- preparation
def world_paths(args):
    world = os.path.abspath(args.world)
    return {"raw": world, "odom": os.path.join(world, "odometry"), "split": os.path.join(world, "splits", "synthetic"),
            "hints": os.path.join(world, f"depth_hints_{args.width}x{args.height}")}


def prepare(args):
    """The world, its ground truth, Depth Hints, and the shared start (each once)."""
    from datasets import synthetic_world as sw
    paths = world_paths(args)
    os.makedirs(args.out, exist_ok=True)
    if not sw.world_exists(paths["raw"]):
        print(f"-> writing the comparison's world {paths['raw']}")
        size = dict(frames=14, height=128, width=416) if args.quick else {}
        sw.generate(sw.Config(out=paths["raw"], drives=WORLD_DRIVES, seed=0, moving_objects=True, odometry=True,
                              **size), progress=False)
    if not os.path.isfile(os.path.join(paths["split"], "gt_depths.npz")):
        run([sys.executable, "export_gt_depth.py", "--data_path", paths["raw"], "--split", paths["split"]],
            os.path.join(args.out, "prepare.log"))
    if any(r.overrides.get("use_depth_hints") for r in rows_of(args)) and not os.path.isdir(paths["hints"]):
        lines = []
        for name in ("train_files.txt", "val_files.txt", "test_files.txt"):
            with open(os.path.join(paths["split"], name)) as f:
                lines += [line for line in f.read().splitlines() if line.strip()]
        listing = os.path.join(args.out, "hint_files.txt")
        with open(listing, "w") as f:
            f.write("\n".join(lines) + "\n")
        run([sys.executable, "precompute_depth_hints.py", "--data_path", paths["raw"], "--filenames", listing,
             "--save_path", paths["hints"], "--png", "--height", str(args.height), "--width", str(args.width)],
            os.path.join(args.out, "prepare.log"))
    if args.scratch:
        return None
    if args.imagenet_weights:
        folder = os.path.join(args.out, "imagenet_start")
        run([sys.executable, "benchmarks/pretrain_encoder.py", "--imagenet", "--imagenet_weights",
             args.imagenet_weights, "--out", folder], os.path.join(args.out, "prepare.log"))
        return os.path.abspath(folder)
    command = [sys.executable, "benchmarks/pretrain_encoder.py", "--out", args.pretrained, "--no_progress"]
    command += ["--height", str(args.height), "--width", str(args.width)]
    if args.quick:
        command += ["--epochs", "1", "--pose_epochs", "1", "--drives", "3", "--frames", "8",
                    "--world_size", "128", "416",
                    "--max_steps", str(min(args.quick_steps, 20)), "--world", os.path.join(args.out, "pretrain_world"),
                    "--log_dir", os.path.join(args.out, "pretrain_runs")]
    print(f"-> the shared start: {' '.join(command[1:])}")
    run(command, os.path.join(args.out, "prepare.log"))
    return os.path.abspath(args.pretrained)


def train_items(args):
    with open(os.path.join(world_paths(args)["split"], "train_files.txt")) as f:
        return sum(1 for line in f if line.strip())


def odom_width(args):
    """The odometry rows' width: their method crops a box of the network's aspect from each
    frame, so the width is --width or, where that box would not fit the world's frames
    (320 x 96 is wider than a 1242 x 375 frame), the widest multiple of 32 that does."""
    with open(os.path.join(world_paths(args)["raw"], "synthetic_world.json")) as f:
        world = json.load(f)
    return min(args.width, args.height * world["width"] // world["height"] // 32 * 32)


def pose_start(start, cfg):
    """The options that start a row's pose networks from the shared start's pose folder
    (benchmarks/pretrain_encoder.py), with its depth at the pose's unit; none for a row
    without a pose network (stereo only, or given poses) or a start without one (ImageNet)."""
    from benchmarks.pretrain_encoder import POSE_START_DEPTH
    folder = os.path.join(start, "pose")
    temporal = [f for f in cfg.get("frame_ids", [0]) if f != 0 and f != "s"]
    if not temporal or not os.path.isfile(os.path.join(folder, "pose.pth")) or cfg.get("method") == "dynamic_mf":
        return {}
    return dict(POSE_START_DEPTH, load_weights_folder=folder, models_to_load=["pose_encoder", "pose"])


RECIPE_EPOCHS = 20  # the papers' KITTI schedules (monodepth2, SRD, BDEdepth, ManyDepth, MISM)


def effective_schedule(cfg):
    """The learning-rate schedule a preset trains with: its own keys, else its method's
    defaults (SRD's option group sets AdamW with x0.9 per epoch; the others a step)."""
    from methods import resolve_method_name
    from options import build_parser
    parser = build_parser(method_name=resolve_method_name(cfg.get("method"), cfg, []))
    return {k: cfg.get(k, parser.get_default(k)) for k in ("lr_sche_type", "decay_step", "decay_rate",
                                                           "scheduler_step_size")}


def scale_schedule(cfg, epochs):
    """A recipe's schedule compressed from its 20 epochs into `epochs`, as it is written: a
    single step at 75 % of them (monodepth2's 15 of 20), or an exponential decay whose rate per
    epoch is raised to 20 / epochs so that the budget ends where the recipe's 20 epochs end
    (SRD's x0.9 per epoch: x0.496 per epoch at 3). Returns the step epoch (also ManyDepth's
    teacher freeze). A schedule of explicit milestones or a cosine one is left as it is."""
    step = max(int(0.75 * epochs + 0.5), 1)
    schedule = effective_schedule(cfg)
    milestones = schedule["decay_step"] if isinstance(schedule["decay_step"], (list, tuple)) else [schedule["decay_step"]]
    if schedule["lr_sche_type"] == "step" and not any(milestones):
        cfg["scheduler_step_size"] = step
    elif schedule["lr_sche_type"] == "exponential":
        cfg["lr_sche_type"] = "exponential"
        cfg["decay_rate"] = round(schedule["decay_rate"] ** (RECIPE_EPOCHS / epochs), 6)
    return step


def row_preset(args, row, preset, overrides, start, seed, name):
    """The options of one training as a preset file (what ran is on record)."""
    from options import read_preset
    cfg, _ = read_preset(preset)
    paths = world_paths(args)
    cfg.update(overrides)
    cfg.update(height=args.height, width=args.width, seed=seed, log_dir=os.path.join(os.path.abspath(args.out), "runs"),
               model_name=name, num_workers=1 if args.jobs > 1 else cfg.get("num_workers", 1),
               keep_weights=0 if cfg.get("method") == "srd" else 1)  # SRD's diagnostics read its teacher's epoch
    if row.kind == "raw":
        cfg.update(data_path=paths["raw"], split="synthetic", num_epochs=args.epochs)
        step = scale_schedule(cfg, args.epochs)
        if "freeze_teacher_epoch" in cfg:
            cfg["freeze_teacher_epoch"] = step
        if cfg.get("use_depth_hints"):
            cfg["depth_hint_path"] = paths["hints"]
    else:  # the odometry rows: the same examples as the raw rows, in their own items
        cfg.update(data_path=paths["odom"], odom_train_seqs=ODOM_TRAIN, odom_val_seqs=ODOM_VAL,
                   val_max_per_seq=16, width=odom_width(args))
        cfg.pop("split", None)
        cfg["max_steps"] = args.epochs * train_items(args) // cfg.get("batch_size", 4)
        cfg["num_epochs"] = 1000  # max_steps ends it
        keyframes = sum(max(len(os.listdir(os.path.join(paths["odom"], "sequences", seq, "image_2"))) - 10, 0)
                        for seq in ODOM_TRAIN)  # keyframes 5 .. N-6 of each training sequence
        epochs = cfg["max_steps"] / max(keyframes // cfg.get("batch_size", 4), 1)
        if "scheduler_step_size" in cfg:
            cfg["scheduler_step_size"] = max(int(0.75 * epochs + 0.5), 1)
    if start:
        cfg["pretrained_encoder"] = start
        cfg.pop("weights_init", None)
        cfg.update(pose_start(start, cfg))
    if args.device == "cpu":
        cfg["no_cuda"] = True
    if args.quick:
        cfg.update(max_steps=args.quick_steps, num_epochs=2 if row.kind == "raw" else 1000, log_frequency=1000)
    folder = os.path.join(args.out, "presets")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.yaml")
    import yaml
    if os.path.isfile(path) and read_preset_file(path) != yaml.safe_load(yaml.safe_dump(cfg)):
        replace_run(args, name, "its options changed")
    atomic_write_bytes(path, yaml.safe_dump(cfg, sort_keys=True).encode())
    return path


def replace_run(args, name, why):
    """A run (started or finished) that no longer answers the comparison's question is moved
    to <out>/replaced/ (kept, not deleted) and trained again."""
    run_dir = os.path.join(args.out, "runs", name)
    if not os.path.isdir(run_dir):
        return
    folder = os.path.join(args.out, "replaced")
    os.makedirs(folder, exist_ok=True)
    k = 0
    while os.path.exists(os.path.join(folder, f"{name}-{k}")):
        k += 1
    shutil.move(run_dir, os.path.join(folder, f"{name}-{k}"))
    print(f"-> {name}: {why}; the earlier run is kept in {os.path.join(folder, f'{name}-{k}')} and trained again",
          flush=True)


# ---------------------------------------------------------------------------------- one run
def train(args, preset_path, run_dir, name, log, threads):
    if os.path.isfile(os.path.join(run_dir, "trained.json")):
        return
    command = [sys.executable, "train.py", "--no_progress"]
    if os.path.isfile(os.path.join(run_dir, "state", "last.pt")):
        command += ["--resume", "--log_dir", os.path.dirname(run_dir), "--model_name", name]
    else:
        if os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # stopped before its first state: nothing to keep
        command += ["--config", preset_path]
    from benchmarks.pretrain_encoder import torch_version
    started, code = time.time(), code_version()
    run(command, log, threads)
    trained = {"seconds": time.time() - started, "code": code, "threads": threads, "device": args.device,
               "torch": torch_version(),  # a start or run rebuilt elsewhere may differ
               "start": start_fingerprint(start_of(args), read_preset_file(preset_path))}
    atomic_write_bytes(os.path.join(run_dir, "trained.json"), json.dumps(trained).encode())


def evaluate(args, row, run_dir, log, threads):
    out = os.path.join(run_dir, "eval.json")
    if os.path.isfile(out):
        return
    paths = world_paths(args)
    weights = os.path.join(run_dir, "models", "weights_best")
    if not os.path.isdir(weights):
        weights = os.path.join(run_dir, "models", "last")
    command = [sys.executable, "evaluate_depth.py", "--load_weights_folder", weights, "--num_workers", "1",
               "--json", out]
    if row.kind == "raw":
        command += ["--eval_split", "synthetic", "--data_path", paths["raw"], "--png", "--eval_moving_objects",
                    "--eval_stereo" if row.scoring == "stereo" else "--eval_mono"]
    else:
        command += ["--odom_path", paths["odom"], "--odom_test_seqs"] + ODOM_TEST + ["--eval_dynamic",
                                                                                     "--odom_pose_source", "dvso"]
    if args.device == "cpu":
        command.append("--no_cuda")
    run(command, log, threads)


def diagnostics_current(path):
    """Whether a run's diag.json holds what this version of benchmarks/diagnostics.py measures
    (an older one is measured again; the run itself is kept)."""
    from benchmarks import diagnostics
    content = read_json(path)  # absent or cut short: measured again
    return isinstance(content, dict) and content.get("diagnostics_version", 1) == diagnostics.VERSION


def diagnose(args, row, run_dir, log, threads):
    out = os.path.join(run_dir, "diag.json")
    if args.no_diagnostics or diagnostics_current(out):
        return
    paths = world_paths(args)
    command = [sys.executable, "benchmarks/diagnostics.py", "--run", run_dir, "--data_path",
               paths["raw"] if row.kind == "raw" else paths["odom"], "--json", out]
    if row.kind == "odom":
        command += ["--odom_test_seqs"] + ODOM_TEST
    if args.device == "cpu":
        command.append("--no_cuda")
    old = read_json(out)
    run(command, log, threads)
    if isinstance(old, dict):  # what an older version measured and this one could not (e.g. pruned weights) stays
        new = read_json(out) or {}
        merged = dict(old, **new)
        if merged != new:
            with open(out + ".tmp", "w") as f:
                json.dump(merged, f, indent=1)
            os.replace(out + ".tmp", out)


def read_json(path):
    """A json file's content, or None where it is absent or cut short."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_row(args, row, seed, start, threads):
    """Train (both stages for a two-stage row), evaluate and diagnose one (row, seed); read it
    from --records instead where they hold it with the same options, start and world."""
    name = f"{row.name}_s{seed}"
    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)
    log = os.path.join(args.out, "logs", f"{name}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    run_dir = os.path.join(runs, name)
    stage1 = f"{name}_stage1"
    if row.stage2:  # stage 1 for half the epochs, stage 2 for the rest, from stage 1's best weights
        first, second = math.ceil(args.epochs / 2), args.epochs // 2
        preset1 = row_preset(argparse.Namespace(**dict(vars(args), epochs=first)), row, row.preset, row.overrides,
                             start, seed, stage1)
        teacher = os.path.abspath(os.path.join(runs, stage1, "models", "weights_best"))

        def stage2_preset(teacher):
            preset2, overrides2 = row.stage2
            return row_preset(argparse.Namespace(**dict(vars(args), epochs=second)), row, preset2,
                              dict(overrides2, teacher_weights_folder=teacher), start, seed, name)
        if not os.path.isdir(os.path.join(runs, stage1)):
            replace_run(args, name, "its stage 1 was replaced")
        preset = stage2_preset(teacher)
    else:
        preset = row_preset(args, row, row.preset, row.overrides, start, seed, name)
    for run_name in ([stage1] if row.stage2 else []) + [name]:
        trained = read_json(os.path.join(runs, run_name, "trained.json"))
        if isinstance(trained, dict) and "start" in trained and trained["start"] != start_fingerprint(
                start, read_preset_file(os.path.join(args.out, "presets", f"{run_name}.yaml"))):
            replace_run(args, run_name, "it trained from another shared start")
            if run_name == stage1:
                replace_run(args, name, "its stage 1 was replaced")
    if not os.path.isfile(os.path.join(run_dir, "eval.json")) and recorded(args, row, seed, start):
        print(f"-> {name}: read from the records ({args.records})", flush=True)
        return
    started = time.time()
    if row.stage2:
        train(args, preset1, os.path.join(runs, stage1), stage1, log, threads)
        if not os.path.isdir(teacher):  # a stage 1 that never validated (--quick)
            preset = stage2_preset(os.path.realpath(os.path.join(runs, stage1, "models", "last")))
    train(args, preset, run_dir, name, log, threads)
    evaluate(args, row, run_dir, log, threads)
    diagnose(args, row, run_dir, log, threads)
    from training.checkpoints import prune_weight_folders
    models = os.path.join(run_dir, "models")
    last = os.path.basename(os.path.realpath(os.path.join(models, "last")))
    prune_weight_folders(models, 1, protect=last)  # weights_best and the last epoch stay
    write_record(args, row, seed, start)
    print(f"-> {name}: done ({(time.time() - started) / 60:.1f} min)", flush=True)


# ---------------------------------------------------------------------------------- records
# A finished run's numbers apart from its weights, so that a comparison continues on another
# machine and its table can be checked: what ran (the options without machine paths; the
# shared start's and the world's fingerprints; the code version) and what it measured (the
# evaluation, diagnostics, validation curve, best epoch, training time).
PATH_OPTIONS = ("data_path", "log_dir", "pretrained_encoder", "load_weights_folder", "teacher_weights_folder",
                "depth_hint_path", "odom_path")
RECORD_VERSION = 1


def code_version():
    """The checkout's commit (with "+changes" where files differ from it), or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode:
        return None
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def tensors_fingerprint(path):
    """A weights file's fingerprint: its tensors' names, shapes and bytes (not the file's
    bytes, which hold the archive's layout); read once per file version (every run's record
    and check asks for the same start's files)."""
    stat = os.stat(path)
    return _tensors_fingerprint(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _tensors_fingerprint(path, mtime_ns, size):
    import hashlib
    import torch
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(str(tuple(value.shape)).encode() + str(value.dtype).encode())
            digest.update(value.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def start_fingerprint(start, cfg=None):
    """The shared start's weight files a run reads (the pose start only where its options load
    it) and their fingerprints (None: random weights)."""
    if not start:
        return None
    files = ["resnet18.pth", "hrnet_w18.pth"]
    if cfg is not None:  # the family its encoders take (HRNet-18 rows: hrnet_w18.pth)
        files = [f for f in files if ("hrnet" in str(cfg.get("encoder", ""))) == f.startswith("hrnet")]
    if cfg is None or cfg.get("load_weights_folder"):
        files += [os.path.join("pose", "pose_encoder.pth"), os.path.join("pose", "pose.pth")]
    return {f.replace(os.sep, "/"): tensors_fingerprint(os.path.join(start, f)) for f in files
            if os.path.isfile(os.path.join(start, f))}


def world_fingerprint(args, row):
    import hashlib
    path = os.path.join(world_paths(args)["raw"], "synthetic_world.json")
    with open(path, "rb") as f:
        return {"synthetic_world.json": hashlib.sha256(f.read()).hexdigest()[:16], "kind": row.kind}


def read_preset_file(preset_path):
    import yaml
    with open(preset_path) as f:
        return yaml.safe_load(f)


def portable(cfg):
    """Options without the machine's paths (the start and world are fingerprinted) and without
    the loader's worker count (it follows --jobs and changes no number)."""
    return {k: v for k, v in cfg.items() if k not in PATH_OPTIONS + ("num_workers",)}


def record_identity(args, row, seed, start):
    name = f"{row.name}_s{seed}"
    presets = os.path.join(args.out, "presets")
    cfgs = [read_preset_file(os.path.join(presets, f"{name}.yaml"))]
    identity = {"options": portable(cfgs[0])}
    if row.stage2:
        cfgs.append(read_preset_file(os.path.join(presets, f"{name}_stage1.yaml")))
        identity["stage1_options"] = portable(cfgs[1])
    loads = {"load_weights_folder": any(c.get("load_weights_folder") for c in cfgs),
             "encoder": " ".join(str(c.get("encoder", "")) for c in cfgs)}
    return dict(identity, start=start_fingerprint(start, loads), world=world_fingerprint(args, row))


def scrub_paths(value, base):
    """Absolute paths in a result made relative to the comparison's folder (or their last part)."""
    if isinstance(value, dict):
        return {k: scrub_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v, base) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        inside = os.path.relpath(value, base)
        return inside if not inside.startswith("..") else os.path.basename(value.rstrip(os.sep))
    return value


def write_record(args, row, seed, start):
    """--records: one finished run's record, written atomically (nothing without --records)."""
    if not args.records:
        return
    name = f"{row.name}_s{seed}"
    run_dir = os.path.join(args.out, "runs", name)
    files = run_files(run_dir)
    if files is None:
        return
    identity = record_identity(args, row, seed, start)
    if isinstance(files.get("trained"), dict) and "start" in files["trained"]:
        identity["start"] = files["trained"]["start"]  # what it trained from, not what is here now
    record = dict(identity, record_version=RECORD_VERSION, row=row.name, seed=seed, **files)
    record = scrub_paths(record, os.path.abspath(args.out))
    atomic_write_bytes(os.path.join(args.records, f"{name}.json"),
                       json.dumps(record, indent=1, sort_keys=True).encode())


def recorded(args, row, seed, start):
    """Whether --records hold this run with the same options, start and world."""
    if not args.records:
        return False
    record = read_json(os.path.join(args.records, f"{row.name}_s{seed}.json"))
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        return False
    identity = record_identity(args, row, seed, start)
    identity = json.loads(json.dumps(scrub_paths(identity, os.path.abspath(args.out))))  # as it was written
    return all(record.get(k) == v for k, v in identity.items())


def checkable(args, row, seed):
    """Whether this machine has what a record is checked against: the run's preset (and its
    stage 1's), the shared start and the world."""
    presets = [f"{row.name}_s{seed}"] + ([f"{row.name}_s{seed}_stage1"] if row.stage2 else [])
    start = start_of(args)
    return (all(os.path.isfile(os.path.join(args.out, "presets", f"{p}.yaml")) for p in presets)
            and (start is None or os.path.isdir(start))
            and os.path.isfile(os.path.join(world_paths(args)["raw"], "synthetic_world.json")))


def run_files(run_dir):
    """What a finished run measured, read from its folder (None before its evaluation)."""
    result = read_json(os.path.join(run_dir, "eval.json"))
    if result is None:
        return None
    curve = []
    metrics_file = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics_file):
        with open(metrics_file) as f:
            curve = [json.loads(line) for line in f if line.strip()]
    return {"eval": result, "curve": curve, "best": read_json(os.path.join(run_dir, "models", "best.json")),
            "diagnostics": read_json(os.path.join(run_dir, "diag.json")),
            "trained": read_json(os.path.join(run_dir, "trained.json"))}


# ---------------------------------------------------------------------------------- summary
MAIN_METRICS = ("abs_rel", "a1")


def read_run(args, row, seed):
    """One run's numbers: the main output's whole-image and moving-object metrics, other
    outputs, the validation curve, the diagnostics; from its folder, or from --records where
    this machine has not run it."""
    files = run_files(os.path.join(args.out, "runs", f"{row.name}_s{seed}"))
    record = {"row": row.name, "seed": seed}
    if files is None and getattr(args, "records", None):
        files = read_json(os.path.join(args.records, f"{row.name}_s{seed}.json"))
        record["source"] = "records"
        if isinstance(files, dict) and checkable(args, row, seed):
            if not recorded(args, row, seed, start_of(args)):
                print(f"-> {row.name}_s{seed}: its record was trained with other options, start or world than "
                      "this comparison's; left out of the table (train it, or summarise without the start here)")
                return None
        else:
            record["source"] = "records, unchecked"  # no start, world or preset here to check it against
    if not isinstance(files, dict) or not isinstance(files.get("eval"), dict):
        return None
    result = files["eval"]
    records = result.get("results", [result])
    for r in records:
        output = r.get("output") or "main"
        region = r.get("region") or "all"
        if region == "dynamic":
            region = "moving_objects"
        prefix = "" if (output == records[0].get("output") or output == "main") else f"{output}/"
        prefix += "" if region == "all" else "moving/"
        for metric in MAIN_METRICS + ("rmse",):
            if metric in r:
                record[prefix + metric] = r[metric]
    record["val_curve"] = [c.get("abs_rel") for c in files.get("curve") or []]
    if isinstance(files.get("best"), dict):
        record["best_epoch"] = files["best"].get("epoch")
    if isinstance(files.get("diagnostics"), dict):
        record["diagnostics"] = files["diagnostics"]
    if isinstance(files.get("trained"), dict):
        record["train_seconds"] = files["trained"]["seconds"]
    return record


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(m, s, digits=3):
    return "-" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def start_of(args):
    """The shared start's folder as prepare() leaves it (None: random weights)."""
    if args.scratch:
        return None
    if args.imagenet_weights:
        return os.path.abspath(os.path.join(args.out, "imagenet_start"))
    return os.path.abspath(args.pretrained)


def publish(args, rows):
    """--records: a record of every finished run of this machine (runs finished before
    --records was given, or by an older version, included)."""
    start = start_of(args)
    if start and not os.path.isdir(start):
        print(f"-> no records written: the shared start {args.pretrained} is not here to fingerprint")
        return
    for row in rows:
        for seed in args.seeds:
            name = f"{row.name}_s{seed}"
            finished = os.path.isfile(os.path.join(args.out, "runs", name, "eval.json"))
            diagnosed = args.no_diagnostics or diagnostics_current(os.path.join(args.out, "runs", name, "diag.json"))
            if finished and diagnosed and os.path.isfile(os.path.join(args.out, "presets", f"{name}.yaml")):
                write_record(args, row, seed, start)


def summarize(args):
    rows = rows_of(args)
    os.makedirs(args.out, exist_ok=True)  # a table rebuilt from records alone goes to a new folder
    if args.records:
        publish(args, rows)
    records = [r for row in rows for seed in args.seeds for r in [read_run(args, row, seed)] if r]
    by_row = {}
    for r in records:
        by_row.setdefault(r["row"], {})[r["seed"]] = r
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))} - {"seed"})
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "seed"] + keys)
        for r in records:
            writer.writerow([r["row"], r["seed"]] + [r.get(k, "") for k in keys])
    lines = ["| row | paper | seeds | abs_rel | a1 | moving: abs_rel | vs | Δ abs_rel (paired) | best epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        runs = by_row.get(row.name, {})
        if not runs:
            continue
        cells = [fmt(*mean_std([r.get(m) for r in runs.values()])) for m in ("abs_rel", "a1", "moving/abs_rel")]
        delta, vs = "-", "-"
        base = by_row.get(row.baseline, {})
        paired = [runs[s].get("abs_rel") - base[s].get("abs_rel") for s in runs if s in base
                  and runs[s].get("abs_rel") is not None and base[s].get("abs_rel") is not None]
        if paired:
            vs = row.baseline
            delta = fmt(*mean_std(paired)) + f" (n={len(paired)})"
        best = ",".join(str(runs[s].get("best_epoch", "?")) for s in sorted(runs))
        lines.append(f"| {row.name} | {row.paper} | {len(runs)} | {cells[0]} | {cells[1]} | {cells[2]} | {vs} | "
                     f"{delta} | {best} |")
    sources = [r.get("source") for r in records]
    if any(sources):
        unchecked = sources.count("records, unchecked")
        lines.append(f"\n{sum(1 for x in sources if x)} of {len(records)} runs read from the records"
                     + (f" ({unchecked} unchecked: no start, world or preset here to check them against)"
                        if unchecked else " (each checked: same options, start and world)"))
    extra = summarize_variants(rows, by_row)
    diag = summarize_diagnostics(rows, by_row)
    if any(by_row.get(r.name) and r.preset.startswith(("synthetic_manydepth", "synthetic_mism")) for r in rows):
        diag += ("\n\n" if diag else "") + summarize_parallax(args)
    text = "\n".join(lines) + ("\n\n" + extra if extra else "") + ("\n\n" + diag if diag else "") + "\n"
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    print(text)
    plot(args, rows, by_row)
    return records


def summarize_variants(rows, by_row):
    """Other outputs of a run (a multi-frame method's single-frame network; the mono branch)."""
    lines = []
    for row in rows:
        runs = by_row.get(row.name, {})
        names = sorted({k.split("/")[0] for r in runs.values() for k in r if k.count("/") >= 1
                        and not k.startswith("moving/") and k.split("/")[-1] in MAIN_METRICS})
        for name in names:
            cells = [fmt(*mean_std([r.get(f"{name}/{m}") for r in runs.values()]))
                     for m in ("abs_rel", "a1")] + [fmt(*mean_std([r.get(f"{name}/moving/abs_rel")
                                                                 for r in runs.values()]))]
            lines.append(f"| {row.name} | {name} | {' | '.join(cells)} |")
    if not lines:
        return ""
    return "\n".join(["| row | other output | abs_rel | a1 | moving: abs_rel |", "|---|---|---|---|---|"] + lines)


def summarize_diagnostics(rows, by_row):
    lines = []
    for row in rows:
        runs = by_row.get(row.name, {})
        values = {}
        for r in runs.values():
            for k, v in (r.get("diagnostics") or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "diagnostics_version":
                    values.setdefault(k, []).append(v)
        for k, v in sorted(values.items()):  # the same order from local runs and from records
            lines.append(f"| {row.name} | {k} | {fmt(*mean_std(v))} | {len(v)} |")
    if not lines:
        return ""
    return "\n".join(["| row | diagnostic | mean ± std over seeds | seeds |", "|---|---|---|---|"] + lines)


def summarize_parallax(args):
    """What the multi-frame rows' cost volumes (1/4 of the input) can see on the test drive
    (benchmarks/parallax.py), at the comparison's size and at the papers' 640x192; cached in
    parallax.json."""
    from benchmarks import parallax
    sizes = sorted({(args.width, args.height), (640, 192)})
    path = os.path.join(args.out, "parallax.json")
    key = f"{parallax.VERSION} {os.path.abspath(args.world)} {sizes}"
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: measured again
        cached = {}
    if cached.get("key") != key:
        try:
            cached = {"key": key, "sizes": parallax.measure(parallax.world_pairs(args.world), sizes)}
        except (OSError, ValueError, SystemExit) as e:
            return f"(cost-volume parallax not measured: {e})"
        with open(path, "w") as f:
            json.dump(cached, f, indent=1)
    lines = ["| network size | cost volume | median parallax (cost-volume px) | share >= 1 px | share resolvable to 25 % |",
             "|---|---|---|---|---|"]
    for size, r in cached["sizes"].items():
        w, h = (int(x) for x in size.split("x"))
        lines.append(f"| {size} | {w // parallax.STRIDE}x{h // parallax.STRIDE} | {r['median_px']:.2f} | "
                     f"{100 * r['share_ge_1px']:.1f} % | {100 * r['share_resolvable_25pct']:.1f} % |")
    return "\n".join(lines)


def plot(args, rows, by_row):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [r for r in rows if by_row.get(r.name)]
    if not shown:
        return
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5))
    for i, row in enumerate(shown):
        values = [r.get("abs_rel") for r in by_row[row.name].values() if r.get("abs_rel") is not None]
        if not values:
            continue
        m, s = mean_std(values)
        bars.bar(i, m, yerr=s, capsize=3, color="C0" if row.kind == "raw" else "C1")
        bars.scatter([i] * len(values), values, color="k", s=8, zorder=3)
        for r in by_row[row.name].values():
            curve = [v for v in r.get("val_curve", []) if v is not None]
            if curve:
                curves.plot(range(len(curve)), curve, color=f"C{i % 10}", alpha=0.7,
                            label=row.name if r is next(iter(by_row[row.name].values())) else None)
    bars.set_xticks(range(len(shown)))
    bars.set_xticklabels([r.name for r in shown], rotation=60, ha="right", fontsize=8)
    bars.set_ylabel("test abs_rel (mean ± std, dots: seeds)")
    bars.set_title("test drive, best validation epoch (odometry rows: metric)")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation abs_rel")
    curves.set_yscale("log")
    curves.set_title("validation curves, every seed")
    curves.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "compare.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    if not args.summary_only:
        start = prepare(args)
        threads = max((os.cpu_count() or 1) // max(args.jobs, 1), 1)
        tasks = [(row, seed) for seed in args.seeds for row in rows_of(args)]
        with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            futures = [pool.submit(run_row, args, row, seed, start, threads) for row, seed in tasks]
            errors = []
            for (row, seed), future in zip(tasks, futures):
                try:
                    future.result()
                except Exception as e:  # the others go on; the summary shows what finished
                    errors.append(f"{row.name} seed {seed}: {e}")
        for e in errors:
            print(f"-> failed: {e}")
    summarize(args)
    print(f"-> {args.out}: table.md, results.json, results.csv, compare.png "
          f"({(time.time() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
