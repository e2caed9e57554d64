"""Depth-edge accuracy and completeness (iBims-1, Koch et al. 2018, as monodepth_benchmark,
Spencer et al. 2023, computes them).

- Edges of a depth map: Canny on the log depth (0 where the depth is not positive), Gaussian
  sigma 1, hysteresis thresholds 0.1 and 0.2 on the Sobel gradient magnitude of the smoothed
  log depth (scikit-image's canny defaults for a float image, which monodepth_benchmark calls;
  written here with scipy). The ground-truth edges are the same detector run on a DENSE
  ground-truth depth (SYNS-Patches ships edge maps made from its dense lidar; here: the
  synthetic world's rendered depth, NYUv2's filled depth), restricted to the protocol's
  valid pixels (depth range, crop).
- D_gt: the Euclidean distance transform to the nearest ground-truth edge pixel; D_pred: to
  the nearest predicted edge pixel (pixels).
- the predicted edges are kept where D_gt < 10 pixels (theta = 10);
  accuracy = mean of D_gt over the kept predicted edges,
  completeness = mean of D_pred over the ground-truth edges;
  both are 10 when no predicted edge is kept. Lower is better for both.

Per image; evaluate_depth.py averages over the images that have ground-truth edges.
"""
import numpy as np
from scipy import ndimage

EDGE_THRESHOLD = 10  # pixels: theta of iBims-1, and the value when no predicted edge is close
EDGE_SIGMA = 1.0
CANNY_LOW, CANNY_HIGH = 0.1, 0.2
EDGE_METRIC_NAMES = ("edge_acc", "edge_comp")


def log_depth(depth):
    depth = np.asarray(depth, np.float64)
    return np.where(depth > 0, np.log(np.maximum(depth, 1e-12)), 0.0)


def _smooth(image, sigma, mask):
    """Gaussian smoothing (zero outside the image and the mask) divided by the smoothed mask,
    so that the border and the masked pixels do not pull values towards 0."""
    gauss = dict(sigma=sigma, mode="constant", cval=0.0, truncate=4.0)
    weights = np.ones(image.shape) if mask is None else mask.astype(np.float64)
    return ndimage.gaussian_filter(image * weights, **gauss) / (ndimage.gaussian_filter(weights, **gauss)
                                                                + np.finfo(np.float64).eps)


def _local_maxima(gy, gx, magnitude, candidates):
    """Non-maximum suppression: a candidate pixel is kept when its magnitude is at least the
    magnitude one step forward and one step backward along the gradient, the step reaching
    the border of the 3 x 3 neighbourhood and the value there interpolated linearly."""
    rows, cols = np.nonzero(candidates)
    dy, dx = gy[rows, cols], gx[rows, cols]
    step = np.maximum(np.abs(dy), np.abs(dx))
    dy, dx = dy / step, dx / step
    m = magnitude[rows, cols]
    ahead = ndimage.map_coordinates(magnitude, [rows + dy, cols + dx], order=1, mode="constant")
    behind = ndimage.map_coordinates(magnitude, [rows - dy, cols - dx], order=1, mode="constant")
    keep = (m >= ahead) & (m >= behind)
    out = np.zeros(magnitude.shape, bool)
    out[rows[keep], cols[keep]] = True
    return out


def canny(image, sigma=EDGE_SIGMA, low=CANNY_LOW, high=CANNY_HIGH, mask=None):
    """Boolean edge map of a 2-D float image: smoothing, Sobel gradients, non-maximum
    suppression, hysteresis (8-connected runs above `low` that reach `high`). Pixels on the
    image border, and next to a pixel outside `mask`, are never edges."""
    image = np.asarray(image, np.float64)
    mask = None if mask is None else np.asarray(mask, bool)
    smoothed = _smooth(image, sigma, mask)
    if mask is None:
        inner = np.zeros(image.shape, bool)
        inner[1:-1, 1:-1] = True
    else:
        inner = ndimage.binary_erosion(mask, np.ones((3, 3), bool), border_value=0)
    gy = ndimage.sobel(smoothed, axis=0)
    gx = ndimage.sobel(smoothed, axis=1)
    magnitude = np.hypot(gy, gx)
    weak = _local_maxima(gy, gx, magnitude, inner & (magnitude >= low) & (magnitude > 0))
    labels, count = ndimage.label(weak, np.ones((3, 3), bool))
    if count == 0:
        return weak
    strong = np.zeros(count + 1, bool)
    strong[np.unique(labels[weak & (magnitude >= high)])] = True
    strong[0] = False
    return strong[labels]


def depth_edges(depth, mask=None):
    """Edges of a depth map: Canny (sigma 1, 0.1 / 0.2) on its log depth."""
    return canny(log_depth(depth), mask=mask)


def edge_distances(pred_edges, gt_edges, threshold=EDGE_THRESHOLD):
    """(accuracy, completeness) in pixels between two boolean edge maps, or None when the
    ground truth has no edge."""
    gt_edges = np.asarray(gt_edges, bool)
    if not gt_edges.any():
        return None
    d_gt = ndimage.distance_transform_edt(~gt_edges)
    kept = np.asarray(pred_edges, bool) & (d_gt < threshold)
    if not kept.any():
        return float(threshold), float(threshold)
    d_pred = ndimage.distance_transform_edt(~np.asarray(pred_edges, bool))
    return float(d_gt[kept].mean()), float(d_pred[gt_edges].mean())


def edge_metrics(pred, gt_edges):
    """{"edge_acc", "edge_comp"} of one image: pred H x W depth, gt_edges H x W boolean
    (already restricted to the valid pixels). None when the ground truth has no edge."""
    distances = edge_distances(depth_edges(pred), gt_edges)
    return None if distances is None else dict(zip(EDGE_METRIC_NAMES, distances))
