"""Evaluation protocols (how a prediction is scored against ground truth) and test sets
(which images, which ground truth, which protocol).

A Protocol scores one image: the predicted inverse depth is resized to the ground truth's
size, inverted, masked (depth range or GT > 0, crop, an optional extra mask such as a
moving-object mask), scaled (per-image median, or a fixed factor such as x5.4 for stereo
models, or 1 for metric methods), clamped to the depth range, and compared.

A test set (registered with @register_test_set) adds its own evaluate_depth.py options,
says from them whether it is wanted, and gives the dataset of its test images and the
ground truth. evaluate_depth.py loops over every wanted test set.
"""
from dataclasses import dataclass

import cv2
import numpy as np

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

    def crop_mask(self, height, width):
        mask = np.zeros((height, width), bool)
        if self.crop is None:
            mask[:] = True
            return mask
        top, bottom, left, right = self.crop
        mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
        return mask

    def mask(self, gt, extra_mask=None):
        if self.gt_positive_only:
            mask = gt > 0
        else:
            mask = (gt > self.min_depth) & (gt < self.max_depth)
        mask &= self.crop_mask(*gt.shape[:2])
        if extra_mask is not None:
            mask &= extra_mask.astype(bool)
        return mask

    def score(self, disp, gt, scale_factor=1.0, median_scaling=True, extra_mask=None):
        """disp: h x w inverse depth (any size), gt: H x W depth. -> (seven errors, or None
        when no pixel is valid; the median ratio, or None)."""
        gh, gw = gt.shape[:2]
        disp = cv2.resize(np.asarray(disp, np.float32), (gw, gh), interpolation=self.interpolation)
        pred = 1 / np.maximum(disp, 1e-12)
        mask = self.mask(gt, extra_mask)
        p, g = pred[mask] * scale_factor, gt[mask]
        if len(g) == 0:
            return None, None
        ratio = None
        if median_scaling:
            ratio = np.median(g) / np.median(p)
            p = p * ratio
        p = np.clip(p, self.min_depth, self.max_depth)
        errors = compute_depth_errors(g.astype(np.float64), p.astype(np.float64), self.log10)
        return [float(e) for e in errors], ratio

    def evaluate(self, disps, gts, scale_factor=1.0, median_scaling=True, extra_masks=None):
        """Mean metrics over images (an image without a valid pixel is skipped), and the
        median ratios."""
        errors, ratios = [], []
        for i, gt in enumerate(gts):
            e, ratio = self.score(disps[i], gt, scale_factor, median_scaling,
                                  None if extra_masks is None else extra_masks[i])
            if e is None:
                continue
            errors.append(e)
            if ratio is not None:
                ratios.append(ratio)
        if not errors:
            raise SystemExit(f"{self.name}: no valid ground-truth pixel in any image")
        return dict(zip(DEPTH_METRIC_NAMES, np.array(errors).mean(0).tolist())), np.array(ratios)


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

    def dataset(self, height, width, frame_ids):
        """Test items with ("color", f, 0) for f in frame_ids (and K), not augmented."""
        raise NotImplementedError

    def ground_truth(self):
        """A list of H x W depth maps, or None when the set has no public ground truth."""
        raise NotImplementedError

    def extra_masks(self):
        return None

    def without_ground_truth(self, disps, out_dir):
        """What to do with predictions when ground_truth() is None (e.g. benchmark files)."""
        raise NotImplementedError

    def external_predictions(self, disps, args):
        """Predictions loaded with --ext_disp_to_eval, re-indexed if the set needs it."""
        return disps
