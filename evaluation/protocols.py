"""Evaluation protocols (how a prediction is scored against ground truth) and test sets
(which images, which ground truth, which protocol).

A Protocol scores one image: the predicted inverse depth is resized to the ground truth's
size, inverted, masked (depth range or GT > 0, crop, an optional extra mask such as a
moving-object mask), scaled (per-image median, or a fixed factor such as x5.4 for stereo
models, or 1 for metric methods), clamped to the depth range, and compared.

A test set (registered with @register_test_set) adds its own evaluate_depth.py options,
says from them whether it is wanted, and gives the dataset of its test images and the
ground truth. evaluate_depth.py loops over every wanted test set, in registration order.
"""
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .metrics import DEPTH_METRIC_NAMES, compute_depth_errors

PROTOCOLS = {}
TEST_SETS = {}


def register_protocol(protocol):
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def register_test_set(cls):
    TEST_SETS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Protocol:
    name: str
    min_depth: float = 1e-3  # valid GT above this; predictions clamped to [min, max]
    max_depth: float = 80.0
    crop: tuple = None  # (top, bottom, left, right) as fractions of the GT size
    gt_positive_only: bool = False  # mask GT > 0 only (improved GT), not min < GT < max
    log10: bool = False  # rmse_log in log10 units
    interpolation: int = cv2.INTER_LINEAR  # prediction -> GT size
    align_corners: bool = False  # bilinear with align_corners=True (torch) instead of cv2's resize
    metric_names: tuple = DEPTH_METRIC_NAMES  # the metrics reported (a subset, in this order)

    def crop_box(self, height, width):
        """(top, bottom, left, right) in pixels of a height x width ground truth."""
        if self.crop is None:
            return 0, height, 0, width
        top, bottom, left, right = self.crop
        return int(top * height), int(bottom * height), int(left * width), int(right * width)

    def crop_mask(self, height, width):
        mask = np.zeros((height, width), bool)
        top, bottom, left, right = self.crop_box(height, width)
        mask[top:bottom, left:right] = True
        return mask

    def resize(self, disp, height, width):
        """The predicted inverse depth at the ground truth's size."""
        disp = np.asarray(disp, np.float32)
        if disp.shape == (height, width):
            return disp
        if self.align_corners:
            x = torch.from_numpy(np.ascontiguousarray(disp))[None, None]
            return F.interpolate(x, (height, width), mode="bilinear", align_corners=True)[0, 0].numpy()
        if self.interpolation == cv2.INTER_NEAREST:  # torch's nearest, as the reference evaluations
            x = torch.from_numpy(np.ascontiguousarray(disp))[None, None]
            return F.interpolate(x, (height, width), mode="nearest")[0, 0].numpy()
        return cv2.resize(disp, (width, height), interpolation=self.interpolation)

    def mask(self, gt, extra_mask=None):
        if self.gt_positive_only:
            mask = gt > 0
        else:
            mask = (gt > self.min_depth) & (gt < self.max_depth)
        mask &= self.crop_mask(*gt.shape[:2])
        if extra_mask is not None:
            mask &= extra_mask.astype(bool)
        return mask

    def prepare(self, disp, gt, scale_factor=1.0, median_scaling=True, extra_mask=None, ratio=None):
        """disp: h x w inverse depth (any size), gt: H x W depth -> (pred, mask, ratio): the
        predicted depth at the ground truth's size, times scale_factor and (median scaling)
        the median ratio over the valid pixels (or the given `ratio`), clamped to the depth
        range; the valid pixels; the ratio applied (None without median scaling). pred is
        None when no pixel is valid."""
        gh, gw = gt.shape[:2]
        disp = self.resize(disp, gh, gw)
        pred = 1 / np.maximum(disp, 1e-12) * scale_factor
        mask = self.mask(gt, extra_mask)
        if not mask.any():
            return None, mask, None
        if median_scaling:
            ratio = np.median(gt[mask]) / np.median(pred[mask]) if ratio is None else ratio
            pred = pred * ratio
        else:
            ratio = None
        return np.clip(pred, self.min_depth, self.max_depth), mask, ratio

    def score(self, disp, gt, scale_factor=1.0, median_scaling=True, extra_mask=None, ratio=None):
        """disp: h x w inverse depth (any size), gt: H x W depth. -> (the errors named by
        metric_names, or None when no pixel is valid; the median ratio, or None). ratio: a
        median ratio to apply instead of computing one (a region scored with its whole
        image's scale)."""
        pred, mask, ratio = self.prepare(disp, gt, scale_factor, median_scaling, extra_mask, ratio)
        if pred is None:
            return None, None
        p, g = pred[mask], gt[mask]
        errors = dict(zip(DEPTH_METRIC_NAMES, compute_depth_errors(g.astype(np.float64), p.astype(np.float64),
                                                                   self.log10)))
        return [float(errors[n]) for n in self.metric_names], ratio

    def evaluate(self, disps, gts, scale_factor=1.0, median_scaling=True, extra_masks=None, image_ratios=None):
        """Mean metrics over images (an image without a valid pixel is skipped), and the
        median ratios. image_ratios: a list that receives each image's ratio (None where
        skipped) or, when already filled, the ratios to apply (regions: the whole image's)."""
        errors, ratios = [], []
        given = image_ratios is not None and len(image_ratios) == len(gts)
        for i, gt in enumerate(gts):
            e, ratio = self.score(disps[i], gt, scale_factor, median_scaling,
                                  None if extra_masks is None else extra_masks[i],
                                  image_ratios[i] if given else None)
            if image_ratios is not None and not given:
                image_ratios.append(ratio)
            if e is None:
                continue
            errors.append(e)
            if ratio is not None:
                ratios.append(ratio)
        if not errors:
            raise SystemExit(f"{self.name}: no valid ground-truth pixel in any image")
        return dict(zip(self.metric_names, np.array(errors).mean(0).tolist())), np.array(ratios)


class LazyMaps:
    """A read-only sequence of n ground-truth maps loaded one at a time by load(i), so that
    large test sets (1,525 Cityscapes maps of 8 MB) are never all in memory."""

    def __init__(self, n, load):
        self.n, self.load = n, load

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.load(i)

    def __iter__(self):
        return (self.load(i) for i in range(self.n))


class Unavailable(Exception):
    """A metric family that a test set cannot give: the message says why (e.g. no camera
    intrinsics, sparse ground truth only)."""


def dataset_intrinsics(dataset, size):
    """LazyMaps of (K, size) for the items of a MonoDataset whose normalised K (get_intrinsics)
    refers to an image of `size` (height, width)."""
    height, width = size

    def load(i):
        K = np.array(dataset.get_intrinsics(dataset.parse_line(i)[0]), np.float64)[:3, :3]
        K[0] *= width
        K[1] *= height
        return K, (height, width)
    return LazyMaps(len(dataset), load)


def split_file(name, data_path):
    """<data_path>/splits/<name>/test_files.txt when the data folder brings its own list (the
    synthetic world's do), else the project's splits/<name>/test_files.txt."""
    from options import SPLITS_DIR
    own = os.path.join(data_path, "splits", name, "test_files.txt")
    return own if os.path.isfile(own) else os.path.join(SPLITS_DIR, name, "test_files.txt")


def require_folder(path, option, what):
    if not os.path.isdir(path):
        raise SystemExit(f"{option} {path}: no such folder ({what})")
    return path


class TestSet:
    """A test set for evaluate_depth.py. Subclasses set `name` and `protocol`."""
    name = None
    protocol = None
    stereo_scale_factor = None  # --eval_stereo: metres per training unit of stereo models

    @classmethod
    def add_options(cls, parser):
        """evaluate_depth.py options of this test set."""

    @classmethod
    def from_args(cls, args):
        """The instances the command asks for (none when not wanted)."""
        return []

    @classmethod
    def named_in(cls, args):
        """Whether the command names this test set through an option of its own (e.g. its
        data path); a test set evaluated by default only when nothing else is named uses it."""
        return False

    single_image = False  # its images have no neighbouring frames (methods reading f != 0 cannot run)

    def dataset(self, height, width, frame_ids):
        """Test items with ("color", f, 0) for f in frame_ids (and K), not augmented."""
        raise NotImplementedError

    def use_dataset_options(self, options):
        """The dataset keyword arguments of the model being evaluated (its method's
        dataset_options): a set whose items come from the same dataset class adopts the ones
        that change how frames and ground truth are read; by default none."""

    def ground_truth(self):
        """A list of H x W depth maps, or None when the set has no public ground truth."""
        raise NotImplementedError

    def check_ready(self):
        """Raise SystemExit naming what is missing (e.g. ground-truth files) before any
        prediction runs."""

    def extra_masks(self):
        return None

    def intrinsics(self):
        """A sequence of (K, (height, width)), one per image: a 3 x 3 camera matrix in pixels
        of an image of that size (the point-cloud metrics scale it to the ground truth's size
        and back-project with it). Raises Unavailable when the test set has none."""
        raise Unavailable(f"{self.name} gives no camera intrinsics")

    def dense_ground_truth(self):
        """A sequence of dense H x W depth maps, one per image (0 where unknown), from which
        the depth-edge metrics take the ground-truth edges. Raises Unavailable when the test
        set has no dense ground truth."""
        raise Unavailable(f"{self.name} has no dense ground truth")

    def region_masks(self):
        """{region name: a list of H x W boolean masks, one per image} scored in tables of their
        own besides the whole image (e.g. moving objects); {} when none is asked for."""
        return {}

    def without_ground_truth(self, disps, out_dir):
        """What to do with predictions when ground_truth() is None (e.g. benchmark files)."""
        raise NotImplementedError

    def external_name(self, args):
        """The test set whose saved predictions (disps_<name>_split.npy) --ext_disp_to_eval
        reads for this one."""
        return self.name

    def external_predictions(self, disps, args):
        """Predictions loaded with --ext_disp_to_eval, re-indexed if the set needs it."""
        return disps
