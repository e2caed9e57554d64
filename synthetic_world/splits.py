"""Split files of a synthetic world (train / val / test, and an odometry split)."""
import os

from .constants import DATE, drive_name

def _write_splits(cfg):
    """Train/val/test split files (lines `folder frame side`): the last drive is held out
    for val (first half) and test (second half) when there are two drives; with three or
    more, the second-to-last drive is val and the last is test."""
    split_dir = os.path.join(cfg.out, "splits", cfg.split_name)
    os.makedirs(split_dir, exist_ok=True)
    names = [f"{DATE}/{drive_name(i)}" for i in range(cfg.drives)]
    inner = list(range(1, cfg.frames - 1))  # frames with both neighbours
    if cfg.drives == 1:
        train_drives, val, test = [0], inner[: len(inner) // 4], inner[len(inner) // 4: len(inner) // 2]
        train = [(names[0], f) for f in inner[len(inner) // 2:]]
        val = [(names[0], f) for f in val]
        test = [(names[0], f) for f in test]
    else:
        if cfg.drives == 2:
            held = inner
            val = [(names[1], f) for f in held[: len(held) // 2]]
            test = [(names[1], f) for f in held[len(held) // 2:]]
            train_drives = [0]
        else:
            val = [(names[-2], f) for f in inner]
            test = [(names[-1], f) for f in inner]
            train_drives = list(range(cfg.drives - 2))
        train = [(names[d], f) for d in train_drives for f in inner]
    with open(os.path.join(split_dir, "train_files.txt"), "w") as f:
        f.writelines(f"{n} {i} {side}\n" for n, i in train for side in "lr")
    with open(os.path.join(split_dir, "val_files.txt"), "w") as f:
        f.writelines(f"{n} {i} l\n" for n, i in val)
    with open(os.path.join(split_dir, "test_files.txt"), "w") as f:
        f.writelines(f"{n} {i} l\n" for n, i in test)
    if cfg.odometry:
        odom_dir = os.path.join(cfg.out, "splits", cfg.split_name + "_odom")
        os.makedirs(odom_dir, exist_ok=True)
        seqs = [int(d) for d in range(cfg.drives)]
        with open(os.path.join(odom_dir, "train_files.txt"), "w") as f:
            f.writelines(f"{s} {i} {side}\n" for s in seqs[:-1] or seqs for i in inner for side in "lr")
        with open(os.path.join(odom_dir, "val_files.txt"), "w") as f:
            f.writelines(f"{seqs[-1]} {i} l\n" for i in inner[::4])
        with open(os.path.join(odom_dir, f"test_files_{seqs[-1]:02d}.txt"), "w") as f:
            f.writelines(f"{seqs[-1]} {i} l\n" for i in range(cfg.frames - 1))
    return split_dir
