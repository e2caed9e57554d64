"""Metric families beside the eigen table: which exist, which a test set can give, and their
mean over a test set's images.

- eigen: the seven standard metrics (always computed: the others reuse its scaling).
- pointcloud: Chamfer distance, F-score and IoU at 0.1 m and 0.2 m of the back-projected
  prediction against the back-projected ground truth (evaluation/cloud_metrics.py); needs the
  test set's camera intrinsics.
- edges: depth-edge accuracy and completeness (evaluation/edges.py); needs a dense ground
  truth (the ground-truth edges come from it).

Every family scores the same prediction as the eigen metrics: resized to the ground truth,
scaled with that image's factor and median ratio, clamped to the protocol's depth range.
"""
import cv2
import numpy as np

from .edges import EDGE_METRIC_NAMES, depth_edges, edge_metrics
from .cloud_metrics import POINTCLOUD_METRIC_NAMES, pointcloud_metrics
from .protocols import Unavailable

METRIC_FAMILIES = ("eigen", "pointcloud", "edges")
FAMILY_METRIC_NAMES = {"pointcloud": POINTCLOUD_METRIC_NAMES, "edges": EDGE_METRIC_NAMES}
DEFAULT_FAMILIES = METRIC_FAMILIES[:1]
METRICS_HELP = ("metric families, comma-separated: eigen (always), pointcloud (Chamfer, F-score and IoU at 0.1/0.2 m; "
                "needs the test set's intrinsics), edges (depth-edge accuracy and completeness; needs dense ground "
                "truth), all (default: eigen)")


def parse_metric_families(text):
    """"eigen,pointcloud,edges" (any subset, comma-separated; "all") -> the families in
    METRIC_FAMILIES order, eigen always first."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if "all" in names:
        names = list(METRIC_FAMILIES)
    unknown = [n for n in names if n not in METRIC_FAMILIES]
    if unknown:
        raise SystemExit(f"--metrics {text}: unknown family {', '.join(unknown)} (choose from "
                         f"{', '.join(METRIC_FAMILIES)}, comma-separated)")
    return tuple(f for f in METRIC_FAMILIES if f == "eigen" or f in names)


def scale_K(K, size, shape):
    """K (pixels of an image of `size` = (H, W)) for an image of `shape` (H', W')."""
    K = np.array(K, np.float64)[:3, :3].copy()
    if tuple(size) != tuple(shape[:2]):
        K[0] *= shape[1] / size[1]
        K[1] *= shape[0] / size[0]
    return K


def family_metrics(family, test_set, disps, gts, scale_factor, median_scaling, image_ratios, extra_masks=None):
    """(mean metrics over the images that have them, number of such images) of one family.
    image_ratios: each image's median ratio from the eigen pass (None where it had no valid
    pixel). Raises Unavailable when the test set cannot give this family."""
    protocol = test_set.protocol
    given = len(image_ratios) == len(gts)
    per_image = []
    if family == "pointcloud":
        cameras = test_set.intrinsics()
        for i, gt in enumerate(gts):
            if median_scaling and given and image_ratios[i] is None:
                continue
            pred, mask, _ = protocol.prepare(disps[i], gt, scale_factor, median_scaling,
                                             None if extra_masks is None else extra_masks[i],
                                             image_ratios[i] if given else None)
            if pred is None:
                continue
            K, size = cameras[i]
            per_image.append(pointcloud_metrics(pred, gt, mask, scale_K(K, size, gt.shape)))
    elif family == "edges":
        dense = test_set.dense_ground_truth()
        for i in range(len(gts)):
            if median_scaling and given and image_ratios[i] is None:
                continue
            depth = np.asarray(dense[i], np.float32)
            extra = None if extra_masks is None else np.asarray(extra_masks[i], bool)
            if extra is not None and extra.shape != depth.shape:
                extra = cv2.resize(extra.astype(np.uint8), depth.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
            # the image's ratio (from the sparse ground truth) scales the prediction; the dense
            # depth gives the valid pixels (range, crop) and the ground-truth edges
            pred, mask, _ = protocol.prepare(disps[i], depth, scale_factor, median_scaling, extra,
                                             image_ratios[i] if given else None)
            if pred is None:
                continue
            per_image.append(edge_metrics(pred, depth_edges(depth, mask=depth > 0) & mask))
    else:
        raise ValueError(f"unknown metric family {family!r}")
    per_image = [m for m in per_image if m is not None]
    if not per_image:
        raise Unavailable(f"no image of {test_set.name} has " + ("valid ground-truth pixels" if family == "pointcloud"
                                                                 else "ground-truth depth edges in its valid pixels"))
    names = FAMILY_METRIC_NAMES[family]
    return {n: float(np.mean([m[n] for m in per_image])) for n in names}, len(per_image)
