"""Depth Hints (Watson et al., ICCV 2019): precomputed SGM depth as a hint that competes
with the photometric reprojection. Where warping the stereo view with the hint's depth
reconstructs the target better than the prediction (and better than not moving), the
prediction is also pulled towards the hint with a log-L1 loss.

Needs the stereo frame ("s"); its item target adds "depth_hint" / "depth_hint_mask" to
every item (hints written by precompute_depth_hints.py).
"""
import os

import numpy as np
import torch

from datasets.mono_dataset import ItemTarget
from layers import warp
from losses import IDENTITY_NOISE, smoothness_loss
from methods import option_groups, register_method
from methods.monodepth2 import Monodepth2

MISSING_HINT_COST = 1000.0  # added to the hint's error where there is no hint: it never wins


def hint_file(hint_root, folder, frame_index, side):
    """<hint_root>/<folder>/image_0{2,3}/<frame:010d>.npy (precompute_depth_hints.py writes it)."""
    camera = {"2": 2, "3": 3, "l": 2, "r": 3}[side]
    return os.path.join(hint_root, folder, f"image_0{camera}", f"{int(frame_index):010d}.npy")


class DepthHintTarget(ItemTarget):
    """The precomputed hint of an item's frame 0 (1 x H' x W' .npy, training units, 0 = no
    hint), mirrored with the image and nearest-resized to the network size; its mask is
    where a hint exists."""
    key = "depth_hint"
    network_size = True
    derived_keys = ("depth_hint_mask",)

    def __init__(self, hint_root):
        self.hint_root = hint_root

    def load(self, dataset, folder, frame_index, side):
        path = hint_file(self.hint_root, folder, frame_index, side)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"depth hint not found: {path}; run precompute_depth_hints.py "
                                    f"--data_path {dataset.data_path} --filenames <the split files>")
        hint = np.load(path).astype(np.float32)
        return hint.reshape(1, *hint.shape[-2:])

    def derived(self, value):
        return {"depth_hint_mask": (value > 0).float()}


def hint_selection(reprojection, identity, hint_error):
    """Per-pixel winner among the reprojection (0), identity (1, when given) and hint (2)
    errors, each B x 1 x H x W. Returns (photometric mask, hint mask) as floats: the
    photometric loss applies wherever identity did not win; the hint loss where the hint won."""
    if identity is None:
        candidates = torch.cat([reprojection, hint_error], 1)
        idx = candidates.argmin(1, keepdim=True)
        return torch.ones_like(reprojection), (idx == 1).float()
    candidates = torch.cat([reprojection, identity, hint_error], 1)
    idx = candidates.argmin(1, keepdim=True)
    return (idx != 1).float(), (idx == 2).float()


def hint_depth_loss(depth_pred, depth_hint, hint_mask, valid):
    """Mean of log(1 + |hint - prediction|) over the pixels where the hint won."""
    mask = hint_mask * valid
    return (torch.log(1 + torch.abs(depth_hint - depth_pred)) * mask).sum() / (hint_mask.sum() + 1e-7)


@register_method("depth_hints", selector="use_depth_hints")
class DepthHints(Monodepth2):
    @classmethod
    def add_options(cls, parser):
        option_groups.depth_hints(parser)

    @classmethod
    def check_options(cls, opt):
        if not opt.use_stereo:
            raise SystemExit("--use_depth_hints needs --use_stereo (hints come from the stereo pair)")
        if opt.v1_multiscale:
            raise SystemExit("--use_depth_hints does not support --v1_multiscale")
        opt.use_depth_hints = True

    @classmethod
    def item_targets(cls, opt):
        return [DepthHintTarget(opt.depth_hint_path or os.path.join(opt.data_path, "depth_hints"))]

    def hint_reprojection(self, inputs):
        """Error of warping the stereo view with the hint depth, at scale 0 (B x 1 x H x W);
        + MISSING_HINT_COST where there is no hint."""
        with torch.autocast(inputs[("color", 0, 0)].device.type, enabled=False):
            hint = inputs["depth_hint"].float()
            mask = inputs["depth_hint_mask"].float()
            safe = torch.where(mask > 0, hint, torch.ones_like(hint))
            points = self.backproject["0"](safe, inputs[("inv_K", 0)])
            grid = self.project["0"](points, inputs[("K", 0)], inputs["stereo_T"])
            pred = warp(inputs[("color", "s", 0)], grid)
            error = self.reprojection(pred, inputs[("color", 0, 0)])
        return error + MISSING_HINT_COST * (1 - mask), pred

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        hint_error, hint_pred = self.hint_reprojection(inputs)
        outputs["depth_hint_pred"] = hint_pred
        photometric, hint_total, smoothness = 0, 0, 0
        logs = {}
        for scale in opt.scales:
            reprojection, identity = self.photometric_errors(inputs, outputs, scale)
            reprojection = reprojection.min(1, keepdim=True)[0]
            if identity is not None:
                identity = identity.min(1, keepdim=True)[0]
                identity = identity + torch.randn_like(identity) * IDENTITY_NOISE
            photo_mask, hint_mask = hint_selection(reprojection, identity, hint_error)
            outputs[("depth_hint_mask", scale)] = hint_mask
            photo_s = (reprojection * photo_mask).sum() / (photo_mask.sum() + 1e-7)
            hint_s = hint_depth_loss(outputs[("depth", 0, scale)], inputs["depth_hint"], hint_mask,
                                     inputs["depth_hint_mask"].float())
            smooth_s = opt.disparity_smoothness * smoothness_loss(
                outputs[("disp", scale)], inputs[("color", 0, scale)]) / (2 ** scale)
            photometric, hint_total, smoothness = photometric + photo_s, hint_total + hint_s, smoothness + smooth_s
            logs[f"loss/{scale}"] = (photo_s + hint_s + smooth_s).detach()
            logs[f"reproj_loss/{scale}"] = photo_s.detach()
            logs[f"depth_hint_loss/{scale}"] = hint_s.detach()
        n = len(opt.scales)
        return {"reprojection": photometric / n, "depth_hint": hint_total / n, "smoothness": smoothness / n}, logs

    def images_to_log(self, inputs, outputs, n):
        images = super().images_to_log(inputs, outputs, n)
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            hint = inputs["depth_hint"][j]
            images[f"depth_hint/{j}"] = hint / (hint.max() + 1e-7)
            images[f"depth_hint_pixels_0/{j}"] = outputs[("depth_hint_mask", 0)][j]
        return images

