"""The scripts as a user runs them, for tests: evaluate_depth.py on the synthetic world."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def evaluate_folder(folder, world, out_json, *extra):
    """evaluate_depth.py --eval_mono on the world's synthetic split (its GT exported first).
    Returns (the finished process, the metrics of --output_json or None)."""
    from export_gt_depth import export_gt_depths
    split = os.path.join(world.out, "splits", "synthetic")
    export_gt_depths(world.out, split, "velodyne", "exact", progress=False)
    res = subprocess.run([sys.executable, "evaluate_depth.py", "--load_weights_folder", str(folder), "--eval_mono",
                          "--eval_split", split, "--data_path", world.out, "--png", "--num_workers", "0",
                          "--output_json", str(out_json), *extra], cwd=ROOT, capture_output=True, text=True)
    metrics = json.loads(open(out_json).read()) if res.returncode == 0 else None
    return res, metrics


def small_split(world, folder, n_train, n_val=2):
    """A split folder with the world's first n_train training and n_val validation lines."""
    os.makedirs(folder, exist_ok=True)
    src = os.path.join(world.out, "splits", "synthetic")
    for name, n in (("train_files.txt", n_train), ("val_files.txt", n_val)):
        with open(os.path.join(src, name)) as f:
            lines = f.read().splitlines()[:n]
        with open(os.path.join(folder, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(folder)


def train_steps(log_dir, model_name="m"):
    """{step: record} of a run's train_steps.jsonl."""
    with open(os.path.join(str(log_dir), model_name, "train_steps.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f.read().splitlines())}


def kill_after_steps(train_args, log_dir, steps, model_name="m", timeout=300):
    """Run train.py with train_args and SIGKILL it once its train_steps.jsonl has `steps` lines."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "train.py", *train_args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = os.path.join(str(log_dir), model_name, "train_steps.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) >= steps:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
