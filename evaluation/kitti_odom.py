"""KITTI odometry test set of supervised multi-frame depth (MonoRec's protocol, as Li et al.,
CVPR 2023): sequences 00, 04, 05, 07 at full length (keyframes 5 .. N-6), the improved GT
scattered at the network's 256 x 512, and moving-object masks for the dynamic-region metrics.

Protocol "kitti_odom": metric. Valid pixels have 0 < GT <= 80 m; predictions are clamped to
<= 80 m; no minimum depth, no crop and NO median scaling, whatever the command's scaling
flags say (the protocol's median_scaling=False; evaluate_depth.py should also pass a scale
factor of 1). Metrics are computed per image and averaged over images; an image whose
metrics are NaN or that has no valid pixel (e.g. no GT inside its moving-object mask) is
skipped, not counted as 0.
"""
import os
from dataclasses import dataclass

import numpy as np

from .protocols import LazyMaps, Protocol, TestSet, register_protocol, register_test_set

ODOM_TEST_SEQS = ("00", "04", "05", "07")
NETWORK_SIZE = (256, 512)  # (height, width) the protocol evaluates at (when no model says otherwise)
DYNAMIC_THRESHOLD = 0.5  # dynamic where mvobj_mask > 0.5


@dataclass(frozen=True)
class MetricProtocol(Protocol):
    """A protocol whose depth is metric: 0 < GT <= max_depth, predictions clamped to
    [min_depth, max_depth], never median-scaled, NaN images skipped."""
    median_scaling: bool = False  # evaluate_depth.py: no per-image median ratio, scale factor 1

    def mask(self, gt, extra_mask=None):
        mask = (gt > 0) & (gt <= self.max_depth) & self.crop_mask(*gt.shape[:2])
        if extra_mask is not None:
            mask &= extra_mask.astype(bool)
        return mask

    def score(self, disp, gt, scale_factor=1.0, median_scaling=True, extra_mask=None, ratio=None):
        """Protocol.score with median scaling forced off (and no ratio applied)."""
        return super().score(disp, gt, scale_factor, self.median_scaling, extra_mask, None)

    def evaluate(self, disps, gts, scale_factor=1.0, median_scaling=True, extra_masks=None, image_ratios=None):
        """Mean of the per-image metrics over the images that have valid pixels and no NaN
        metric; (metrics, empty ratios). image_ratios, when an empty list, receives None per image."""
        errors = []
        for i, gt in enumerate(gts):
            e, _ = self.score(disps[i], gt, scale_factor, False, None if extra_masks is None else extra_masks[i])
            if image_ratios is not None and len(image_ratios) < len(gts):
                image_ratios.append(None)
            if e is None or not np.all(np.isfinite(e)):
                continue
            errors.append(e)
        if not errors:
            raise SystemExit(f"{self.name}: no valid ground-truth pixel in any image")
        return dict(zip(self.metric_names, np.array(errors).mean(0).tolist())), np.array([])


KITTI_ODOM = register_protocol(MetricProtocol("kitti_odom", min_depth=0.0, max_depth=80.0))


@register_test_set
class KittiOdomMultiFrame(TestSet):
    """--odom_path DIR: the odometry root (sequences/, poses_dvso/) with image_depth_annotated/
    (prepare_kitti_odom_depth.py) and, for --eval_dynamic, mvobj_mask/."""
    name = "kitti_odom_mf"
    protocol = KITTI_ODOM

    @classmethod
    def add_options(cls, parser):
        g = parser.add_argument_group("KITTI odometry (multi-frame, MonoRec protocol)")
        g.add_argument("--odom_path", metavar="DIR", help="KITTI odometry root: evaluate its test sequences "
                       "(metric, 0 < GT <= 80 m, at the network size, no median scaling)")
        g.add_argument("--odom_test_seqs", nargs="+", default=list(ODOM_TEST_SEQS), metavar="NN",
                       help="odometry sequences to evaluate")
        g.add_argument("--odom_pose_source", choices=("dvso", "kitti_gt"), default="dvso",
                       help="poses of the frames: poses_dvso/ (MonoRec's) or poses/ (KITTI's GT)")
        g.add_argument("--eval_dynamic", action="store_true",
                       help="also score the moving-object pixels alone (sequences/NN/mvobj_mask/, > 0.5)")
        g.add_argument("--odom_reference_scatter", action="store_true",
                       help="place the ground truth as the released code does (its integer crop box, no pixel "
                            "centring, last point wins); automatic for a folder trained with --reference_scatter "
                            "or --ref_compat and for imported released checkpoints")

    @classmethod
    def named_in(cls, args):
        return bool(getattr(args, "odom_path", None)) or cls.name in (getattr(args, "eval_split", None) or ())

    @classmethod
    def from_args(cls, args):
        """--odom_path DIR, or --eval_split kitti_odom_mf with --data_path DIR (the odometry root)."""
        root = getattr(args, "odom_path", None)
        if cls.name in (getattr(args, "eval_split", None) or ()) and not root:
            from .kitti import DEFAULT_DATA_PATH
            if args.data_path == DEFAULT_DATA_PATH:
                raise SystemExit(f"--eval_split {cls.name}: give the KITTI odometry root with --data_path "
                                 "(or --odom_path)")
            root = args.data_path
        if not root:
            return []
        return [cls(root, args.odom_test_seqs, args.odom_pose_source, args.eval_dynamic,
                    getattr(args, "odom_reference_scatter", False))]

    def __init__(self, root, seqs=ODOM_TEST_SEQS, pose_source="dvso", dynamic=False, reference_scatter=False,
                 reference_crop=False):
        from datasets.kitti_odom_mf import odometry_split_lines
        if not os.path.isdir(os.path.join(root, "sequences")):
            raise SystemExit(f"--odom_path {root}: no sequences/ folder (the KITTI odometry root)")
        self.root, self.seqs, self.pose_source, self.dynamic = root, list(seqs), pose_source, dynamic
        self.reference_scatter, self.reference_crop = reference_scatter, reference_crop
        try:
            self.filenames = odometry_split_lines(root, self.seqs)
        except FileNotFoundError as e:
            raise SystemExit(f"--odom_path {root}: {e}") from None
        self.height, self.width = NETWORK_SIZE

    def __len__(self):
        return len(self.filenames)

    def use_dataset_options(self, options):
        """A model trained with the released code's ground-truth placement or crop
        (--reference_scatter, --reference_crop, both in --ref_compat and in imported folders)
        is fed and scored the same way."""
        self.reference_scatter = self.reference_scatter or bool(options.get("reference_scatter", False))
        self.reference_crop = self.reference_crop or bool(options.get("reference_crop", False))

    def _dataset(self, height, width, frame_ids, **kwargs):
        from datasets.kitti_odom_mf import KITTIOdomMultiFrameDataset
        folder, frame = self.filenames[0].split()[:2]
        png = os.path.join(self.root, "sequences", folder, "image_2", f"{int(frame):06d}.png")
        return KITTIOdomMultiFrameDataset(self.root, self.filenames, height, width, list(frame_ids), 1,
                                          is_train=False, img_ext=".png" if os.path.isfile(png) else ".jpg",
                                          pose_source=self.pose_source, reference_scatter=self.reference_scatter,
                                          reference_crop=self.reference_crop, **kwargs)

    def dataset(self, height, width, frame_ids):
        """Test items (no augmentation, no GT or masks: ground_truth() reads those)."""
        self.height, self.width = height, width
        return self._dataset(height, width, frame_ids, load_gt=False, load_masks=False)

    def check_ready(self):
        if not self.filenames:
            raise SystemExit(f"--odom_path {self.root}: no keyframes in sequences {' '.join(self.seqs)}")
        reader = self._dataset(self.height, self.width, [0], load_gt=False, load_masks=False)
        needed = [("ground truth", reader.depth_path, "python prepare_kitti_odom_depth.py")]
        if self.dynamic:
            needed.append(("moving-object mask", reader.mask_path, "MonoRec's mvobj_mask, or leave out --eval_dynamic"))
        for what, path_of, hint in needed:
            missing = [path_of(*line.split()[:2]) for line in self.filenames]
            missing = [p for p in missing if not os.path.isfile(p)]
            if missing:
                raise SystemExit(f"kitti_odom_mf: {len(missing)} {what} files missing, e.g. {missing[0]} ({hint})")

    def ground_truth(self):
        """One height x width metric sparse depth map per keyframe (read when asked)."""
        reader = self._dataset(self.height, self.width, [0], load_gt=False, load_masks=False)
        return LazyMaps(len(self), lambda i: reader.sparse_depth(*self._line(i)))

    def region_masks(self):
        """With --eval_dynamic: {"dynamic": one height x width bool mask per keyframe (> 0.5)}."""
        if not self.dynamic:
            return {}
        reader = self._dataset(self.height, self.width, [0], load_gt=False, load_masks=False)
        return {"dynamic": LazyMaps(len(self), lambda i: reader.moving_object_mask(*self._line(i)) > DYNAMIC_THRESHOLD)}

    def _line(self, i):
        folder, frame = self.filenames[i].split()[:2]
        return folder, int(frame)
