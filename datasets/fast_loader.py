"""The fast input path (--fast_loader): workers only read one pre-resized uint8 image per
frame; flip, the scale pyramid and colour jitter run batched on the training device
(MonoDataset.finish_batch, with the same augmentation objects as the default path).

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
from PIL import Image
from torch.utils.data import default_collate
from torchvision.io import decode_jpeg

from utils import atomic_numpy_save


def load_resized_image(dataset, folder, frame_index, side):
    """One frame for the fast path: 3 x H x W uint8 at the network size (Lanczos from the
    native image, cached as .npy under dataset.cache_dir), or for the encoded path the
    JPEG file's bytes as a uint8 array (a NumPy array travels from the workers by value,
    not as one shared-memory file descriptor per image, which runs out under load)."""
    path = dataset.get_image_path(folder, frame_index, side)
    if dataset.input_path == "encoded":
        if not os.path.isfile(path):
            dataset.load_image(path)  # raises the dataset's "image not found" error
        return np.fromfile(path, np.uint8)
    cached = None
    if dataset.cache_dir:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(dataset.data_path))
        cached = os.path.join(dataset.cache_dir, f"{dataset.width}x{dataset.height}", rel + ".npy")
        if os.path.isfile(cached):
            try:
                return np.load(cached)
            except (ValueError, OSError):
                pass  # a damaged cache entry is rebuilt below
    img = dataset.load_image(path).resize((dataset.width, dataset.height), Image.LANCZOS)
    arr = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
    if cached:
        atomic_numpy_save(cached, arr)
    return arr


def fill_cache(dataset, workers, label="caching images", no_progress=False):
    """Decode and resize every frame a split needs into dataset.cache_dir once, with a
    progress bar, so that training starts at its steady speed. Files that cannot be read
    are left for the item builder to report."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm
    frames = sorted({(folder, *dataset.frame_source(frame, side, f))
                     for folder, frame, side in (dataset.parse_line(i) for i in range(len(dataset)))
                     for f in dataset.frame_ids})

    def one(frame):
        try:
            load_resized_image(dataset, *frame)
        except (OSError, ValueError):
            pass
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        for _ in tqdm(pool.map(one, frames), total=len(frames), desc=label, unit="image", disable=no_progress,
                      leave=False):
            pass


def collate_items(items):
    """default_collate, except that the JPEG byte strings (("jpeg", f), of different lengths)
    stay a list per frame, and that items which could not be built ({"__error__": message},
    see MonoDataset.__getitem__) make the batch {"__error__": [messages]}."""
    errors = [item["__error__"] for item in items if "__error__" in item]
    if errors:
        return {"__error__": errors}
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


def device_pyramid(images, num_scales):
    """{("color", f, 0): B x 3 x H x W} -> every ("color", f, s), scale s resized from scale
    0 with antialiased bilinear interpolation."""
    out = {}
    for (_, f, _), x in images.items():
        h, w = x.shape[-2:]
        for s in range(num_scales):
            out[("color", f, s)] = x if s == 0 else F.interpolate(
                x, (h // 2 ** s, w // 2 ** s), mode="bilinear", antialias=True, align_corners=False)
    return out
