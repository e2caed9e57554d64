"""A small, deterministic synthetic driving world written in KITTI's on-disk formats.

    python -m datasets.synthetic_world --out synthetic_data [--drives 2] [--frames 60]
        [--seed 0] [--height 375] [--width 1242] [--moving_objects] [--jpg] [--odometry]

The world is ray-cast from analytic primitives: a ground plane 1.65 m below the camera
and oriented boxes (building blocks, parked cars, poles, walls, far background blocks)
laid out along a gently turning road. Every surface carries a band-limited multi-scale
texture (a 1/f noise tile with a mip pyramid, sampled trilinearly so that distant
surfaces do not alias) and Lambertian shading from a per-drive sun, so left/right and
consecutive images are photometrically consistent given the true depth and poses.

Per drive it writes what the real KITTI raw release has (calibration, rectified stereo
images, velodyne scans from a simulated 64-beam scanner, oxts packets, timestamps) plus
depth-benchmark style improved ground truth (11 scans accumulated and kept where they
agree with the rendered depth), the exact dense depth of the left camera as .npy, and,
with --moving_objects, moving-object masks. Split files for the drives are written to
``<out>/splits/<split_name>/``; ``--odometry`` adds a KITTI odometry tree
``<out>/odometry/sequences/NN``.

Coordinates: the world frame is the rectified left grey camera (cam0) at frame 0:
x right, y down, z forward. Depth always means camera z.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from datasets import kitti_utils

DATE = "2000_01_01"  # a date no real KITTI drive has, so the two never mix
CAM_HEIGHT = 1.65  # metres above the road, as in KITTI
BASELINE = 0.54  # metres between image_02 and image_03
CAM2_X = -0.06  # image_02 sits 6 cm left of cam0 (KITTI: 5.96 cm)
CAM3_X = CAM2_X + BASELINE
FX_NORM, FY_NORM = 0.58, 1.92  # focal lengths / (width, height), KITTI's average camera
VELO_IN_CAM0 = np.array([0.0, -0.08, -0.27])  # scanner 8 cm above, 27 cm behind cam0
IMU_IN_VELO = np.array([-0.81, 0.32, -0.80])  # oxts unit relative to the scanner (KITTI)
CAMERA_X = (0.0, 0.532, CAM2_X, CAM3_X)  # cam0..cam3 right of cam0 (cam1: grey, not rendered)
R_VELO_TO_CAM = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR_BEAMS = 64
LIDAR_ELEVATION = (2.0, -24.8)  # degrees, HDL-64E field of view
LIDAR_COLUMNS = 1800  # 0.2 degree azimuth steps
LIDAR_RANGE = 120.0
MAX_RANGE = 250.0  # nothing is rendered beyond; the sky starts there
GT_SCANS = 5  # improved GT accumulates scans t-5 .. t+5 (11, as the depth benchmark)
TILE = 256
MIP_LEVELS = 9

# materials: (colour A, colour B, texels per metre coarse, fine, fine contrast, reflectance)
MATERIALS = {
    "road": ((0.33, 0.33, 0.35), (0.45, 0.44, 0.43), 6.0, 48.0, 0.55, 0.25),
    "facade0": ((0.62, 0.52, 0.42), (0.80, 0.74, 0.64), 5.0, 40.0, 0.45, 0.45),
    "facade1": ((0.55, 0.58, 0.62), (0.75, 0.77, 0.80), 5.0, 40.0, 0.45, 0.40),
    "facade2": ((0.66, 0.40, 0.32), (0.82, 0.58, 0.46), 5.0, 40.0, 0.45, 0.40),
    "car": ((0.15, 0.20, 0.45), (0.65, 0.12, 0.10), 2.0, 40.0, 0.35, 0.70),
    "pole": ((0.30, 0.24, 0.16), (0.45, 0.52, 0.25), 8.0, 64.0, 0.50, 0.30),
    "wall": ((0.50, 0.50, 0.46), (0.66, 0.64, 0.58), 6.0, 48.0, 0.50, 0.35),
    "hill": ((0.28, 0.40, 0.22), (0.45, 0.52, 0.30), 1.0, 8.0, 0.40, 0.20),
}
MATERIAL_NAMES = list(MATERIALS)
SKY_TILE = len(MATERIAL_NAMES)  # the sky uses one more tile of the atlas


# ----------------------------------------------------------------------------- textures
def _noise_tile(rng, beta=1.0):
    """A periodic TILE x TILE 1/f^beta noise and its blurred mip levels, each in [0, 1]."""
    freq = np.fft.fftfreq(TILE)
    fr = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    amp = np.where(fr > 0, 1.0 / np.maximum(fr, 1.0 / TILE) ** beta, 0.0)
    spectrum = np.fft.fft2(rng.standard_normal((TILE, TILE))) * amp
    levels = []
    for level in range(MIP_LEVELS):
        sigma = 0.5 * 2 ** level  # texels; a footprint of 2^level texels is band-limited
        blur = np.exp(-2 * (np.pi * sigma * fr) ** 2)
        levels.append(np.real(np.fft.ifft2(spectrum * blur)))
    base = levels[0]
    lo, hi = np.percentile(base, 1), np.percentile(base, 99)
    return [np.clip((lv - lo) / (hi - lo), 0, 1) for lv in levels]


def make_texture_atlas(rng):
    """Atlas of one noise tile per material plus the sky: 1 x 1 x L x (T+2) x n(T+2),
    each tile wrapped by one texel so that bilinear sampling is periodic."""
    n = len(MATERIAL_NAMES) + 1
    atlas = np.zeros((MIP_LEVELS, TILE + 2, n * (TILE + 2)), dtype=np.float32)
    for m in range(n):
        levels = _noise_tile(rng, beta=1.0 if m != SKY_TILE else 1.4)
        for lv, img in enumerate(levels):
            atlas[lv, :, m * (TILE + 2):(m + 1) * (TILE + 2)] = np.pad(img, 1, mode="wrap")
    return torch.from_numpy(atlas)[None, None]


def sample_atlas(atlas, tile, s, t, level):
    """Trilinear lookup. tile, s, t, level: N arrays (s, t in texels, level in mip units)."""
    n_tiles = atlas.shape[-1] // (TILE + 2)
    x = tile * (TILE + 2) + 1 + np.mod(s, TILE)
    y = 1 + np.mod(t, TILE)
    width, height = n_tiles * (TILE + 2), TILE + 2
    grid = np.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1,
                     2 * np.clip(level, 0, MIP_LEVELS - 1) / (MIP_LEVELS - 1) - 1], axis=-1)
    grid = torch.from_numpy(grid.astype(np.float32)).view(1, 1, 1, -1, 3)
    out = F.grid_sample(atlas, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(-1).numpy()


# ----------------------------------------------------------------------------- the world
def rot_y(yaw):
    """Rotation about the (downward) y axis; heading yaw maps z-forward to (sin, 0, cos)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Boxes:
    """Oriented boxes: centre (N,3) world, half extents (N,3) local (x lateral, y down,
    z along), yaw (N,), material (N,), tint (N,3), texture offset (N,2), moving (N,)."""
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    material: np.ndarray
    tint: np.ndarray
    tex_offset: np.ndarray
    moving: np.ndarray

    @staticmethod
    def from_list(items):
        if not items:
            z = np.zeros((0, 3))
            return Boxes(z, z.copy(), np.zeros(0), np.zeros(0, int), z.copy(),
                         np.zeros((0, 2)), np.zeros(0, bool))
        cols = list(zip(*items))
        return Boxes(np.array(cols[0], float), np.array(cols[1], float), np.array(cols[2], float),
                     np.array(cols[3], int), np.array(cols[4], float), np.array(cols[5], float),
                     np.array(cols[6], bool))

    def __len__(self):
        return len(self.yaw)

    def concat(self, other):
        return Boxes(*(np.concatenate([getattr(self, k), getattr(other, k)])
                       for k in ("center", "half", "yaw", "material", "tint", "tex_offset", "moving")))


@dataclass
class Path:
    """The road centre line sampled every metre of arc length from s0."""
    s0: float
    xz: np.ndarray  # N x 2 (x, z)
    heading: np.ndarray  # N

    def at(self, s):
        """(x, z, heading) at arc length(s) s, linearly interpolated."""
        idx = np.asarray(s, float) - self.s0
        x = np.interp(idx, np.arange(len(self.heading)), self.xz[:, 0])
        z = np.interp(idx, np.arange(len(self.heading)), self.xz[:, 1])
        h = np.interp(idx, np.arange(len(self.heading)), self.heading)
        return x, z, h

    def lateral_point(self, s, offset):
        """World (x, z) of the point `offset` metres right of the centre line at s."""
        x, z, h = self.at(s)
        return x + offset * np.cos(h), z - offset * np.sin(h)


@dataclass
class Drive:
    index: int
    path: Path
    static: Boxes
    cam_s: np.ndarray  # arc length of the camera per frame
    movers: list  # (lateral offset, s per frame, half, material, tint, tex offset, yaw flip)
    sun: np.ndarray
    sky: tuple
    exposure: float
    world_to_enu_heading: float
    atlas: torch.Tensor = field(repr=False, default=None)

    def cam0_pose(self, frame):
        """4x4 cam0-to-world pose at a frame."""
        x, z, h = self.path.at(self.cam_s[frame])
        T = np.eye(4)
        T[:3, :3] = rot_y(h)
        T[:3, 3] = [x, 0.0, z]
        return T

    def boxes_at(self, frame):
        """All boxes (static and moving) at a frame."""
        items = []
        for lateral, s_frames, half, mat, tint, off, flip in self.movers:
            s = s_frames[frame]
            x, z = self.path.lateral_point(s, lateral)
            _, _, h = self.path.at(s)
            items.append(([x, CAM_HEIGHT - half[1] - half[3], z], half[:3], h + flip, mat, tint,
                          off, True))
        return self.static.concat(Boxes.from_list(items)) if items else self.static


def _smooth_noise(rng, n, scale, amplitude):
    """Smooth random signal of length n: white noise low-passed over `scale` samples."""
    x = rng.standard_normal(n + 4 * scale)
    kernel = np.exp(-0.5 * (np.arange(-2 * scale, 2 * scale + 1) / scale) ** 2)
    y = np.convolve(x, kernel / np.sqrt((kernel ** 2).sum()), mode="same")[2 * scale:2 * scale + n]
    return amplitude * y


def _box_blocks_corridor(path, center, half, yaw, s_mid, corridor):
    """True if the box overlaps the driving corridor [left, right] (lateral metres)."""
    s = np.arange(s_mid - 45, s_mid + 45, 1.0)
    R = rot_y(yaw)
    for lateral in np.linspace(corridor[0], corridor[1], 7):
        x, z = path.lateral_point(s, lateral)
        rel = np.stack([x - center[0], np.zeros_like(x), z - center[2]], 1) @ R
        inside = (np.abs(rel[:, 0]) < half[0] + 0.4) & (np.abs(rel[:, 2]) < half[2] + 0.4)
        if inside.any():
            return True
    return False


def build_drive(index, n_frames, rng, moving_objects):
    """Lay out one drive: road, camera motion, static boxes and (optionally) movers."""
    speed = 1.0 + _smooth_noise(rng, n_frames, 8, 0.08)  # metres per frame at 10 Hz
    cam_s = np.concatenate([[0.0], np.cumsum(np.clip(speed, 0.7, 1.3))[:-1]])
    s0, s_end = -70.0, cam_s[-1] + 160.0
    n = int(s_end - s0) + 1
    curvature = _smooth_noise(rng, n, 25, 0.006) + rng.uniform(-0.003, 0.003)
    heading = np.cumsum(curvature)
    heading -= np.interp(-s0, np.arange(n), heading)  # heading 0 at the first frame
    xz = np.zeros((n, 2))
    xz[1:, 0] = np.cumsum(np.sin(heading[:-1]))
    xz[1:, 1] = np.cumsum(np.cos(heading[:-1]))
    path = Path(s0, xz, heading)
    x0, z0, _ = path.at(0.0)
    path.xz -= [x0, z0]  # the camera starts at the world origin

    items = []

    def add(s_mid, lateral, half, material, lift=0.0, corridor=(-5.4, 2.55), yaw_jitter=0.0):
        x, z = path.lateral_point(s_mid, lateral)
        _, _, h = path.at(s_mid)
        yaw = h + yaw_jitter
        center = np.array([x, CAM_HEIGHT - half[1] - lift, z])
        if _box_blocks_corridor(path, center, half, yaw, s_mid, corridor):
            return False
        tint = rng.uniform(0.8, 1.2, 3)
        items.append((center, np.array(half), yaw, MATERIAL_NAMES.index(material), tint,
                      rng.uniform(0, 4096, 2), False))
        return True

    for side in (1, -1):
        # building blocks with gaps
        s = s0 + rng.uniform(0, 10)
        while s < s_end:
            length = rng.uniform(8, 26)
            setback = rng.uniform(8.5, 13.0) if side > 0 else rng.uniform(10.0, 15.0)
            depth = rng.uniform(8, 15)
            height = rng.uniform(5, 18)
            add(s + length / 2, side * (setback + depth / 2), [depth / 2, height / 2, length / 2],
                f"facade{rng.integers(3)}")
            s += length + (rng.uniform(0, 8) if rng.random() < 0.6 else rng.uniform(10, 25))
        # parked cars: a body and a cabin
        s = s0 + rng.uniform(0, 8)
        while s < s_end:
            if rng.random() < 0.55:
                lateral = side * (rng.uniform(3.4, 3.9) if side > 0 else rng.uniform(6.9, 7.4))
                jitter = rng.uniform(-0.05, 0.05)
                if add(s, lateral, [0.85, 0.38, 2.15], "car", lift=0.25, yaw_jitter=jitter):
                    add(s - 0.2, lateral, [0.75, 0.25, 1.2], "car", lift=1.01, yaw_jitter=jitter)
            s += rng.uniform(6, 14)
        # poles and trees
        s = s0 + rng.uniform(0, 10)
        while s < s_end:
            lateral = side * (rng.uniform(5.0, 6.5) if side > 0 else rng.uniform(8.3, 9.2))
            width = rng.uniform(0.15, 0.5)
            add(s, lateral, [width, rng.uniform(1.5, 3.5), width], "pole")
            s += rng.uniform(8, 25)
        # low walls and boxes between the road and the buildings
        s = s0 + rng.uniform(0, 20)
        while s < s_end:
            lateral = side * (rng.uniform(5.5, 7.5) if side > 0 else rng.uniform(8.5, 9.5))
            add(s, lateral, [rng.uniform(0.3, 1.0), rng.uniform(0.4, 1.2), rng.uniform(0.5, 4.0)],
                "wall", yaw_jitter=rng.uniform(-0.3, 0.3))
            s += rng.uniform(15, 40)
        # far background blocks and hills, visible through the gaps
        s = s0 + rng.uniform(0, 20)
        while s < s_end + 60:
            lateral = side * rng.uniform(30, 75)
            size = rng.uniform(10, 30)
            add(s, lateral, [size, rng.uniform(4, 15), size], "hill" if rng.random() < 0.5 else "wall",
                yaw_jitter=rng.uniform(-0.5, 0.5))
            s += rng.uniform(15, 35)

    movers = []
    if moving_objects:
        car_half = np.array([0.85, 0.55, 2.15, 0.2])  # last entry: clearance under the body
        gap = 14 + _smooth_noise(rng, n_frames, 10, 3.0)
        movers.append((0.0, cam_s + np.clip(gap, 8, 24), car_half, MATERIAL_NAMES.index("car"),
                       rng.uniform(0.8, 1.2, 3), rng.uniform(0, 4096, 2), 0.0))
        for _ in range(2):
            start = rng.uniform(40, cam_s[-1] + 120)
            v = rng.uniform(0.8, 1.4)
            movers.append((-3.5, start - v * np.arange(n_frames), car_half,
                           MATERIAL_NAMES.index("car"), rng.uniform(0.8, 1.2, 3),
                           rng.uniform(0, 4096, 2), np.pi))

    elevation = rng.uniform(0.5, 1.0)
    azimuth = rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.sin(azimuth), -np.sin(elevation),
                    np.cos(elevation) * np.cos(azimuth)])  # direction towards the sun
    sky = (np.array([0.78, 0.84, 0.90]) * rng.uniform(0.9, 1.05),
           np.array([0.35, 0.52, 0.80]) * rng.uniform(0.85, 1.1))
    return Drive(index, path, Boxes.from_list(items), cam_s, movers, sun, sky,
                 exposure=rng.uniform(0.9, 1.1), world_to_enu_heading=rng.uniform(-np.pi, np.pi))


# ----------------------------------------------------------------------------- ray casting
_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
          (0, 4), (1, 5), (2, 6), (3, 7)]
_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)


def _box_corners(boxes, i):
    return boxes.center[i] + (_SIGNS * boxes.half[i]) @ rot_y(boxes.yaw[i]).T


def _screen_bbox(corners_cam, K, width, height, near=0.05):
    """Pixel rectangle covering a box's corners in camera coordinates, clipped at `near`."""
    z = corners_cam[:, 2]
    if z.max() <= near:
        return None
    pts = [corners_cam[z > near]]
    for a, b in _EDGES:  # where an edge crosses the near plane
        if (z[a] > near) != (z[b] > near):
            w = (near - z[a]) / (z[b] - z[a])
            pts.append((corners_cam[a] + w * (corners_cam[b] - corners_cam[a]))[None])
    p = np.concatenate(pts)
    u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
    v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
    u0, u1 = int(np.floor(u.min())), int(np.ceil(u.max())) + 1
    v0, v1 = int(np.floor(v.min())), int(np.ceil(v.max())) + 1
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, width), min(v1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _intersect_box(origin, dirs, center, half, yaw):
    """Slab test of rays origin + t*dirs (dirs: ... x 3) against one oriented box.
    Returns (t_near, face) with t_near = inf where missed; face = 2*axis + (normal > 0)."""
    R = rot_y(yaw).astype(np.float32)
    o = ((origin - center) @ R).astype(np.float32)
    d = dirs @ R
    t_min, t_max = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            inv = 1.0 / d[..., k]
            t1 = (-half[k] - o[k]) * inv
            t2 = (half[k] - o[k]) * inv
            t_min.append(np.minimum(t1, t2))
            t_max.append(np.maximum(t1, t2))
    t_near = np.maximum(np.maximum(t_min[0], t_min[1]), t_min[2])
    t_far = np.minimum(np.minimum(t_max[0], t_max[1]), t_max[2])
    hit = (t_near <= t_far) & (t_near > 1e-4)
    axis = np.where(t_min[0] == t_near, 0, np.where(t_min[1] == t_near, 1, 2))
    d_axis = np.where(axis == 0, d[..., 0], np.where(axis == 1, d[..., 1], d[..., 2]))
    face = (2 * axis + (d_axis < 0)).astype(np.int8)
    return np.where(hit, t_near, np.inf), face


def cast_camera(drive, boxes, T_cam_world, K, width, height):
    """Render depth (z, 0 = sky), object id (-1 ground, -2 sky), face and hit points for a
    pinhole camera with pose T_cam_world (cam-to-world 4x4)."""
    R, origin = T_cam_world[:3, :3], T_cam_world[:3, 3]
    u = (np.arange(width) - K[0, 2]) / K[0, 0]
    v = (np.arange(height) - K[1, 2]) / K[1, 1]
    d_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)
    dirs = (d_cam @ R.T).astype(np.float32)  # z component of d_cam is 1, so t = depth
    ray_len = np.linalg.norm(d_cam, axis=-1)
    depth = np.full((height, width), np.inf, np.float32)
    obj = np.full((height, width), -2, np.int32)
    face = np.zeros((height, width), np.int8)
    with np.errstate(divide="ignore"):
        t_ground = (CAM_HEIGHT + 0.0 - origin[1]) / dirs[..., 1]
    ground = (dirs[..., 1] > 1e-6) & (t_ground * ray_len < MAX_RANGE)
    depth[ground] = t_ground[ground]
    obj[ground] = -1
    face[ground] = 2
    dist = np.linalg.norm(boxes.center - origin, axis=1) - np.linalg.norm(boxes.half, axis=1)
    world_to_cam = R.T
    for i in np.nonzero(dist < MAX_RANGE)[0]:
        corners = (_box_corners(boxes, i) - origin) @ world_to_cam.T
        rect = _screen_bbox(corners, K, width, height)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        t, f = _intersect_box(origin, dirs[v0:v1, u0:u1], boxes.center[i], boxes.half[i],
                              boxes.yaw[i])
        sub = depth[v0:v1, u0:u1]
        closer = t < sub
        sub[closer] = t[closer]
        obj[v0:v1, u0:u1][closer] = i
        face[v0:v1, u0:u1][closer] = f[closer]
    sky = ~np.isfinite(depth)
    depth[sky] = 0
    return depth, obj, face, dirs, ray_len


def _material_table():
    names = MATERIAL_NAMES
    col_a = np.array([MATERIALS[m][0] for m in names], np.float32)
    col_b = np.array([MATERIALS[m][1] for m in names], np.float32)
    coarse, fine, contrast = (np.array([MATERIALS[m][k] for m in names], np.float32) for k in (2, 3, 4))
    return col_a, col_b, coarse, fine, contrast


def shade(drive, boxes, depth, obj, face, dirs, ray_len, origin, fx):
    """Colour of every pixel: textured albedo x Lambertian light, and the sky."""
    height, width = depth.shape
    image = np.zeros((height * width, 3), np.float32)
    hit = (obj > -2).ravel()
    idx = np.nonzero(hit)[0]
    t = depth.ravel()[idx]
    d = dirs.reshape(-1, 3)[idx]
    o = obj.ravel()[idx]
    fc = face.ravel()[idx].astype(np.int64)
    is_box = o >= 0
    # per-pixel box parameters; the ground is a box with yaw 0 centred at the world origin
    n_box = len(boxes)
    table_yaw = np.append(boxes.yaw, 0.0).astype(np.float32)
    table_center = np.vstack([boxes.center, np.zeros((1, 3))]).astype(np.float32)
    table_mat = np.append(boxes.material, MATERIAL_NAMES.index("road"))
    table_tint = np.vstack([boxes.tint, np.ones((1, 3))]).astype(np.float32)
    table_off = np.vstack([boxes.tex_offset, np.zeros((1, 2))]).astype(np.float32)
    ob = np.where(is_box, o, n_box)
    yaw = table_yaw[ob]
    c, s = np.cos(yaw), np.sin(yaw)
    rel = (origin.astype(np.float32) - table_center[ob]) + t[:, None] * d
    xl = rel[:, 0] * c - rel[:, 2] * s
    yl = rel[:, 1]
    zl = rel[:, 0] * s + rel[:, 2] * c
    dl = np.stack([d[:, 0] * c - d[:, 2] * s, d[:, 1], d[:, 0] * s + d[:, 2] * c], 1)
    sun = drive.sun.astype(np.float32)
    sun_l = np.stack([sun[0] * c - sun[2] * s, np.full_like(c, sun[1]), sun[0] * s + sun[2] * c], 1)
    axis = fc // 2
    sign = np.where(fc % 2 == 1, 1.0, -1.0).astype(np.float32)  # outward normal, local axes
    rows = np.arange(len(idx))
    tex_s = np.where(axis == 0, zl, xl)
    tex_t = np.where(axis == 1, zl, yl)
    cos_view = np.maximum(np.abs(dl[rows, axis]) / (ray_len.ravel()[idx]), 0.03)
    sun_dot = np.maximum(sign * sun_l[rows, axis], 0)
    material = table_mat[ob]
    offset = table_off[ob] + 97.0 * fc[:, None]  # faces of one box look different
    footprint = t * ray_len.ravel()[idx] / (fx * cos_view)  # metres per pixel on the surface
    col_a, col_b, coarse_tpm, fine_tpm, contrast = (x[material] for x in _material_table())
    n_coarse = sample_atlas(drive.atlas, material, (tex_s + offset[:, 0]) * coarse_tpm,
                            (tex_t + offset[:, 1]) * coarse_tpm,
                            np.log2(np.maximum(footprint * coarse_tpm, 1)))
    n_fine = sample_atlas(drive.atlas, material, (tex_s + offset[:, 1]) * fine_tpm,
                          (tex_t + offset[:, 0]) * fine_tpm, np.log2(np.maximum(footprint * fine_tpm, 1)))
    albedo = col_a + (col_b - col_a) * n_coarse[:, None]
    albedo *= ((1 - contrast / 2 + contrast * n_fine) * (0.45 + 0.75 * sun_dot) * drive.exposure)[:, None]
    albedo *= table_tint[ob]
    # windows on building facades: dark glass, box-filtered by the pixel footprint
    facades = [MATERIAL_NAMES.index(f"facade{k}") for k in range(3)]
    above_ground = CAM_HEIGHT - (origin[1] + t * d[:, 1])
    fac = np.nonzero(np.isin(material, facades) & (axis != 1) & (above_ground > 1.2))[0]
    if len(fac):
        cover = (_window_coverage(tex_s[fac], 3.2, 1.5, footprint[fac])
                 * _window_coverage(above_ground[fac], 3.4, 1.7, footprint[fac]))[:, None]
        glass = np.array([0.12, 0.15, 0.2], np.float32) * (0.6 + 0.8 * n_coarse[fac, None])
        glass *= (0.45 + 0.75 * sun_dot[fac, None]) * drive.exposure
        albedo[fac] = albedo[fac] * (1 - cover) + glass * cover
    image[idx] = albedo
    # sky: a gradient and clouds that depend on the direction only (at infinity)
    sky_idx = np.nonzero(~hit)[0]
    if len(sky_idx):
        ds = dirs.reshape(-1, 3)[sky_idx]
        ds = ds / np.linalg.norm(ds, axis=1, keepdims=True)
        elevation = np.clip(-ds[:, 1], 0, 1)
        azimuth = np.arctan2(ds[:, 0], ds[:, 2])
        scale = TILE / np.pi  # two periods around the horizon
        level = np.full(len(sky_idx), np.log2(max(2 * scale / fx, 1.0)), np.float32)
        clouds = sample_atlas(drive.atlas, np.full(len(sky_idx), SKY_TILE), azimuth * scale,
                              np.arcsin(elevation) * scale * 2, level)
        horizon, zenith = drive.sky
        col = horizon + (zenith - horizon) * np.sqrt(elevation)[:, None]
        col = col * (1 - 0.35 * clouds[:, None]) + 0.35 * clouds[:, None]
        image[sky_idx] = col * drive.exposure
    return np.clip(image, 0, 1).reshape(height, width, 3)


def _window_coverage(x, period, width, footprint):
    """Fraction of a pixel (footprint metres wide) covered by windows of `width` every
    `period` metres along x."""
    q = np.mod(x, period) - (period - width) / 2
    inside = np.minimum(q, width - q)  # signed distance to the window edge
    local = np.clip(inside / np.maximum(footprint, 1e-6) + 0.5, 0, 1)
    far = np.clip(footprint / period, 0, 1)
    return local * (1 - far) + (width / period) * far


def cast_lidar(boxes, T_velo_world):
    """Simulated 64-beam scan: N x 4 float32 (x fwd, y left, z up, reflectance) in the
    velodyne frame, returns within LIDAR_RANGE only."""
    R_wv = T_velo_world[:3, :3]
    origin = T_velo_world[:3, 3]
    el = np.deg2rad(np.linspace(LIDAR_ELEVATION[0], LIDAR_ELEVATION[1], LIDAR_BEAMS))
    az = np.linspace(-np.pi, np.pi, LIDAR_COLUMNS, endpoint=False)
    d_velo = np.stack(np.broadcast_arrays(np.cos(el)[:, None] * np.cos(az)[None],
                                          np.cos(el)[:, None] * np.sin(az)[None],
                                          np.sin(el)[:, None]), -1)
    dirs = d_velo @ R_wv.T
    rng_ = np.full(dirs.shape[:2], np.inf)
    refl = np.zeros(dirs.shape[:2])
    with np.errstate(divide="ignore"):
        t_ground = (CAM_HEIGHT - origin[1]) / dirs[..., 1]
    g = (dirs[..., 1] > 1e-6) & (t_ground < LIDAR_RANGE)
    rng_[g] = t_ground[g]
    refl[g] = MATERIALS["road"][5]
    dist = np.linalg.norm(boxes.center - origin, axis=1) - np.linalg.norm(boxes.half, axis=1)
    step = 2 * np.pi / LIDAR_COLUMNS
    for i in np.nonzero(dist < LIDAR_RANGE)[0]:
        corners = (_box_corners(boxes, i) - origin) @ R_wv  # in the velodyne frame
        a = np.arctan2(corners[:, 1], corners[:, 0])
        centre = np.arctan2(*(corners[:, 1:2].mean(0)), corners[:, 0].mean())
        rel = np.mod(a - centre + np.pi, 2 * np.pi) - np.pi
        lo = int(np.floor((centre + rel.min() + np.pi) / step)) - 1
        hi = int(np.ceil((centre + rel.max() + np.pi) / step)) + 2
        cols = np.mod(np.arange(lo, hi), LIDAR_COLUMNS)
        t, _ = _intersect_box(origin, dirs[:, cols], boxes.center[i], boxes.half[i], boxes.yaw[i])
        sub = rng_[:, cols]
        closer = t < sub
        sub[closer] = t[closer]
        rng_[:, cols] = sub
        r = refl[:, cols]
        r[closer] = MATERIALS[MATERIAL_NAMES[boxes.material[i]]][5]
        refl[:, cols] = r
    keep = rng_ < LIDAR_RANGE
    pts = d_velo[keep] * rng_[keep][:, None]
    return np.concatenate([pts, refl[keep][:, None]], 1).astype(np.float32)


# ----------------------------------------------------------------------------- calibration
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


# ----------------------------------------------------------------------------- writing
@dataclass
class Config:
    out: str
    drives: int = 2
    frames: int = 60
    seed: int = 0
    height: int = 375
    width: int = 1242
    moving_objects: bool = False
    jpg: bool = False
    odometry: bool = False
    split_name: str = "synthetic"
    overwrite: bool = False
    workers: int = 0  # 0: one per CPU core


def drive_name(index):
    return f"{DATE}_drive_{index + 1:04d}_sync"


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


def _write_splits(cfg):
    """Train/val/test split files (lines `folder frame side`): the last drive is held out
    for val (first half) and test (second half) when there are two drives; with three or
    more, the second-to-last drive is val and the last is test."""
    split_dir = os.path.join(cfg.out, "splits", cfg.split_name)
    os.makedirs(split_dir, exist_ok=True)
    names = [f"{DATE}/{drive_name(i)}" for i in range(cfg.drives)]
    inner = list(range(1, cfg.frames - 1))  # frames with both neighbours
    if cfg.drives == 1:
        train_drives, val, test = [0], inner[: len(inner) // 4], inner[len(inner) // 4: len(inner) // 2]
        train = [(names[0], f) for f in inner[len(inner) // 2:]]
        val = [(names[0], f) for f in val]
        test = [(names[0], f) for f in test]
    else:
        if cfg.drives == 2:
            held = inner
            val = [(names[1], f) for f in held[: len(held) // 2]]
            test = [(names[1], f) for f in held[len(held) // 2:]]
            train_drives = [0]
        else:
            val = [(names[-2], f) for f in inner]
            test = [(names[-1], f) for f in inner]
            train_drives = list(range(cfg.drives - 2))
        train = [(names[d], f) for d in train_drives for f in inner]
    with open(os.path.join(split_dir, "train_files.txt"), "w") as f:
        f.writelines(f"{n} {i} {side}\n" for n, i in train for side in "lr")
    with open(os.path.join(split_dir, "val_files.txt"), "w") as f:
        f.writelines(f"{n} {i} l\n" for n, i in val)
    with open(os.path.join(split_dir, "test_files.txt"), "w") as f:
        f.writelines(f"{n} {i} l\n" for n, i in test)
    if cfg.odometry:
        odom_dir = os.path.join(cfg.out, "splits", cfg.split_name + "_odom")
        os.makedirs(odom_dir, exist_ok=True)
        seqs = [int(d) for d in range(cfg.drives)]
        with open(os.path.join(odom_dir, "train_files.txt"), "w") as f:
            f.writelines(f"{s} {i} {side}\n" for s in seqs[:-1] or seqs for i in inner for side in "lr")
        with open(os.path.join(odom_dir, "val_files.txt"), "w") as f:
            f.writelines(f"{seqs[-1]} {i} l\n" for i in inner[::4])
        with open(os.path.join(odom_dir, f"test_files_{seqs[-1]:02d}.txt"), "w") as f:
            f.writelines(f"{seqs[-1]} {i} l\n" for i in range(cfg.frames - 1))
    return split_dir


def validate(cfg):
    """Check arguments before anything is written; raise ValueError naming the option."""
    for name, minimum in (("drives", 1), ("frames", 3), ("height", 32), ("width", 32)):
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"--{name} must be an integer >= {minimum}, got {value!r}")
    if cfg.drives > 99:
        raise ValueError(f"--drives must be at most 99 (odometry sequence numbers), got {cfg.drives}")
    out = os.path.abspath(cfg.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {cfg.out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not cfg.overwrite:
        raise FileExistsError(f"--out {cfg.out} exists and is not empty; choose another folder "
                              "or pass --overwrite to replace the synthetic world in it")
    parent = out
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out {cfg.out}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"--out {cfg.out}: cannot write to {parent}")


def generate(cfg, progress=True):
    """Write the synthetic world described by cfg; returns a dict summary."""
    validate(cfg)
    start = time.time()
    if cfg.overwrite and os.path.isdir(cfg.out):
        marker = os.path.join(cfg.out, "synthetic_world.json")
        if os.listdir(cfg.out) and not os.path.isfile(marker):
            raise FileExistsError(f"--out {cfg.out} holds files that are not a synthetic world "
                                  f"(no {marker}); refusing to overwrite them")
        shutil.rmtree(cfg.out)
    date_dir = os.path.join(cfg.out, DATE)
    os.makedirs(date_dir, exist_ok=True)
    write_calibration(date_dir, cfg.width, cfg.height)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.drives)
    drives = []
    for d in range(cfg.drives):
        rng = np.random.default_rng(seeds[d])
        drive = build_drive(d, cfg.frames, rng, cfg.moving_objects)
        drive.atlas = make_texture_atlas(rng)
        drives.append(drive)
        ddir = os.path.join(date_dir, drive_name(d))
        subdirs = ["image_02/data", "image_03/data", "velodyne_points/data", "oxts/data",
                   "proj_depth/groundtruth/image_02", "depth_dense/image_02/data"]
        if cfg.moving_objects:
            subdirs.append("mvobj_mask/image_02/data")
        for sub in subdirs:
            os.makedirs(os.path.join(ddir, sub), exist_ok=True)
        t0 = datetime.datetime(2000, 1, 1, 12, 0, 0) + datetime.timedelta(minutes=10 * d)
        for sub in ("image_02", "image_03", "velodyne_points", "oxts"):
            _write_timestamps(os.path.join(ddir, sub, "timestamps.txt"), cfg.frames, t0)
        for i in range(cfg.frames):
            with open(os.path.join(ddir, "oxts", "data", f"{i:010d}.txt"), "w") as f:
                values = _oxts_packet(drive, i, cfg.frames)
                f.write(" ".join([repr(float(v)) for v in values[:25]] + [str(int(v)) for v in values[25:]]) + "\n")
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [(d, i) for d in range(cfg.drives) for i in range(cfg.frames)]
    _run(_render_frame, jobs, workers, progress, "render", (cfg, drives))
    _run(_improved_gt, jobs, workers, progress, "improved GT", (cfg, drives))
    if cfg.odometry:
        for drive in drives:
            _write_odometry(cfg, drive)
    split_dir = _write_splits(cfg)
    summary = {k: getattr(cfg, k) for k in ("drives", "frames", "seed", "height", "width",
                                              "moving_objects", "jpg", "odometry", "split_name")}
    summary.update(date=DATE, drives_written=[f"{DATE}/{drive_name(d)}" for d in range(cfg.drives)],
                   split_dir=os.path.relpath(split_dir, cfg.out), seconds=round(time.time() - start, 1))
    with open(os.path.join(cfg.out, "synthetic_world.json"), "w") as f:
        json.dump({k: v for k, v in summary.items() if k != "seconds"}, f, indent=1)
    return summary


def _run(fn, jobs, workers, progress, label, state):
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=label, disable=not progress, unit="frame")
    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker(*state)
        for job in jobs:
            fn(job)
            bar.update()
        torch.set_num_threads(threads)
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=state) as pool:
            for _ in pool.map(fn, jobs, chunksize=2):
                bar.update()
    bar.close()


def world_exists(out):
    return os.path.isfile(os.path.join(out, "synthetic_world.json"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Write a deterministic synthetic driving world in "
                                "KITTI raw (and odometry) format.")
    p.add_argument("--out", required=True, help="output folder (a KITTI raw root)")
    p.add_argument("--drives", type=int, default=2)
    p.add_argument("--frames", type=int, default=60, help="frames per drive (10 Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=1242)
    p.add_argument("--moving_objects", action="store_true", help="add independently moving cars "
                   "and write their masks (mvobj_mask)")
    p.add_argument("--jpg", action="store_true", help="also write .jpg images (quality 92)")
    p.add_argument("--odometry", action="store_true", help="also write a KITTI odometry tree")
    p.add_argument("--split_name", default="synthetic")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic world")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config(**vars(args))
    try:
        summary = generate(cfg)
    except (ValueError, FileExistsError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['drives']} drives x {summary['frames']} frames to {cfg.out} "
          f"in {summary['seconds']} s; splits in {os.path.join(cfg.out, summary['split_dir'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
