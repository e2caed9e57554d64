"""Where a whole training run's time goes, from launch to exit, for this project and (given
--reference) for a monodepth2 checkout, in alternating runs (A B A B ...) on the same data.

    python benchmarks/run_breakdown.py --data_path synthetic_data --split synthetic \
        [--reference path/to/monodepth2] [--pairs 2] [--fast_loader [--cache none|cold|warm]] \
        [-- extra train.py flags (after the common ones: they win)]

Each run trains one epoch (ResNet-18 mono from scratch, 320x96, batch 4, 2 workers) and
validates. This project's phases come from its own timeline (`train.py --profile`:
training/profile.py); both programs are also timed from outside (the process's wall clock
and the moment each log line appears), which is all the reference gives: its start-up
(launch to its first line), set-up (to the line that counts the items), first step (to the
first batch line) and the rest. The table gives each phase's mean over the runs, and the
ratio of the reference's whole run to this project's (above 1: this project is faster).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("options", "imports", "datasets", "cache", "networks", "optimiser", "first_batch", "data_wait", "step",
          "logging", "validation", "saving")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default="synthetic_data")
    p.add_argument("--split", default="synthetic",
                   help="a split (name under splits/ or <data_path>/splits/, or a folder) with train/val files")
    p.add_argument("--reference", help="a monodepth2 checkout to time beside this project (its train.py)")
    p.add_argument("--reference_pythonpath", default="",
                   help="extra PYTHONPATH for the reference (e.g. a folder holding scikit-image)")
    p.add_argument("--pairs", type=int, default=2, help="alternating runs of each program")
    p.add_argument("--fast_loader", action="store_true", help="this project's fast input path")
    p.add_argument("--cache", choices=["none", "cold", "warm"], default="none",
                   help="with --fast_loader: no --cache_dir (every frame decoded in the run), a new empty "
                        "cache per run (filled inside the timed run), or one cache filled by an untimed run "
                        "first (a later run on the same data)")
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--png", action="store_true", default=True)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("extra", nargs="*", help="more train.py flags for this project (after --)")
    return p.parse_args(argv)


def timed_lines(command, cwd, env):
    """Run `command`; return (wall seconds, [(seconds since launch, line), ...])."""
    launch = time.time()
    env = dict(env, DEPTHKIT_LAUNCH_TIME=repr(launch), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.time() - launch, line.rstrip()))
    proc.wait()
    wall = time.time() - launch
    if proc.returncode:
        raise SystemExit(f"{' '.join(command[:3])} ... failed (exit {proc.returncode}):\n"
                         + "\n".join(text for _, text in lines[-20:]))
    return wall, lines


def first(lines, *needles):
    for t, text in lines:
        if any(n in text for n in needles):
            return t
    return None


def outside_phases(wall, lines):
    """What the log lines show of any run: start-up, set-up, first step, the rest."""
    named = first(lines, "Training model named")
    counted = first(lines, "training items")
    batch = first(lines, "batch      0", "batch 0 ")
    out = {"wall": wall}
    if named is not None:
        out["startup (to the first line)"] = named
    if counted is not None and named is not None:
        out["set-up (to the item count)"] = counted - named
    if batch is not None and counted is not None:
        out["first step (to the first batch line)"] = batch - counted
    if batch is not None:
        out["rest (training, validation, saving, exit)"] = wall - batch
    return out


def split_dir(args):
    sys.path.insert(0, ROOT)
    from options import resolve_split_dir
    return resolve_split_dir(args.split, args.data_path)


def our_command(args, log_dir, index):
    """This project's train.py command for run `index` (the flags after `--` come last: they win)."""
    name = f"ours_{index}"
    command = [sys.executable, "train.py", "--data_path", os.path.abspath(args.data_path), "--split",
               split_dir(args), "--height", str(args.height), "--width", str(args.width), "--batch_size",
               str(args.batch_size), "--num_workers", str(args.num_workers), "--num_epochs", "1", "--weights_init",
               "scratch", "--log_dir", log_dir, "--model_name", name, "--no_progress", "--profile", "--no_cuda",
               "--log_frequency", "250", "--state_frequency", "0"]
    if args.png:
        command.append("--png")
    if args.fast_loader:
        command.append("--fast_loader")
        if args.cache != "none":  # warm: one cache for every run; cold: a new one per run
            command += ["--cache_dir", os.path.join(log_dir, "cache" if args.cache == "warm" else f"cache_{index}")]
    return name, command + list(args.extra)


def ours(args, log_dir, index):
    name, command = our_command(args, log_dir, index)
    wall, lines = timed_lines(command, ROOT, os.environ)
    with open(os.path.join(log_dir, name, "profile.json")) as f:
        profile = json.load(f)
    phases = {p: profile.get(p, 0.0) for p in PHASES}
    # the options are parsed first (the method's module, and with it torch, are imported there); the
    # "imports" mark is the launch to the trainer's import
    phases["imports"] = profile.get("imports", 0.0) - profile.get("options", 0.0)
    phases["exit (training's end to process exit)"] = wall - profile["since_launch"]
    return {"wall": wall, **phases, **{f"outside: {k}": v for k, v in outside_phases(wall, lines).items()
                                       if k != "wall"}}


def reference_copy(args, log_dir):
    """A copy of the reference checkout whose eigen_zhou split is ours (its --split accepts only
    its own split names); the checkout itself is left as it was."""
    copy = os.path.join(log_dir, "reference_checkout")
    if not os.path.isdir(copy):
        shutil.copytree(args.reference, copy, ignore=shutil.ignore_patterns(".git", "assets", "*.pyc"))
        target = os.path.join(copy, "splits", "eigen_zhou")
        shutil.rmtree(target, ignore_errors=True)
        source = split_dir(args)
        os.makedirs(target)
        for name in ("train_files.txt", "val_files.txt"):
            shutil.copy(os.path.join(source, name), target)
    return copy


def reference(args, log_dir, index):
    """The reference's train.py on the same split (in a copy of the checkout: reference_copy)."""
    split_name = "eigen_zhou"
    checkout = reference_copy(args, log_dir)
    name = f"reference_{index}"
    command = [sys.executable, "train.py", "--data_path", os.path.abspath(args.data_path), "--split", split_name,
               "--height", str(args.height), "--width", str(args.width), "--batch_size", str(args.batch_size),
               "--num_workers", str(args.num_workers), "--num_epochs", "1", "--weights_init", "scratch",
               "--log_dir", log_dir, "--model_name", name, "--no_cuda", "--log_frequency", "250"]
    if args.png:
        command.append("--png")
    env = dict(os.environ)
    if args.reference_pythonpath:
        env["PYTHONPATH"] = args.reference_pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    wall, lines = timed_lines(command, checkout, env)
    return outside_phases(wall, lines)


def mean(rows, key):
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def main(argv=None):
    args = parse_args(argv)
    log_dir = tempfile.mkdtemp(prefix="breakdown_")
    runs = {"ours": [], "reference": []}
    try:
        if args.fast_loader and args.cache == "warm":
            print(f"-> filling the cache (untimed): {ours(args, log_dir, 'fill')['wall']:.1f} s", flush=True)
        for i in range(args.pairs):
            runs["ours"].append(ours(args, log_dir, i))
            print(f"-> this project, run {i}: {runs['ours'][-1]['wall']:.1f} s", flush=True)
            if args.reference:
                runs["reference"].append(reference(args, log_dir, i))
                print(f"-> reference, run {i}: {runs['reference'][-1]['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    keys = [k for k in runs["ours"][0] if k != "wall"]
    print("\n| phase | this project (s) | reference (s) |\n|---|---|---|")
    for key in keys:
        print(f"| {key} | {mean(runs['ours'], key):.2f} | |")
    if runs["reference"]:
        for key in [k for k in runs["reference"][0] if k != "wall"]:
            print(f"| reference: {key} | | {mean(runs['reference'], key):.2f} |")
    ours_wall = mean(runs["ours"], "wall")
    line = f"| whole run, launch to exit | {ours_wall:.2f} |"
    if runs["reference"]:
        ref_wall = mean(runs["reference"], "wall")
        pairs = [r["wall"] / o["wall"] for o, r in zip(runs["ours"], runs["reference"])]
        line += f" {ref_wall:.2f} |\n\nspeed vs the reference (its wall / ours): {ref_wall / ours_wall:.2f}x " \
                f"(pairs: {', '.join(f'{p:.2f}' for p in pairs)})"
    else:
        line += " |"
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
