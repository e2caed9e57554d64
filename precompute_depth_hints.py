"""Precompute Depth Hints (Watson et al., ICCV 2019): fused SGM stereo depth per image.

    python precompute_depth_hints.py --data_path kitti_data [--filenames splits/eigen_full/all_files.txt]
        [--save_path kitti_data/depth_hints] [--height 320 --width 1024] [--overwrite] [--png]

For every `folder frame side` line: OpenCV StereoSGBM runs with 12 settings (3 block sizes
x 4 disparity ranges) on the image and its stereo partner, resized to width x height;
each disparity map becomes a depth candidate (training units: 0.1 = the stereo
baseline). Per pixel the candidate whose depth warps the other view onto the image with
the lowest photometric error (0.85 SSIM + 0.15 L1) is kept. Candidates without a
disparity are never chosen (the reference let their zero depth win). Output: float32
1 x H x W .npy at <save_path>/<folder>/image_0{2,3}/<frame:010d>.npy, 0 = no hint.
Finished files are skipped unless --overwrite; a missing partner image is reported and
skipped.
"""
import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets.mono_dataset import OTHER_SIDE, STEREO_BASELINE, MonoDataset
from layers import BackprojectDepth, Project3D, warp
from losses import ReprojectionLoss
from methods.depth_hints import hint_file

KITTI_FX_NORM = 0.58  # normalised focal length of KITTI's average camera
BLOCK_SIZES = (1, 3, 5)  # odd, as OpenCV requires (the reference also used an even 2)
NUM_DISPARITIES = (64, 96, 128, 160)
SIDE_MAP = MonoDataset.side_map


def sgbm_matchers():
    """The 12 matchers. P1/P2 follow OpenCV's recommendation for 3 channels, scaled with
    the block size (8 and 32 x 3 x blockSize^2; the reference kept 3 x 3 for all sizes)."""
    matchers = []
    for block in BLOCK_SIZES:
        for num_disp in NUM_DISPARITIES:
            matchers.append(cv2.StereoSGBM_create(
                minDisparity=0, numDisparities=num_disp, blockSize=block, P1=8 * 3 * block ** 2,
                P2=32 * 3 * block ** 2, disp12MaxDiff=-1, preFilterCap=63, uniquenessRatio=10,
                speckleWindowSize=100, speckleRange=16, mode=cv2.STEREO_SGBM_MODE_SGBM))
    return matchers


def disparity_to_depth(disp, width):
    """Disparity in pixels at `width` -> depth in training units; 0 where disp <= 0."""
    with np.errstate(divide="ignore"):
        depth = KITTI_FX_NORM * width * STEREO_BASELINE / disp
    return np.where(disp > 0, depth, 0).astype(np.float32)


def sgbm_candidates(base, other, base_is_left):
    """H x W x 3 uint8 images -> 12 x H x W depth candidates for `base`."""
    if not base_is_left:  # match as if the right image were a left one: mirror both
        base, other = base[:, ::-1].copy(), other[:, ::-1].copy()
    width = base.shape[1]
    candidates = []
    for matcher in sgbm_matchers():
        disp = matcher.compute(base, other).astype(np.float32) / 16  # fixed point, 4 bits
        if not base_is_left:
            disp = disp[:, ::-1]
        candidates.append(disparity_to_depth(disp, width))
    return np.stack(candidates)


def fuse_candidates(candidates, base, other, base_is_left):
    """Per pixel, the candidate whose depth best reconstructs `base` from `other`.
    candidates: N x H x W; base, other: H x W x 3 uint8. Returns H x W float32."""
    n, h, w = candidates.shape
    K = np.array([[KITTI_FX_NORM * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                 np.float32)
    K_t = torch.from_numpy(K)[None].repeat(n, 1, 1)
    inv_K = torch.from_numpy(np.linalg.pinv(K))[None].repeat(n, 1, 1)
    T = torch.eye(4)[None].repeat(n, 1, 1)
    T[:, 0, 3] = -STEREO_BASELINE if base_is_left else STEREO_BASELINE
    depth = torch.from_numpy(candidates)[:, None]
    valid = depth > 0
    base_t = torch.from_numpy(np.array(base)).permute(2, 0, 1).float()[None] / 255
    other_t = torch.from_numpy(np.array(other)).permute(2, 0, 1).float()[None].repeat(n, 1, 1, 1) / 255
    with torch.no_grad():
        grid = Project3D(n, h, w)(BackprojectDepth(n, h, w)(torch.where(valid, depth, torch.ones_like(depth)),
                                                             inv_K), K_t, T)
        errors = ReprojectionLoss()(warp(other_t, grid), base_t.expand(n, -1, -1, -1))
    errors = torch.where(valid, errors, torch.full_like(errors, float("inf")))
    best = errors.argmin(0, keepdim=True)
    fused = torch.gather(depth, 0, best)[0, 0]
    fused[~torch.isfinite(torch.gather(errors, 0, best)[0, 0])] = 0
    return fused.numpy()


hint_path = hint_file  # <save_path>/<folder>/image_0{2,3}/<frame:010d>.npy


def image_path(data_path, folder, frame, side, ext):
    return os.path.join(data_path, folder, f"image_0{SIDE_MAP[side]}", "data", f"{int(frame):010d}{ext}")


def load_resized(path, width, height):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((width, height), Image.LANCZOS))


def process_line(job):
    """Worker: one split line -> ('done' | 'skipped' | 'missing: ...', path)."""
    line, args = job
    parts = line.split()
    folder, frame = parts[0], int(parts[1])
    side = parts[2] if len(parts) > 2 else "l"
    out = hint_path(args.save_path, folder, frame, side)
    if os.path.isfile(out) and not args.overwrite:
        return "skipped", out
    ext = args.ext
    base_path = image_path(args.data_path, folder, frame, side, ext)
    other_path = image_path(args.data_path, folder, frame, OTHER_SIDE[side], ext)
    for p in (base_path, other_path):
        if not os.path.isfile(p):
            return f"missing {p}", out
    base = load_resized(base_path, args.width, args.height)
    other = load_resized(other_path, args.width, args.height)
    left = side in ("l", "2")
    fused = fuse_candidates(sgbm_candidates(base, other, left), base, other, left)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp.npy"
    np.save(tmp, fused[None].astype(np.float32))
    os.replace(tmp, out)
    return "done", out


def main(argv=None):
    p = argparse.ArgumentParser(description="precompute fused SGM depth hints", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", required=True, help="KITTI raw root (both stereo images of each line)")
    p.add_argument("--filenames", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "splits", "eigen_full", "all_files.txt"),
                   help="split file whose lines get a hint")
    p.add_argument("--save_path", help="default: <data_path>/depth_hints")
    p.add_argument("--height", type=int, default=320, help="SGM image height")
    p.add_argument("--width", type=int, default=1024, help="SGM image width")
    p.add_argument("--overwrite", action="store_true", help="recompute hints that exist")
    p.add_argument("--png", action="store_true",
                   help="read .png images (default: .jpg, or .png when the first image exists only as .png)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="processes")
    args = p.parse_args(argv)
    args.save_path = args.save_path or os.path.join(args.data_path, "depth_hints")
    if not os.path.isfile(args.filenames):
        raise SystemExit(f"--filenames {args.filenames}: no such file")
    with open(args.filenames) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    args.ext = image_extension(args, lines)
    counts = {"done": 0, "skipped": 0, "missing": 0}
    jobs = [(ln, args) for ln in lines]
    # one thread per worker process; a run in this process keeps its thread count
    executor = ProcessPoolExecutor(args.num_workers, initializer=torch.set_num_threads, initargs=(1,)) \
        if args.num_workers > 1 else None
    results = executor.map(process_line, jobs, chunksize=4) if executor else map(process_line, jobs)
    for status, path in tqdm(results, total=len(jobs), desc="depth hints", unit="image"):
        if status.startswith("missing"):
            counts["missing"] += 1
            tqdm.write(f"-> {status[len('missing '):]} not found: no hint for {path}")
        else:
            counts[status] += 1
    if executor:
        executor.shutdown()
    print(f"-> {counts['done']} hints written, {counts['skipped']} already there, {counts['missing']} "
          f"skipped for missing images; in {args.save_path}")
    if lines and counts["done"] + counts["skipped"] == 0:
        raise SystemExit(f"no hint written: none of the {len(lines)} lines of {args.filenames} has both "
                         f"{args.ext} images under --data_path {args.data_path}; check the path and the "
                         "image format (--png)")
    return counts


def image_extension(args, lines):
    """.png with --png; otherwise .jpg, unless the first line's image exists only as .png."""
    if args.png or not lines:
        return ".png" if args.png else ".jpg"
    parts = lines[0].split()
    side = parts[2] if len(parts) > 2 else "l"
    jpg = image_path(args.data_path, parts[0], parts[1], side, ".jpg")
    png = jpg[:-4] + ".png"
    if not os.path.isfile(jpg) and os.path.isfile(png):
        print(f"-> {jpg} does not exist but {os.path.basename(png)} does: reading .png images")
        return ".png"
    return ".jpg"


if __name__ == "__main__":
    main()
    sys.exit(0)
