"""Ray casting of the camera images (depth, shading) and of the 64-beam scanner."""
import numpy as np

from .constants import (CAM_HEIGHT, LIDAR_BEAMS, LIDAR_COLUMNS, LIDAR_ELEVATION, LIDAR_RANGE, MATERIAL_NAMES,
                        MATERIALS, MAX_RANGE, SKY_TILE, TILE)
from .scene import rot_y
from .textures import sample_atlas

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
