"""The world: a gently turning road with building blocks, parked and moving cars, poles,
walls and far hills, as oriented boxes along the path of a drive."""
from dataclasses import dataclass, field

import numpy as np
import torch

from .constants import CAM_HEIGHT, MATERIAL_NAMES

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
