"""The fast input path (--fast_loader): workers only read one pre-resized uint8 image per
frame; flip, the scale pyramid and colour jitter run batched on the training device.

Differences from the default (monodepth2) path, which stays the reference:
- every scale is resized from the scale-0 image with antialiased bilinear interpolation
  (default: a Lanczos chain native -> s0 -> s1 -> ...); scale 0 itself is Lanczos from the
  native image in both paths;
- with --cache_dir the scale-0 images are decoded and resized once and kept as uint8 .npy;
- jitter uses the same factors and random order per item as the default path, applied to
  tensors (torchvision's functional ops) instead of PIL images;
- with --decode_on_device the workers only read the JPEG files' bytes; decoding
  (torchvision.io.decode_jpeg: nvJPEG on CUDA, libjpeg-turbo on the CPU) and the resize to
  the network size (antialiased bilinear instead of Lanczos) run in the training process.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import default_collate
from torchvision.io import decode_jpeg

from utils import atomic_numpy_save

from .mono_dataset import OTHER_SIDE, sample_color_jitter


class FastMonoDataset(torch.utils.data.Dataset):
    """Wraps a MonoDataset; items hold ("color_u8", f): 3 x H x W uint8, K/inv_K per scale,
    "stereo_T" (not yet flipped), "do_flip", "jitter" (5 numbers + order), "depth_gt",
    "depth_hint" and "depth_hint_mask" (Depth Hints; not yet flipped)."""

    def __init__(self, base, cache_dir=None, encoded=False):
        if encoded and base.img_ext.lower() not in (".jpg", ".jpeg"):
            raise ValueError(f"--decode_on_device reads JPEG files; this dataset reads {base.img_ext} "
                             "(drop --png, or drop --decode_on_device)")
        self.base = base
        self.cache_dir = cache_dir
        self.encoded = encoded  # items carry ("jpeg", f): the file's bytes, decoded on the device
        self.load_depth = base.load_depth

    def __len__(self):
        return len(self.base)

    def _image(self, folder, frame_index, side):
        base = self.base
        path = base.get_image_path(folder, frame_index, side)
        if self.encoded:
            if not os.path.isfile(path):
                base.load_image(path)  # raises the dataset's "image not found" error
            # a NumPy array travels from the workers by value, not as one shared-memory file
            # descriptor per image (which runs out under load)
            return np.fromfile(path, np.uint8)
        cached = None
        if self.cache_dir:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base.data_path))
            cached = os.path.join(self.cache_dir, f"{base.width}x{base.height}", rel + ".npy")
            if os.path.isfile(cached):
                try:
                    return np.load(cached)
                except (ValueError, OSError):
                    pass  # a damaged cache entry is rebuilt below
        img = base.load_image(path).resize((base.width, base.height), Image.LANCZOS)
        arr = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
        if cached:
            atomic_numpy_save(cached, arr)
        return arr

    def __getitem__(self, index):
        return self.base.item_with_context(self._item, index)

    def _item(self, index, epoch):
        base = self.base
        rng = base.item_rng(index, epoch)
        do_color_aug = base.is_train and rng.random() > 0.5
        do_flip = base.is_train and rng.random() > 0.5
        folder, frame_index, side = base.parse_line(index)
        inputs = {}
        for f in base.frame_ids:
            if f == "s":
                arr = self._image(folder, frame_index, OTHER_SIDE[side])
            else:
                arr = self._image(folder, frame_index + f, side)
            if self.encoded:
                inputs[("jpeg", f)] = arr
            else:
                inputs[("color_u8", f)] = torch.from_numpy(arr)
        inputs.update(base.intrinsics_pyramid(folder))
        if do_color_aug:
            order, b, c, s, h = sample_color_jitter(rng)
            inputs["jitter"] = torch.tensor([1.0, b, c, s, h] + list(order), dtype=torch.float32)
        else:
            inputs["jitter"] = torch.zeros(9)
        inputs["do_flip"] = torch.tensor(do_flip)
        inputs.update(base.item_targets(folder, frame_index, side, do_flip=False))  # flipped on the device
        return inputs


def _jitter(image, params):
    """image 3 x H x W in [0, 1]; params: [on, b, c, s, h, order x4]."""
    if params[0] < 0.5:
        return image
    b, c, s, h = params[1:5].tolist()
    ops = [lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
           lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h)]
    for i in params[5:9].long().tolist():
        image = ops[i](image)
    return image


def fast_collate(items):
    """default_collate, except that the JPEG byte strings (("jpeg", f), of different lengths)
    stay a list per frame."""
    encoded = [k for k in items[0] if isinstance(k, tuple) and k[0] == "jpeg"]
    batch = default_collate([{k: v for k, v in item.items() if k not in encoded} for item in items])
    for k in encoded:
        batch[k] = [item[k] for item in items]
    return batch


def decode_batch(inputs, size, device):
    """("jpeg", f) lists of file bytes -> ("color_u8", f): B x 3 x H x W uint8 on `device`,
    each image decoded there and resized to size = (H, W) (antialiased bilinear)."""
    for k in [k for k in inputs if isinstance(k, tuple) and k[0] == "jpeg"]:
        images = decode_jpeg([torch.from_numpy(b) for b in inputs.pop(k)], device=device)
        resized = [F.interpolate(img[None].float(), size, mode="bilinear", antialias=True, align_corners=False)
                   for img in images]
        inputs[("color_u8", k[1])] = torch.cat(resized).round_().clamp_(0, 255).to(torch.uint8)
    return inputs


def device_augment(inputs, frame_ids, num_scales):
    """Turn a fast-path batch (already on the device) into monodepth2's batch dict."""
    flip = inputs.pop("do_flip").bool()
    jitter = inputs.pop("jitter")
    for f in frame_ids:
        x = inputs.pop(("color_u8", f)).float() / 255
        x = torch.where(flip[:, None, None, None], torch.flip(x, [3]), x)
        h, w = x.shape[-2:]
        for s in range(num_scales):
            xs = x if s == 0 else F.interpolate(x, (h // 2 ** s, w // 2 ** s), mode="bilinear",
                                                antialias=True, align_corners=False)
            inputs[("color", f, s)] = xs
            if jitter[:, 0].any():
                inputs[("color_aug", f, s)] = torch.stack([_jitter(xs[i], jitter[i]) for i in range(xs.shape[0])])
            else:
                inputs[("color_aug", f, s)] = xs
    for key in ("depth_gt", "depth_hint", "depth_hint_mask"):
        if key in inputs:
            d = inputs[key]
            inputs[key] = torch.where(flip[:, None, None, None], torch.flip(d, [3]), d)
    if "stereo_T" in inputs:
        T = inputs["stereo_T"].clone()
        T[:, 0, 3] = torch.where(flip, -T[:, 0, 3], T[:, 0, 3])
        inputs["stereo_T"] = T
    return inputs
