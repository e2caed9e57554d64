"""Make3D test set (134 images) and protocol: GT Position3DGrid[:, :, 3] rows 17:38 (21 x 305),
the prediction nearest-resized to it, 0 < GT < 70, per-image median scaling, predictions
capped at 70; abs_rel, sq_rel, rmse and rmse_log in log10 units (monodepth's Make3D
protocol, which the papers report)."""
import os

import cv2

from .protocols import (LazyMaps, Protocol, TestSet, Unavailable, register_protocol, register_test_set,
                        require_folder, split_file)

MAKE3D = register_protocol(Protocol("make3d", min_depth=0.0, max_depth=70.0, log10=True,
                                    interpolation=cv2.INTER_NEAREST,
                                    metric_names=("abs_rel", "sq_rel", "rmse", "rmse_log")))


@register_test_set
class Make3DTest(TestSet):
    name = "make3d"
    protocol = MAKE3D
    single_image = True

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--make3d_path", metavar="DIR",
                            help="Make3D root (Test134/, Gridlaserdata/): evaluate its 134 test images")

    @classmethod
    def named_in(cls, args):
        return bool(args.make3d_path)

    @classmethod
    def from_args(cls, args):
        return [cls(args.make3d_path)] if args.make3d_path else []

    def __init__(self, root):
        from options import read_split_file
        self.root = require_folder(root, "--make3d_path", "the Make3D test data: Test134/ and Gridlaserdata/")
        self.test_file = split_file("make3d", root)
        self.ids = read_split_file(self.test_file)

    def __len__(self):
        return len(self.ids)

    def dataset(self, height, width, frame_ids):
        from datasets import Make3DTestDataset
        return Make3DTestDataset(self.root, self.ids, height, width, list(frame_ids), 1, is_train=False,
                                 split_file=self.test_file)

    def check_ready(self):
        from datasets.make3d_dataset import depth_path
        missing = [i for i in self.ids if not os.path.isfile(depth_path(self.root, i))]
        if missing:
            raise SystemExit(f"Make3D: {len(missing)} ground-truth files missing, e.g. {depth_path(self.root, missing[0])} "
                             f"(extract Test134Depth into {self.root})")

    def ground_truth(self):
        from datasets.make3d_dataset import depth_path, read_depth_grid
        self.check_ready()
        return LazyMaps(len(self.ids), lambda i: read_depth_grid(depth_path(self.root, self.ids[i])))

    def intrinsics(self):
        raise Unavailable("Make3D publishes no camera intrinsics")

    def dense_ground_truth(self):
        raise Unavailable("Make3D's ground truth is a 21 x 305 laser grid")
