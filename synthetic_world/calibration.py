"""The rig's intrinsics and extrinsics, written as KITTI calibration files."""
import os

import numpy as np

from datasets import kitti_utils

from .constants import CAMERA_X, FX_NORM, FY_NORM, IMU_IN_VELO, R_VELO_TO_CAM, VELO_IN_CAM0

def intrinsics(width, height):
    """3x3 K of both rectified colour cameras (KITTI's average normalised camera)."""
    return np.array([[FX_NORM * width, 0, 0.5 * width], [0, FY_NORM * height, 0.5 * height],
                     [0, 0, 1.0]])


def T_cam0_velo():
    T = np.eye(4)
    T[:3, :3] = R_VELO_TO_CAM
    T[:3, 3] = VELO_IN_CAM0
    return T


def T_velo_imu():
    T = np.eye(4)
    T[:3, 3] = IMU_IN_VELO
    return T


def cam_offset(x):
    """Pose of a rectified colour camera in cam0 coordinates (x metres to the right)."""
    T = np.eye(4)
    T[0, 3] = x
    return T


def write_calibration(date_dir, width, height):
    K = intrinsics(width, height)
    entries = {"calib_time": "01-Jan-2000 00:00:00", "corner_dist": [0.0995]}
    for cam, x in enumerate(CAMERA_X):
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[0, 3] = -K[0, 0] * x  # a camera x metres right of cam0 sees points shifted by -x
        entries[f"S_0{cam}"] = [width, height]
        entries[f"K_0{cam}"] = K
        entries[f"D_0{cam}"] = np.zeros(5)
        entries[f"R_0{cam}"] = np.eye(3)
        entries[f"T_0{cam}"] = [x, 0.0, 0.0]
        entries[f"S_rect_0{cam}"] = [width, height]
        entries[f"R_rect_0{cam}"] = np.eye(3)
        entries[f"P_rect_0{cam}"] = P
    kitti_utils.write_calib_file(os.path.join(date_dir, "calib_cam_to_cam.txt"), entries)
    kitti_utils.write_calib_file(os.path.join(date_dir, "calib_velo_to_cam.txt"), {
        "calib_time": "01-Jan-2000 00:00:00", "R": R_VELO_TO_CAM, "T": VELO_IN_CAM0,
        "delta_f": [0.0, 0.0], "delta_c": [0.0, 0.0]})
    kitti_utils.write_calib_file(os.path.join(date_dir, "calib_imu_to_velo.txt"), {
        "calib_time": "01-Jan-2000 00:00:00", "R": np.eye(3), "T": IMU_IN_VELO})
