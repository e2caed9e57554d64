"""Writers of one drive in KITTI raw's formats: images, scans, improved ground truth,
oxts packets and timestamps (per frame, in worker processes)."""
import datetime
import os

import cv2
import numpy as np
import torch

from datasets import kitti_utils

from .calibration import T_cam0_velo, T_velo_imu, cam_offset, intrinsics
from .constants import CAM2_X, CAM3_X, DATE, GT_SCANS, drive_name
from .raycast import cast_camera, cast_lidar, shade

def _write_image(path, rgb, jpg):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if not cv2.imwrite(path, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")
    if jpg:
        cv2.imwrite(path[:-4] + ".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])


def _to_uint8(image):
    return np.round(image * 255).astype(np.uint8)


_WORKER = {}


def _init_worker(cfg, drives):
    torch.set_num_threads(1)
    _WORKER["cfg"], _WORKER["drives"] = cfg, drives


def _render_frame(job):
    """Worker: render both cameras and the scan of one frame and write them."""
    cfg, drive, frame = _WORKER["cfg"], _WORKER["drives"][job[0]], job[1]
    drive_dir = os.path.join(cfg.out, DATE, drive_name(drive.index))
    K = intrinsics(cfg.width, cfg.height)
    boxes = drive.boxes_at(frame)
    T_w_cam0 = drive.cam0_pose(frame)
    name = f"{frame:010d}"
    for cam, x in ((2, CAM2_X), (3, CAM3_X)):
        T = T_w_cam0 @ cam_offset(x)
        depth, obj, face, dirs, ray_len = cast_camera(drive, boxes, T, K, cfg.width, cfg.height)
        rgb = shade(drive, boxes, depth, obj, face, dirs, ray_len, T[:3, 3], K[0, 0])
        _write_image(os.path.join(drive_dir, f"image_0{cam}", "data", name + ".png"), _to_uint8(rgb),
                     cfg.jpg)
        if cam == 2:
            np.save(os.path.join(drive_dir, "depth_dense", "image_02", "data", name + ".npy"),
                    depth.astype(np.float32))
            if cfg.moving_objects:
                mask = (obj >= 0) & boxes.moving[np.maximum(obj, 0)] if len(boxes) else obj < -9
                cv2.imwrite(os.path.join(drive_dir, "mvobj_mask", "image_02", "data", name + ".png"),
                            mask.astype(np.uint8) * 255)
    scan = cast_lidar(boxes, T_w_cam0 @ T_cam0_velo())
    scan.tofile(os.path.join(drive_dir, "velodyne_points", "data", name + ".bin"))
    return frame


def _improved_gt(job):
    """Worker: accumulate the scans around a frame into its improved ground truth."""
    cfg, drive, frame = _WORKER["cfg"], _WORKER["drives"][job[0]], job[1]
    drive_dir = os.path.join(cfg.out, DATE, drive_name(drive.index))
    K = intrinsics(cfg.width, cfg.height)
    depth = np.load(os.path.join(drive_dir, "depth_dense", "image_02", "data", f"{frame:010d}.npy"))
    T_cam2_world = np.linalg.inv(drive.cam0_pose(frame) @ cam_offset(CAM2_X))
    inv_depth = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
    gt = np.zeros_like(depth)
    for j in range(max(0, frame - GT_SCANS), min(cfg.frames, frame + GT_SCANS + 1)):
        pts = np.fromfile(os.path.join(drive_dir, "velodyne_points", "data", f"{j:010d}.bin"),
                          np.float32).reshape(-1, 4).astype(np.float64)
        pts[:, 3] = 1
        cam = pts @ (T_cam2_world @ drive.cam0_pose(j) @ T_cam0_velo()).T
        z = cam[:, 2]
        front = z > 0.5
        cam, z = cam[front], z[front]
        u = K[0, 0] * cam[:, 0] / z + K[0, 2]
        v = K[1, 1] * cam[:, 1] / z + K[1, 2]
        inside = (u >= 0) & (v >= 0) & (u <= cfg.width - 1) & (v <= cfg.height - 1)
        u, v, z = u[inside], v[inside], z[inside]
        # agree with the rendered depth (bilinear in inverse depth, exact on planes)
        u0 = np.minimum(np.floor(u).astype(int), cfg.width - 2)
        v0 = np.minimum(np.floor(v).astype(int), cfg.height - 2)
        a, b = u - u0, v - v0
        quad = np.stack([inv_depth[v0, u0], inv_depth[v0, u0 + 1], inv_depth[v0 + 1, u0],
                         inv_depth[v0 + 1, u0 + 1]], 1)
        interp = ((1 - a) * (1 - b) * quad[:, 0] + a * (1 - b) * quad[:, 1]
                  + (1 - a) * b * quad[:, 2] + a * b * quad[:, 3])
        ok = (quad.min(1) > 0) & (np.abs(interp * z - 1) < 0.01)
        ui, vi = np.round(u[ok]).astype(int), np.round(v[ok]).astype(int)
        gt[vi, ui] = depth[vi, ui]
    png = np.clip(np.round(gt * 256), 0, 65535).astype(np.uint16)
    path = os.path.join(drive_dir, "proj_depth", "groundtruth", "image_02", f"{frame:010d}.png")
    cv2.imwrite(path, png)
    return frame


def _oxts_packet(drive, frame, n_frames):
    """30 oxts fields for the IMU pose at a frame (finite differences for the rates)."""
    def imu_pose(f):
        f = int(np.clip(f, 0, n_frames - 1))
        return drive.cam0_pose(f) @ T_cam0_velo() @ T_velo_imu()  # IMU-to-world
    # world (x right, y down, z fwd) -> ENU (east, north, up) for a start heading h0
    h0 = drive.world_to_enu_heading
    world_to_enu = np.array([[np.sin(h0), 0, np.cos(h0)], [-np.cos(h0), 0, np.sin(h0)], [0, -1, 0]])
    T = imu_pose(frame)  # maps IMU axes (x fwd, y left, z up) into the world frame
    R_enu = world_to_enu @ T[:3, :3]
    pos = world_to_enu @ T[:3, 3]
    yaw = np.arctan2(R_enu[1, 0], R_enu[0, 0])
    pitch = np.arcsin(-np.clip(R_enu[2, 0], -1, 1))
    roll = np.arctan2(R_enu[2, 1], R_enu[2, 2])
    lat0, lon0 = 49.0 + 0.01 * drive.index, 8.4
    scale = np.cos(np.deg2rad(lat0))
    mx0 = scale * lon0 * np.pi * kitti_utils.EARTH_RADIUS / 180
    my0 = scale * kitti_utils.EARTH_RADIUS * np.log(np.tan((90 + lat0) * np.pi / 360))
    lat, lon = kitti_utils.latlon_from_mercator(mx0 + pos[0], my0 + pos[1], scale)
    vel = (world_to_enu @ (imu_pose(frame + 1)[:3, 3] - imu_pose(frame - 1)[:3, 3])) / (
        0.1 * (min(frame + 1, n_frames - 1) - max(frame - 1, 0)) or 1)
    body_vel = R_enu.T @ vel
    yaw_rate = 0.0
    if n_frames > 1:
        a, b = imu_pose(frame - 1), imu_pose(frame + 1)
        dR = a[:3, :3].T @ b[:3, :3]
        yaw_rate = -np.arctan2(dR[0, 2], dR[0, 0]) / (0.1 * (min(frame + 1, n_frames - 1)
                                                           - max(frame - 1, 0)) or 1)
    values = [lat, lon, 110.0 + pos[2], roll, pitch, yaw, vel[1], vel[0], body_vel[0], body_vel[1],
              vel[2], 0, 0, 9.81, 0, 0, 9.81, 0, 0, yaw_rate, 0, 0, yaw_rate, 0.05, 0.02, 4, 10, 5, 5, 6]
    return values


def _write_timestamps(path, n_frames, start):
    with open(path, "w") as f:
        for i in range(n_frames):
            t = start + datetime.timedelta(microseconds=100000 * i)
            f.write(t.strftime("%Y-%m-%d %H:%M:%S.%f") + "000\n")
