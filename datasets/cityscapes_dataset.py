"""Cityscapes: the preprocessed training triplets (prepare_cityscapes.py) and the raw test images.

Training (`--dataset cityscapes_preprocessed --data_path <prepare_cityscapes.py's --dump_root>`):
split lines `<city> <city>_<seq>_<frame>` name `<city>/<city>_<seq>_<frame>.png`, three
1024 x 384 frames stacked vertically (top to bottom: frame ids -1, 0, +1, i.e. the sequence's
frames -2, 0, +2; a file wider than tall, ManyDepth's 3072 x 384 side by side, is read
left to right), and `<city>/<city>_<seq>_<frame>_cam.txt` (`fx,0.,cx,0.,fy,cy,0.,0.,1.` in
pixels at 1024 x 512, before the bottom 25 % was cropped). Cropping the bottom moves no pixel,
so the pixel K is the K of the 1024 x 384 frame: it is normalised by the frame's size,
(1024, 384) for prepare_cityscapes.py's output. Each item has its own K; the flip
augmentation mirrors its principal point (cx -> 1 - cx).

Test (evaluation/cityscapes.py): `leftImg8bit_sequence/test/<city>/<name>_leftImg8bit.png`,
the top 75 % of the image (the bottom shows the ego car); K from
`camera/test/<city>/<name>_camera.json` normalised by (2048, 768).
"""
import json
import os

import numpy as np
from PIL import Image

from . import register_dataset
from .mono_dataset import MonoDataset

PART = "#"  # <stacked image path>#<frame id>: one frame of a triplet, as an image path
TRIPLET_IDS = (-1, 0, 1)  # top to bottom
TEST_KEEP = 0.75  # the top 75 % of a raw test image is used (the ground truth's rows too)
RAW_SIZE = (2048, 1024)  # (W, H) of Cityscapes' images: the pixel unit of camera/*.json
SEQUENCE_GAP = 2  # frame id +-1 is the sequence's frame +-2 (prepare_cityscapes.py's gap)


def read_cam_txt(path):
    """fx, fy, cx, cy from a prepare_cityscapes.py `_cam.txt` (a flattened 3 x 3 K)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"intrinsics not found: {path}")
    with open(path) as f:
        values = [float(v) for v in f.read().replace("\n", ",").split(",") if v.strip()]
    if len(values) != 9:
        raise ValueError(f"{path}: expected 9 comma-separated numbers (fx,0.,cx,0.,fy,cy,0.,0.,1.)")
    return values[0], values[4], values[2], values[5]


def read_camera_json(path):
    """fx, fy, u0, v0 (pixels of the 2048 x 1024 image) from a Cityscapes camera file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"camera file not found: {path}")
    with open(path) as f:
        intrinsic = json.load(f)["intrinsic"]
    return intrinsic["fx"], intrinsic["fy"], intrinsic["u0"], intrinsic["v0"]


def triplet_frame_size(path, width, height):
    """(W, H) of one frame of a triplet file: stacked vertically (taller than wide), else
    side by side."""
    vertical = height > width
    if (height if vertical else width) % 3:
        raise ValueError(f"{path}: {width} x {height} is not three frames stacked "
                         f"{'vertically' if vertical else 'side by side'}")
    return (width, height // 3) if vertical else (width // 3, height)


def normalised_K(fx, fy, cx, cy, width, height):
    return np.array([[fx / width, 0, cx / width, 0], [0, fy / height, cy / height, 0],
                     [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)


class _FrameFromPath(MonoDataset):
    """Frames named by image paths (get_image_path) that load_image turns into the frame (a
    part of a stacked image, a crop, ...), so that the default and the fast input path read
    the same pixels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.input_path == "encoded":
            raise ValueError(f"{type(self).__name__}: --decode_on_device reads whole image files; this "
                             "dataset crops frames out of them (use --fast_loader without it)")
        self._last = (None, None)  # one decoded file: every frame of an item reads the same one

    def read_file(self, path):
        last = self._last  # read once: the cache-filling threads share this dataset
        if last[0] != path:
            last = (path, super().load_image(path))
            self._last = last
        return last[1]

    def get_color(self, folder, frame_index, side, do_flip):
        color = self.load_image(self.get_image_path(folder, frame_index, side))
        return color.transpose(Image.FLIP_LEFT_RIGHT) if do_flip else color

    def check_depth(self):
        return False


@register_dataset("cityscapes_preprocessed")
class CityscapesPreprocessedDataset(_FrameFromPath):
    """prepare_cityscapes.py's triplets; frame ids -1, 0, 1 (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        unknown = [f for f in self.frame_ids if f not in TRIPLET_IDS]
        if unknown:
            raise ValueError(f"cityscapes_preprocessed: frame ids {unknown} are not in a triplet; use "
                             f"--frame_ids drawn from {list(TRIPLET_IDS)}")

    def parse_line(self, index):
        line = self.filenames[index].split()
        if len(line) != 2:
            raise ValueError(f"{self.split_file or 'split'} line {index + 1}: expected '<city> "
                             f"<city>_<seq>_<frame>', got {self.filenames[index]!r}")
        city, name = line
        return f"{city}/{name}", 0, None

    def stacked_path(self, folder):
        """<data_path>/<city>/<name><ext>: the split's extension (--png or .jpg), else the
        other one where only that exists (prepare_cityscapes.py writes .png)."""
        stem = os.path.join(self.data_path, folder)
        path = stem + self.img_ext
        if not os.path.isfile(path):
            other = stem + (".jpg" if self.img_ext == ".png" else ".png")
            if os.path.isfile(other):
                return other
        return path

    def get_image_path(self, folder, frame_index, side):
        if frame_index not in TRIPLET_IDS:
            raise ValueError(f"frame id {frame_index} is not in a triplet {TRIPLET_IDS}")
        return f"{self.stacked_path(folder)}{PART}{frame_index}"

    def load_image(self, path):
        stacked, _, part = path.rpartition(PART)
        if not stacked or part not in {str(f) for f in TRIPLET_IDS}:
            return super().load_image(path)
        image = self.read_file(stacked)
        w, h = triplet_frame_size(stacked, *image.size)
        i = TRIPLET_IDS.index(int(part))
        left, top = (0, i * h) if image.size[1] > image.size[0] else (i * w, 0)
        return image.crop((left, top, left + w, top + h))

    def frame_size(self, folder):
        """(W, H) of one frame of the triplet (the file's header only)."""
        path = self.stacked_path(folder)
        if not os.path.isfile(path):
            super().load_image(path)  # the usual "image not found" error
        with Image.open(path) as image:
            return triplet_frame_size(path, *image.size)

    def get_intrinsics(self, folder):
        fx, fy, cx, cy = read_cam_txt(os.path.join(self.data_path, folder + "_cam.txt"))
        return normalised_K(fx, fy, cx, cy, *self.frame_size(folder))


class CityscapesTestDataset(_FrameFromPath):
    """Raw test images (lines `<city> <city>_<seq>_<frame>`), the top 75 % of each; frame id f
    is the sequence's frame + 2 f."""

    def parse_line(self, index):
        line = self.filenames[index].split()
        if len(line) != 2:
            raise ValueError(f"{self.split_file or 'split'} line {index + 1}: expected '<city> "
                             f"<city>_<seq>_<frame>', got {self.filenames[index]!r}")
        return "/".join(line), 0, None

    def get_image_path(self, folder, frame_index, side):
        city, name = folder.split("/")
        city_, seq, frame = name.split("_")
        name = f"{city_}_{seq}_{int(frame) + SEQUENCE_GAP * frame_index:06d}"
        return os.path.join(self.data_path, "leftImg8bit_sequence", "test", city, name + "_leftImg8bit.png")

    def load_image(self, path):
        image = super().load_image(path)
        width, height = image.size
        return image.crop((0, 0, width, int(height * TEST_KEEP)))

    def get_intrinsics(self, folder):
        city, name = folder.split("/")
        fx, fy, u0, v0 = read_camera_json(os.path.join(self.data_path, "camera", "test", city,
                                                       name + "_camera.json"))
        return normalised_K(fx, fy, u0, v0, RAW_SIZE[0], RAW_SIZE[1] * TEST_KEEP)
