"""Point-cloud metrics of a depth map: Chamfer distance, F-score and IoU.

Definitions: Örnek et al. 2022, "From 2D to 3D: Re-thinking Benchmarking of Monocular Depth
Prediction", as monodepth_benchmark (Spencer et al. 2023) computes them:

- the predicted depth (scaled and clamped as the eigen metrics use it, at the ground truth's
  size) and the ground truth are back-projected with the camera's K at the same pixels: the
  protocol's valid ground-truth pixels (depth range, crop). No subsampling: every such pixel
  is a point (KITTI's lidar gives about 16-19 thousand per image).
- d_pred: for each predicted point, the distance (metres) to the nearest ground-truth point;
  d_gt: for each ground-truth point, the distance to the nearest predicted point.
- Chamfer = mean(d_pred) + mean(d_gt), in metres.
- at a threshold t: precision P = fraction of d_pred < t, recall R = fraction of d_gt < t,
  F = 2PR / (P + R), IoU = PR / (P + R - PR); when P and R are both below 1e-3 both are P.
  t = 0.1 m (the paper's threshold) and 0.2 m, reported in percent.

Per image; evaluate_depth.py averages over the images that have valid pixels.
"""
import numpy as np
from scipy.spatial import cKDTree

POINTCLOUD_THRESHOLDS = (0.1, 0.2)  # metres: F-score / IoU "fscore", "iou" and "fscore_20", "iou_20"
POINTCLOUD_METRIC_NAMES = ("chamfer", "fscore", "iou", "fscore_20", "iou_20")


def backproject(depth, K, mask):
    """N x 3 camera-frame points of the pixels in `mask`: depth * K^-1 [u, v, 1] (u the
    column, v the row, pixel centres at integer coordinates, as K's principal point)."""
    rows, cols = np.nonzero(mask)
    rays = np.linalg.inv(np.asarray(K, np.float64)[:3, :3]) @ np.stack(
        [cols.astype(np.float64), rows.astype(np.float64), np.ones(len(rows))])
    return (rays * np.asarray(depth, np.float64)[rows, cols]).T


def nearest_distances(points, others):
    """For each row of `points`, the distance to the nearest row of `others` (N,)."""
    return cKDTree(others).query(points, k=1)[0]


def precision_recall_scores(d_pred, d_gt, threshold):
    """(F-score, IoU) in [0, 1] at `threshold` from the two nearest-neighbour distance sets."""
    precision = float(np.mean(d_pred < threshold))
    recall = float(np.mean(d_gt < threshold))
    if precision < 1e-3 and recall < 1e-3:  # nothing close enough (monodepth_benchmark's rule)
        return precision, precision
    f = 2 * precision * recall / (precision + recall)
    iou = precision * recall / (precision + recall - precision * recall)
    return f, iou


def cloud_metrics(pred_points, gt_points, thresholds=POINTCLOUD_THRESHOLDS):
    """{"chamfer", "fscore", "iou", "fscore_20", "iou_20"} between two N x 3 point sets
    (F-score and IoU in percent)."""
    d_pred = nearest_distances(pred_points, gt_points)
    d_gt = nearest_distances(gt_points, pred_points)
    out = {"chamfer": float(d_pred.mean() + d_gt.mean())}
    for t, suffix in zip(thresholds, ("", "_20")):
        f, iou = precision_recall_scores(d_pred, d_gt, t)
        out["fscore" + suffix], out["iou" + suffix] = 100 * f, 100 * iou
    return out


def pointcloud_metrics(pred, gt, mask, K):
    """Point-cloud metrics of one image: pred and gt H x W depth (metres), mask H x W of the
    valid pixels, K 3 x 3 (or 4 x 4) in pixels of this H x W. None when no pixel is valid."""
    if not mask.any():
        return None
    return cloud_metrics(backproject(pred, K, mask), backproject(gt, K, mask))
