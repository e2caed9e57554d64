"""Make3D test images (134, test only; evaluation/make3d.py scores them).

Lines of splits/make3d/test_files.txt are image ids: `Test134/img-<id>.jpg` (1704 x 2272)
is cropped to the box (0, 710, 1704, 1562), 1704 x 852 around the middle rows (the rows
the laser grid's rows 17:38 cover), then resized to the network's size, aspect ratio not
kept (the protocol every paper reports with). The ground truth is
`Gridlaserdata/depth_sph_corr-<id>.mat`, `Position3DGrid[:, :, 3]` (55 x 305), rows 17:38.
"""
import os

import numpy as np

from .cityscapes_dataset import _FrameFromPath

IMAGE_CROP = (0, 710, 1704, 1562)  # PIL box (left, upper, right, lower) of the 1704 x 2272 image
GRID_ROWS = (17, 38)  # the 21 of the 55 laser-grid rows that the crop covers
# Make3D publishes no camera intrinsics; a centred principal point (for methods that ask for K)
NOMINAL_K = np.array([[0.58, 0, 0.5, 0], [0, 1.16, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)


def image_path(root, image_id):
    return os.path.join(root, "Test134", f"img-{image_id}.jpg")


def depth_path(root, image_id):
    return os.path.join(root, "Gridlaserdata", f"depth_sph_corr-{image_id}.mat")


def read_depth_grid(path):
    """The 21 x 305 ground truth (metres) of a Make3D .mat file."""
    import scipy.io
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Make3D ground truth not found: {path}")
    grid = scipy.io.loadmat(path)["Position3DGrid"]
    if grid.ndim != 3 or grid.shape[2] < 4 or grid.shape[0] < GRID_ROWS[1]:
        raise ValueError(f"{path}: Position3DGrid is {grid.shape}, expected 55 x 305 x 4")
    return np.asarray(grid[GRID_ROWS[0]:GRID_ROWS[1], :, 3], np.float32)


class Make3DTestDataset(_FrameFromPath):
    """Make3D test images by id, cropped (see the module docstring); single frames."""

    def parse_line(self, index):
        return self.filenames[index].strip(), 0, None

    def get_image_path(self, folder, frame_index, side):
        if frame_index != 0:
            raise ValueError("the Make3D test images are single frames (frame id 0 only)")
        return image_path(self.data_path, folder)

    def load_image(self, path):
        image = super().load_image(path)
        if image.size[0] != IMAGE_CROP[2] or image.size[1] < IMAGE_CROP[3]:
            raise ValueError(f"{path}: {image.size[0]} x {image.size[1]}, expected a 1704 x 2272 Make3D image")
        return image.crop(IMAGE_CROP)

    def get_intrinsics(self, folder):
        return NOMINAL_K.copy()
