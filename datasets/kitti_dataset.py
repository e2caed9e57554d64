"""KITTI raw, KITTI odometry and KITTI improved-depth datasets."""
import os

import cv2
import numpy as np
import PIL.Image as pil

from . import register_dataset
from .kitti_utils import generate_depth_map
from .mono_dataset import MonoDataset

# KITTI's average normalised intrinsics (principal point at the centre)
KITTI_K = np.array([[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)


class KITTIDataset(MonoDataset):
    def __init__(self, *args, **kwargs):
        self.K = KITTI_K.copy()
        super().__init__(*args, **kwargs)

    def check_depth(self):
        if not self.filenames:
            return False
        folder, frame_index, side = self.parse_line(0)
        return os.path.isfile(self.velodyne_path(folder, frame_index))

    def velodyne_path(self, folder, frame_index):
        return os.path.join(self.data_path, folder, "velodyne_points", "data", f"{int(frame_index):010d}.bin")

    def get_color(self, folder, frame_index, side, do_flip):
        color = self.load_image(self.get_image_path(folder, frame_index, side))
        if do_flip:
            color = color.transpose(pil.FLIP_LEFT_RIGHT)
        return color


@register_dataset("kitti")
class KITTIRAWDataset(KITTIDataset):
    """KITTI raw: <date>/<drive>/image_0{2,3}/data/%010d.<ext>, depth from velodyne."""

    def get_image_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, folder, f"image_0{self.side_map[side]}", "data",
                            f"{frame_index:010d}{self.img_ext}")

    def get_depth(self, folder, frame_index, side, do_flip):
        calib_dir = os.path.join(self.data_path, folder.split("/")[0])
        depth_gt = generate_depth_map(calib_dir, self.velodyne_path(folder, frame_index),
                                      self.side_map[side], convention="monodepth2_train")
        depth_gt = cv2.resize(depth_gt, self.full_res_shape, interpolation=cv2.INTER_NEAREST)
        return np.fliplr(depth_gt).copy() if do_flip else depth_gt


@register_dataset("kitti_odom")
class KITTIOdomDataset(KITTIDataset):
    """KITTI odometry: sequences/%02d/image_{2,3}/%06d.<ext>; no depth."""

    def check_depth(self):
        return False

    def get_image_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, "sequences", f"{int(folder):02d}",
                            f"image_{self.side_map[side]}", f"{frame_index:06d}{self.img_ext}")


@register_dataset("kitti_depth")
class KITTIDepthDataset(KITTIRAWDataset):
    """KITTI raw images with the depth benchmark's improved ground truth
    (<drive>/proj_depth/groundtruth/image_0{2,3}/%010d.png, uint16 depth x 256)."""

    eval_protocol = "kitti_improved"

    def depth_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, folder, "proj_depth", "groundtruth",
                            f"image_0{self.side_map[side]}", f"{int(frame_index):010d}.png")

    def check_depth(self):
        if not self.filenames:
            return False
        folder, frame_index, side = self.parse_line(0)
        return os.path.isfile(self.depth_path(folder, frame_index, side or "l"))

    def get_depth(self, folder, frame_index, side, do_flip):
        path = self.depth_path(folder, frame_index, side)
        png = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if png is None:
            raise FileNotFoundError(f"improved ground truth not found: {path}")
        depth_gt = png.astype(np.float32) / 256
        depth_gt = cv2.resize(depth_gt, self.full_res_shape, interpolation=cv2.INTER_NEAREST)
        return np.fliplr(depth_gt).copy() if do_flip else depth_gt
