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
they are, which the losses use). "view" augmentations add a second view of the item
(e.g. ("color_local", f, 0)) beside the original, after the geometric ones and before the
photometric ones, which then also make its "_aug" copy with the same draw: they give
`view_key`, `make_view_host(native, levels, params)` (default path: PIL frames at native
size and the pyramid's PIL levels -> {key: PIL at the network size}) and
`make_view_batch(batch, params)` (fast path: from the device's ("color", f, 0)). Which augmentations apply to an item is drawn first, in
list order, then the parameters of those that apply, in list order; the draws come from
the item's own random stream (seed, epoch, index).
"""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

JITTER = dict(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))


class ItemAugmentation:
    name = None
    stage = "geometric"
    host_params = False  # fast path: apply_batch gets its B x n params on the training device
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


def augmented_key(key):
    """The key of the augmented network input of an image: ("color", f, s) -> ("color_aug",
    f, s), ("color_local", f, 0) -> ("color_local_aug", f, 0)."""
    return (key[0] + "_aug",) + tuple(key[1:])


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
    host_params = True  # which rows take which operation is decided on the host: no reading back

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
        params = params.detach().to("cpu", torch.float64)  # (finish_batch passes them on the host)
        on = params[:, 0] > 0.5
        if not on.any():
            return
        order = params[:, 5:9].long()
        by_shape = {}  # every frame and scale of an item gets its draw: equal shapes go in one batch
        for key in image_keys:
            by_shape.setdefault(tuple(batch[key].shape), []).append(key)
        for keys in by_shape.values():
            x = torch.cat([batch[k] for k in keys]) if len(keys) > 1 else batch[keys[0]]
            n = len(keys)
            out = jitter_batch(x, on.repeat(n), order.repeat(n, 1), params[:, 1:5].repeat(n, 1))
            for k, part in zip(keys, out.chunk(n)):
                batch[augmented_key(k)] = part


def _grey(x):
    """B x 3 x H x W -> B x 1 x H x W luma (ITU-R 601-2 weights, as torchvision's)."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x, y, ratio):
    """ratio * x + (1 - ratio) * y in [0, 1], ratio B on x's device (1 - ratio is exact for the
    jitter's factors in [0.8, 1.2])."""
    r = ratio.view(-1, 1, 1, 1)
    return (r * x + (1 - r) * y).clamp(0, 1)


def _shift_hue(x, shift):
    """Rotate the hue of B x 3 x H x W RGB in [0, 1] by `shift` (B, fractions of a turn),
    keeping saturation and value (HSV's hexcone: the same result as torchvision's adjust_hue
    up to rounding)."""
    r, g, b = x.unbind(1)
    v, low = x.amax(1), x.amin(1)
    chroma = v - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue6 = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.remainder(torch.where(chroma > 0, hue6, torch.zeros_like(hue6)) / 6 + shift.view(-1, 1, 1), 1.0)
    sat = chroma / torch.where(v > 0, v, torch.ones_like(v))
    # back to RGB: channel n in (5, 3, 1) for (R, G, B) is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 hue) mod 6
    k = torch.stack([torch.remainder(n + 6 * hue, 6) for n in (5.0, 3.0, 1.0)], 1)
    return (v.unsqueeze(1) - (v * sat).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)).clamp(0, 1)


JITTER_OPS = (  # in ColorJitter's parameter order: brightness, contrast, saturation, hue
    lambda x, f: _blend(x, torch.zeros_like(x), f),
    lambda x, f: _blend(x, _grey(x).mean((1, 2, 3), keepdim=True), f),
    lambda x, f: _blend(x, _grey(x), f),
    _shift_hue,
)


def jitter_batch(x, on, order, factors):
    """apply_color_jitter on every row of x (B x 3 x H x W, on any device) at once, with the
    rows' own draws: on (B bools), order (B x 4 operation indices), factors (B x 4: brightness,
    contrast, saturation, hue), all on the host. Rows that share the operation at a position
    go through it together: at most 16 batched operations and no per-row loop; the factors
    and row indices go to the device without waiting for it, nothing comes back."""
    out = x
    on_device = factors.to(x.device, x.dtype, non_blocking=True)
    for position in range(4):
        for op in range(4):
            rows = torch.nonzero(on & (order[:, position] == op)).flatten()
            if len(rows) == 0:
                continue
            if len(rows) == len(x):
                out = JITTER_OPS[op](out, on_device[:, op])
                continue
            index = rows.to(x.device, non_blocking=True)
            out = out.index_copy(0, index, JITTER_OPS[op](out.index_select(0, index), on_device[index, op]))
    return out


class ViewAugmentation(ItemAugmentation):
    """An augmentation that adds a view (always on: every item carries it, so batches collate)."""
    stage = "view"
    view_key = None

    def __init__(self, height, width):
        super().__init__(1.0)
        self.height, self.width = height, width

    def switch(self, rng):
        return True

    def make_view_host(self, native, levels, params):
        raise NotImplementedError

    def make_view_batch(self, batch, params):
        raise NotImplementedError


def local_crop_window(ratio, u, v, height, width):
    """The zoom window of a resize-crop draw in network pixels: (ox, oy, width / ratio,
    height / ratio), the left/top edge of the window in pixel-edge coordinates."""
    return (width - width / ratio) * u, (height - height / ratio) * v, width / ratio, height / ratio


def local_grid(crop, height, width):
    """crop: B x 3 (ratio, ox, oy) -> B x H x W x 2 grid_sample coordinates (align_corners=
    False, channel 0 = x) of every local-view pixel centre in the original view."""
    ratio, ox, oy = crop[:, 0, None], crop[:, 1, None], crop[:, 2, None]
    u = torch.arange(width, dtype=crop.dtype, device=crop.device)[None] + 0.5
    v = torch.arange(height, dtype=crop.dtype, device=crop.device)[None] + 0.5
    gx = 2 * (ox + u / ratio) / width - 1  # B x W
    gy = 2 * (oy + v / ratio) / height - 1  # B x H
    return torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)


class LocalCrop(ViewAugmentation):
    """BDEdepth's resizing-cropping: every frame of the item zoomed by r ~ U(1.2, 2.0) and
    cropped back to the network size at one random window shared by all frames. Ours: the
    window is cut from the native frame with one exact zoom r on both axes (PIL resize with a
    box) instead of resizing to (int(W r), int(H r)) and cropping at whole pixels, so that
    the virtual camera (methods/bdedepth.py) and the consistency term use the same exact
    window. Meta: "crop_local" = (r, ox, oy) in network pixels, "ratio_local" = (r,)."""
    name = "local_crop"
    view_key = "color_local"
    num_params = 3

    def __init__(self, height, width, ratio_range=(1.2, 2.0)):
        super().__init__(height, width)
        self.ratio_range = tuple(ratio_range)

    def sample(self, rng):
        return [rng.uniform(*self.ratio_range), rng.random(), rng.random()]

    def apply_meta(self, item, params):
        ratio, u, v = params
        ox, oy, _, _ = local_crop_window(ratio, u, v, self.height, self.width)
        item["crop_local"] = np.array([ratio, ox, oy], np.float32)
        item["ratio_local"] = np.array([ratio], np.float32)

    def make_view_host(self, native, levels, params):
        ox, oy, w, h = local_crop_window(*params, self.height, self.width)
        out = {}
        for (_, f, _), image in native.items():
            sx, sy = image.width / self.width, image.height / self.height
            box = (ox * sx, oy * sy, (ox + w) * sx, (oy + h) * sy)
            out[(self.view_key, f, 0)] = image.resize((self.width, self.height), Image.LANCZOS, box=box)
        return out

    def make_view_batch(self, batch, params):
        # the fast path only has the frames at the network size: a bilinear zoom of those
        grid = local_grid(batch["crop_local"].float(), self.height, self.width)
        out = {}
        for key in [k for k in batch if isinstance(k, tuple) and k[0] == "color" and k[2] == 0]:
            x = batch[key]
            out[(self.view_key, key[1], 0)] = F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear",
                                                            padding_mode="border", align_corners=False)
        return out


def reshuffle_split(rho_x, rho_y, height, width):
    """(w_i, h_i) columns and rows moved to the end by a split-permute draw."""
    return int(width * rho_x), int(height * rho_y)


class PatchReshuffle(ViewAugmentation):
    """BDEdepth's splitting-permuting of frame 0 (scale 0, before colour jitter): the
    columns [0, w_i) move to the right end, then the rows [0, h_i) to the bottom, i.e.
    roll(image, (-h_i, -w_i)), with w_i = int(W rho_x), h_i = int(H rho_y), rho ~ U(0.1, 0.9).
    Meta: "split_xy" = (W - w_i, H - h_i), where the original's first column and row now are."""
    name = "patch_reshuffle"
    view_key = "color_reshuffle"
    num_params = 2

    def __init__(self, height, width, rho_range=(0.1, 0.9)):
        super().__init__(height, width)
        self.rho_range = tuple(rho_range)

    def sample(self, rng):
        return [rng.uniform(*self.rho_range), rng.uniform(*self.rho_range)]

    def apply_meta(self, item, params):
        w, h = reshuffle_split(*params, self.height, self.width)
        item["split_xy"] = np.array([self.width - w, self.height - h], np.int64)

    def make_view_host(self, native, levels, params):
        w, h = reshuffle_split(*params, self.height, self.width)
        image = np.asarray(levels[("color", 0, 0)])
        return {(self.view_key, 0, 0): Image.fromarray(np.roll(image, (-h, -w), axis=(0, 1)))}

    def make_view_batch(self, batch, params):
        x, split = batch[("color", 0, 0)], batch["split_xy"]
        height, width = x.shape[-2:]
        rolled = [torch.roll(x[i], [int(split[i, 1]) - height, int(split[i, 0]) - width], [1, 2])
                  for i in range(x.shape[0])]
        return {(self.view_key, 0, 0): torch.stack(rolled)}


def unpermute(x, split_xy):
    """Undo PatchReshuffle on B x C x H x W maps at the network size: rows cat(x[sy:],
    x[:sy]), then columns cat(x[:, sx:], x[:, :sx]). Exact (integer rolls)."""
    height, width = x.shape[-2:]
    return torch.stack([torch.roll(x[i], [height - int(split_xy[i, 1]), width - int(split_xy[i, 0])], [1, 2])
                        for i in range(x.shape[0])])


def default_augmentations():
    """monodepth2's training augmentations: colour jitter and flip, each with p = 0.5 (the
    jitter's switch is drawn first, as the reference does)."""
    return [ColorJitter(0.5), HorizontalFlip(0.5)]
