"""The KITTI odometry tree of a drive (sequences/NN, calib.txt, times.txt, poses)."""
import os
import shutil

import cv2
import numpy as np

from datasets import kitti_utils

from .calibration import T_cam0_velo, intrinsics
from .constants import CAMERA_X, DATE, drive_name

def _write_odometry(cfg, drive):
    """KITTI odometry layout of a drive: sequences/NN with images, calib, times, poses."""
    root = os.path.join(cfg.out, "odometry")
    seq = f"{drive.index:02d}"
    seq_dir = os.path.join(root, "sequences", seq)
    drive_dir = os.path.join(cfg.out, DATE, drive_name(drive.index))
    for sub in ("image_2", "image_3", "velodyne", "image_depth_annotated"):
        os.makedirs(os.path.join(seq_dir, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "poses"), exist_ok=True)
    os.makedirs(os.path.join(root, "poses_dvso"), exist_ok=True)
    if cfg.moving_objects:
        os.makedirs(os.path.join(seq_dir, "mvobj_mask"), exist_ok=True)
    exts = ["png"] + (["jpg"] if cfg.jpg else [])
    for i in range(cfg.frames):
        for cam in (2, 3):
            for ext in exts:
                shutil.copyfile(os.path.join(drive_dir, f"image_0{cam}", "data", f"{i:010d}.{ext}"),
                                os.path.join(seq_dir, f"image_{cam}", f"{i:06d}.{ext}"))
        shutil.copyfile(os.path.join(drive_dir, "velodyne_points", "data", f"{i:010d}.bin"),
                        os.path.join(seq_dir, "velodyne", f"{i:06d}.bin"))
        shutil.copyfile(os.path.join(drive_dir, "proj_depth", "groundtruth", "image_02", f"{i:010d}.png"),
                        os.path.join(seq_dir, "image_depth_annotated", f"{i:06d}.png"))
        if cfg.moving_objects:
            mask = cv2.imread(os.path.join(drive_dir, "mvobj_mask", "image_02", "data", f"{i:010d}.png"), 0)
            np.save(os.path.join(seq_dir, "mvobj_mask", f"{i:06d}.npy"), (mask > 127).astype(np.float32))
    K = intrinsics(cfg.width, cfg.height)
    entries = {}
    for cam, x in enumerate(CAMERA_X):
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[0, 3] = -K[0, 0] * x
        entries[f"P{cam}"] = P
    entries["Tr"] = T_cam0_velo()[:3]
    kitti_utils.write_calib_file(os.path.join(seq_dir, "calib.txt"), entries)
    np.savetxt(os.path.join(seq_dir, "times.txt"), 0.1 * np.arange(cfg.frames), fmt="%.6e")
    T0_inv = np.linalg.inv(drive.cam0_pose(0))
    rows = np.stack([(T0_inv @ drive.cam0_pose(i))[:3].ravel() for i in range(cfg.frames)])
    for folder in ("poses", "poses_dvso"):
        np.savetxt(os.path.join(root, folder, f"{seq}.txt"), rows, fmt="%.9e")
