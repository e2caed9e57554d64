"""Cityscapes test set (1,525 images of leftImg8bit_sequence/test) and protocol (ManyDepth's):
the top 75 % of the image is the input; the GT (gt_depths/{i:03d}_depth.npy, 1024 x 2048,
from disparity) keeps its top 75 % (768 x 2048); the prediction is resized bilinearly with
align_corners=True to 768 x 2048; scored inside rows 256:768, columns 192:1856 (512 x 1664),
1e-3 < GT < 80, per-image median scaling, predictions clamped to [1e-3, 80].

The list of test images is splits/cityscapes/test_files.txt (its order is the order of the
GT files); a data folder with its own splits/cityscapes/test_files.txt (the synthetic
world's) uses that one. The GT is looked for in gt_depths/ beside the list, then in
<cityscapes_path>/gt_depths/."""
import os

import numpy as np

from .protocols import (LazyMaps, Protocol, TestSet, Unavailable, dataset_intrinsics, register_protocol,
                        register_test_set, require_folder, split_file)

GT_KEEP = 0.75  # top rows of the GT (and of the image) that are evaluated
# rows 256:768 and columns 192:1856 of the 768 x 2048 GT, as fractions
CITYSCAPES = register_protocol(Protocol("cityscapes", crop=(256 / 768, 1.0, 192 / 2048, 1856 / 2048),
                                        align_corners=True))


@register_test_set
class CityscapesTest(TestSet):
    name = "cityscapes"
    protocol = CITYSCAPES

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--cityscapes_path", metavar="DIR", help="Cityscapes root (leftImg8bit_sequence/, "
                            "camera/): evaluate its 1,525 test images")

    @classmethod
    def named_in(cls, args):
        return bool(args.cityscapes_path)

    @classmethod
    def from_args(cls, args):
        return [cls(args.cityscapes_path)] if args.cityscapes_path else []

    def __init__(self, root):
        from options import read_split_file
        self.root = require_folder(root, "--cityscapes_path", "the folder holding leftImg8bit_sequence/test")
        self.test_file = split_file("cityscapes", root)
        self.filenames = read_split_file(self.test_file)

    def __len__(self):
        return len(self.filenames)

    def dataset(self, height, width, frame_ids):
        from datasets import CityscapesTestDataset
        return CityscapesTestDataset(self.root, self.filenames, height, width, list(frame_ids), 1, is_train=False,
                                     split_file=self.test_file)

    def intrinsics(self):
        """Each image's camera file (camera/test/<city>/*_camera.json), for the top 75 % that
        the ground truth keeps (768 x 2048)."""
        from datasets.cityscapes_dataset import RAW_SIZE
        return dataset_intrinsics(self.dataset(192, 512, [0]), (int(RAW_SIZE[1] * GT_KEEP), RAW_SIZE[0]))

    def dense_ground_truth(self):
        raise Unavailable("Cityscapes' ground truth comes from stereo disparity (holes, noise at depth edges)")

    def gt_dir(self):
        candidates = [os.path.join(os.path.dirname(self.test_file), "gt_depths"), os.path.join(self.root, "gt_depths")]
        for path in candidates:
            if os.path.isfile(os.path.join(path, "000_depth.npy")):
                return path
        raise SystemExit(f"Cityscapes ground truth (000_depth.npy ...) not found in {' or '.join(candidates)}: "
                         "download ManyDepth's gt_depths.zip and extract it into one of them")

    def check_ready(self):
        gt_dir = self.gt_dir()
        missing = [i for i in range(len(self)) if not os.path.isfile(os.path.join(gt_dir, f"{i:03d}_depth.npy"))]
        if missing:
            raise SystemExit(f"Cityscapes: {len(missing)} of the {len(self)} ground-truth maps are missing from "
                             f"{gt_dir}, e.g. {missing[0]:03d}_depth.npy")

    def ground_truth(self):
        self.check_ready()
        gt_dir = self.gt_dir()

        def load(i):
            path = os.path.join(gt_dir, f"{i:03d}_depth.npy")
            if not os.path.isfile(path):
                raise SystemExit(f"{path} not found ({len(self)} lines in {self.test_file})")
            gt = np.load(path).astype(np.float32)
            return gt[:int(gt.shape[0] * GT_KEEP)]
        return LazyMaps(len(self.filenames), load)
