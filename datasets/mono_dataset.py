"""MonoDataset: the monodepth2 training item built from a split file.

An item is a dict keyed as monodepth2 does:
  ("color", f, s), ("color_aug", f, s): 3 x H/2^s x W/2^s in [0, 1] for frame ids f
      (0, -1, 1, ..., and "s" for the other stereo view) and scales s;
  ("K", s), ("inv_K", s): 4 x 4 intrinsics at scale s;
  "stereo_T": 4 x 4 transform into the other stereo camera (with "s");
  "depth_gt": 1 x 375 x 1242 (where the dataset has ground truth).
"""
import os
import random

import numpy as np
import torch
import torch.utils.data as data
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

STEREO_BASELINE = 0.1  # training units; KITTI's 0.54 m baseline, hence x5.4 to metres
OTHER_SIDE = {"r": "l", "l": "r", "2": "3", "3": "2"}
JITTER = dict(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))


def pil_loader(path):
    with open(path, "rb") as f:
        with Image.open(f) as img:
            return img.convert("RGB")


def sample_color_jitter(rng=random):
    """One colour-jitter draw: the factors and their random order, to apply identically to
    every frame of an item (torchvision's get_params returns numbers since 0.8; calling
    ColorJitter per frame would jitter each frame differently)."""
    order = list(range(4))
    rng.shuffle(order)
    b = rng.uniform(*JITTER["brightness"])
    c = rng.uniform(*JITTER["contrast"])
    s = rng.uniform(*JITTER["saturation"])
    h = rng.uniform(*JITTER["hue"])
    return order, b, c, s, h


def apply_color_jitter(img, params):
    order, b, c, s, h = params
    fns = [lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
           lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h)]
    for i in order:
        img = fns[i](img)
    return img


class MonoDataset(data.Dataset):
    """Base class; subclasses say where images, depth and intrinsics come from.

    filenames: split lines `folder frame side`; frame_ids: e.g. [0, -1, 1, "s"].
    """

    full_res_shape = (1242, 375)  # (W, H) of depth_gt
    side_map = {"2": 2, "3": 3, "l": 2, "r": 3}

    def __init__(self, data_path, filenames, height, width, frame_ids, num_scales,
                 is_train=False, img_ext=".jpg", split_file=None):
        super().__init__()
        self.data_path = data_path
        self.filenames = filenames
        self.split_file = split_file
        self.height, self.width = height, width
        self.num_scales = num_scales
        self.interp = transforms.InterpolationMode.LANCZOS
        self.frame_ids = frame_ids
        self.is_train = is_train
        self.img_ext = img_ext
        self.to_tensor = transforms.ToTensor()
        self.resize = {i: transforms.Resize((height // 2 ** i, width // 2 ** i), interpolation=self.interp)
                       for i in range(num_scales)}
        self.load_depth = self.check_depth()
        self.seed = None  # set by the Trainer: augmentation then depends on (seed, epoch, index)
        self.depth_hint_path = None  # set for Depth Hints: adds "depth_hint", "depth_hint_mask"

    # --- what subclasses provide
    def get_color(self, folder, frame_index, side, do_flip):
        raise NotImplementedError

    def check_depth(self):
        return False

    def get_depth(self, folder, frame_index, side, do_flip):
        raise NotImplementedError

    def get_depth_hint(self, folder, frame_index, side, do_flip):
        """Precomputed hint (1 x H' x W' .npy, training units), mirrored with the image and
        nearest-resized to the network size."""
        path = os.path.join(self.depth_hint_path, folder, f"image_0{self.side_map[side]}",
                            f"{int(frame_index):010d}.npy")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"depth hint not found: {path}; run precompute_depth_hints.py "
                                    f"--data_path {self.data_path} --filenames <the split files>")
        hint = np.load(path).astype(np.float32)
        hint = hint.reshape(1, 1, *hint.shape[-2:])
        if do_flip:
            hint = hint[..., ::-1].copy()
        hint = torch.nn.functional.interpolate(torch.from_numpy(hint), (self.height, self.width), mode="nearest")
        return hint[0]

    def get_intrinsics(self, folder):
        """Normalised 4 x 4 K (row 0 divided by width, row 1 by height)."""
        return self.K.copy()

    # --- shared logic
    def intrinsics_pyramid(self, folder):
        """("K", s) and ("inv_K", s): the normalised K scaled to each level's pixels."""
        out = {}
        K = self.get_intrinsics(folder)
        for scale in range(self.num_scales):
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
        return pil_loader(path)

    def item_with_context(self, build, index):
        """build(index, epoch), with a missing file reported together with the split line
        that asked for it. index: an int, or (index, epoch) from the training sampler."""
        epoch = 0
        if isinstance(index, (tuple, list)):
            index, epoch = index
        try:
            return build(index, epoch)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; needed by line {index + 1} of {self.split_file or 'the split'}: "
                                    f"{self.filenames[index]!r}") from None

    def preprocess(self, inputs, jitter):
        """Resize the native images into the pyramid, then make the augmented copies."""
        for k in list(inputs):
            if "color" in k:
                n, im, _ = k
                for i in range(self.num_scales):
                    inputs[(n, im, i)] = self.resize[i](inputs[(n, im, i - 1)])
        for k in list(inputs):
            f = inputs[k]
            if "color" in k:
                n, im, i = k
                inputs[(n, im, i)] = self.to_tensor(f)
                aug = apply_color_jitter(f, jitter) if jitter is not None else f
                inputs[(n + "_aug", im, i)] = self.to_tensor(aug)

    def __len__(self):
        return len(self.filenames)

    def item_rng(self, index, epoch):
        """Augmentation randomness of one item: a function of (seed, epoch, index) only, so
        that it does not depend on worker assignment and a resumed run draws the same."""
        if self.seed is None:
            return random
        return random.Random((self.seed * 1_000_003 + epoch) * 1_000_003 + index)

    def __getitem__(self, index):
        """index: an int, or (index, epoch) from the training sampler."""
        return self.item_with_context(self._item, index)

    def _item(self, index, epoch):
        rng = self.item_rng(index, epoch)
        inputs = {}
        do_color_aug = self.is_train and rng.random() > 0.5
        do_flip = self.is_train and rng.random() > 0.5
        folder, frame_index, side = self.parse_line(index)
        for i in self.frame_ids:
            if i == "s":
                inputs[("color", i, -1)] = self.get_color(folder, frame_index, OTHER_SIDE[side], do_flip)
            else:
                inputs[("color", i, -1)] = self.get_color(folder, frame_index + i, side, do_flip)
        inputs.update(self.intrinsics_pyramid(folder))
        jitter = sample_color_jitter(rng) if do_color_aug else None
        self.preprocess(inputs, jitter)
        for i in self.frame_ids:
            del inputs[("color", i, -1)]
            del inputs[("color_aug", i, -1)]
        inputs.update(self.item_targets(folder, frame_index, side, do_flip))
        return inputs

    def item_targets(self, folder, frame_index, side, do_flip):
        """The item's entries besides images and K: "depth_gt", "depth_hint" and
        "depth_hint_mask", "stereo_T", each mirrored when do_flip."""
        out = {}
        if self.load_depth:
            depth_gt = self.get_depth(folder, frame_index, side, do_flip)
            out["depth_gt"] = torch.from_numpy(np.expand_dims(depth_gt, 0).astype(np.float32))
        if self.depth_hint_path:
            hint = self.get_depth_hint(folder, frame_index, side, do_flip)
            out["depth_hint"] = hint
            out["depth_hint_mask"] = (hint > 0).float()
        if "s" in self.frame_ids:
            stereo_T = np.eye(4, dtype=np.float32)
            baseline_sign = -1 if do_flip else 1
            side_sign = -1 if side in ("l", "2") else 1
            stereo_T[0, 3] = side_sign * baseline_sign * STEREO_BASELINE
            out["stereo_T"] = torch.from_numpy(stereo_T)
        return out
