"""MonoDataset: the monodepth2 training item built from a split file, for both input paths.

An item is a dict keyed as monodepth2 does:
  ("color", f, s), ("color_aug", f, s): 3 x H/2^s x W/2^s in [0, 1] for frame ids f
      (0, -1, 1, ..., and "s" for the other stereo view) and scales s;
  ("K", s), ("inv_K", s): 4 x 4 intrinsics at scale s (and always at scale 2, the
      matching scale of the multi-frame methods, whatever the scales are);
  ("missing", f): 1.0 where frame f does not exist (the start or end of a sequence) and
      was replaced by the missing-frame policy, else 0.0 (only when a policy is set);
  "stereo_T": 4 x 4 transform into the other stereo camera (with "s");
  "depth_gt": 1 x 375 x 1242 (where the dataset has ground truth; training items only in
      the batches of log steps, see EpochSampler.depth_gt_batches);
  plus the image-aligned targets a method asks for (ItemTarget, e.g. Depth Hints' hints).

One item builder (`_item`) serves both input paths:
- default (monodepth2's): native PIL frames, geometric augmentations on them, a Lanczos
  pyramid, photometric augmentations on the pyramid, all in the loader workers;
- fast (--fast_loader): one pre-resized uint8 image per frame (or its JPEG bytes); the
  augmentation parameters travel with the item as ("aug", name) and `finish_batch` applies
  the same augmentations, the pyramid and the jitter on the training device.
"""
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data as data
from PIL import Image
from torchvision import transforms

from .augment import augmented_key, default_augmentations, sample_augmentations
from .fast_loader import decode_batch, device_pyramid, load_resized_image

STEREO_BASELINE = 0.1  # training units; KITTI's 0.54 m baseline, hence x5.4 to metres
OTHER_SIDE = {"r": "l", "l": "r", "2": "3", "3": "2"}
INPUT_PATHS = ("default", "fast", "encoded")
MAX_SKIPPED_IN_A_ROW = 100  # --skip_bad_items gives up (and reports) after this many
MATCHING_SCALE = 2  # K / inv_K are always given at 1/4 resolution (cost volumes match there)
# what a missing neighbour frame (sequence start or end) becomes: "error" (refuse the item),
# "duplicate" (the target frame, MISM) or "black" (a black image, ManyDepth); the item's
# ("missing", f) flag tells the method, which may then zero its pose
MISSING_FRAME_POLICIES = ("error", "duplicate", "black")


class UnreadableFileError(OSError):
    """A file that exists but cannot be decoded (truncated, not an image, ...)."""


class ItemError(RuntimeError):
    """An item of a split could not be built; the message names the file and the line."""


def pil_loader(path):
    with open(path, "rb") as f:
        with Image.open(f) as img:
            return img.convert("RGB")


class ItemTarget:
    """An image-aligned target of an item: loaded unflipped as a float32 C x h x w array,
    mirrored with the frames, then (network_size=True) nearest-resized to the network's
    height x width. `derived` adds keys computed from the final tensor (e.g. a validity mask)."""
    key = None
    network_size = False
    derived_keys = ()  # the keys `derived` adds

    def load(self, dataset, folder, frame_index, side):
        raise NotImplementedError

    def derived(self, value):
        return {}


class DepthGT(ItemTarget):
    """"depth_gt" 1 x 375 x 1242 from the dataset's get_depth (velodyne or improved GT)."""
    key = "depth_gt"

    def load(self, dataset, folder, frame_index, side):
        return np.expand_dims(dataset.get_depth(folder, frame_index, side, False), 0).astype(np.float32)


class MonoDataset(data.Dataset):
    """Base class; subclasses say where images, depth and intrinsics come from.

    filenames: split lines `folder frame side`; frame_ids: e.g. [0, -1, 1, "s"].
    input_path: "default", "fast" (pre-resized uint8, cached in cache_dir) or "encoded"
    (JPEG bytes, decoded on the device). targets: extra ItemTargets. seed: augmentation
    depends on (seed, epoch, index) only (None: Python's global random stream).
    """

    full_res_shape = (1242, 375)  # (W, H) of depth_gt
    side_map = {"2": 2, "3": 3, "l": 2, "r": 3}
    eval_protocol = "kitti_eigen"  # how validation scores depth_gt (evaluation.protocols)

    def __init__(self, data_path, filenames, height, width, frame_ids, num_scales, is_train=False,
                 img_ext=".jpg", split_file=None, *, input_path="default", cache_dir=None, targets=(),
                 seed=None, augmentations=None):
        super().__init__()
        if input_path not in INPUT_PATHS:
            raise ValueError(f"input_path {input_path!r}: use one of {INPUT_PATHS}")
        if input_path == "encoded" and img_ext.lower() not in (".jpg", ".jpeg"):
            raise ValueError(f"--decode_on_device reads JPEG files; this dataset reads {img_ext} "
                             "(drop --png, or drop --decode_on_device)")
        self.data_path = data_path
        self.filenames = filenames
        self.split_file = split_file
        self.height, self.width = height, width
        self.num_scales = num_scales
        self.interp = transforms.InterpolationMode.LANCZOS
        self.frame_ids = frame_ids
        self.is_train = is_train
        self.img_ext = img_ext
        self.input_path, self.cache_dir = input_path, cache_dir
        self.extra_targets = list(targets)
        self.seed = seed
        self.errors_as_items = False  # set by the Trainer: see __getitem__
        self.skip_bad_items = False
        self.missing_frames = "error"  # one of MISSING_FRAME_POLICIES (set by the Trainer / evaluation)
        self.augmentations = (default_augmentations() if augmentations is None else list(augmentations)) \
            if is_train else []
        self.to_tensor = transforms.ToTensor()
        self.resize = {i: transforms.Resize((height // 2 ** i, width // 2 ** i), interpolation=self.interp)
                       for i in range(num_scales)}
        self.load_depth = self.check_depth()

    # --- what subclasses provide
    def get_color(self, folder, frame_index, side, do_flip):
        """The native image (PIL). The builder always asks unflipped (do_flip=False): the
        flip is an item augmentation."""
        raise NotImplementedError

    def get_image_path(self, folder, frame_index, side):
        raise NotImplementedError

    def check_depth(self):
        return False

    def get_depth(self, folder, frame_index, side, do_flip):
        raise NotImplementedError

    def get_intrinsics(self, folder):
        """Normalised 4 x 4 K (row 0 divided by width, row 1 by height)."""
        return self.K.copy()

    # --- shared logic
    @property
    def fast(self):
        return self.input_path != "default"

    def image_targets(self, depth_gt=True):
        """The item's image-aligned targets; depth_gt=False leaves out the ground truth that
        only scores predictions (DepthGT), not a method's own targets."""
        return ([DepthGT()] if self.load_depth and depth_gt else []) + self.extra_targets

    def image_target_keys(self):
        """Batch keys mirrored with the frames on the device (fast path)."""
        keys = []
        for t in self.image_targets():
            keys.append(t.key)
            keys += list(t.derived_keys)
        return keys

    def intrinsics_pyramid(self, K):
        """("K", s) and ("inv_K", s): the normalised K scaled to each level's pixels."""
        out = {}
        for scale in range(max(self.num_scales, MATCHING_SCALE + 1)):
            Ks = K.copy()
            Ks[0, :] *= self.width // (2 ** scale)
            Ks[1, :] *= self.height // (2 ** scale)
            out[("K", scale)] = torch.from_numpy(Ks)
            out[("inv_K", scale)] = torch.from_numpy(np.linalg.pinv(Ks))
        return out

    def parse_line(self, index):
        line = self.filenames[index].split()
        if len(line) not in (2, 3):
            raise ValueError(f"{self.split_file or 'split'} line {index + 1}: expected "
                             f"'folder frame side', got {self.filenames[index]!r}")
        folder = line[0]
        frame_index = int(line[1])
        side = line[2] if len(line) == 3 else None
        return folder, frame_index, side

    def load_image(self, path):
        if not os.path.isfile(path):
            hint = ""
            if path.endswith(".jpg") and os.path.isfile(path[:-4] + ".png"):
                hint = " (a .png exists: pass --png, or convert the images to .jpg)"
            raise FileNotFoundError(f"image not found: {path}{hint}")
        try:
            return pil_loader(path)
        except (OSError, ValueError) as e:  # truncated or not an image
            raise UnreadableFileError(f"cannot read image {path} ({e})") from None

    def __len__(self):
        return len(self.filenames)

    def item_rng(self, index, epoch):
        """Augmentation randomness of one item: a function of (seed, epoch, index) only, so
        that it does not depend on worker assignment and a resumed run draws the same."""
        if self.seed is None:
            return random
        return random.Random((self.seed * 1_000_003 + epoch) * 1_000_003 + index)

    def __getitem__(self, index):
        """index: an int, or (index, epoch[, depth_gt]) from the training sampler (depth_gt
        False: the item without "depth_gt", which the Trainer reads only for the batches it
        scores at log steps). A missing or unreadable
        file raises its error with the split line that asked for it; with errors_as_items
        (the Trainer's loaders) the item is {"__error__": message} instead, so that the
        training process reports it in a line rather than as a worker traceback; with
        skip_bad_items the next readable item of the split replaces it."""
        epoch, depth_gt = 0, True
        if isinstance(index, (tuple, list)):
            index, epoch, *rest = index
            depth_gt = bool(rest[0]) if rest else True
        skipped = 0
        while True:
            try:
                item = self.item_in_context(index, epoch, depth_gt)
                break
            except (OSError, ValueError) as e:
                if not self.skip_bad_items or skipped + 1 >= min(len(self), MAX_SKIPPED_IN_A_ROW):
                    if self.errors_as_items:
                        return {"__error__": str(e)}
                    raise
                print(f"-> skipped: {e}", file=sys.stderr)
                skipped += 1
                index = (index + 1) % len(self)
        if self.skip_bad_items:
            item["skipped_items"] = torch.tensor(skipped)
        return item

    def item_in_context(self, index, epoch, depth_gt=True):
        """_item(index, epoch, depth_gt), a file error re-raised with the split line that asked for it."""
        try:
            return self._item(index, epoch, depth_gt)
        except (OSError, ValueError) as e:
            message = f"{e}; needed by line {index + 1} of {self.split_file or 'the split'}: {self.filenames[index]!r}"
            try:
                error = type(e)(message)
            except TypeError:  # an error type with other constructor arguments
                error = OSError(message)
            raise error from None

    def frame_source(self, frame_index, side, f):
        """(frame index, side) of frame id f of an item."""
        if f == "s":
            return frame_index, OTHER_SIDE[side]
        return frame_index + f, side

    def frame_exists(self, folder, frame_index, side):
        """Whether a neighbour frame exists (asked only under a missing-frame policy)."""
        try:
            return os.path.isfile(self.get_image_path(folder, frame_index, side))
        except NotImplementedError:  # datasets whose frames always come together
            return True

    def resolve_missing(self, folder, frame_index, side, sources):
        """-> (sources with missing temporal neighbours replaced by the target frame,
        {f: 1.0 if missing}) under self.missing_frames; "error" changes nothing (the
        loader then reports the missing file)."""
        if self.missing_frames not in MISSING_FRAME_POLICIES:
            raise ValueError(f"missing-frame policy {self.missing_frames!r}: use one of {MISSING_FRAME_POLICIES}")
        if self.missing_frames == "error":
            return sources, {}
        missing = {}
        for f, (frame, frame_side) in sources.items():
            if f in (0, "s"):
                continue
            missing[f] = 0.0 if self.frame_exists(folder, frame, frame_side) else 1.0
            if missing[f]:
                sources[f] = (frame_index, side)
        return sources, missing

    # --- the one item builder
    def _item(self, index, epoch, depth_gt=True):
        kinds = self.image_targets(depth_gt)
        params = sample_augmentations(self.augmentations, self.item_rng(index, epoch))
        active = [(aug, params[aug.name]) for aug in self.augmentations if params[aug.name] is not None]
        folder, frame_index, side = self.parse_line(index)
        sources = {f: self.frame_source(frame_index, side, f) for f in self.frame_ids}
        sources, missing = self.resolve_missing(folder, frame_index, side, sources)
        black = {f for f, m in missing.items() if m and self.missing_frames == "black"}
        item = self.camera_entries(folder, side, active)
        item.update({("missing", f): torch.tensor(m) for f, m in missing.items()})
        if self.fast:  # frames at the network size; the device finishes the augmentations
            for f, (frame, frame_side) in sources.items():
                image = load_resized_image(self, folder, frame, frame_side)
                if self.input_path == "encoded":
                    item[("jpeg", f)] = image
                else:
                    item[("color_u8", f)] = torch.from_numpy(image)
            item.update({("aug", aug.name): aug.pack(params[aug.name]) for aug in self.augmentations})
            targets = self.load_targets(folder, frame_index, side, kinds)
        else:  # native frames, augmented here, then the pyramid
            images = {("color", f, -1): self.get_color(folder, frame, frame_side, False)
                      for f, (frame, frame_side) in sources.items()}
            for f in black:
                images[("color", f, -1)] = Image.new("RGB", images[("color", f, -1)].size)
            targets = self.load_targets(folder, frame_index, side, kinds)
            for aug, p in active:
                if aug.stage == "geometric":
                    images, targets = aug.apply_host(images, targets, p)
            item.update(self.pyramid(images, [(aug, p) for aug, p in active if aug.stage == "photometric"],
                                     [(aug, p) for aug, p in active if aug.stage == "view"]))
        item.update(self.finish_targets(targets, kinds))
        return item

    def camera_entries(self, folder, side, active):
        """("K", s), ("inv_K", s) and "stereo_T" of an item, after the augmentations' changes."""
        item = {"K": np.array(self.get_intrinsics(folder), dtype=np.float32, copy=True)}
        if "s" in self.frame_ids:
            item["stereo_T"] = stereo_transform(side)
        for aug, p in active:
            aug.apply_meta(item, p)
        out = self.intrinsics_pyramid(item.pop("K"))
        for key, value in item.items():  # stereo_T, and what augmentations add (crop windows, ...)
            out[key] = torch.from_numpy(value)
        return out

    def load_targets(self, folder, frame_index, side, kinds):
        """kinds: the item's ItemTargets (image_targets)."""
        return {t.key: t.load(self, folder, frame_index, side) for t in kinds}

    def finish_targets(self, targets, kinds):
        """Targets as tensors, resized to the network size where they ask, with their derived keys."""
        out = {}
        for t in kinds:
            value = torch.from_numpy(targets[t.key])
            if t.network_size:
                value = F.interpolate(value[None], (self.height, self.width), mode="nearest")[0]
            out[t.key] = value
            out.update(t.derived(value))
        return out

    def pyramid(self, images, photometric, views=()):
        """Native PIL frames -> ("color", f, s) and ("color_aug", f, s) tensors: a Lanczos
        chain native -> s0 -> s1 -> ..., the views of view augmentations, then the
        photometric augmentations of the input (views included, with the same draw)."""
        levels = {}
        for (_, f, _), native in images.items():
            previous = native
            for s in range(self.num_scales):
                previous = self.resize[s](previous)
                levels[("color", f, s)] = previous
        for aug, p in views:
            levels.update(aug.make_view_host(images, levels, p))
        augmented = levels
        for aug, p in photometric:
            augmented, _ = aug.apply_host(augmented, {}, p)
        out = {}
        for key, image in levels.items():
            out[key] = self.to_tensor(image)
            out[augmented_key(key)] = self.to_tensor(augmented[key])
        return out

    def finish_batch(self, batch, device):
        """Fast path, on the training device: decode (encoded path), apply the geometric
        augmentations, build the pyramid, apply the photometric ones."""
        if self.input_path == "encoded":
            batch = decode_batch(batch, (self.height, self.width), device)
        params = {}  # the draws come from the host (Trainer._to_device leaves them there)
        for aug in self.augmentations:
            p = batch.pop(("aug", aug.name))
            params[aug.name] = p if aug.host_params else p.to(device, non_blocking=True)
        images = {}
        for f in self.frame_ids:
            images[("color", f, 0)] = batch.pop(("color_u8", f)).float() / 255
            if self.missing_frames == "black" and ("missing", f) in batch:  # the target stood in for it
                images[("color", f, 0)] = images[("color", f, 0)] * (1 - batch[("missing", f)].view(-1, 1, 1, 1))
        for aug in self.augmentations:
            if aug.stage == "geometric":
                aug.apply_batch(images, params[aug.name], list(images))
                aug.apply_batch(batch, params[aug.name], [k for k in self.image_target_keys() if k in batch])
        batch.update(device_pyramid(images, self.num_scales))
        views = [aug for aug in self.augmentations if aug.stage == "view"]
        for aug in views:
            batch.update(aug.make_view_batch(batch, params[aug.name]))
        image_names = {"color"} | {aug.view_key for aug in views}
        color_keys = [k for k in batch if isinstance(k, tuple) and k[0] in image_names]
        for key in color_keys:
            batch[augmented_key(key)] = batch[key]
        for aug in self.augmentations:
            if aug.stage == "photometric":
                aug.apply_batch(batch, params[aug.name], color_keys)
        return batch


def check_first_item(dataset):
    """Build the first item of a split now, so that a wrong --data_path, image format or
    missing file is reported in one line before anything slow starts."""
    if len(dataset) == 0:
        raise SystemExit(f"{dataset.split_file}: no lines")
    try:
        dataset.item_in_context(0, 0)
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot build the first item of the split: {e}") from None


def stereo_transform(side):
    """4 x 4 transform from camera `side` into the other stereo camera (training units)."""
    T = np.eye(4, dtype=np.float32)
    T[0, 3] = (-1 if side in ("l", "2") else 1) * STEREO_BASELINE
    return T
