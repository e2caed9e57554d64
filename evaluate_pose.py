"""Pose evaluation on KITTI odometry (SfMLearner's 5-frame ATE with per-snippet scale).

    python evaluate_pose.py --eval_split odom_9 --load_weights_folder W --data_path kitti_odom
"""
import argparse
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets import KITTIOdomDataset
from datasets.kitti_utils import read_poses_file
from layers import transformation_from_parameters
from options import read_split_file, resolve_split_dir

SNIPPET = 5  # positions per snippet (4 relative poses)


def dump_xyz(source_to_target_transformations):
    """Chain relative poses into camera positions, starting at the origin."""
    xyzs = []
    cam_to_world = np.eye(4)
    xyzs.append(cam_to_world[:3, 3])
    for T in source_to_target_transformations:
        cam_to_world = cam_to_world @ T
        xyzs.append(cam_to_world[:3, 3])
    return xyzs


def compute_ate(gtruth_xyz, pred_xyz):
    """ATE of a snippet after aligning the first positions and a least-squares scale."""
    offset = gtruth_xyz[0] - pred_xyz[0]
    pred_xyz = pred_xyz + offset[None, :]
    scale = np.sum(gtruth_xyz * pred_xyz) / np.sum(pred_xyz ** 2)
    alignment_error = pred_xyz * scale - gtruth_xyz
    return np.sqrt(np.sum(alignment_error ** 2)) / gtruth_xyz.shape[0]


def snippet_ates(pred_poses, gt_local_poses):
    ates = []
    for i in range(len(pred_poses) - 1):
        local_xyzs = np.array(dump_xyz(pred_poses[i:i + SNIPPET - 1]))
        gt_local_xyzs = np.array(dump_xyz(gt_local_poses[i:i + SNIPPET - 1]))
        ates.append(compute_ate(gt_local_xyzs, local_xyzs))
    return np.array(ates)


def gt_local_poses(global_poses):
    """Relative poses of consecutive frames: inv(inv(G_{i-1}) G_i)."""
    return [np.linalg.inv(np.linalg.inv(global_poses[i - 1]) @ global_poses[i])
            for i in range(1, len(global_poses))]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="5-frame ATE of a pose network on a KITTI odometry sequence",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--load_weights_folder", required=True, help="a weights_N folder with the pose networks")
    p.add_argument("--eval_split", default="odom_9",
                   help="odom_9, odom_10, or a split folder with test_files_NN.txt")
    p.add_argument("--data_path", default="kitti_odom", help="KITTI odometry root (sequences/, poses/)")
    p.add_argument("--png", action="store_true", help="read .png images (default .jpg)")
    p.add_argument("--batch_size", type=int, default=16, help="pairs per forward pass")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader workers (default: 4, or fewer where there are fewer CPU cores)")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    return p.parse_args(argv)


def evaluate(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    if args.eval_split.startswith("odom_"):
        sequence = int(args.eval_split.split("_")[1])
        filenames = read_split_file(os.path.join(resolve_split_dir("odom"), f"test_files_{sequence:02d}.txt"))
    else:
        split_dir = resolve_split_dir(args.eval_split, args.data_path)
        tests = sorted(f for f in os.listdir(split_dir) if f.startswith("test_files_"))
        if not tests:
            raise SystemExit(f"{split_dir}: no test_files_NN.txt for pose evaluation")
        sequence = int(tests[0][len("test_files_"):-4])
        filenames = read_split_file(os.path.join(split_dir, tests[0]))
    from methods import load_for_inference
    folder = os.path.expanduser(args.load_weights_folder)
    method = load_for_inference(folder, device, networks="all")
    if "pose" not in method.models or not hasattr(method, "pose_between"):
        raise SystemExit(f"--load_weights_folder {folder}: this {type(method).__name__} model has no pose network "
                         "(trained with stereo only?)")
    if getattr(method, "num_pose_frames", 2) != 2:
        raise SystemExit("the 5-frame ATE needs a pose network on frame pairs (--pose_model_input pairs)")
    dataset = KITTIOdomDataset(args.data_path, filenames, method.opt.height, method.opt.width, [0, 1], 1,
                               is_train=False, img_ext=".png" if args.png else ".jpg")
    loader = DataLoader(dataset, args.batch_size, shuffle=False, num_workers=args.num_workers)
    pred_poses = []
    with torch.no_grad():
        for inputs in loader:
            axisangle, translation = method.pose_between(inputs[("color_aug", 0, 0)].to(device),
                                                         inputs[("color_aug", 1, 0)].to(device))
            pred_poses.append(transformation_from_parameters(axisangle[:, 0], translation[:, 0]).cpu().numpy())
    pred_poses = np.concatenate(pred_poses)
    global_poses = read_poses_file(os.path.join(args.data_path, "poses", f"{sequence:02d}.txt"))
    ates = snippet_ates(pred_poses, gt_local_poses(global_poses))
    print(f"\n   Trajectory error: {ates.mean():0.3f}, std: {ates.std():0.3f}\n")
    out = os.path.join(folder, "poses.npy")
    np.save(out, pred_poses)
    print(f"-> Predictions saved to {out}")
    return ates


if __name__ == "__main__":
    evaluate(parse_args())
    sys.exit(0)
