"""Metric scale of a monocular depth map from the camera's height above a flat road.

A monocular self-supervised model predicts depth up to one unknown factor. Where the camera
sits a known height H above a flat road (KITTI and the synthetic world: 1.65 m), the factor
is H over the distance d from the camera centre to the road plane fitted to the predicted
depth, the ground-plane rule of monocular visual odometry's scale recovery. Here: the
lower part of the image is back-projected with K, a plane is found by RANSAC (Fischler and
Bolles, 1981) among planes whose normal lies within `max_tilt_deg` of the camera's down
axis (a road seen by a forward-looking camera), inliers being within `tolerance` x d of
it (a depth map off by a factor moves road points off the plane by the same share of d),
and the plane is refined by least squares on its inliers (the normal is the smallest
singular vector of the centred inliers). scale = H / d.

Confidence: the inliers' share of the lower image's points, and the spread of the scale
(the largest |s_i / s - 1|) over the same fit on the left and right halves of that region
and over RANSAC refits with other seeds. A single image of a street may show
no road there (a car right in front, a crossing); a low share or a wide spread says so.
"""
from dataclasses import dataclass, field

import numpy as np

from pointcloud import pixel_rays

DEFAULTS = dict(lower=0.3, max_tilt_deg=15.0, tolerance=0.05, iterations=256, max_points=4000, min_points=100)
# the printed confidence is "LOW" below this inlier share or above this spread (on the synthetic
# validation drive with a briefly trained model: median share 71 %, 90 % of the spreads below 8.4 %)
MIN_INLIER_SHARE = 0.3
MAX_SPREAD = 0.1


@dataclass
class PlaneFit:
    normal: np.ndarray  # unit normal, camera coordinates, pointing from the camera to the plane (y down)
    distance: float  # the camera centre's distance to the plane, in the depth map's units
    inliers: int
    points: int

    @property
    def inlier_share(self):
        return self.inliers / max(self.points, 1)

    @property
    def tilt_deg(self):
        """Angle between the normal and the camera's down axis (0, 1, 0)."""
        return float(np.degrees(np.arccos(np.clip(self.normal[1], -1.0, 1.0))))


@dataclass
class MetricScale:
    scale: float = None  # metres per depth unit; None when no road plane was found
    plane: PlaneFit = None
    camera_height: float = None
    spread: float = float("nan")  # max |s_i / scale - 1| over the halves and refits that found a plane
    checks: dict = field(default_factory=dict)  # name -> scale (None: no plane there)
    points: int = 0  # valid points of the lower image

    @property
    def confident(self):
        return (self.scale is not None and self.plane.inlier_share >= MIN_INLIER_SHARE
                and np.isfinite(self.spread) and self.spread <= MAX_SPREAD)

    def describe(self):
        if self.scale is None:
            return (f"no road plane in the lower image ({self.points} points, none within "
                    f"{DEFAULTS['max_tilt_deg']:g} degrees of level with enough support)")
        failed = [k for k, v in self.checks.items() if v is None]
        return (f"scale {self.scale:.4g} (road {self.plane.distance:.4g} units below, "
                f"tilt {self.plane.tilt_deg:.1f} deg); "
                f"confidence {'ok' if self.confident else 'LOW'}: inliers {100 * self.plane.inlier_share:.0f}% of "
                f"{self.plane.points} points, spread {100 * self.spread:.1f}% over "
                f"the image halves and {len(self.checks) - 2} refits"
                + (f" ({', '.join(failed)}: no plane)" if failed else ""))


def plane_from_points(points):
    """Least-squares plane of N x 3 points: (unit normal with y >= 0, distance n . centroid)."""
    centroid = points.mean(0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    normal = normal if normal[1] >= 0 else -normal
    return normal, float(normal @ centroid)


def fit_ground_plane(points, max_tilt_deg=DEFAULTS["max_tilt_deg"], tolerance=DEFAULTS["tolerance"],
                     iterations=DEFAULTS["iterations"], max_points=DEFAULTS["max_points"],
                     min_points=DEFAULTS["min_points"], seed=0):
    """The road plane of N x 3 camera points (y down), or None. Hypotheses from random
    triples, kept where the normal is within max_tilt_deg of (0, 1, 0) and the plane lies
    below the camera; scored on at most max_points points by the count within tolerance x d;
    the best refined twice by least squares on its inliers among all points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(1)]
    if len(points) < max(min_points, 3):
        return None
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
    triples = sample[rng.integers(0, len(sample), (iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    ok = lengths > 1e-12
    normals = normals[ok] / lengths[ok, None]
    normals *= np.where(normals[:, 1:2] < 0, -1.0, 1.0)
    distances = np.einsum("ij,ij->i", normals, triples[ok, 0])
    cos_tilt = np.cos(np.radians(max_tilt_deg))
    ok = (normals[:, 1] >= cos_tilt) & (distances > 0)
    normals, distances = normals[ok], distances[ok]
    if not len(normals):
        return None
    support = (np.abs(sample @ normals.T - distances) < tolerance * distances).sum(0)
    best = int(np.argmax(support))
    normal, distance = normals[best], float(distances[best])
    inliers = np.abs(points @ normal - distance) < tolerance * distance
    for _ in range(2):
        if inliers.sum() < 3:
            break
        refined, refined_distance = plane_from_points(points[inliers])
        if refined[1] < cos_tilt or refined_distance <= 0:
            break
        normal, distance = refined, refined_distance
        inliers = np.abs(points @ normal - distance) < tolerance * distance
    if inliers.sum() < min_points:
        return None
    return PlaneFit(normal=normal, distance=distance, inliers=int(inliers.sum()), points=len(points))


def lower_region(depth, K, lower=DEFAULTS["lower"]):
    """Camera points of the lower `lower` share of an H x W depth map's rows with valid
    depth (> 0, finite), and their (row, column) pixel coordinates."""
    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape
    rays = pixel_rays(h, w, K).reshape(h, w, 3)
    first = int(round(h * (1 - lower)))
    d = depth[first:]
    valid = np.isfinite(d) & (d > 0)
    rows, cols = np.nonzero(valid)
    return rays[first:][valid] * d[valid][:, None], rows + first, cols


def scale_from_camera_height(depth, K, camera_height, lower=DEFAULTS["lower"], refits=4, seed=0, **fit_options):
    """depth: H x W (any units), K: 3 x 3 (or 4 x 4) in pixels of that size, camera_height:
    metres -> MetricScale: scale = camera_height / the fitted road plane's distance, with the
    inlier share and the scale's spread over the region's halves and `refits` other seeds."""
    if not camera_height > 0:
        raise ValueError(f"camera height must be positive, got {camera_height}")
    points, rows, cols = lower_region(depth, K, lower)
    result = MetricScale(camera_height=float(camera_height), points=len(points))
    plane = fit_ground_plane(points, seed=seed, **fit_options)
    if plane is None:
        return result
    result.plane, result.scale = plane, camera_height / plane.distance
    w = np.shape(depth)[1]
    for name, mask in (("left half", cols < w / 2), ("right half", cols >= w / 2)):
        fit = fit_ground_plane(points[mask], seed=seed, **fit_options)
        result.checks[name] = None if fit is None else camera_height / fit.distance
    for k in range(1, refits + 1):
        fit = fit_ground_plane(points, seed=seed + k, **fit_options)
        result.checks[f"seed {seed + k}"] = None if fit is None else camera_height / fit.distance
    found = [s for s in result.checks.values() if s is not None]
    result.spread = max(abs(s / result.scale - 1) for s in found) if found else float("nan")
    return result
