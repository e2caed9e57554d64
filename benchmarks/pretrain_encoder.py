"""A shared pretrained start for every method: encoder weights in the layout of ImageNet files.

    python benchmarks/pretrain_encoder.py [--out runs/pretrained_synthetic] [--encoders resnet18 hrnet_w18]
    python benchmarks/pretrain_encoder.py --imagenet [--imagenet_weights R18.pth] [--hrnet_weights H.pth]
    python train.py --config synthetic_srd --pretrained_encoder runs/pretrained_synthetic

The papers start every encoder from ImageNet weights, which cannot be fetched offline. The
stand-in: a world written with another seed than the comparison's world (no drive in
common), a stereo depth network trained on it (configs/synthetic_pretrain.yaml, stereo
gives it metric scale and needs no pose network), and its encoder kept, renamed to the
layout of the ImageNet file of its family: `resnet18.pth` (torchvision's names) and
`hrnet_w18.pth` (timm's). `--pretrained_encoder FOLDER` then starts any method's encoders
(depth, pose, matching, context) from FOLDER/<family>.pth, as --imagenet_weights would.

A pose start (`FOLDER/pose/`, a weight folder with `pose_encoder.pth` and `pose.pth`): a
mono+stereo run on the same pretraining world, started from the ResNet-18 encoder above
(--pose_epochs, default 12; 0 writes none). ImageNet has no pose network; the papers' pose
networks learn the camera's motion over thousands of KITTI steps. Here, in this pretext, the
translation reaches 0.03, 0.41, 0.69 and 0.91 m per frame after epochs 0, 2, 5 and 11 (the
world's camera: 1.07): a budget of a few hundred steps ends while the pose is still growing,
and the monocular rows' depth chases its scale (docs/benchmark.md, "Stability"). Stereo
fixes the pose's unit: metres / 5.4, monodepth2's stereo unit (a baseline of 0.1). A run takes it with `--load_weights_folder FOLDER/pose
--models_to_load pose_encoder pose` and a depth that starts at that unit (`--min_depth 0.1
--disp_bias_init -3`: the pretext's own start, depth 2.1, where the world's median of ~15 m
is 2.8); benchmarks/compare_methods.py does this for every row with a pose network.

With --imagenet the folder holds the real ImageNet weights instead (a local file, or
torchvision's / timm's hub when online), so the comparison runs unchanged from them (no
pose start: the pose networks start from the ImageNet encoder, as in the papers).

The result is cached: a family whose file exists with the same recipe in info.json is not
trained again (--overwrite retrains); a killed pretraining continues (--resume).
"""
import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# the pretext network of each family: encoder and decoder options for train.py
PRETEXT = {
    "resnet18": ["--encoder", "resnet", "--num_layers", "18", "--depth_decoder", "monodepth2"],
    "hrnet_w18": ["--encoder", "hrnet18_raw", "--depth_decoder", "msf", "--scales", "0"],
}
WORLD_SEED = 1000  # the comparison's worlds use seeds below 100
# the pose pretext: mono+stereo (stereo fixes the unit) with monodepth2's ResNet-18 networks
POSE_PRETEXT = ["--frame_ids", "0", "-1", "1", "--use_stereo"] + PRETEXT["resnet18"]
POSE_START_DEPTH = {"min_depth": 0.1, "disp_bias_init": -3.0}  # a depth at the pose start's unit


def torch_version():
    """Recorded beside what it built: two builds with different PyTorch releases need not
    give the same tensors."""
    return importlib.metadata.version("torch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join("runs", "pretrained_synthetic"), help="the folder to write")
    p.add_argument("--encoders", nargs="+", default=["resnet18"], choices=sorted(PRETEXT),
                   help="families to write")
    p.add_argument("--world", default="synthetic_pretrain", help="the pretraining world (written if absent)")
    p.add_argument("--drives", type=int, default=4, help="drives of the pretraining world")
    p.add_argument("--frames", type=int, default=60, help="frames per drive of the pretraining world")
    p.add_argument("--world_size", type=int, nargs=2, default=[375, 1242], metavar=("H", "W"),
                   help="image size of the pretraining world")
    p.add_argument("--height", type=int, default=96, help="training height")
    p.add_argument("--width", type=int, default=320, help="training width")
    p.add_argument("--max_steps", type=int, default=0, help="stop the pretraining after this many steps (0: none)")
    p.add_argument("--epochs", type=int, default=10, help="pretraining epochs")
    p.add_argument("--pose_epochs", type=int, default=12,
                   help="epochs of the pose pretext (mono+stereo from the ResNet-18 start; 0: no pose start)")
    p.add_argument("--log_dir", default=os.path.join("runs", "pretrain"), help="where the pretraining runs go")
    p.add_argument("--overwrite", action="store_true", help="train again even where a file exists")
    p.add_argument("--imagenet", action="store_true",
                   help="write the real ImageNet weights instead (files below, or the hubs when online)")
    p.add_argument("--imagenet_weights", help="with --imagenet: torchvision's resnet18 ImageNet file")
    p.add_argument("--hrnet_weights", help="with --imagenet: HRNet-W18-C's ImageNet file (official or timm names)")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def recipe(args, family):
    return {"source": "synthetic stereo pretext", "family": family, "preset": "synthetic_pretrain",
            "pretext_network": PRETEXT[family], "epochs": args.epochs, "max_steps": args.max_steps,
            "size": [args.height, args.width], "world_seed": WORLD_SEED, "world_drives": args.drives,
            "world_frames": args.frames, "world_size": list(args.world_size)}


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_info(out):
    path = os.path.join(out, "info.json")
    return read_json(path) if os.path.isfile(path) else {}


def write_info(out, info):
    from utils import atomic_write_bytes
    atomic_write_bytes(os.path.join(out, "info.json"), (json.dumps(info, indent=1) + "\n").encode())


def encoder_state(weights_folder, family):
    """The trained encoder of a weight folder with the names of its family's ImageNet file."""
    import torch
    state = torch.load(os.path.join(weights_folder, "encoder.pth"), map_location="cpu", weights_only=True)
    prefix = "encoder."
    out = {k[len(prefix):]: v for k, v in state.items() if torch.is_tensor(v) and k.startswith(prefix)}
    if not out:
        raise SystemExit(f"{weights_folder}/encoder.pth holds no '{prefix}*' tensors: not a {family} encoder")
    return out


def pose_recipe(args, info):
    """The pose pretext's recipe, with that of the resnet18.pth it starts from (a retrained
    encoder retrains the pose start)."""
    return {"source": "synthetic mono+stereo pose pretext", "preset": "synthetic_pretrain",
            "pretext_network": POSE_PRETEXT, "epochs": args.pose_epochs, "max_steps": args.max_steps,
            "size": [args.height, args.width], "world_seed": WORLD_SEED, "world_drives": args.drives,
            "world_frames": args.frames, "world_size": list(args.world_size), "start": "resnet18.pth",
            "start_recipe": info.get("resnet18", {}).get("recipe", info.get("resnet18")),
            "depth_start": POSE_START_DEPTH, "weights": "last epoch"}


def pretrain(args, family, entry, last=False):
    """Train the pretext network of `family` ("pose": the pose pretext) with recipe `entry`, or
    continue a killed run of the same recipe, and return (weight folder: the best epoch's, or
    with `last` the last epoch's; seconds). A run of another recipe is trained afresh."""
    from datasets import synthetic_world as sw
    if not sw.world_exists(args.world):
        print(f"-> writing the pretraining world {args.world} (seed {WORLD_SEED}, {args.drives} drives)")
        sw.generate(sw.Config(out=args.world, drives=args.drives, frames=args.frames, seed=WORLD_SEED,
                              height=args.world_size[0], width=args.world_size[1]), progress=not args.no_progress)
    name = f"pretrain_{family}"
    run = os.path.join(args.log_dir, name)
    if family == "pose":
        epochs = args.pose_epochs
        network = POSE_PRETEXT + ["--pretrained_encoder", os.path.abspath(args.out),
                                  "--scheduler_step_size", str(max(int(0.75 * epochs + 0.5), 1))] + \
            [f"--{k}={v}" for k, v in POSE_START_DEPTH.items()]
    else:
        epochs, network = args.epochs, PRETEXT[family]
    command = [sys.executable, os.path.join(ROOT, "train.py")]
    recipe_file = os.path.join(run, "recipe.json")
    same = os.path.isfile(recipe_file) and read_json(recipe_file) == entry
    if (args.overwrite or not same) and os.path.isdir(run):
        shutil.rmtree(run)  # another recipe, or stopped before its first state: nothing to keep
    if os.path.isfile(os.path.join(run, "state", "last.pt")):
        command += ["--resume", "--log_dir", args.log_dir, "--model_name", name, "--data_path", args.world]
    else:
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run)
        with open(recipe_file, "w") as f:
            json.dump(entry, f, indent=1)
        command += ["--config", "synthetic_pretrain", "--data_path", args.world, "--log_dir", args.log_dir,
                    "--model_name", name, "--num_epochs", str(epochs), "--height", str(args.height),
                    "--width", str(args.width), "--max_steps", str(args.max_steps)] + network
    if args.no_progress:
        command.append("--no_progress")
    started = time.time()
    print("-> " + " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=ROOT)
    best = os.path.join(run, "models", "weights_best")
    if last or not os.path.isdir(best):
        return os.path.realpath(os.path.join(run, "models", "last")), time.time() - started
    return best, time.time() - started


def imagenet_state(args, family):
    if family == "resnet18":
        from networks.resnet_encoder import load_imagenet_state_dict
        try:
            return dict(load_imagenet_state_dict(18, args.imagenet_weights)), args.imagenet_weights or "torchvision hub"
        except (RuntimeError, FileNotFoundError) as e:
            raise SystemExit(str(e)) from None
    from networks.bdedepth_encoders import HRNet18Encoder
    encoder = HRNet18Encoder(weights_file=args.hrnet_weights, hub_pretrained=not args.hrnet_weights,
                             context_branch=False)
    return encoder.encoder.state_dict(), args.hrnet_weights or "timm hub"


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    info = read_info(args.out)
    for family in args.encoders:
        path = os.path.join(args.out, f"{family}.pth")
        if args.imagenet:
            state, source = imagenet_state(args, family)
            entry = {"source": "ImageNet", "file": source}
        else:
            entry = recipe(args, family)
            if os.path.isfile(path) and info.get(family, {}).get("recipe") == entry and not args.overwrite:
                print(f"-> {path}: kept (same recipe; --overwrite trains it again)")
                continue
            folder, seconds = pretrain(args, family, entry)
            state = encoder_state(folder, family)
            best = os.path.join(os.path.dirname(folder), "best.json")
            entry = {"recipe": entry, "weights_folder": folder, "seconds": round(seconds),
                     "validation": read_json(best) if os.path.isfile(best) else None, "torch": torch_version()}
        from utils import atomic_torch_save
        atomic_torch_save(state, path)
        info[family] = entry
        write_info(args.out, info)
        print(f"-> {path}: {len(state)} tensors ({entry.get('source', 'synthetic stereo pretext')})")
    if args.pose_epochs > 0 and not args.imagenet:
        write_pose_start(args, info)
    print(f"-> start a method from it: python train.py --config PRESET --pretrained_encoder {args.out}")


def write_pose_start(args, info):
    """FOLDER/pose/: the pose pretext's pose networks as a weight folder (trained once per recipe)."""
    folder = os.path.join(args.out, "pose")
    if not os.path.isfile(os.path.join(args.out, "resnet18.pth")):
        print(f"-> no pose start: the pose pretext starts from {args.out}/resnet18.pth, which is not "
              "written yet (add --encoders resnet18)")
        return
    entry = pose_recipe(args, info)
    if os.path.isfile(os.path.join(folder, "pose.pth")) and info.get("pose", {}).get("recipe") == entry \
            and not args.overwrite:
        print(f"-> {folder}: kept (same recipe; --overwrite trains it again)")
        return
    weights, seconds = pretrain(args, "pose", entry, last=True)
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in ("pose_encoder.pth", "pose.pth", "opt.json"):
        shutil.copyfile(os.path.join(weights, name), os.path.join(tmp, name))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    info["pose"] = {"recipe": entry, "weights_folder": weights, "seconds": round(seconds), "torch": torch_version()}
    write_info(args.out, info)
    print(f"-> {folder}: the pose start (--load_weights_folder {folder} --models_to_load pose_encoder pose)")


if __name__ == "__main__":
    main()
