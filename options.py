"""Command-line options, monodepth2's flags and defaults plus the project's additions.

`--config FILE.yaml` fills defaults from a preset (keys are option names); flags given on
the command line always win over the preset.
"""
import argparse
import os
import sys

import yaml

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
SPLITS_DIR = os.path.join(PROJECT_DIR, "splits")


def _frame_id(value):
    return value if value == "s" else int(value)


class MonodepthOptions:
    def __init__(self):
        p = self.parser = argparse.ArgumentParser(
            description="Self-supervised monocular depth: training and evaluation options",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", type=str, help="YAML preset under configs/ (flags override it)")

        g = p.add_argument_group("paths")
        g.add_argument("--data_path", type=str, default=os.path.join(PROJECT_DIR, "kitti_data"),
                       help="root of the KITTI-format data (e.g. synthetic_data)")
        g.add_argument("--log_dir", type=str, default=os.path.join(os.path.expanduser("~"), "tmp"))
        g.add_argument("--model_name", type=str, default="mdp", help="folder under log_dir")
        g.add_argument("--load_weights_folder", type=str, help="weights folder to fine-tune from or evaluate")
        g.add_argument("--models_to_load", nargs="+", type=str,
                       default=["encoder", "depth", "pose_encoder", "pose"])
        g.add_argument("--imagenet_weights", type=str,
                       help="local ResNet ImageNet weights file (else torch hub's cache / download)")

        g = p.add_argument_group("data")
        g.add_argument("--split", type=str, default="eigen_zhou",
                       help="a folder name under splits/ (eigen_zhou, eigen_full, odom, benchmark, "
                            "...) or the path of a folder holding train_files.txt and val_files.txt")
        g.add_argument("--dataset", type=str, default="kitti", choices=["kitti", "kitti_odom", "kitti_depth"])
        g.add_argument("--png", action="store_true", help="read .png images (default .jpg)")
        g.add_argument("--height", type=int, default=192, help="input height (multiple of 32)")
        g.add_argument("--width", type=int, default=640, help="input width (multiple of 32)")
        g.add_argument("--frame_ids", nargs="+", type=_frame_id, default=[0, -1, 1])
        g.add_argument("--use_stereo", action="store_true", help="add the other stereo view ('s')")
        g.add_argument("--scales", nargs="+", type=int, default=[0, 1, 2, 3])

        g = p.add_argument_group("model")
        g.add_argument("--method", type=str, default="monodepth2", help="file in methods/")
        g.add_argument("--num_layers", type=int, default=18, choices=[18, 34, 50, 101, 152])
        g.add_argument("--weights_init", type=str, default="pretrained", choices=["pretrained", "scratch"])
        g.add_argument("--pose_model_type", type=str, default="separate_resnet",
                       choices=["separate_resnet", "shared", "posecnn"])
        g.add_argument("--pose_model_input", type=str, default="pairs", choices=["pairs", "all"])
        g.add_argument("--disp_bias_init", type=float,
                       help="initial bias of the disparity outputs (default: PyTorch's init, as "
                            "monodepth2); e.g. -3 starts from-scratch training at mid-range depth")
        g.add_argument("--min_depth", type=float, default=0.1)
        g.add_argument("--max_depth", type=float, default=100.0)

        g = p.add_argument_group("optimisation")
        g.add_argument("--batch_size", type=int, default=12, help="per process")
        g.add_argument("--learning_rate", type=float, default=1e-4)
        g.add_argument("--num_epochs", type=int, default=20)
        g.add_argument("--scheduler_step_size", type=int, default=15,
                       help="epochs before the learning rate is multiplied by 0.1")
        g.add_argument("--disparity_smoothness", type=float, default=1e-3)
        g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: no limit)")
        g.add_argument("--seed", type=int, default=0)

        g.add_argument("--optimizer", type=str, default="adam", choices=["adam", "adamw"])
        g.add_argument("--weight_decay", type=float, default=0.0)
        g.add_argument("--lr_sche_type", type=str, default="step", choices=["step", "cosine"])
        g.add_argument("--decay_step", type=int, default=0,
                       help="step schedule: epochs between decays (0: --scheduler_step_size)")
        g.add_argument("--decay_rate", type=float, default=0.1, help="step schedule: LR factor per decay")
        g.add_argument("--eta_min", type=float, default=0.0, help="cosine schedule: final LR")
        g.add_argument("--warmup_steps", type=int, default=0, help="linear LR warm-up (steps)")

        g = p.add_argument_group("ablations")
        g.add_argument("--v1_multiscale", action="store_true")
        g.add_argument("--avg_reprojection", action="store_true")
        g.add_argument("--disable_automasking", action="store_true")
        g.add_argument("--predictive_mask", action="store_true")
        g.add_argument("--no_ssim", action="store_true")

        g = p.add_argument_group("system and logging")
        g.add_argument("--no_cuda", action="store_true")
        g.add_argument("--num_workers", type=int, default=12)
        g.add_argument("--log_frequency", type=int, default=250, help="steps between logs")
        g.add_argument("--save_frequency", type=int, default=1, help="epochs between weight folders")
        g.add_argument("--keep_weights", type=int, default=0,
                       help="keep only the newest N weights_<epoch> folders (0: keep all, as monodepth2; "
                            "weights_best is always kept). A ResNet-18 folder is ~310 MB with adam.pth")
        g.add_argument("--no_progress", action="store_true", help="no progress bar")
        g.add_argument("--resume", action="store_true",
                       help="continue {log_dir}/{model_name} from its last saved state")
        g.add_argument("--state_frequency", type=int, default=250,
                       help="steps between resumable states (also saved at each epoch end; 0: epochs only)")
        g.add_argument("--val_split", type=str,
                       help="split (name or folder) whose val_files.txt is validated each epoch "
                            "(default: the training split's)")
        g.add_argument("--best_metric", type=str, default="abs_rel",
                       help="validation metric that picks weights_best (abs_rel, rmse, a1, ...)")
        g.add_argument("--amp", type=str, default="off", choices=["off", "bf16", "fp16"])
        g.add_argument("--channels_last", action="store_true")
        g.add_argument("--compile", action="store_true", help="torch.compile every network")
        g.add_argument("--fast_loader", action="store_true",
                       help="workers read one pre-resized uint8 image per frame; flip, pyramid and "
                            "jitter run on the training device (see README)")
        g.add_argument("--cache_dir", type=str, help="with --fast_loader: keep pre-resized images here")
        g.add_argument("--decode_on_device", action="store_true",
                       help="with --fast_loader and .jpg images: workers read the files' bytes only; "
                            "decoding (nvJPEG on CUDA) and resizing run on the training device")
        g.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms (slower on GPUs)")
        g.add_argument("--max_nonfinite", type=int, default=10,
                       help="stop after this many non-finite losses in a row (each is skipped)")
        g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")

        g = p.add_argument_group("evaluation")
        g.add_argument("--eval_stereo", action="store_true", help="stereo-trained model: x5.4, no median scaling")
        g.add_argument("--eval_mono", action="store_true", help="monocular model: per-image median scaling")
        g.add_argument("--disable_median_scaling", action="store_true")
        g.add_argument("--pred_depth_scale_factor", type=float, default=1.0)
        g.add_argument("--ext_disp_to_eval", type=str, help="evaluate saved disparities (.npy)")
        g.add_argument("--eval_split", type=str, default="eigen",
                       help="eigen, eigen_benchmark, benchmark, odom_9, odom_10, or a split folder path")
        g.add_argument("--save_pred_disps", action="store_true")
        g.add_argument("--no_eval", action="store_true")
        g.add_argument("--eval_eigen_to_benchmark", action="store_true")
        g.add_argument("--eval_out_dir", type=str, help="where predictions are written")
        g.add_argument("--post_process", action="store_true")
        g.add_argument("--output_json", type=str, help="also write the metrics to this JSON file")

        g = p.add_argument_group("depth hints")
        g.add_argument("--use_depth_hints", action="store_true")
        g.add_argument("--depth_hint_path", type=str, help="default: <data_path>/depth_hints")

    def parse(self, argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        first, _ = self.parser.parse_known_args(argv)
        if first.config:
            self.parser.set_defaults(**load_config(first.config, self.parser))
        opt = self.parser.parse_args(argv)
        return check_options(opt)


def load_config(path, parser):
    """Preset dict from a YAML file; unknown keys are an error naming the file and key."""
    if not os.path.isfile(path):
        candidates = [os.path.join(PROJECT_DIR, "configs", name) for name in (path, path + ".yaml")]
        found = [c for c in candidates if os.path.isfile(c)]
        if not found:
            presets = sorted(f[:-5] for f in os.listdir(os.path.join(PROJECT_DIR, "configs")) if f.endswith(".yaml"))
            raise SystemExit(f"--config {path}: no such file; presets in configs/: {', '.join(presets)}")
        path = found[0]
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise SystemExit(f"--config {path}: expected a mapping of option: value")
    known = {a.dest for a in parser._actions}
    for key in cfg:
        if key not in known:
            raise SystemExit(f"--config {path}: unknown option {key!r}")
    if "frame_ids" in cfg:
        cfg["frame_ids"] = [_frame_id(str(v)) for v in cfg["frame_ids"]]
    return cfg


def check_options(opt):
    """Reject combinations that cannot work, with a message that says what to change."""
    if opt.frame_ids[0] != 0:
        raise SystemExit(f"--frame_ids must start with 0, got {opt.frame_ids}")
    if opt.use_stereo and "s" not in opt.frame_ids:
        opt.frame_ids = list(opt.frame_ids) + ["s"]
    if opt.height % 32 or opt.width % 32:
        raise SystemExit(f"--height {opt.height} and --width {opt.width} must be multiples of 32")
    if opt.predictive_mask and not opt.disable_automasking:
        raise SystemExit("--predictive_mask replaces auto-masking: add --disable_automasking")
    if opt.frame_ids == [0] and not opt.use_stereo:
        raise SystemExit("--frame_ids 0 alone needs --use_stereo (nothing to reconstruct from)")
    if opt.use_depth_hints and not opt.use_stereo:
        raise SystemExit("--use_depth_hints needs --use_stereo (hints come from the stereo pair)")
    if opt.decode_on_device and (not opt.fast_loader or opt.png or opt.cache_dir):
        raise SystemExit("--decode_on_device needs --fast_loader and .jpg images (no --png), and replaces "
                         "--cache_dir (the cache holds decoded images): drop one of them")
    if opt.keep_weights < 0 or opt.save_frequency < 1:
        raise SystemExit(f"--keep_weights must be >= 0 (got {opt.keep_weights}) and --save_frequency >= 1 "
                         f"(got {opt.save_frequency})")
    if opt.use_depth_hints and opt.v1_multiscale:
        raise SystemExit("--use_depth_hints does not support --v1_multiscale")
    return opt


def resolve_split_dir(split):
    """A split name under splits/, or a path to a folder with the split files."""
    if os.path.isdir(split):
        return split
    path = os.path.join(SPLITS_DIR, split)
    if not os.path.isdir(path):
        raise SystemExit(f"split {split!r} not found: no folder {path} (and {split!r} is not a "
                         f"folder); available: {sorted(os.listdir(SPLITS_DIR))}")
    return path


def read_split_file(path):
    if not os.path.isfile(path):
        raise SystemExit(f"split file not found: {path}")
    with open(path) as f:
        return [line for line in f.read().splitlines() if line.strip()]
