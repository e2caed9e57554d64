"""KITTI file formats: calibration text files, velodyne scans, oxts packets, odometry poses.

Everything here reads or writes the formats of the public KITTI devkit so that the real
dataset and the built-in synthetic world go through the same code.
"""
import os
from collections import namedtuple

import numpy as np

EARTH_RADIUS = 6378137.0  # metres, the devkit's Mercator constant

OXTS_FIELDS = ("lat lon alt roll pitch yaw vn ve vf vl vu ax ay az af al au "
               "wx wy wz wf wl wu pos_accuracy vel_accuracy navstat numsats "
               "posmode velmode orimode").split()
OxtsPacket = namedtuple("OxtsPacket", OXTS_FIELDS)


def read_calib_file(path):
    """Read a KITTI calibration file ``key: v1 v2 ...`` into a dict of float arrays.

    Lines whose values are not numbers (e.g. ``calib_time``) are skipped.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file not found: {path}")
    data = {}
    with open(path) as f:
        for line in f:
            if ":" not in line:
                continue
            key, value = line.split(":", 1)
            try:
                data[key.strip()] = np.array([float(x) for x in value.split()])
            except ValueError:
                pass
    return data


def write_calib_file(path, entries):
    """Write ``entries`` (key -> array or str) in KITTI's ``key: values`` text format."""
    with open(path, "w") as f:
        for key, value in entries.items():
            if isinstance(value, str):
                f.write(f"{key}: {value}\n")
            else:
                vals = " ".join(f"{v:.12e}" for v in np.asarray(value, dtype=np.float64).ravel())
                f.write(f"{key}: {vals}\n")


def load_velodyne_points(path):
    """Load a velodyne scan: float32 N x 4 (x fwd, y left, z up, reflectance); returns
    N x 4 homogeneous points with the reflectance replaced by 1."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"velodyne scan not found: {path}")
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    points = points.astype(np.float64)
    points[:, 3] = 1.0
    return points


def read_rigid_transform(path):
    """4x4 matrix from a calibration file with R (3x3) and T (3) entries."""
    calib = read_calib_file(path)
    T = np.eye(4)
    T[:3, :3] = calib["R"].reshape(3, 3)
    T[:3, 3] = calib["T"]
    return T


def rectification(calib_dir):
    """(R_rect_00 as 4x4, the cam_to_cam dict)."""
    cam2cam = read_calib_file(os.path.join(calib_dir, "calib_cam_to_cam.txt"))
    R_rect = np.eye(4)
    R_rect[:3, :3] = cam2cam["R_rect_00"].reshape(3, 3)
    return R_rect, cam2cam


def velo_to_cam_matrices(calib_dir, cam=2):
    """Return (P, image_shape) where P (4x4) maps homogeneous velodyne points to
    ``[u*z, v*z, z, 1]`` of rectified camera ``cam`` and image_shape is (H, W)."""
    R_rect, cam2cam = rectification(calib_dir)
    T = read_rigid_transform(os.path.join(calib_dir, "calib_velo_to_cam.txt"))
    P_rect = np.eye(4)
    P_rect[:3, :] = cam2cam[f"P_rect_0{cam}"].reshape(3, 4)
    width, height = cam2cam[f"S_rect_0{cam}"].astype(int)
    return P_rect @ R_rect @ T, (int(height), int(width))


LIDAR_CONVENTIONS = ("monodepth2", "monodepth2_train", "exact")


def generate_depth_map(calib_dir, velo_path, cam=2, convention="monodepth2"):
    """Project a velodyne scan into camera ``cam`` and return an H x W depth map.

    convention (duplicates always keep the nearest point):
      "monodepth2": the Eigen-split export used by every paper since Eigen et al.:
          depth is the velodyne x coordinate (not camera z), pixel = round(p) - 1.
          Keep it to compare with published numbers.
      "monodepth2_train": camera z at pixel round(p) - 1, monodepth2's training depth_gt.
      "exact": camera z at pixel round(p): the true depth at 0-based pixel centres.
    """
    if convention not in LIDAR_CONVENTIONS:
        raise ValueError(f"unknown lidar convention {convention!r}: use one of {LIDAR_CONVENTIONS}")
    P, (height, width) = velo_to_cam_matrices(calib_dir, cam)
    velo = load_velodyne_points(velo_path)
    velo = velo[velo[:, 0] >= 0]  # points behind the scanner cannot be in the image
    proj = velo @ P.T
    z = proj[:, 2]
    keep = z > 1e-6
    velo, proj, z = velo[keep], proj[keep], z[keep]
    uv = proj[:, :2] / z[:, None]
    shift = 0 if convention == "exact" else 1
    u = np.round(uv[:, 0]).astype(np.int64) - shift
    v = np.round(uv[:, 1]).astype(np.int64) - shift
    depth = velo[:, 0] if convention == "monodepth2" else z
    inside = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    u, v, depth = u[inside], v[inside], depth[inside]
    depth_map = np.zeros((height, width), dtype=np.float64)
    # write far points first so that the nearest point at a pixel wins
    order = np.argsort(-depth, kind="stable")
    depth_map[v[order], u[order]] = depth[order]
    depth_map[depth_map < 0] = 0
    return depth_map


def read_oxts_file(path):
    """One oxts packet (30 numbers) from a KITTI ``oxts/data/*.txt`` file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"oxts file not found: {path}")
    with open(path) as f:
        values = [float(x) for x in f.read().split()]
    if len(values) != 30:
        raise ValueError(f"{path}: expected 30 oxts fields, found {len(values)}")
    return OxtsPacket(*values)


def rotation_xyz(roll, pitch, yaw):
    """R = Rz(yaw) Ry(pitch) Rx(roll), the devkit's convention for oxts orientation."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def oxts_to_poses(packets):
    """IMU-to-world 4x4 poses for a list of oxts packets (devkit's Mercator projection,
    scale taken from the first packet's latitude, world origin at the first pose)."""
    scale = np.cos(packets[0].lat * np.pi / 180.0)
    poses, origin = [], None
    for p in packets:
        tx = scale * p.lon * np.pi * EARTH_RADIUS / 180.0
        ty = scale * EARTH_RADIUS * np.log(np.tan((90.0 + p.lat) * np.pi / 360.0))
        T = np.eye(4)
        T[:3, :3] = rotation_xyz(p.roll, p.pitch, p.yaw)
        T[:3, 3] = [tx, ty, p.alt]
        if origin is None:
            origin = T[:3, 3].copy()
        T[:3, 3] -= origin
        poses.append(T)
    return poses


def latlon_from_mercator(tx, ty, scale):
    """Inverse of the devkit's Mercator projection: metres -> (lat, lon) in degrees."""
    lon = tx * 180.0 / (np.pi * EARTH_RADIUS * scale)
    lat = 360.0 / np.pi * np.arctan(np.exp(ty / (scale * EARTH_RADIUS))) - 90.0
    return lat, lon


def imu_to_cam_matrix(calib_dir, cam=2):
    """4x4 transform taking IMU coordinates to rectified camera ``cam`` coordinates."""
    T_velo_imu = read_rigid_transform(os.path.join(calib_dir, "calib_imu_to_velo.txt"))
    T_cam0_velo = read_rigid_transform(os.path.join(calib_dir, "calib_velo_to_cam.txt"))
    # the rectified camera `cam` frame: R_rect_00 @ velo2cam, shifted by P_rect's baseline
    R_rect, cam2cam = rectification(calib_dir)
    P = cam2cam[f"P_rect_0{cam}"].reshape(3, 4)
    T_cam_cam0 = np.eye(4)
    T_cam_cam0[0, 3] = P[0, 3] / P[0, 0]
    return T_cam_cam0 @ R_rect @ T_cam0_velo @ T_velo_imu


def camera_poses_from_oxts(drive_dir, calib_dir, frames, cam=2):
    """Camera-to-world 4x4 poses of rectified camera `cam` for the given frames of a drive,
    from its oxts packets (world origin at the first frame's IMU)."""
    packets = [read_oxts_file(os.path.join(drive_dir, "oxts", "data", f"{int(i):010d}.txt")) for i in frames]
    T_cam_imu = imu_to_cam_matrix(calib_dir, cam)
    return [T @ np.linalg.inv(T_cam_imu) for T in oxts_to_poses(packets)]


def read_poses_file(path):
    """KITTI odometry poses: one 3x4 row-major camera-to-world matrix per line -> N x 4 x 4."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"poses file not found: {path}")
    rows = np.loadtxt(path, dtype=np.float64).reshape(-1, 12)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    return poses
