"""Datasets, found by name (--dataset) through DATASETS, filled with @register_dataset.

A dataset is a MonoDataset subclass (mono_dataset.py) that says where images, depth and
intrinsics come from; items, augmentations (augment.py) and both input paths are shared.
The synthetic KITTI-format world is a tool of its own (the synthetic_world package;
`python -m datasets.synthetic_world` is kept as an alias).
"""
DATASETS = {}


def register_dataset(name):
    def decorate(cls):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = cls
        return cls
    return decorate


from .kitti_dataset import KITTIDepthDataset, KITTIOdomDataset, KITTIRAWDataset  # noqa: E402,F401
from .cityscapes_dataset import CityscapesPreprocessedDataset, CityscapesTestDataset  # noqa: E402,F401
from .nyu_dataset import NYUv2Dataset, NYUv2TestDataset  # noqa: E402,F401
from .make3d_dataset import Make3DTestDataset  # noqa: E402,F401
from .kitti_odom_mf import KITTIOdomMultiFrameDataset  # noqa: E402,F401
