"""Item augmentations: each samples its parameters once per item and moves every frame,
the intrinsics and the image-aligned targets (depth_gt, hints, masks) of the item together.

An augmentation has three parts, so that one definition serves both input paths:
- `apply_meta(item, params)` on the host, for both paths: intrinsics ("K", normalised
  4 x 4) and "stereo_T";
- `apply_host(images, targets, params)` in the default path: PIL frames at their native
  size (geometric) or the scale pyramid (photometric, which writes the "color_aug" copies);
- `apply_batch(batch, params, image_keys)` in the fast path, on the training device, on
  B x C x H x W tensors with per-item params B x n.

`stage` says where it runs: "geometric" augmentations run before the scale pyramid,
"photometric" ones after it (they make ("color_aug", f, s) and leave ("color", f, s) as
they are, which the losses use). Which augmentations apply to an item is drawn first, in
list order, then the parameters of those that apply, in list order; the draws come from
the item's own random stream (seed, epoch, index).
"""
import torch
import torchvision.transforms.functional as TF
from PIL import Image

JITTER = dict(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))


class ItemAugmentation:
    name = None
    stage = "geometric"
    num_params = 0  # numbers packed per item for the fast path (after the on/off flag)

    def __init__(self, probability=0.5):
        self.probability = probability

    def switch(self, rng):
        return rng.random() > 1 - self.probability

    def sample(self, rng):
        """Parameters of one item (a list of num_params numbers)."""
        return []

    def pack(self, params):
        """[on, *params] as a float tensor (zeros when off) for the batch."""
        if params is None:
            return torch.zeros(1 + self.num_params)
        return torch.tensor([1.0] + [float(p) for p in params], dtype=torch.float32)

    def apply_meta(self, item, params):
        pass

    def apply_host(self, images, targets, params):
        raise NotImplementedError

    def apply_batch(self, batch, params, image_keys):
        raise NotImplementedError


def sample_augmentations(augmentations, rng):
    """{name: params or None}: the switches first (list order), then the parameters."""
    on = [aug.switch(rng) for aug in augmentations]
    return {aug.name: (aug.sample(rng) if active else None) for aug, active in zip(augmentations, on)}


def _mirror(x, flip):
    """x B x C x H x W mirrored where flip (B bools)."""
    return torch.where(flip[:, None, None, None], torch.flip(x, [3]), x)


class HorizontalFlip(ItemAugmentation):
    """Mirror every frame and target; the principal point mirrors (cx -> 1 - cx, normalised:
    no change for KITTI's centred K) and the stereo baseline changes sign."""
    name = "flip"

    def apply_meta(self, item, params):
        item["K"][0, 2] = 1 - item["K"][0, 2]
        if "stereo_T" in item:
            item["stereo_T"][0, 3] *= -1

    def apply_host(self, images, targets, params):
        images = {k: im.transpose(Image.FLIP_LEFT_RIGHT) for k, im in images.items()}
        targets = {k: t[..., ::-1].copy() for k, t in targets.items()}
        return images, targets

    def apply_batch(self, batch, params, image_keys):
        flip = params[:, 0] > 0.5
        for key in image_keys:
            batch[key] = _mirror(batch[key], flip)


def sample_color_jitter(rng):
    """One colour-jitter draw: the random order of the four ops, then their factors
    (brightness, contrast, saturation, hue), applied identically to every frame of an item
    (torchvision's ColorJitter called per frame would jitter each frame differently)."""
    order = list(range(4))
    rng.shuffle(order)
    b = rng.uniform(*JITTER["brightness"])
    c = rng.uniform(*JITTER["contrast"])
    s = rng.uniform(*JITTER["saturation"])
    h = rng.uniform(*JITTER["hue"])
    return order, b, c, s, h


def apply_color_jitter(img, params):
    """A PIL image or a 3 x H x W tensor in [0, 1], jittered with (order, b, c, s, h)."""
    order, b, c, s, h = params
    fns = [lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
           lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h)]
    for i in order:
        img = fns[i](img)
    return img


class ColorJitter(ItemAugmentation):
    """monodepth2's colour augmentation of the network input, one draw per item shared by
    all its frames and scales."""
    name = "jitter"
    stage = "photometric"
    num_params = 8  # b, c, s, h, order x 4

    def sample(self, rng):
        order, b, c, s, h = sample_color_jitter(rng)
        return [b, c, s, h] + order

    @staticmethod
    def unpack(params):
        b, c, s, h = params[:4]
        return [int(i) for i in params[4:8]], b, c, s, h

    def apply_host(self, images, targets, params):
        jitter = self.unpack(params)
        return {k: apply_color_jitter(im, jitter) for k, im in images.items()}, targets

    def apply_batch(self, batch, params, image_keys):
        on = params[:, 0] > 0.5
        if not on.any():
            return
        for key in image_keys:
            x = batch[key]
            batch[("color_aug",) + key[1:]] = torch.stack([
                apply_color_jitter(x[i], self.unpack(params[i, 1:].tolist())) if on[i] else x[i]
                for i in range(x.shape[0])])


def default_augmentations():
    """monodepth2's training augmentations: colour jitter and flip, each with p = 0.5 (the
    jitter's switch is drawn first, as the reference does)."""
    return [ColorJitter(0.5), HorizontalFlip(0.5)]
