"""Depth evaluation: the metrics (metrics.py) and one protocol per test set (protocols.py:
ground-truth loader, crop, depth range, scaling rule, optional extra mask, log10).

Validation during training scores its dataset's protocol (MonoDataset.eval_protocol);
evaluate_depth.py runs the test sets the user asks for. A new test set is one protocol
and one registered test set here; neither the Trainer nor the script changes.
"""
from .metrics import DEPTH_METRIC_NAMES, compute_depth_errors
from .protocols import PROTOCOLS, TEST_SETS, Protocol, register_protocol, register_test_set
from . import kitti  # noqa: E402,F401  (registers the KITTI protocols and test sets)
from .kitti import EIGEN_CROP, STEREO_SCALE_FACTOR  # noqa: E402,F401
from . import make3d, nyuv2, cityscapes  # noqa: E402,F401  (in the order evaluate_depth.py runs them)
from . import kitti_odom  # noqa: E402,F401  (KITTI odometry, multi-frame: --odom_path)
