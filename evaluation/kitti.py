"""KITTI test sets and protocols (monodepth2's): eigen (velodyne GT, Garg/Eigen crop,
1e-3 < GT < 80), eigen_benchmark (improved GT, GT > 0), benchmark (no public GT: writes
the benchmark's PNG files), and any split folder with test_files.txt (eigen's protocol)."""
import os

import cv2
import numpy as np

from .protocols import Protocol, TestSet, register_protocol, register_test_set

STEREO_SCALE_FACTOR = 5.4  # KITTI's 0.54 m baseline / the 0.1 training units of stereo_T
# Garg/Eigen crop as fractions of the ground-truth size (153:371, 44:1197 at 375 x 1242)
EIGEN_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
BENCHMARK_SIZE = (1216, 352)  # (W, H) of the depth benchmark's files

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
        g.add_argument("--eval_split", nargs="+", default=["eigen"],
                       help="one or more of eigen, eigen_benchmark, benchmark, a split under splits/ or "
                            "<data_path>/splits/, or a split folder; none: skip KITTI")
        g.add_argument("--data_path", default=os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "kitti_data"), help="KITTI raw root (images; GT is in the split folder)")
        g.add_argument("--png", action="store_true", help="read .png images (default .jpg)")
        g.add_argument("--eval_eigen_to_benchmark", action="store_true",
                       help="--ext_disp_to_eval holds eigen predictions: evaluate them on eigen_benchmark")

    @classmethod
    def from_args(cls, args):
        return [cls(split, args.data_path, args.png) for split in args.eval_split if split != "none"]

    def __init__(self, split, data_path, png=False):
        from options import read_split_file, resolve_split_dir
        self.split_dir = resolve_split_dir(split, data_path)
        self.name = os.path.basename(os.path.normpath(self.split_dir))
        self.data_path, self.png = data_path, png
        self.test_file = os.path.join(self.split_dir, "test_files.txt")
        self.filenames = read_split_file(self.test_file)
        self.protocol = KITTI_IMPROVED if self.name == "eigen_benchmark" else KITTI_EIGEN
        self.gt_path = os.path.join(self.split_dir, "gt_depths.npz")

    def __len__(self):
        return len(self.filenames)

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

    def external_predictions(self, disps, args):
        if args.eval_eigen_to_benchmark and self.name == "eigen_benchmark":
            from options import resolve_split_dir
            ids = np.load(os.path.join(resolve_split_dir("benchmark"), "eigen_to_benchmark_ids.npy"))
            disps = disps[ids]
        return disps
