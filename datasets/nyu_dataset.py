"""NYU Depth v2: StructDepth-layout training lists and the 654 labelled test images (.h5).

Training (`--dataset nyuv2 --split <folder with train_files.txt and val_files.txt>`, paths
relative to --data_path): one item per line of 9 image paths, the frames
[0, -4, -3, -2, -1, 1, 2, 3, 4] in that order (--frame_ids picks any of them, 0 first).
Every 640 x 480 frame is undistorted with the Kinect colour camera's calibration
(cv2.undistort), then 16 pixels are cropped on every side: 608 x 448, K below. Train and
evaluate with --max_depth 10.

Test (evaluation/nyuv2.py): `nyu_test/*.h5` with `rgb` (3 x 480 x 640 uint8) and `depth`
(480 x 640, metres); the image and the ground truth are cropped to rows 44:471, columns
40:601 (427 x 561), the valid region of the labelled set, and the image is resized to the
network's size.
"""
import os

import cv2
import numpy as np
from PIL import Image

from . import register_dataset
from .cityscapes_dataset import _FrameFromPath

LINE_ORDER = (0, -4, -3, -2, -1, 1, 2, 3, 4)  # frame id of each path of a training line
RAW_SIZE = (640, 480)  # (W, H) of the Kinect colour frames
CAMERA = np.array([[5.1885790117450188e+02, 0, 3.2558244941119034e+02],
                   [0, 5.1946961112127485e+02, 2.5373616633400465e+02], [0, 0, 1]])
DISTORTION = np.array([2.0796615318809061e-01, -5.8613825163911781e-01, 7.2231363135888329e-04,
                       1.0479627195765181e-03, 4.9856986684705107e-01])  # k1, k2, p1, p2, k3
BORDER = 16  # pixels cropped on every side after undistortion
TRAIN_SIZE = (RAW_SIZE[0] - 2 * BORDER, RAW_SIZE[1] - 2 * BORDER)  # 608 x 448
TEST_CROP = (44, 471, 40, 601)  # rows, columns of the labelled images with valid depth: 427 x 561


def intrinsics(crop_left, crop_top, width, height):
    """K of the colour camera after cropping (left, top) pixels, normalised by (width, height)."""
    fx, fy, cx, cy = CAMERA[0, 0], CAMERA[1, 1], CAMERA[0, 2], CAMERA[1, 2]
    return np.array([[fx / width, 0, (cx - crop_left) / width, 0], [0, fy / height, (cy - crop_top) / height, 0],
                     [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)


TRAIN_K = intrinsics(BORDER, BORDER, *TRAIN_SIZE)


def undistort_and_crop(rgb):
    """A raw 640 x 480 frame (H x W x 3 uint8) -> the undistorted 608 x 448 training frame."""
    if rgb.shape[1::-1] != RAW_SIZE:
        raise ValueError(f"expected a {RAW_SIZE[0]} x {RAW_SIZE[1]} Kinect frame, got {rgb.shape[1]} x {rgb.shape[0]}")
    return cv2.undistort(rgb, CAMERA, DISTORTION)[BORDER:-BORDER, BORDER:-BORDER]


def read_h5(path):
    """(rgb H x W x 3 uint8, depth H x W float32 metres) of a labelled test file."""
    import h5py
    if not os.path.isfile(path):
        raise FileNotFoundError(f"test file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            return np.transpose(np.asarray(f["rgb"]), (1, 2, 0)), np.asarray(f["depth"], np.float32)
    except (OSError, KeyError) as e:
        raise OSError(f"cannot read {path} ({e}); expected keys rgb (3 x H x W) and depth (H x W)") from None


@register_dataset("nyuv2")
class NYUv2Dataset(_FrameFromPath):
    """StructDepth-layout training lines (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        unknown = [f for f in self.frame_ids if f not in LINE_ORDER]
        if unknown:
            raise ValueError(f"nyuv2: frame ids {unknown} are not in a training line; use --frame_ids drawn "
                             f"from {list(LINE_ORDER)}")

    def parse_line(self, index):
        paths = self.filenames[index].split()
        if len(paths) != len(LINE_ORDER):
            raise ValueError(f"{self.split_file or 'split'} line {index + 1}: expected {len(LINE_ORDER)} image "
                             f"paths (frames {list(LINE_ORDER)}), got {len(paths)}")
        return " ".join(paths), 0, None

    def get_image_path(self, folder, frame_index, side):
        if frame_index not in LINE_ORDER:
            raise ValueError(f"frame id {frame_index} is not in a training line {LINE_ORDER}")
        return os.path.join(self.data_path, folder.split()[LINE_ORDER.index(frame_index)])

    def load_image(self, path):
        return Image.fromarray(undistort_and_crop(np.asarray(super().load_image(path))))

    def get_intrinsics(self, folder):
        return TRAIN_K.copy()


class NYUv2TestDataset(_FrameFromPath):
    """The labelled test images (lines: .h5 paths relative to the data folder), cropped."""

    def parse_line(self, index):
        return self.filenames[index].strip(), 0, None

    def get_image_path(self, folder, frame_index, side):
        if frame_index != 0:
            raise ValueError("the NYUv2 test images are single frames (frame id 0 only)")
        return os.path.join(self.data_path, folder)

    def load_image(self, path):
        top, bottom, left, right = TEST_CROP
        return Image.fromarray(np.ascontiguousarray(read_h5(path)[0][top:bottom, left:right]))

    def get_intrinsics(self, folder):
        top, bottom, left, right = TEST_CROP
        return intrinsics(left, top, right - left, bottom - top)
