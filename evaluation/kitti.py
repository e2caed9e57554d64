"""KITTI test sets and protocols (monodepth2's): eigen (velodyne GT, Garg/Eigen crop,
1e-3 < GT < 80), eigen_benchmark (improved GT, GT > 0), benchmark (no public GT: writes
the benchmark's PNG files), and any split folder with test_files.txt (eigen's protocol).

Which splits run: --eval_split when given; else, with --kitti_path, eigen and
eigen_benchmark (each only where its gt_depths.npz exists); else nothing when another test
set is named (--cityscapes_path, ...); else eigen (monodepth2's default)."""
import os

import cv2
import numpy as np

from .protocols import LazyMaps, Protocol, TestSet, Unavailable, register_protocol, register_test_set

STEREO_SCALE_FACTOR = 5.4  # KITTI's 0.54 m baseline / the 0.1 training units of stereo_T
# Garg/Eigen crop as fractions of the ground-truth size (153:371, 44:1197 at 375 x 1242)
EIGEN_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
BENCHMARK_SIZE = (1216, 352)  # (W, H) of the depth benchmark's files
DEFAULT_DATA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kitti_data")
PATH_SPLITS = ("eigen", "eigen_benchmark")  # what --kitti_path evaluates without --eval_split
OTHER_SPLIT_NAMES = ("kitti_odom_mf",)  # --eval_split names another test set reads (evaluation/kitti_odom.py)

KITTI_EIGEN = register_protocol(Protocol("kitti_eigen", crop=EIGEN_CROP))
KITTI_IMPROVED = register_protocol(Protocol("kitti_improved", gt_positive_only=True))


@register_test_set
class KittiSplit(TestSet):
    """The test_files.txt of a split: eigen, eigen_benchmark, benchmark, or any folder."""
    name = "kitti"
    stereo_scale_factor = STEREO_SCALE_FACTOR

    @classmethod
    def add_options(cls, parser):
        g = parser.add_argument_group("KITTI")
        g.add_argument("--eval_split", nargs="+",
                       help="eigen, eigen_benchmark, benchmark, a split under splits/ or <data_path>/splits/, or "
                            "a folder; kitti_odom_mf: the odometry test set at --data_path (see --odom_path); "
                            "none: skip (unset: eigen; with --kitti_path: both eigen splits)")
        g.add_argument("--data_path", default=DEFAULT_DATA_PATH,
                       help="KITTI raw root (images; GT is in the split folder)")
        g.add_argument("--kitti_path", metavar="DIR", help="--data_path, evaluating eigen + eigen_benchmark")
        g.add_argument("--png", action="store_true", help="read .png images (default .jpg)")
        g.add_argument("--eval_eigen_to_benchmark", action="store_true",
                       help="--ext_disp_to_eval holds eigen predictions: evaluate them on eigen_benchmark")
        g.add_argument("--eval_moving_objects", action="store_true",
                       help="also score the moving-object pixels alone, from <data_path>/<drive>/mvobj_mask/"
                            "image_0X/data/<frame>.png (the synthetic world's --moving_objects masks)")

    @classmethod
    def named_in(cls, args):
        return bool(args.kitti_path or args.eval_split or args.data_path != DEFAULT_DATA_PATH)

    @classmethod
    def from_args(cls, args):
        from .protocols import TEST_SETS
        if args.kitti_path:
            if args.data_path not in (DEFAULT_DATA_PATH, args.kitti_path):
                raise SystemExit(f"--kitti_path {args.kitti_path} and --data_path {args.data_path}: give one")
            args.data_path = args.kitti_path
        splits = args.eval_split
        if splits is None:
            if args.kitti_path:
                return cls.with_ground_truth(PATH_SPLITS, args)
            others = any(t.named_in(args) for t in TEST_SETS.values() if t is not cls)
            splits = [] if others and args.data_path == DEFAULT_DATA_PATH else ["eigen"]
        chosen = [cls(split, args.data_path, args.png) for split in splits if split not in ("none", *OTHER_SPLIT_NAMES)]
        for test_set in chosen:
            test_set.moving_objects = getattr(args, "eval_moving_objects", False)
        return chosen

    @classmethod
    def with_ground_truth(cls, splits, args):
        """The splits whose gt_depths.npz exists (the others are reported and skipped)."""
        from .protocols import TEST_SETS
        chosen, missing = [], []
        for split in splits:
            test_set = cls(split, args.data_path, args.png)
            (chosen if os.path.isfile(test_set.gt_path) else missing).append(test_set)
        for test_set in missing:
            print(f"-> {test_set.name}: skipped, no {test_set.gt_path} (python export_gt_depth.py "
                  f"--data_path {args.data_path} --split {test_set.name})")
        others = any(t.named_in(args) for t in TEST_SETS.values() if t is not cls)
        if not chosen and not others:
            raise SystemExit(f"--kitti_path: none of {', '.join(splits)} has its gt_depths.npz; export them first "
                             f"(python export_gt_depth.py --data_path {args.data_path} --split eigen)")
        return chosen

    def __init__(self, split, data_path, png=False):
        from options import read_split_file, resolve_split_dir
        self.split_dir = resolve_split_dir(split, data_path)
        self.name = os.path.basename(os.path.normpath(self.split_dir))
        self.data_path, self.png = data_path, png
        self.test_file = os.path.join(self.split_dir, "test_files.txt")
        self.filenames = read_split_file(self.test_file)
        self.protocol = KITTI_IMPROVED if self.name == "eigen_benchmark" else KITTI_EIGEN
        self.gt_path = os.path.join(self.split_dir, "gt_depths.npz")

    moving_objects = False

    def __len__(self):
        return len(self.filenames)

    def mask_path(self, line):
        folder, frame, side = (line.split() + ["l"])[:3]
        camera = {"l": 2, "r": 3, "2": 2, "3": 3}[side]
        return os.path.join(self.data_path, folder, "mvobj_mask", f"image_0{camera}", "data", f"{int(frame):010d}.png")

    def region_masks(self):
        """With --eval_moving_objects: {"moving_objects": one mask per test line}, resized
        (nearest) to its ground truth's size when that differs."""
        if not self.moving_objects:
            return {}
        import cv2
        masks = []
        for i, line in enumerate(self.filenames):
            path = self.mask_path(line)
            image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise SystemExit(f"--eval_moving_objects: no mask {path} (line {i + 1} of {self.test_file}); "
                                 "the synthetic world writes them with --moving_objects")
            masks.append(image > 127)
        return {"moving_objects": masks}

    def lines(self):
        """(folder, frame, camera 2 or 3) of every test line."""
        out = []
        for line in self.filenames:
            folder, frame, side = (line.split() + ["l"])[:3]
            out.append((folder, int(frame), {"l": 2, "r": 3, "2": 2, "3": 3}[side]))
        return out

    def intrinsics(self):
        """K of each line's rectified camera: P_rect_0X of <data_path>/<date>/calib_cam_to_cam.txt,
        for an image of S_rect_0X (the ground truth's size)."""
        from datasets.kitti_utils import read_calib_file
        calibs = {}
        for folder, _, cam in self.lines():
            path = os.path.join(self.data_path, folder.split("/")[0], "calib_cam_to_cam.txt")
            if (path, cam) in calibs:
                continue
            if not os.path.isfile(path):
                raise Unavailable(f"no {path} (KITTI's calibration gives the camera matrix)")
            calib = read_calib_file(path)
            width, height = calib[f"S_rect_0{cam}"].astype(int)
            calibs[path, cam] = calib[f"P_rect_0{cam}"].reshape(3, 4)[:, :3], (int(height), int(width))
        return [calibs[os.path.join(self.data_path, folder.split("/")[0], "calib_cam_to_cam.txt"), cam]
                for folder, _, cam in self.lines()]

    def dense_path(self, folder, frame, cam):
        return os.path.join(self.data_path, folder, "depth_dense", f"image_0{cam}", "data", f"{frame:010d}.npy")

    def dense_ground_truth(self):
        """<data_path>/<drive>/depth_dense/image_0X/data/<frame>.npy (the synthetic world's
        rendered depth); KITTI itself has sparse lidar only."""
        paths = [self.dense_path(*line) for line in self.lines()]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise Unavailable(f"KITTI's lidar ground truth is sparse and the depth-edge metrics need a dense depth "
                              f"map per image ({len(missing)} missing, e.g. {missing[0]}; the synthetic world "
                              "writes them)")
        return LazyMaps(len(paths), lambda i: np.load(paths[i]))

    def dataset(self, height, width, frame_ids):
        from datasets import KITTIRAWDataset
        dataset = KITTIRAWDataset(self.data_path, self.filenames, height, width, list(frame_ids), 1,
                                  is_train=False, img_ext=".png" if self.png else ".jpg", split_file=self.test_file)
        dataset.load_depth = False
        return dataset

    def ground_truth(self):
        if self.name == "benchmark":
            return None
        if not os.path.isfile(self.gt_path):
            raise SystemExit(f"{self.gt_path} not found: run python export_gt_depth.py --data_path "
                             f"{self.data_path} --split {self.split_dir}")
        gts = np.load(self.gt_path, allow_pickle=True, encoding="latin1")["data"]
        if len(gts) != len(self.filenames):
            raise SystemExit(f"{self.gt_path} holds {len(gts)} depth maps but {self.test_file} has "
                             f"{len(self.filenames)} lines: re-export it for this split")
        return gts

    def without_ground_truth(self, disps, out_dir):
        """The benchmark split: KITTI-benchmark uint16 PNGs (depth x 256, stereo scale)."""
        out_dir = os.path.join(out_dir, "benchmark_predictions")
        os.makedirs(out_dir, exist_ok=True)
        for i, disp in enumerate(disps):
            depth = np.clip(STEREO_SCALE_FACTOR / cv2.resize(disp, BENCHMARK_SIZE), 0, 80)
            cv2.imwrite(os.path.join(out_dir, f"{i:010d}.png"), np.uint16(depth * 256))
        print(f"-> No ground truth for the benchmark split; predictions saved to {out_dir}")

    def external_name(self, args):
        # --eval_eigen_to_benchmark: eigen's predictions, re-indexed by external_predictions
        if args.eval_eigen_to_benchmark and self.name == "eigen_benchmark":
            return "eigen"
        return self.name

    def external_predictions(self, disps, args):
        if args.eval_eigen_to_benchmark and self.name == "eigen_benchmark":
            from options import resolve_split_dir
            ids = np.load(os.path.join(resolve_split_dir("benchmark"), "eigen_to_benchmark_ids.npy"))
            disps = disps[ids]
        return disps
