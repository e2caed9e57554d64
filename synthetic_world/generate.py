"""Writing a world: the options (Config), the checks, the render and ground-truth passes
over worker processes, and the command line (python -m synthetic_world)."""
import argparse
import datetime
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .calibration import write_calibration
from .constants import DATE, drive_name
from .formats import parse_formats, write_formats
from .kitti_files import _improved_gt, _init_worker, _oxts_packet, _render_frame, _write_timestamps
from .odometry import _write_odometry
from .scene import build_drive
from .splits import _write_splits
from .textures import make_texture_atlas

@dataclass
class Config:
    out: str
    drives: int = 2
    frames: int = 60
    seed: int = 0
    height: int = 375
    width: int = 1242
    moving_objects: bool = False
    jpg: bool = False
    odometry: bool = False
    split_name: str = "synthetic"
    overwrite: bool = False
    workers: int = 0  # 0: one per CPU core
    formats: tuple = ("kitti",)  # also: cityscapes, nyuv2, make3d (or a comma-separated string)


def validate(cfg):
    """Check arguments before anything is written; raise ValueError naming the option."""
    for name, minimum in (("drives", 1), ("frames", 3), ("height", 32), ("width", 32)):
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"--{name} must be an integer >= {minimum}, got {value!r}")
    parse_formats(cfg.formats)
    if cfg.drives > 99:
        raise ValueError(f"--drives must be at most 99 (odometry sequence numbers), got {cfg.drives}")
    out = os.path.abspath(cfg.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {cfg.out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not cfg.overwrite:
        raise FileExistsError(f"--out {cfg.out} exists and is not empty; choose another folder "
                              "or pass --overwrite to replace the synthetic world in it")
    parent = out
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out {cfg.out}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"--out {cfg.out}: cannot write to {parent}")


def generate(cfg, progress=True):
    """Write the synthetic world described by cfg; returns a dict summary."""
    validate(cfg)
    start = time.time()
    if cfg.overwrite and os.path.isdir(cfg.out):
        marker = os.path.join(cfg.out, "synthetic_world.json")
        if os.listdir(cfg.out) and not os.path.isfile(marker):
            raise FileExistsError(f"--out {cfg.out} holds files that are not a synthetic world "
                                  f"(no {marker}); refusing to overwrite them")
        shutil.rmtree(cfg.out)
    date_dir = os.path.join(cfg.out, DATE)
    os.makedirs(date_dir, exist_ok=True)
    write_calibration(date_dir, cfg.width, cfg.height)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.drives)
    drives = []
    for d in range(cfg.drives):
        rng = np.random.default_rng(seeds[d])
        drive = build_drive(d, cfg.frames, rng, cfg.moving_objects)
        drive.atlas = make_texture_atlas(rng)
        drives.append(drive)
        ddir = os.path.join(date_dir, drive_name(d))
        subdirs = ["image_02/data", "image_03/data", "velodyne_points/data", "oxts/data",
                   "proj_depth/groundtruth/image_02", "depth_dense/image_02/data"]
        if cfg.moving_objects:
            subdirs.append("mvobj_mask/image_02/data")
        for sub in subdirs:
            os.makedirs(os.path.join(ddir, sub), exist_ok=True)
        t0 = datetime.datetime(2000, 1, 1, 12, 0, 0) + datetime.timedelta(minutes=10 * d)
        for sub in ("image_02", "image_03", "velodyne_points", "oxts"):
            _write_timestamps(os.path.join(ddir, sub, "timestamps.txt"), cfg.frames, t0)
        for i in range(cfg.frames):
            with open(os.path.join(ddir, "oxts", "data", f"{i:010d}.txt"), "w") as f:
                values = _oxts_packet(drive, i, cfg.frames)
                f.write(" ".join([repr(float(v)) for v in values[:25]] + [str(int(v)) for v in values[25:]]) + "\n")
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [(d, i) for d in range(cfg.drives) for i in range(cfg.frames)]
    _run(_render_frame, jobs, workers, progress, "render", (cfg, drives))
    _run(_improved_gt, jobs, workers, progress, "improved GT", (cfg, drives))
    if cfg.odometry:
        for drive in drives:
            _write_odometry(cfg, drive)
    split_dir = _write_splits(cfg)
    write_formats(cfg, progress)
    summary = {k: getattr(cfg, k) for k in ("drives", "frames", "seed", "height", "width",
                                              "moving_objects", "jpg", "odometry", "split_name")}
    summary["formats"] = list(parse_formats(cfg.formats))
    summary.update(date=DATE, drives_written=[f"{DATE}/{drive_name(d)}" for d in range(cfg.drives)],
                   split_dir=os.path.relpath(split_dir, cfg.out), seconds=round(time.time() - start, 1))
    with open(os.path.join(cfg.out, "synthetic_world.json"), "w") as f:
        json.dump({k: v for k, v in summary.items() if k != "seconds"}, f, indent=1)
    return summary


def _run(fn, jobs, workers, progress, label, state):
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=label, disable=not progress, unit="frame")
    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker(*state)
        for job in jobs:
            fn(job)
            bar.update()
        torch.set_num_threads(threads)
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=state) as pool:
            for _ in pool.map(fn, jobs, chunksize=2):
                bar.update()
    bar.close()


def world_exists(out):
    return os.path.isfile(os.path.join(out, "synthetic_world.json"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Write a deterministic synthetic driving world in "
                                "KITTI raw (and odometry) format.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (a KITTI raw root)")
    p.add_argument("--drives", type=int, default=2, help="drives (the last is held out)")
    p.add_argument("--frames", type=int, default=60, help="frames per drive (10 Hz)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes")
    p.add_argument("--height", type=int, default=375, help="image height")
    p.add_argument("--width", type=int, default=1242, help="image width")
    p.add_argument("--moving_objects", action="store_true", help="add independently moving cars "
                   "and write their masks (mvobj_mask)")
    p.add_argument("--jpg", action="store_true", help="also write .jpg images (quality 92)")
    p.add_argument("--odometry", action="store_true", help="also write a KITTI odometry tree")
    p.add_argument("--split_name", default="synthetic", help="split folder under <out>/splits/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic world")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    p.add_argument("--formats", default="kitti", help="comma-separated: also write the world as cityscapes, "
                   "nyuv2 and/or make3d test (and small training) data under <out>/<format>/, at their real "
                   "image sizes (about 30 CPU-seconds for all three); KITTI is always written")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config(**vars(args))
    try:
        summary = generate(cfg)
    except (ValueError, FileExistsError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['drives']} drives x {summary['frames']} frames to {cfg.out} "
          f"in {summary['seconds']} s; splits in {os.path.join(cfg.out, summary['split_dir'])}")
    for name in summary["formats"][1:]:
        print(f"  {name}: {os.path.join(cfg.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
