"""NYUv2 test set (654 labelled images, .h5) and protocol: image and GT cropped to rows
44:471, columns 40:601 (427 x 561), the prediction nearest-resized to the GT, 0 < GT < 10,
per-image median scaling, predictions capped at 10 (StructDepth's protocol)."""
import os

import cv2

from .protocols import (LazyMaps, Protocol, TestSet, dataset_intrinsics, register_protocol, register_test_set,
                        require_folder, split_file)

NYUV2 = register_protocol(Protocol("nyuv2", min_depth=0.0, max_depth=10.0, interpolation=cv2.INTER_NEAREST))


@register_test_set
class NYUv2Test(TestSet):
    name = "nyuv2"
    protocol = NYUV2
    single_image = True

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--nyuv2_path", metavar="DIR", help="NYUv2 root (nyu_test/*.h5): evaluate its 654 "
                            "test images")

    @classmethod
    def named_in(cls, args):
        return bool(args.nyuv2_path)

    @classmethod
    def from_args(cls, args):
        return [cls(args.nyuv2_path)] if args.nyuv2_path else []

    def __init__(self, root):
        from options import read_split_file
        self.root = require_folder(root, "--nyuv2_path", "the folder holding nyu_test/")
        self.test_file = split_file("nyuv2", root)
        self.filenames = read_split_file(self.test_file)

    def __len__(self):
        return len(self.filenames)

    def dataset(self, height, width, frame_ids):
        from datasets import NYUv2TestDataset
        return NYUv2TestDataset(self.root, self.filenames, height, width, list(frame_ids), 1, is_train=False,
                                split_file=self.test_file)

    def check_ready(self):
        missing = [f for f in self.filenames if not os.path.isfile(os.path.join(self.root, f))]
        if missing:
            raise SystemExit(f"NYUv2: {len(missing)} test files missing, e.g. {os.path.join(self.root, missing[0])}")

    def ground_truth(self):
        from datasets.nyu_dataset import TEST_CROP, read_h5
        top, bottom, left, right = TEST_CROP
        self.check_ready()
        return LazyMaps(len(self.filenames),
                        lambda i: read_h5(os.path.join(self.root, self.filenames[i]))[1][top:bottom, left:right])

    def intrinsics(self):
        """The colour camera's K for the evaluation crop (the ground truth's 427 x 561)."""
        from datasets.nyu_dataset import TEST_CROP
        top, bottom, left, right = TEST_CROP
        return dataset_intrinsics(self.dataset(192, 256, [0]), (bottom - top, right - left))

    def dense_ground_truth(self):
        """The labelled depth maps are dense (filled): the ground truth itself."""
        return self.ground_truth()
