"""Pose evaluation on KITTI odometry (SfMLearner's 5-frame ATE with per-snippet scale).

    python evaluate_pose.py --eval_split odom_9 --load_weights_folder W --data_path kitti_odom
"""
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

import networks
from datasets import KITTIOdomDataset
from datasets.kitti_utils import read_poses_file
from layers import transformation_from_parameters
from options import MonodepthOptions, read_split_file, resolve_split_dir

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


def evaluate(opt):
    device = torch.device("cuda" if torch.cuda.is_available() and not opt.no_cuda else "cpu")
    if opt.eval_split.startswith("odom_"):
        sequence = int(opt.eval_split.split("_")[1])
        filenames = read_split_file(os.path.join(resolve_split_dir("odom"), f"test_files_{sequence:02d}.txt"))
    else:
        split_dir = resolve_split_dir(opt.eval_split)
        tests = sorted(f for f in os.listdir(split_dir) if f.startswith("test_files_"))
        if not tests:
            raise SystemExit(f"{split_dir}: no test_files_NN.txt for pose evaluation")
        sequence = int(tests[0][len("test_files_"):-4])
        filenames = read_split_file(os.path.join(split_dir, tests[0]))
    folder = os.path.expanduser(opt.load_weights_folder or "")
    for name in ("pose_encoder.pth", "pose.pth"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise SystemExit(f"--load_weights_folder {folder}: missing {name}")
    enc_info = torch.load(os.path.join(folder, "encoder.pth"), map_location="cpu", weights_only=True) \
        if os.path.isfile(os.path.join(folder, "encoder.pth")) else {}
    height, width = int(enc_info.get("height", opt.height)), int(enc_info.get("width", opt.width))
    dataset = KITTIOdomDataset(opt.data_path, filenames, height, width, [0, 1], 4, is_train=False,
                               img_ext=".png" if opt.png else ".jpg")
    loader = DataLoader(dataset, opt.batch_size, shuffle=False, num_workers=min(opt.num_workers, 4))
    pose_encoder = networks.ResnetEncoder(opt.num_layers, False, 2)
    pose_encoder.load_state_dict(torch.load(os.path.join(folder, "pose_encoder.pth"), map_location="cpu",
                                            weights_only=True))
    pose_decoder = networks.PoseDecoder(pose_encoder.num_ch_enc, 1, 2)
    pose_decoder.load_state_dict(torch.load(os.path.join(folder, "pose.pth"), map_location="cpu",
                                            weights_only=True))
    pose_encoder.to(device).eval()
    pose_decoder.to(device).eval()
    pred_poses = []
    with torch.no_grad():
        for inputs in loader:
            pair = torch.cat([inputs[("color_aug", 0, 0)], inputs[("color_aug", 1, 0)]], 1).to(device)
            axisangle, translation = pose_decoder([pose_encoder(pair)])
            pred_poses.append(transformation_from_parameters(axisangle[:, 0], translation[:, 0]).cpu().numpy())
    pred_poses = np.concatenate(pred_poses)
    poses_file = os.path.join(opt.data_path, "poses", f"{sequence:02d}.txt")
    global_poses = read_poses_file(poses_file)
    local = gt_local_poses(global_poses)
    ates = snippet_ates(pred_poses, local)
    print(f"\n   Trajectory error: {ates.mean():0.3f}, std: {ates.std():0.3f}\n")
    out = os.path.join(folder, "poses.npy")
    np.save(out, pred_poses)
    print(f"-> Predictions saved to {out}")
    return ates


if __name__ == "__main__":
    evaluate(MonodepthOptions().parse())
    sys.exit(0)
