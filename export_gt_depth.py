"""Export the evaluation ground truth of a split to splits/<split>/gt_depths.npz.

    python export_gt_depth.py --data_path kitti_data --split eigen
    python export_gt_depth.py --data_path kitti_data --split eigen_benchmark
    python export_gt_depth.py --data_path synthetic_data --split synthetic_data/splits/synthetic \
        --lidar_convention exact

eigen: velodyne scans projected into image_02 with KITTI's calibration, depth = velodyne x,
pixel = round - 1 (the Eigen protocol every paper reports with). eigen_benchmark: the depth
benchmark's improved ground truth (<drive>/proj_depth/groundtruth/image_02/*.png, /256).
Any other split: velodyne by default, or --gt_source improved.
"""
import argparse
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

from datasets.kitti_utils import LIDAR_CONVENTIONS, generate_depth_map
from options import read_split_file, resolve_split_dir
from utils import atomic_numpy_save


def export_gt_depths(data_path, split, gt_source=None, lidar_convention="monodepth2", progress=True):
    split_dir = resolve_split_dir(split, data_path)
    lines = read_split_file(os.path.join(split_dir, "test_files.txt"))
    if gt_source is None:
        gt_source = "improved" if os.path.basename(os.path.normpath(split_dir)) == "eigen_benchmark" else "velodyne"
    gt_depths = []
    for n, line in enumerate(tqdm(lines, desc=f"export {os.path.basename(split_dir)}", disable=not progress)):
        parts = line.split()
        folder, frame_id = parts[0], int(parts[1])
        side = parts[2] if len(parts) > 2 else "l"
        cam = {"l": 2, "r": 3, "2": 2, "3": 3}[side]
        if gt_source == "velodyne":
            calib_dir = os.path.join(data_path, folder.split("/")[0])
            velo = os.path.join(data_path, folder, "velodyne_points", "data", f"{frame_id:010d}.bin")
            if not os.path.isfile(velo):
                raise SystemExit(f"velodyne scan not found: {velo} (line {n + 1} of "
                                 f"{os.path.join(split_dir, 'test_files.txt')}); is --data_path right?")
            gt = generate_depth_map(calib_dir, velo, cam, convention=lidar_convention)
        else:
            path = os.path.join(data_path, folder, "proj_depth", "groundtruth", f"image_0{cam}",
                                f"{frame_id:010d}.png")
            png = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if png is None:
                raise SystemExit(f"improved ground truth not found: {path} (line {n + 1} of "
                                 f"{os.path.join(split_dir, 'test_files.txt')}); merge the depth "
                                 "benchmark's annotations into the raw tree first")
            gt = png.astype(np.float32) / 256
        gt_depths.append(gt.astype(np.float32))
    out = os.path.join(split_dir, "gt_depths.npz")
    array = np.empty(len(gt_depths), dtype=object)  # ragged: frames may differ in size
    array[:] = gt_depths
    atomic_numpy_save(out, data=array)
    return out, gt_depths


def main(argv=None):
    p = argparse.ArgumentParser(description="export ground-truth depth of a split's test files",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", required=True, help="KITTI raw root")
    p.add_argument("--split", required=True, help="eigen, eigen_benchmark, a split under <data_path>/splits/, or a "
                   "split folder")
    p.add_argument("--gt_source", choices=["velodyne", "improved"],
                   help="default: improved for eigen_benchmark, velodyne otherwise")
    p.add_argument("--lidar_convention", default="monodepth2", choices=LIDAR_CONVENTIONS,
                   help="monodepth2: Eigen protocol (velodyne x, pixel round-1); exact: camera z "
                        "at round(pixel)")
    args = p.parse_args(argv)
    out, gts = export_gt_depths(args.data_path, args.split, args.gt_source, args.lidar_convention)
    valid = [int((g > 0).sum()) for g in gts]
    print(f"wrote {len(gts)} depth maps to {out} ({np.mean(valid):.0f} valid pixels per map on average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
