"""How well the road plane recovers a monocular model's metric scale (test_simple.py
--metric_from_camera_height), against true depth.

    python benchmarks/metric_scale_error.py --load_weights_folder W --data_path WORLD [--split synthetic]
    python benchmarks/metric_scale_error.py --load_weights_folder W --kitti_sample ../shared/data/kitti_real_sample

Per image: the model's depth at its input size, the road plane fitted in its lower 30 % with
K (metric_scale.scale_from_camera_height, camera 1.65 m above the road), s_est = 1.65 / the
plane's distance; the true scale s_true = median(true depth) / median(predicted depth, resized
bilinearly to the true depth's size) over the pixels with 0.1 < true <= 80 m; the error
|s_est / s_true - 1|. Printed: its median and 90th percentile over the images, the same
among the images whose printed confidence is "ok" and "LOW", the inlier share and spread;
and the error of one scale for all the images of a drive, the median of their road-plane
scales (a video or a folder from one camera).
Two references: the same fit on the true depth itself (the fit's own error, with the true
K), and one constant scale for every image (the median s_true of the validation drive:
what a user with one calibration drive would use).

Synthetic world (--data_path): the split's val_files.txt and test_files.txt, true depth from
depth_dense/ (the exact rendered depth). KITTI sample (--kitti_sample): every image_02 frame
with a velodyne scan, true depth = the scan projected with kitti_utils.generate_depth_map
(camera z, the "exact" convention), K from calib_cam_to_cam.txt (P_rect_02), and also with
KITTI's average K as test_simple.py uses without --intrinsics_json_path.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import PIL.Image as pil
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIN_GT, MAX_GT = 0.1, 80.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load_weights_folder", required=True, help="a monocular model's weight folder")
    p.add_argument("--data_path", help="a synthetic world (depth_dense/ holds the true depth)")
    p.add_argument("--split", default="synthetic", help="split under <data_path>/splits/")
    p.add_argument("--kitti_sample", help="a KITTI raw tree with image_02 frames and velodyne scans")
    p.add_argument("--camera_height", type=float, default=1.65, help="metres above the road")
    p.add_argument("--json", help="write every image's numbers here")
    p.add_argument("--no_cuda", action="store_true")
    args = p.parse_args(argv)
    if not args.data_path and not args.kitti_sample:
        p.error("give --data_path (a synthetic world) and/or --kitti_sample")
    return args


def predict_depth(method, image, device):
    import test_simple
    with torch.no_grad():
        _, depth = test_simple.predict_disparity(method, test_simple.network_input(method, [image], device))
    return depth[0, 0].float().cpu().numpy()


def true_scale(pred, gt):
    """median(gt) / median(pred resized to gt's size) over MIN_GT < gt <= MAX_GT."""
    up = F.interpolate(torch.from_numpy(pred)[None, None], gt.shape, mode="bilinear", align_corners=False)[0, 0]
    valid = (gt > MIN_GT) & (gt <= MAX_GT)
    return float(np.median(gt[valid]) / np.median(up.numpy()[valid]))


def pixel_K(K_norm, width, height):
    K = np.array(K_norm, dtype=np.float64)[:3, :3].copy()
    K[0] *= width
    K[1] *= height
    return K


def measure(method, items, K_norm, camera_height, device, oracle_K_norm=None):
    """items: [(name, image path, true depth H x W)] -> one dict per image."""
    from metric_scale import scale_from_camera_height
    rows = []
    h, w = method.opt.height, method.opt.width
    for name, path, gt in items:
        with pil.open(path) as opened:
            image = opened.convert("RGB")
        pred = predict_depth(method, image, device)
        fit = scale_from_camera_height(pred, pixel_K(K_norm, w, h), camera_height)
        s_true = true_scale(pred, gt)
        truth = scale_from_camera_height(np.where(gt <= MAX_GT, gt, 0),
                                         pixel_K(oracle_K_norm if oracle_K_norm is not None else K_norm,
                                                 gt.shape[1], gt.shape[0]), camera_height)
        rows.append({"image": name, "s_true": s_true, "s_est": fit.scale,
                     "error": None if fit.scale is None else abs(fit.scale / s_true - 1),
                     "confident": fit.confident,
                     "inlier_share": None if fit.plane is None else fit.plane.inlier_share,
                     "spread": None if fit.scale is None else fit.spread,
                     "tilt_deg": None if fit.plane is None else fit.plane.tilt_deg,
                     "true_depth_fit_error": None if truth.scale is None else abs(truth.scale - 1),
                     "true_depth_plane_m": None if truth.plane is None else truth.plane.distance})
    return rows


def summarise(label, rows, constant=None):
    def stats(values):
        values = np.array([v for v in values if v is not None], dtype=np.float64)
        if not len(values):
            return "-", "-", 0
        return f"{100 * np.median(values):.1f}%", f"{100 * np.percentile(values, 90):.1f}%", len(values)
    lines = []
    found = [r for r in rows if r["s_est"] is not None]
    for what, subset in (("road plane, all", rows), ("road plane, confidence ok", [r for r in rows if r["confident"]]),
                         ("road plane, confidence LOW", [r for r in found if not r["confident"]])):
        med, p90, n = stats(r["error"] for r in subset)
        lines.append((label, what, n, med, p90))
    if found:  # one scale for the whole drive: the median of its images' road-plane scales
        drive_scale = float(np.median([r["s_est"] for r in found]))
        med, p90, n = stats(abs(drive_scale / r["s_true"] - 1) for r in rows)
        lines.append((label, "road plane, median over the images", n, med, p90))
    med, p90, n = stats(r["true_depth_fit_error"] for r in rows)
    lines.append((label, "fit on the true depth", n, med, p90))
    if constant is not None:
        med, p90, n = stats(abs(constant / r["s_true"] - 1) for r in rows)
        lines.append((label, f"one constant scale ({constant:.4g})", n, med, p90))
    share = [r["inlier_share"] for r in found]
    spread = [r["spread"] for r in found]
    extra = (f"{label}: {len(found)}/{len(rows)} images with a plane; inlier share median "
             f"{100 * np.median(share):.0f}%, spread median {100 * np.median(spread):.1f}%, "
             f"90th pct {100 * np.percentile(spread, 90):.1f}%" if found else f"{label}: no plane found")
    return lines, extra


def synthetic_items(data_path, split, which):
    from options import resolve_split_dir
    split_dir = resolve_split_dir(split, data_path)
    with open(os.path.join(split_dir, f"{which}_files.txt")) as f:
        lines = [line.split() for line in f if line.strip()]
    items = []
    for folder, index, _ in lines:
        frame = f"{int(index):010d}"
        image = os.path.join(data_path, folder, "image_02", "data", f"{frame}.png")
        gt = np.load(os.path.join(data_path, folder, "depth_dense", "image_02", "data", f"{frame}.npy"))
        items.append((f"{os.path.basename(folder)}/{frame}", image, gt.astype(np.float64)))
    return items


def kitti_items(root):
    from datasets.kitti_utils import generate_depth_map, read_calib_file
    items, calib_K = [], None
    for velo in sorted(glob.glob(os.path.join(root, "raw", "*", "*_sync", "velodyne_points", "data", "*.bin"))):
        drive = os.path.dirname(os.path.dirname(os.path.dirname(velo)))
        calib_dir = os.path.dirname(drive)
        frame = os.path.splitext(os.path.basename(velo))[0]
        image = os.path.join(drive, "image_02", "data", f"{frame}.png")
        if not os.path.isfile(image):
            continue
        gt = generate_depth_map(calib_dir, velo, cam=2, convention="exact")
        cam = read_calib_file(os.path.join(calib_dir, "calib_cam_to_cam.txt"))
        P = cam["P_rect_02"].reshape(3, 4)
        width, height = cam["S_rect_02"]
        calib_K = np.array([[P[0, 0] / width, 0, P[0, 2] / width], [0, P[1, 1] / height, P[1, 2] / height],
                            [0, 0, 1]])
        items.append((f"{os.path.basename(drive)}/{frame}", image, gt))
    if not items:
        raise SystemExit(f"--kitti_sample {root}: no raw/*/*_sync/velodyne_points/data/*.bin with an image_02 frame")
    return items, calib_K


def print_table(lines):
    print(f"{'data':<32} {'estimator':<34} {'images':>6} {'median err':>10} {'p90 err':>8}")
    for label, what, n, med, p90 in lines:
        print(f"{label:<32} {what:<34} {n:>6} {med:>10} {p90:>8}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    from datasets.kitti_dataset import KITTI_K
    from methods import load_for_inference
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    method = load_for_inference(args.load_weights_folder, device)
    if tuple(method.inference_frames) != (0,):
        raise SystemExit("benchmarks/metric_scale_error.py measures single-frame models")
    print(f"-> {type(method).__name__} {method.opt.width}x{method.opt.height} from {args.load_weights_folder}; "
          f"camera {args.camera_height} m above the road")
    table, notes, record = [], [], {}
    if args.data_path:
        val = measure(method, synthetic_items(args.data_path, args.split, "val"), KITTI_K, args.camera_height, device)
        test = measure(method, synthetic_items(args.data_path, args.split, "test"), KITTI_K, args.camera_height,
                       device)
        constant = float(np.median([r["s_true"] for r in val]))
        for label, rows in (("synthetic validation drive", val), ("synthetic test drive", test)):
            lines, extra = summarise(label, rows, constant)
            table += lines
            notes.append(extra)
        record.update(synthetic_val=val, synthetic_test=test, constant_scale=constant)
    if args.kitti_sample:
        items, calib_K = kitti_items(args.kitti_sample)
        for label, K in (("KITTI sample, calibration K", calib_K), ("KITTI sample, KITTI's average K", KITTI_K)):
            rows = measure(method, items, K, args.camera_height, device, oracle_K_norm=calib_K)
            lines, extra = summarise(label, rows)
            table += lines
            notes.append(extra)
            record[label] = rows
        print("\nKITTI sample, calibration K, per image:")
        print(f"{'image':<36} {'s_true':>8} {'s_est':>8} {'error':>7} {'inliers':>7} {'spread':>7} {'lidar road':>10}")
        for r in record["KITTI sample, calibration K"]:
            est = "-" if r["s_est"] is None else f"{r['s_est']:.3f}"
            err = "-" if r["error"] is None else f"{100 * r['error']:.1f}%"
            inl = "-" if r["inlier_share"] is None else f"{100 * r['inlier_share']:.0f}%"
            spr = "-" if r["spread"] is None else f"{100 * r['spread']:.1f}%"
            road = "-" if r["true_depth_plane_m"] is None else f"{r['true_depth_plane_m']:.3f} m"
            print(f"{r['image']:<36} {r['s_true']:>8.3f} {est:>8} {err:>7} {inl:>7} {spr:>7} {road:>10}")
    print()
    print_table(table)
    for line in notes:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"-> {args.json}")
    return record


if __name__ == "__main__":
    main()
