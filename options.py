"""Training options: monodepth2's flags and defaults, the project's additions, and the
options of the chosen method.

The parser is built in two steps. `--config PRESET` and `--method NAME` are read first
(a selector flag such as --use_depth_hints also picks its method, see methods/); then the
shared options below plus the chosen method's own options (`Method.add_options` of every
class in its hierarchy) are parsed. A preset fills defaults; flags given on the command
line always win. `python train.py --method NAME --help` lists a method's options.
"""
import argparse
import os
import sys

import yaml

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
SPLITS_DIR = os.path.join(PROJECT_DIR, "splits")
CONFIGS_DIR = os.path.join(PROJECT_DIR, "configs")


def frame_id(value):
    """A frame id: an integer offset, or "s" for the other stereo view."""
    return value if value == "s" else int(value)


SYNC_BN_MODES = ("off", "on", "auto")


def sync_bn_mode(value):
    """--sync_bn as one of SYNC_BN_MODES: older runs' opt.json and presets hold true / false."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    if value not in SYNC_BN_MODES:
        raise SystemExit(f"--sync_bn {value!r}: choose one of {', '.join(SYNC_BN_MODES)}")
    return value


def add_shared_options(p):
    """The options every method shares (data, networks, optimisation, system)."""
    p.add_argument("--config", type=str, help="preset: a name under configs/ or a YAML file (flags override it)")

    g = p.add_argument_group("paths")
    g.add_argument("--data_path", type=str, default=os.path.join(PROJECT_DIR, "kitti_data"),
                   help="root of the KITTI-format data (e.g. synthetic_data)")
    g.add_argument("--log_dir", type=str, default=os.path.join(os.path.expanduser("~"), "tmp"),
                   help="runs are written to <log_dir>/<model_name>")
    g.add_argument("--model_name", type=str, default="mdp", help="folder under log_dir")
    g.add_argument("--load_weights_folder", type=str, help="weights folder to fine-tune from")
    g.add_argument("--models_to_load", nargs="+", type=str,
                   default=["encoder", "depth", "pose_encoder", "pose"], help="networks to load from it")
    g.add_argument("--imagenet_weights", type=str,
                   help="local ImageNet weights file for the encoder (else torch hub's cache / a download)")
    g.add_argument("--pretrained_encoder", type=str, metavar="FOLDER",
                   help="start the encoders from FOLDER/<family>.pth (resnet18.pth, hrnet_w18.pth, ... in "
                        "ImageNet files' layout) instead of ImageNet weights: a shared start such as "
                        "benchmarks/pretrain_encoder.py writes; implies --weights_init pretrained")

    g = p.add_argument_group("data")
    g.add_argument("--split", type=str, default="eigen_zhou",
                   help="a folder name under splits/ (eigen_zhou, eigen_full, odom, benchmark, ...) or under "
                        "<data_path>/splits/, or the path of a folder holding train_files.txt and val_files.txt")
    g.add_argument("--dataset", type=str, default="kitti", help="dataset class (see datasets/: kitti, "
                   "kitti_odom, kitti_depth)")
    g.add_argument("--odom_train_seqs", nargs="+", metavar="NN",
                   help="--dataset kitti_odom_mf: train on the keyframes of these odometry sequences instead of "
                        "--split's files (the split written to <log_dir>/<model_name>/split/); without "
                        "--odom_val_seqs the last keyframes of each are held out for validation")
    g.add_argument("--odom_val_seqs", nargs="+", metavar="NN",
                   help="--dataset kitti_odom_mf: validate on the first --val_max_per_seq keyframes of these "
                        "sequences (never the test sequences: they would choose weights_best)")
    g.add_argument("--val_max_per_seq", type=int, default=32,
                   help="validation keyframes per sequence with --odom_train_seqs / --odom_val_seqs")
    g.add_argument("--png", action="store_true", help="read .png images (default .jpg)")
    g.add_argument("--height", type=int, default=192, help="input height (multiple of 32)")
    g.add_argument("--width", type=int, default=640, help="input width (multiple of 32)")
    g.add_argument("--frame_ids", nargs="+", type=frame_id, default=[0, -1, 1],
                   help="frames of an item: 0 first, then temporal offsets; 's' = the other stereo view")
    g.add_argument("--use_stereo", action="store_true", help="add the other stereo view ('s')")
    g.add_argument("--scales", nargs="+", type=int, default=[0, 1, 2, 3], help="output scales (2^-s)")

    g = p.add_argument_group("model")
    g.add_argument("--method", type=str, default="monodepth2",
                   help="a method in methods/ (or a module path); --method NAME --help lists its options")
    g.add_argument("--encoder", type=str, default="resnet",
                   help="depth encoder: resnet (ResNet---num_layers), resnet18..resnet152, or a timm model name")
    g.add_argument("--depth_decoder", type=str, default="monodepth2", help="depth decoder by registered name")
    g.add_argument("--num_layers", type=int, default=18, choices=[18, 34, 50, 101, 152],
                   help="ResNet depth of the encoder and the pose encoder")
    g.add_argument("--weights_init", type=str, default="pretrained", choices=["pretrained", "scratch"],
                   help="ImageNet weights for the encoders, or random")
    g.add_argument("--disp_bias_init", type=float,
                   help="initial bias of the disparity outputs (default: PyTorch's init, as monodepth2); "
                        "e.g. -3 starts from-scratch training at mid-range depth")
    g.add_argument("--min_depth", type=float, default=0.1, help="depth of disparity 1 (training units)")
    g.add_argument("--max_depth", type=float, default=100.0, help="depth of disparity 0 (training units)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=int, default=12, help="per process")
    g.add_argument("--learning_rate", type=float, default=1e-4, help="LR of the main parameter group")
    g.add_argument("--num_epochs", type=int, default=20, help="epochs to train")
    g.add_argument("--scheduler_step_size", type=int, default=15,
                   help="epochs before the learning rate is multiplied by 0.1")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    g.add_argument("--optimizer", type=str, default="adam", choices=["adam", "adamw"], help="optimiser")
    g.add_argument("--weight_decay", type=float, default=0.0, help="weight decay (decoupled with adamw)")
    g.add_argument("--amsgrad", action="store_true", help="the AMSGrad variant of Adam / AdamW")
    g.add_argument("--lr_sche_type", type=str, default="step", choices=["step", "cosine", "exponential"],
                   help="step: x decay_rate every decay_step epochs; cosine: to eta_min; "
                        "exponential: x decay_rate every epoch")
    g.add_argument("--decay_step", type=int, nargs="+", default=[0],
                   help="step schedule: one number = epochs between decays (0: --scheduler_step_size); "
                        "several = the epochs at which the LR is multiplied by --decay_rate (e.g. 26 36)")
    g.add_argument("--decay_rate", type=float, default=0.1, help="step / exponential schedule: LR factor")
    g.add_argument("--eta_min", type=float, default=0.0, help="cosine schedule: final LR")
    g.add_argument("--warmup_steps", type=int, default=0, help="linear LR warm-up (steps)")

    g = p.add_argument_group("system and logging")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    g.add_argument("--num_workers", type=int, default=12, help="data loader workers per process")
    g.add_argument("--log_frequency", type=int, default=250, help="steps between logs")
    g.add_argument("--save_frequency", type=int, default=1, help="epochs between weight folders")
    g.add_argument("--keep_weights", type=int, default=3,
                   help="keep only the newest N weights_<epoch> folders (0: keep all, as monodepth2; "
                        "weights_best is always kept). A ResNet-18 folder is ~310 MB with adam.pth")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    g.add_argument("--resume", action="store_true",
                   help="continue <log_dir>/<model_name> from its last saved state, with the options it was "
                        "started with (only --num_epochs, --max_steps and the system flags may change)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in <log_dir>/<model_name> even if it holds a run (its logs, states and "
                        "weights are removed first); without it such a folder is refused")
    g.add_argument("--skip_bad_items", action="store_true",
                   help="skip (log and count) items whose files are missing or unreadable instead of stopping")
    g.add_argument("--state_frequency", type=int, default=250,
                   help="steps between resumable states (also saved at each epoch end; 0: epochs only)")
    g.add_argument("--val_split", type=str,
                   help="split (name or folder) whose val_files.txt is validated each epoch "
                        "(default: the training split's)")
    g.add_argument("--best_metric", type=str, default="abs_rel",
                   help="validation metric that picks weights_best (abs_rel, rmse, a1, ...)")
    g.add_argument("--amp", type=str, default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision for the networks (geometry and losses stay float32)")
    g.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    g.add_argument("--profile", action="store_true",
                   help="write <log_dir>/<model_name>/profile.json: seconds per phase of the run (imports, "
                        "checks, datasets, workers, data wait, steps, logging, validation, saving; see "
                        "benchmarks/run_breakdown.py)")
    g.add_argument("--compile", action="store_true", help="torch.compile every network")
    g.add_argument("--fast_loader", action="store_true",
                   help="workers read one pre-resized uint8 image per frame; flip, pyramid and "
                        "jitter run on the training device (see README)")
    g.add_argument("--cache_dir", type=str, help="with --fast_loader: keep pre-resized images here")
    g.add_argument("--decode_on_device", action="store_true",
                   help="with --fast_loader and .jpg images: workers read the files' bytes only; "
                        "decoding (nvJPEG on CUDA) and resizing run on the training device")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (slower on GPUs; on CUDA some backward passes, such as grid_sample's, "
                        "reflection padding's and bilinear upsampling's, have none and stay as they are, with a warning)")
    g.add_argument("--max_nonfinite", type=int, default=10,
                   help="stop after this many non-finite losses in a row (each is skipped)")
    g.add_argument("--sync_bn", nargs="?", const="on", default="off", choices=SYNC_BN_MODES,
                   help="BatchNorm -> SyncBatchNorm under DDP, which has CUDA kernels only. `--sync_bn` (= on): "
                        "with more than one process; stops on CPU. auto (the BDEdepth presets, as BDEdepth's released "
                        "recipes): with more than one process on CUDA; a multi-process CPU run keeps plain "
                        "BatchNorm per process and says so once. off: plain BatchNorm per process")
    g.add_argument("--allow_tf32", choices=["pytorch", "on", "off"], default="pytorch",
                   help="TF32 on Ampere+ GPUs: on / off set torch.backends.cuda.matmul.allow_tf32 and "
                        "torch.backends.cudnn.allow_tf32 both (evaluate_depth.py applies a folder's choice too); "
                        "pytorch leaves PyTorch's defaults")


def build_parser(method_cls=None, method_name=None):
    """The training parser: shared options plus `method_cls`'s own (each class of its
    hierarchy that defines add_options adds its group, bases first). A built-in method given
    by `method_name` instead adds the same groups from methods/option_groups.py without
    importing its class (nor PyTorch)."""
    p = argparse.ArgumentParser(
        description="Train a self-supervised depth model. `--method NAME --help` also lists a method's options.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_shared_options(p)
    if method_name is not None:
        from methods.option_groups import add_method_options
        if add_method_options(p, method_name):
            return p
        from methods import method_class
        method_cls = method_class(method_name)
    if method_cls is not None:
        for cls in reversed(method_cls.__mro__):
            if "add_options" in cls.__dict__:
                cls.add_options(p)
    return p


# options a resumed run may change (the rest are the run's own, restored from its opt.json)
RESUME_OVERRIDES = ("resume", "log_dir", "model_name", "num_epochs", "max_steps", "data_path", "num_workers",
                    "profile", "log_frequency", "save_frequency", "state_frequency", "keep_weights", "no_progress",
                    "no_cuda", "cache_dir", "skip_bad_items", "max_nonfinite")


class MonodepthOptions:
    """`MonodepthOptions().parse(argv)` -> the options Namespace (monodepth2's entry point)."""

    def parse(self, argv=None):
        from methods import method_class, resolve_method_name
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config")
        pre.add_argument("--method")
        pre.add_argument("--resume", action="store_true")
        pre.add_argument("--log_dir", default=os.path.join(os.path.expanduser("~"), "tmp"))
        pre.add_argument("--model_name", default="mdp")
        first, _ = pre.parse_known_args(argv)
        if first.resume:
            return self.parse_resume(argv, first)
        preset, preset_path = ({}, None)
        if first.config:
            preset, preset_path = read_preset(first.config)
        name = resolve_method_name(first.method, preset, argv)
        parser = build_parser(method_name=name)  # --help exits in parse_args, before PyTorch is imported
        self.parser = parser
        if preset:
            parser.set_defaults(**check_preset(preset, preset_path, parser, name))
        opt = parser.parse_args(argv)
        opt.method = name
        cls = method_class(name)
        check_options(opt)
        check_method_options(cls, opt)
        return opt

    def parse_resume(self, argv, first):
        """--resume: the run's own options (models/opt.json), with only RESUME_OVERRIDES
        allowed to differ on the command line."""
        from methods import method_class
        run_dir = os.path.join(os.path.expanduser(first.log_dir), first.model_name)
        path = os.path.join(run_dir, "models", "opt.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--resume: no run to continue at {run_dir} ({path} is missing); check --log_dir and "
                             "--model_name, or start the run without --resume")
        if first.config:
            raise SystemExit("--resume restores the run's own options: drop --config")
        import json
        with open(path) as f:
            saved = json.load(f)
        name = saved.get("method") or "monodepth2"
        if first.method and first.method != name:
            raise SystemExit(f"--resume: the run at {run_dir} uses --method {name}, not {first.method}")
        parser = build_parser(method_name=name)
        self.parser = parser
        known = {a.dest for a in parser._actions}
        defaults = {k: v for k, v in saved.items() if k in known and k not in ("config", "method")}
        if "frame_ids" in defaults:
            defaults["frame_ids"] = [frame_id(str(v)) for v in defaults["frame_ids"]]
        parser.set_defaults(**defaults)
        opt = parser.parse_args(argv)
        opt.method = name
        cls = method_class(name)
        check_options(opt)
        check_method_options(cls, opt)
        # options newer than the run (absent from its opt.json) stay as the run had them: their
        # defaults, even where a check derives them from an older flag (e.g. --ref_compat)
        given = set(explicit_options(parser, argv))
        for action in parser._actions:
            dest = action.dest
            if dest not in saved and dest not in given and hasattr(opt, dest) and dest != "help":
                default = parser.get_default(dest)
                if getattr(opt, dest) != default:
                    setattr(opt, dest, default)
        changed = []
        for dest in explicit_options(parser, argv):
            if dest in saved and getattr(opt, dest) != saved[dest] and dest not in RESUME_OVERRIDES:
                changed.append(f"--{dest} (run: {saved[dest]!r}, given: {getattr(opt, dest)!r})")
        if changed:
            raise SystemExit("--resume continues the run with the options it was started with; these differ: "
                             + ", ".join(changed) + f". Only {', '.join('--' + o for o in RESUME_OVERRIDES[3:])} "
                             "may change; start a new --model_name (with --load_weights_folder) to change others")
        overridden = [f"--{d} {saved.get(d)!r} -> {getattr(opt, d)!r}" for d in explicit_options(parser, argv)
                      if d in saved and d not in ("resume",) and getattr(opt, d) != saved[d]]
        if overridden:
            print("-> resuming with the run's options, except " + ", ".join(overridden))
        return opt


def explicit_options(parser, argv):
    """Destinations of the options written on the command line."""
    given = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if any(token == flag or token.startswith(flag + "=") for token in argv):
                given.add(action.dest)
    return given


def read_preset(path):
    """(dict, path) of a preset given by name (configs/NAME[.yaml]) or by file path."""
    if not os.path.isfile(path):
        found = [c for c in (os.path.join(CONFIGS_DIR, path), os.path.join(CONFIGS_DIR, path + ".yaml"))
                 if os.path.isfile(c)]
        if not found:
            raise SystemExit(f"--config {path}: no such file; presets in configs/: {', '.join(list_presets())}")
        path = found[0]
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise SystemExit(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise SystemExit(f"--config {path}: expected a mapping of option: value")
    return cfg, path


def list_presets():
    return sorted(f[:-5] for f in os.listdir(CONFIGS_DIR) if f.endswith(".yaml"))


def check_preset(cfg, path, parser, method):
    """The preset's values as parser defaults; an unknown key is an error naming the file."""
    known = {a.dest for a in parser._actions}
    for key in cfg:
        if key not in known:
            raise SystemExit(f"--config {path}: unknown option {key!r} for --method {method}")
    cfg = {k: v for k, v in cfg.items() if k != "method"}
    if "frame_ids" in cfg:
        cfg["frame_ids"] = [frame_id(str(v)) for v in cfg["frame_ids"]]
    return cfg


def check_method_options(method_cls, opt):
    """Every class of the method's hierarchy that defines check_options checks its own
    options, bases first (as add_options adds them)."""
    for cls in reversed(method_cls.__mro__):
        if "check_options" in cls.__dict__:
            cls.__dict__["check_options"].__func__(method_cls, opt)


def check_options(opt):
    """Reject combinations of shared options that cannot work, saying what to change."""
    if opt.frame_ids[0] != 0:
        raise SystemExit(f"--frame_ids must start with 0, got {opt.frame_ids}")
    opt.sync_bn = sync_bn_mode(opt.sync_bn)
    if opt.use_stereo and "s" not in opt.frame_ids:
        opt.frame_ids = list(opt.frame_ids) + ["s"]
    if opt.height % 32 or opt.width % 32:
        raise SystemExit(f"--height {opt.height} and --width {opt.width} must be multiples of 32")
    if opt.decode_on_device and (not opt.fast_loader or opt.png or opt.cache_dir):
        raise SystemExit("--decode_on_device needs --fast_loader and .jpg images (no --png), and replaces "
                         "--cache_dir (the cache holds decoded images): drop one of them")
    if opt.keep_weights < 0 or opt.save_frequency < 1:
        raise SystemExit(f"--keep_weights must be >= 0 (got {opt.keep_weights}) and --save_frequency >= 1 "
                         f"(got {opt.save_frequency})")
    if getattr(opt, "pretrained_encoder", None):
        if getattr(opt, "imagenet_weights", None):
            raise SystemExit("--pretrained_encoder and --imagenet_weights both name the encoders' start: give one")
        if not os.path.isdir(os.path.expanduser(opt.pretrained_encoder)):
            raise SystemExit(f"--pretrained_encoder {opt.pretrained_encoder}: no such folder (write one with "
                             "python benchmarks/pretrain_encoder.py)")
        opt.weights_init = "pretrained"
    from datasets import DATASETS
    if opt.dataset not in DATASETS:
        raise SystemExit(f"--dataset {opt.dataset!r}: registered datasets are {', '.join(sorted(DATASETS))}")
    if (getattr(opt, "odom_train_seqs", None) or getattr(opt, "odom_val_seqs", None)) and \
            not hasattr(DATASETS[opt.dataset], "split_from_options"):
        raise SystemExit(f"--odom_train_seqs / --odom_val_seqs need --dataset kitti_odom_mf (got {opt.dataset})")
    return opt


def options_for_inference(saved, overrides=None):
    """Options to rebuild a trained method: the parser defaults of saved["method"], the
    saved values (unknown keys of older versions are ignored), then `overrides`; the
    encoders start from random weights (the folder's weights replace them)."""
    from methods import method_class
    name = saved.get("method") or "monodepth2"
    parser = build_parser(method_class(name))
    opt = parser.parse_args([])
    known = vars(opt)
    for key, value in saved.items():
        if key in known:
            setattr(opt, key, value)
    for key, value in (overrides or {}).items():
        setattr(opt, key, value)
    opt.method = name
    opt.frame_ids = [frame_id(str(f)) for f in opt.frame_ids]
    opt.weights_init, opt.imagenet_weights, opt.pretrained_encoder = "scratch", None, None
    opt.for_inference = True  # methods skip what only training needs (e.g. loading a teacher folder)
    return opt


def missing_data_hint(data_path):
    """What to say when --data_path does not exist: the layout, or, for the default path (KITTI
    not downloaded), how to run on the built-in synthetic world instead."""
    if os.path.abspath(data_path) == os.path.join(PROJECT_DIR, "kitti_data"):
        return ("KITTI is not there; without it, write the built-in synthetic world with python -m synthetic_world "
                "--out synthetic_data and train with --data_path synthetic_data --split synthetic --png, or a "
                "synthetic_* preset")
    return "the root of the images; see docs/kitti.md for the layout"


def resolve_split_dir(split, data_path=None):
    """A split given as a folder path, a name under splits/, or a name under
    <data_path>/splits/ (the synthetic world writes its splits there)."""
    if os.path.isdir(split):
        return split
    candidates = [os.path.join(SPLITS_DIR, split)]
    if data_path:
        candidates.append(os.path.join(data_path, "splits", split))
    for path in candidates:
        if os.path.isdir(path):
            return path
    available = sorted(d for d in os.listdir(SPLITS_DIR) if os.path.isdir(os.path.join(SPLITS_DIR, d)))
    if data_path and os.path.isdir(os.path.join(data_path, "splits")):
        available += sorted(d for d in os.listdir(os.path.join(data_path, "splits"))
                            if os.path.isdir(os.path.join(data_path, "splits", d)))
    raise SystemExit(f"split {split!r} not found in splits/{' or ' + os.path.join(data_path, 'splits') if data_path else ''}"
                     f" (nor is it a folder); available: {', '.join(available)}")


def read_split_file(path):
    if not os.path.isfile(path):
        raise SystemExit(f"split file not found: {path}")
    with open(path) as f:
        return [line for line in f.read().splitlines() if line.strip()]
