"""How much a multi-frame cost volume can see: the parallax of static pixels between a frame
and its matching frame (-1), in pixels of the cost volume (1/4 of the network's size, as in
ManyDepth and MISM), from true depth and true camera motion.

    python benchmarks/parallax.py --world synthetic_bench                # the comparison's test drive
    python benchmarks/parallax.py --kitti_sample KITTI_SAMPLE            # real KITTI depth and motion
    python benchmarks/parallax.py --world synthetic_bench --sizes 320x96 640x192 1024x320

For each laser pixel with depth in (0.1, 80) m that is not on a moving object:
- parallax: how far the pixel's match moves between its true depth and infinity (the whole
  range a cost volume searches), in cost-volume pixels;
- resolvable to 25 %: whether a depth 25 % larger (the a1 threshold) moves the match by at
  least one cost-volume pixel; below that, the cost volume's best depth can be wrong by more
  than 25 % without a whole-pixel change in what it matches.

The synthetic world: its test drive's velodyne depth, its oxts poses and its moving-object
masks. A KITTI sample (velodyne scans of one raw drive plus an odometry poses file): each
scan's depth with every 25th frame-to-frame motion of the poses file (the drives differ, so
the pairs are depth and motion of KITTI, not of one moment); no moving-object masks there.
Laser pixels are used on both sides so that the two cover the same part of the image.
"""
import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets import kitti_utils  # noqa: E402

MIN_DEPTH, MAX_DEPTH = 0.1, 80.0
STRIDE = 4  # the cost volume's resolution: 1/4 of the network's input
DEPTH_STEP = 1.25  # the a1 threshold
VERSION = 2  # of what measure() computes (caches keyed by it are measured again)


def project(points, K):
    """N x 3 camera points -> N x 2 pixels."""
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def parallax(depth, K, T, scale):
    """depth: H x W (0 = none); K: 3 x 3 native intrinsics; T: 4 x 4 target -> source camera;
    scale: (sx, sy) native pixels -> cost-volume pixels. -> (parallax, step): per valid pixel
    the match's shift between depth z and infinity, and between z and DEPTH_STEP * z, in
    cost-volume pixels."""
    v, u = np.nonzero(depth)
    z = depth[v, u].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], 1).astype(np.float64) @ np.linalg.inv(K).T
    R, t = T[:3, :3], T[:3, 3]
    s = np.asarray(scale, np.float64)

    def match(d):
        return project(rays * d[:, None] @ R.T + t, K)

    at_infinity = project(rays @ R.T, K)
    here = match(z)
    return (np.linalg.norm((here - at_infinity) * s, axis=1),
            np.linalg.norm((here - match(z * DEPTH_STEP)) * s, axis=1))


def summary(shift, step):
    return {"pixels": int(len(shift)), "median_px": float(np.median(shift)),
            "share_ge_1px": float(np.mean(shift >= 1)), "share_resolvable_25pct": float(np.mean(step >= 1))}


def laser_depth(calib_dir, velo_path):
    depth = kitti_utils.generate_depth_map(calib_dir, velo_path, 2, convention="exact")  # camera z at its pixel
    return np.where((depth > MIN_DEPTH) & (depth < MAX_DEPTH), depth, 0)


def rect_K(calib_dir):
    P = kitti_utils.read_calib_file(os.path.join(calib_dir, "calib_cam_to_cam.txt"))["P_rect_02"].reshape(3, 4)
    return P[:, :3]


def world_pairs(world, split="synthetic"):
    """(depth, K, T) for each test line of the world's split whose frame -1 exists."""
    import cv2
    lines = open(os.path.join(world, "splits", split, "test_files.txt")).read().split("\n")
    for line in filter(None, lines):
        folder, frame, side = line.split()
        frame = int(frame)
        drive = os.path.join(world, folder)
        calib_dir = os.path.dirname(drive)
        velo = os.path.join(drive, "velodyne_points", "data", f"{frame:010d}.bin")
        if not os.path.isfile(os.path.join(drive, "oxts", "data", f"{frame - 1:010d}.txt")):
            continue
        depth = laser_depth(calib_dir, velo)
        mask = os.path.join(drive, "mvobj_mask", "image_02", "data", f"{frame:010d}.png")
        if os.path.isfile(mask):
            moving = cv2.imread(mask, cv2.IMREAD_GRAYSCALE) > 127
            depth = np.where(moving, 0, depth)
        target, source = kitti_utils.camera_poses_from_oxts(drive, calib_dir, [frame, frame - 1])
        yield depth, rect_K(calib_dir), np.linalg.inv(source) @ target


def kitti_pairs(sample, every=25):
    """(depth, K, T): each velodyne scan of the sample with every `every`-th motion of its poses file."""
    poses = kitti_utils.read_poses_file(sorted(glob.glob(os.path.join(sample, "odometry_poses", "*[0-9].txt")))[0])
    motions = [np.linalg.inv(poses[i - 1]) @ poses[i] for i in range(1, len(poses), every)]
    for calib_dir in sorted(glob.glob(os.path.join(sample, "raw", "*"))):
        for velo in sorted(glob.glob(os.path.join(calib_dir, "*_sync", "velodyne_points", "data", "*.bin"))):
            depth, K = laser_depth(calib_dir, velo), rect_K(calib_dir)
            for T in motions:
                yield depth, K, T


def measure(pairs, sizes):
    shifts = {size: ([], []) for size in sizes}
    count = 0
    for depth, K, T in pairs:
        count += 1
        for size in sizes:
            w, h = size  # the network's input is the whole frame resized to w x h
            a, b = parallax(depth, K, T, (w / STRIDE / depth.shape[1], h / STRIDE / depth.shape[0]))
            shifts[size][0].append(a)
            shifts[size][1].append(b)
    if not count:
        raise SystemExit("no frame pairs found (a world needs oxts and velodyne files; a KITTI sample "
                         "needs raw/<date>/*_sync/velodyne_points and odometry_poses/NN.txt)")
    out = {}
    for size, (a, b) in shifts.items():
        out[f"{size[0]}x{size[1]}"] = dict(summary(np.concatenate(a), np.concatenate(b)), pairs=count)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", help="a synthetic world (its splits/<split>/test_files.txt drive)")
    p.add_argument("--split", default="synthetic")
    p.add_argument("--kitti_sample", help="a folder with raw/<date>/*_sync/velodyne_points and odometry_poses/NN.txt")
    p.add_argument("--sizes", nargs="+", default=["320x96", "640x192"], help="network input sizes WxH")
    args = p.parse_args(argv)
    if not (args.world or args.kitti_sample):
        p.error("give --world and/or --kitti_sample")
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes]
    rows = []
    if args.world:
        rows.append(("synthetic world (test drive, static pixels)", measure(world_pairs(args.world, args.split), sizes)))
    if args.kitti_sample:
        rows.append(("KITTI (sample scans x odometry motions)", measure(kitti_pairs(args.kitti_sample), sizes)))
    print("| data | network size | cost volume | pairs | laser pixels | median parallax (cost-volume px) "
          "| share >= 1 px | share resolvable to 25 % |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in rows:
        for size, r in result.items():
            w, h = (int(x) for x in size.split("x"))
            print(f"| {name} | {size} | {w // STRIDE}x{h // STRIDE} | {r['pairs']} | {r['pixels']} | "
                  f"{r['median_px']:.2f} | {100 * r['share_ge_1px']:.1f} % | {100 * r['share_resolvable_25pct']:.1f} % |")
    return rows


if __name__ == "__main__":
    main()
