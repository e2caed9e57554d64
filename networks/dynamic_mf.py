"""Dynamic multi-frame depth with cross-cue fusion ("Learning to Fuse Monocular and
Multi-view Cues", Li et al., CVPR 2023), the networks of spec dynamic_multiframe.md §3.

The key frame's photometric SSIM cost volume over D planes uniform in inverse depth (the
multi-view cue) and a one-hot volume from a monocular branch (the mono cue) are fused by
Cross-Cue Fusion (CCF); a MonoRec depth module turns the fused volume into inverse depth.

Shapes (D = 32 bins, H x W = 256 x 512 in the paper):
    key, sources[i]  B x 3 x H x W in [0, 1] (converted to [-0.5, 0.5] inside the model)
    poses[i]         B x 4 x 4, T_i mapping key-camera points into source i (x' = R x + t)
    K, invK          B x 4 x 4 in pixels of H x W
    cost_volume      B x D x H x W in [-1, 1], higher = better match
    mono one-hot     B x D x H x W
    fused            B x 64 x H x W
    inverse depth    B x 1 x H x W in [0.0025, 0.33], 4 scales (1, 1/2, 1/4, 1/8), full first
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from layers import PROJECTION_EPS, SSIM, bins_per_chunk
from .resnet_encoder import IMAGENET_MEAN, IMAGENET_STD, load_imagenet_state_dict
from .timm_encoder import create_timm_model

INV_DEPTH_RANGE = (0.0025, 0.33)  # 1/400 m .. 1/3.03 m (config key inv_depth_min_max, reversed)
NUM_BINS = 32
CV_BORDER = 2  # px ignored at each image edge (patch // 2 + 1 in the reference)
CHANNEL_WEIGHTS = (5 / 32, 16 / 32, 11 / 32)  # R, G, B weights of the matching error
CONFIDENCE_ALPHA = 10.0  # sharpness of the per-pixel confidence, exp(-alpha (sad - min)^2)
GRID_LIMIT = 2.0  # normalised sampling coordinates are clamped to [-2, 2]
MASK_INSIDE = 0.5  # warped border mask >= 0.5: the sample lands >= 1.5 px inside the source
MAX_CHUNK_ELEMENTS = 2 ** 22  # floats of warped images per chunk of bins (16 MB in fp32)
MONO_DEPTH_CLAMP = (1e-3, 80.0)  # metres; the mono depth before its one-hot volume
LEAKY_SLOPE = 0.1
THIRD_DOWNSAMPLE_WIDTH = 650  # CCF attends at 1/8 instead of 1/4 above this input width
ENC_CHANNELS = (48, 64, 128, 192, 256)  # MonoRec depth-module encoder, strides 1 .. 16
ENC_KERNELS = (7, 7, 5, 5, 3)
DEC_CHANNELS = (256, 128, 64, 48, 32, 24)
NUM_SKIPS = 3  # backbone features at strides 2, 4, 8 join the decoder; deeper ones are unused
FUSION_MODES = ("ccf", "mono_guide_multi", "multi_guide_mono", "none")
CV_MATCHES = ("ssim", "l1", "ssim_l1")  # the cost volume's per-pixel matching error
SSIM_WEIGHT = 0.85  # ssim_l1: 0.85 SSIM + 0.15 L1


# ---- hypotheses, cost volume, one-hot volume -------------------------------------------

def inverse_depth_bins(num=NUM_BINS, inv_min=INV_DEPTH_RANGE[0], inv_max=INV_DEPTH_RANGE[1], device=None,
                       reference=False):
    """Depths d_k = 1 / linspace(inv_min, inv_max, num): far to near, uniform in 1/d
    (d_0 = 400 m, d_31 = 3.0303 m by default). -> float32 tensor of size num, computed in
    float64 and rounded once (reference: in float32 throughout, as the released code; 13 of
    the 32 default depths are then 1 or 2 float32 ulps apart)."""
    if reference:
        return 1 / torch.linspace(inv_min, inv_max, num, dtype=torch.float32, device=device)
    inv = torch.linspace(inv_min, inv_max, num, dtype=torch.float64, device=device)
    return (1 / inv).float()


def _border_mask(height, width, border, like):
    """1 x 1 x H x W: ones, zero on the `border` px along every edge."""
    mask = torch.zeros(1, 1, height, width, dtype=like.dtype, device=like.device)
    mask[..., border:height - border, border:width - border] = 1
    return mask


def _plane_grids(rays, P, depths, height, width, reference_order=False):
    """Sampling grids of the key pixels on the planes z = d in one source.

    rays: B x 3 x N (invK p, N = H W); P: B x 4 x 4 (K T); depths: c.
    The homogeneous source pixel of d rays is d (A ray + b / d) with A, b = P[:3, :3], P[:3, 3],
    so the projection is (A ray + b / d) up to scale, exactly the same for every d when b = 0.
    Returns grid B x (c H) x W x 2 (x / (W-1), y / (H-1) in [-1, 1], clamped to [-2, 2]; bins
    stacked along rows) and in_front B x c x H x W (the point is in front of the source camera:
    the reference divided by z + 1e-7 and sampled points behind it; we mark them invalid).
    reference_order: the same projection in the released code's float32 steps (the point
    d ray, then P [X; 1] as one 3 x 4 product, x / (z + 1e-7) / (W - 1), minus 0.5, times 2):
    the grids then differ from the released ones by rounding only where the matmuls sum
    differently."""
    b_ = rays.shape[0]
    if reference_order:
        points = depths.view(1, -1, 1, 1) * rays[:, None]  # B c 3 N
        points = torch.cat([points, torch.ones_like(points[:, :, :1])], 2)  # homogeneous
        q = P[:, None, :3, :] @ points  # B c 3 N
        in_front = q[:, :, 2] > PROJECTION_EPS * depths.view(1, -1, 1)  # the same test as below, times d
        z = torch.where(in_front, q[:, :, 2] + 1e-7, torch.ones_like(q[:, :, 2]))
        gx = (q[:, :, 0] / z / (width - 1) - 0.5) * 2
        gy = (q[:, :, 1] / z / (height - 1) - 0.5) * 2
    else:
        q = (P[:, None, :3, :3] @ rays[:, None]) + P[:, None, :3, 3:] / depths.view(1, -1, 1, 1)  # B c 3 N
        z = q[:, :, 2]
        in_front = z > PROJECTION_EPS
        z = torch.where(in_front, z, torch.ones_like(z))
        gx = q[:, :, 0] / z / (width - 1) * 2 - 1
        gy = q[:, :, 1] / z / (height - 1) * 2 - 1
    grid = torch.stack([gx, gy], -1).clamp(-GRID_LIMIT, GRID_LIMIT)
    grid = torch.where(in_front[..., None], grid, torch.full_like(grid, -GRID_LIMIT))  # lands outside
    c = depths.numel()
    return grid.view(b_, c * height, width, 2), in_front.view(b_, c, height, width)


def _matching_error(images, keys, match, ssim):
    """Per-channel error of warped images against the key, in [0, 1] for images in [0, 1]:
    SSIM dissimilarity ("ssim", the default), |difference| ("l1") or 0.85 SSIM + 0.15 L1
    ("ssim_l1"), MonoRec's three choices."""
    if match == "l1":
        return (images - keys).abs()
    err = ssim(images, keys)
    if match == "ssim_l1":
        err = SSIM_WEIGHT * err + (1 - SSIM_WEIGHT) * (images - keys).abs()
    return err


def _source_error(key, source, T, K, rays, depths, border_mask, align_corners, patch, match="ssim",
                  reference_sampling=False):
    """Matching error of one source at every depth and its validity. reference_sampling:
    the released code's warp (samples outside the source are mid-grey, as its images were
    in [-0.5, 0.5] with zero padding, a sample counts as inside wherever the warped border
    mask is non-zero, and the projection runs in its float32 steps, _plane_grids'
    reference_order) instead of black padding and a mask >= MASK_INSIDE.

    Returns sad B x D x H x W in [0, 1] (per-channel matching error (`match`), a patch x patch
    mean, channels weighted (5, 16, 11)/32) and inside B x 1 x H x W (bool: the warp lands inside the
    source's interior at every depth)."""
    B, _, H, W = key.shape
    D = depths.numel()
    ssim = SSIM(keep_target=False)  # each chunk's keys are a new tensor
    weights = key.new_tensor(CHANNEL_WEIGHTS).view(1, 3, 1, 1)
    shift = 0.5 if reference_sampling else 0.0  # padding value of the images: grey or black
    source_and_mask = torch.cat([source - shift, border_mask.expand(B, 1, H, W)], 1)  # B x 4 x H x W
    P = K @ T

    def chunk_error(d):  # sad of the depths d (B x c x H x W) and where the warp lands inside at all of them
        c = d.numel()
        grid, in_front = _plane_grids(rays, P, d, H, W, reference_order=reference_sampling)
        warped = F.grid_sample(source_and_mask, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=align_corners).view(B, 4, c, H, W)
        lands = ((warped[:, 3] > 0) if reference_sampling else (warped[:, 3] >= MASK_INSIDE)) & in_front
        images = warped[:, :3].transpose(1, 2).reshape(B * c, 3, H, W) + shift
        keys = key.unsqueeze(1).expand(B, c, 3, H, W).reshape(B * c, 3, H, W)
        err = F.avg_pool2d(_matching_error(images, keys, match, ssim), patch, stride=1,
                           padding=patch // 2)  # zero padded
        return (err * weights).sum(1).view(B, c, H, W), lands.all(1, keepdim=True)

    chunk = bins_per_chunk(D, B * 4 * H * W, MAX_CHUNK_ELEMENTS)
    if chunk == D:  # one piece (always so in an exported graph)
        return chunk_error(depths)
    sad = key.new_empty(B, D, H, W)
    inside = torch.ones(B, 1, H, W, dtype=torch.bool, device=key.device)
    for start in range(0, D, chunk):
        sad[:, start:start + chunk], lands = chunk_error(depths[start:start + chunk])
        inside = inside & lands
    return sad, inside


@torch.no_grad()
def ssim_cost_volume(key, sources, poses, K, invK, depths, border=CV_BORDER, align_corners=True, patch=3,
                     match="ssim", reference_sampling=False):
    """See _ssim_cost_volume; always computed in float32 (autocast off): in bfloat16 a pixel
    coordinate near 300 or a focal length near 490 is only known to within 1-2 pixels."""
    if torch.is_tensor(sources) and sources.dim() == 5:
        sources = sources.unbind(1)
    if torch.is_tensor(poses) and poses.dim() == 4:
        poses = poses.unbind(1)
    with torch.autocast(key.device.type, enabled=False):
        return _ssim_cost_volume(key.float(), [s.float() for s in sources], [T.float() for T in poses], K.float(),
                                 invK.float(), depths.float(), border, align_corners, patch, match,
                                 reference_sampling)


def _ssim_cost_volume(key, sources, poses, K, invK, depths, border=CV_BORDER, align_corners=True,
                      patch=3, match="ssim", reference_sampling=False):
    """MonoRec's photometric cost volume of the key frame (spec §3.2), batched over the batch
    and the bins (chunks of bins bound the memory; an exported graph builds all bins in one
    chunk, layers.bins_per_chunk), never differentiated.

    key: B x 3 x H x W in [0, 1]; sources: list of B x 3 x H x W in [0, 1] (or B x N x 3 x H x W);
    poses: list of B x 4 x 4 key -> source (or B x N x 4 x 4); K, invK: B x 4 x 4 at H x W; depths: D (D >= 2).
    align_corners=True matches the (W-1, H-1) normalisation; False reproduces the released
    checkpoints' grid_sample (up to half a pixel off at the borders, pitfall 8.1).
    match: the per-pixel error, "ssim" (the paper's), "l1" or "ssim_l1" (see _matching_error).
    reference_sampling: the released code's padding and validity (see _source_error).

    Per source i: sad_i(d) in [0, 1]; confidence w_i = mask_i (1 - (sum_d exp(-10 (sad_i(d) -
    min_d sad_i)^2) - 1) / (D - 1)), mask_i = source valid (inside at every depth, in front of
    the camera) and the key pixel off its `border`. Volume C = 1 - 2 sum_i w_i sad_i / sum_i w_i,
    0 where sum_i w_i = 0. Returns B x D x H x W in [-1, 1]."""
    B, _, H, W = key.shape
    D = depths.numel()
    if torch.is_tensor(sources) and sources.dim() == 5:  # B x N x 3 x H x W and B x N x 4 x 4
        sources = sources.unbind(1)
    if torch.is_tensor(poses) and poses.dim() == 4:
        poses = poses.unbind(1)
    if D < 2:
        raise ValueError(f"ssim_cost_volume: needs at least 2 depths, got {D}")
    if len(sources) != len(poses) or not len(sources):
        raise ValueError(f"ssim_cost_volume: {len(sources)} sources but {len(poses)} poses")
    depths = depths.to(key)
    mask = _border_mask(H, W, border, key)
    v, u = torch.meshgrid(torch.arange(H, dtype=key.dtype, device=key.device),
                          torch.arange(W, dtype=key.dtype, device=key.device), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])  # 3 x N
    rays = invK[:, :3, :3].to(key) @ pix  # B x 3 x N
    num = key.new_zeros(B, D, H, W)
    den = key.new_zeros(B, 1, H, W)
    for source, T in zip(sources, poses):
        sad, inside = _source_error(key, source, T.to(key), K.to(key), rays, depths, mask,
                                    align_corners, patch, match, reference_sampling)
        peak = torch.exp(-CONFIDENCE_ALPHA * (sad - sad.min(1, keepdim=True)[0]) ** 2).sum(1, keepdim=True)
        w = (1 - (peak - 1) / (D - 1)).clamp(min=0) * inside * mask
        num += w * sad
        den += w
    return torch.where(den > 0, 1 - 2 * num / den.clamp(min=torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def mono_onehot_volume(depth, depths):
    """The mono cue: one-hot at the bin nearest in metric depth (not inverse depth).

    depth: B x 1 x H x W metres (clamped to [1e-3, 80] and detached; so bin 0 at 400 m is
    never chosen); depths: D. Returns B x D x H x W (float, no gradient)."""
    d = depth.detach().clamp(*MONO_DEPTH_CLAMP)
    nearest = (d - depths.to(d).view(1, -1, 1, 1)).abs().argmin(1, keepdim=True)  # B x 1 x H x W
    return torch.zeros(d.shape[0], depths.numel(), *d.shape[2:], dtype=d.dtype,
                       device=d.device).scatter_(1, nearest, 1.0)


# ---- cross-cue fusion ---------------------------------------------------------------------

def _conv_bn_relu(in_ch, out_ch, kernel=3, stride=1):
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2), nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True)]


def _attend(query, key, value):
    """Row-softmax attention without 1/sqrt(d): A = softmax_row(q^T k) (B x N x N); returns
    (value A^T: B x d x N, A). query, key, value: B x d x N."""
    attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)
    return value @ attention.transpose(1, 2), attention


class CCF(nn.Module):
    """Cross-Cue Fusion (spec §3.4).

    P: B x in_ch x H x W (mono one-hot), C: B x in_ch x H x W (cost volume) -> F: B x 64 x H x W
    (2 mid channels):  F = cat[mono_reg(P), multi_reg(C)] + gamma up_nearest(cat[multi_out, mono_out])
    where, on tokens of H/4 x W/4 (H/8 x W/8 when width > 650), N of them:
        A_m = softmax_row(q_m^T k_m), A_c = softmax_row(q_c^T k_c)     (N x N, no 1/sqrt(d))
        multi_out = v_c A_m^T   (multi-view values routed by the mono attention)
        mono_out  = v_m A_c^T   (mono values routed by the multi-view attention)
    gamma is a scalar initialised to 0. The one-way ablations keep one path of mid channels,
    as the paper's: `mono_guide_multi` F = multi_reg(C) + gamma up(multi_out), `multi_guide_mono`
    F = mono_reg(P) + gamma up(mono_out); `none` is cat[mono_reg(P), multi_reg(C)] (no
    attention, no gamma). `out_channels` says which; only the convolutions a mode uses are built.
    """

    def __init__(self, in_ch=NUM_BINS, mid=32, mode="ccf", width=512):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"--fusion {mode!r}: use one of {', '.join(FUSION_MODES)}")
        self.mode, self.mid = mode, mid
        self.out_channels = mid if mode in ("mono_guide_multi", "multi_guide_mono") else 2 * mid
        if mode != "mono_guide_multi":
            self.mono_reg = nn.Sequential(*_conv_bn_relu(in_ch, mid), *_conv_bn_relu(mid, mid))
        if mode != "multi_guide_mono":
            self.multi_reg = nn.Sequential(*_conv_bn_relu(in_ch, mid, kernel=1))
        if mode == "none":
            return
        blocks = 3 if width > THIRD_DOWNSAMPLE_WIDTH else 2
        self.mono_expand = nn.Sequential(*[layer for i in range(blocks)
                                           for layer in _conv_bn_relu(in_ch if i == 0 else mid, mid, stride=2)])
        self.multi_expand = nn.Sequential(*[layer for i in range(blocks)
                                            for layer in _conv_bn_relu(in_ch if i == 0 else mid, mid, stride=2)])
        mono_attends = mode in ("ccf", "mono_guide_multi")  # A_m exists, routes v_c
        multi_attends = mode in ("ccf", "multi_guide_mono")  # A_c exists, routes v_m
        names = (["mono_query", "mono_key", "multi_value"] if mono_attends else []) + \
                (["multi_query", "multi_key", "mono_value"] if multi_attends else [])
        for name in names:
            setattr(self, name, nn.Conv2d(mid, mid, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, P, C, return_attention=False):
        """P, C: B x in_ch x H x W -> F: B x out_channels x H x W; with return_attention also a
        dict of A_mono, A_multi (B x N x N) and multi_out, mono_out (B x mid x h x w), those
        that the mode computes."""
        if self.mode == "mono_guide_multi":
            fused = self.multi_reg(C)
        elif self.mode == "multi_guide_mono":
            fused = self.mono_reg(P)
        else:
            fused = torch.cat([self.mono_reg(P), self.multi_reg(C)], 1)
        if self.mode == "none":
            return (fused, {}) if return_attention else fused
        mono, multi = self.mono_expand(P), self.multi_expand(C)
        B, _, h, w = mono.shape
        tokens = lambda conv, x: conv(x).flatten(2)  # noqa: E731  B x mid x N
        zeros = mono.new_zeros(B, self.mid, h, w)
        extras = {}
        multi_out = mono_out = zeros
        if hasattr(self, "mono_query"):
            out, extras["A_mono"] = _attend(tokens(self.mono_query, mono), tokens(self.mono_key, mono),
                                            tokens(self.multi_value, multi))
            multi_out = extras["multi_out"] = out.view(B, self.mid, h, w)
        if hasattr(self, "multi_query"):
            out, extras["A_multi"] = _attend(tokens(self.multi_query, multi), tokens(self.multi_key, multi),
                                             tokens(self.mono_value, mono))
            mono_out = extras["mono_out"] = out.view(B, self.mid, h, w)
        paths = {"ccf": [multi_out, mono_out], "mono_guide_multi": [multi_out], "multi_guide_mono": [mono_out]}
        guided = F.interpolate(torch.cat(paths[self.mode], 1), size=fused.shape[2:], mode="nearest")
        fused = fused + self.gamma * guided
        return (fused, extras) if return_attention else fused


# ---- MonoRec depth module -----------------------------------------------------------------

def _same_pad(size, kernel, stride):
    """TensorFlow 'same' padding (before, after) of one dimension: output ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvReLU2(nn.Module):
    """Separable conv: k x 1 (stride s along y), LeakyReLU 0.1, 1 x k (stride s along x),
    LeakyReLU 0.1, each with TF-'same' zero padding. B x in x H x W -> B x out x H/s x W/s (ceil)."""

    def __init__(self, in_ch, out_ch, kernel, stride=1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv_y = nn.Conv2d(in_ch, out_ch, (kernel, 1), (stride, 1))
        self.conv_x = nn.Conv2d(out_ch, out_ch, (1, kernel), (1, stride))

    def forward(self, x):
        x = F.leaky_relu(self.conv_y(F.pad(x, (0, 0) + _same_pad(x.shape[2], self.kernel, self.stride))),
                         LEAKY_SLOPE)
        x = F.pad(x, _same_pad(x.shape[3], self.kernel, self.stride))
        return F.leaky_relu(self.conv_x(x), LEAKY_SLOPE)


class Refine(nn.Sequential):
    """Transposed conv k4 s2 p1 and LeakyReLU 0.1: B x in x h x w -> B x out x 2h x 2w."""

    def __init__(self, in_ch, out_ch):
        super().__init__(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE))


class SameConv3x3(nn.Conv2d):
    """3x3 conv, zero padding 1 (TF 'same' at stride 1)."""

    def __init__(self, in_ch, out_ch):
        super().__init__(in_ch, out_ch, 3, padding=1)


class MonoRecDepthModule(nn.Module):
    """MonoRec's depth module (spec §3.5), shared by the multi-frame (67 input channels) and
    the mono branch (3).

    x: B x in_ch x H x W (H, W multiples of 16); features: backbone pyramid, of which the
    levels at strides 2, 4, 8 (`skip_channels`) join the decoder.
    -> 4 inverse depths [B x 1 x H x W, H/2, H/4, H/8], 0.0025 + |tanh(.)| 0.3275 in [0.0025, 0.33].
    """

    def __init__(self, in_ch, skip_channels=(64, 64, 128), inv_range=INV_DEPTH_RANGE):
        super().__init__()
        self.inv_min, self.inv_span = inv_range[0], inv_range[1] - inv_range[0]
        e, d, s = ENC_CHANNELS, DEC_CHANNELS, list(skip_channels)[:NUM_SKIPS]
        stages, c_in = [], in_ch
        for i, (c, k) in enumerate(zip(e, ENC_KERNELS)):
            stages.append(nn.Sequential(ConvReLU2(c_in, c, k, stride=1 if i == 0 else 2), ConvReLU2(c, c, 3)))
            c_in = c
        self.enc = nn.ModuleList(stages)
        self.dec = nn.ModuleList([
            Refine(e[4], d[0]),  # stride 16 -> 8
            nn.Sequential(Refine(e[3] + s[2] + d[0], d[1]), ConvReLU2(d[1], d[1], 3)),  # -> 4
            nn.Sequential(Refine(e[2] + s[1] + d[1], d[2]), ConvReLU2(d[2], d[2], 3)),  # -> 2
            Refine(e[1] + s[0] + d[2], d[3]),  # -> 1, no prediction
            nn.Sequential(ConvReLU2(e[0] + d[3], d[4], 3), SameConv3x3(d[4], d[5]), nn.LeakyReLU(LEAKY_SLOPE)),
        ])
        self.heads = nn.ModuleList([SameConv3x3(c, 1) for c in (d[0], d[1], d[2], d[5])])  # 1/8, 1/4, 1/2, 1

    def forward(self, x, features):
        H, W = x.shape[2:]
        if H % 16 or W % 16:
            raise ValueError(f"MonoRecDepthModule: input {H} x {W} must be multiples of 16")
        enc = []
        for stage in self.enc:
            x = stage(x)
            enc.append(x)
        x = self.dec[0](x)
        inv = [self._head(0, x)]
        for i, (own, skip) in enumerate(zip(enc[3:0:-1], features[2::-1]), start=1):  # strides 8, 4, 2
            x = self.dec[i](torch.cat([own, skip, x], 1))
            if i < 3:
                inv.append(self._head(i, x))
        x = self.dec[4](torch.cat([enc[0], x], 1))
        inv.append(self._head(3, x))
        return inv[::-1]

    def _head(self, i, x):
        return self.inv_min + torch.tanh(self.heads[i](x)).abs() * self.inv_span


# ---- backbones ----------------------------------------------------------------------------

class ResNet18Backbone(nn.Module):
    """torchvision ResNet-18. image: B x 3 x H x W in [-0.5, 0.5], normalised as
    (x + 0.5 - 0.45) / 0.225 -> up to 5 features at strides 2 .. 32 (`num_ch_enc`
    64/64/128/256/512). Frozen = requires_grad False; its BatchNorm still follows train() /
    eval() (batch statistics in training, as the reference). The unused classifier (fc) is
    kept for the parameter count and never trained."""

    def __init__(self, pretrained=False, freeze=True, weights_file=None):
        super().__init__()
        self.encoder = torchvision.models.resnet18(weights=None)
        if pretrained or weights_file:
            self.encoder.load_state_dict(load_imagenet_state_dict(18, weights_file))
        self.encoder.fc.requires_grad_(False)
        if freeze:
            self.encoder.requires_grad_(False)
        self.num_ch_enc = [64, 64, 128, 256, 512]

    def forward(self, image, num_levels=5):
        e = self.encoder
        x = (image + 0.5 - IMAGENET_MEAN) / IMAGENET_STD
        x = e.relu(e.bn1(e.conv1(x)))
        feats = [x]
        x = e.maxpool(x)
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4)[:num_levels - 1]:
            x = layer(x)
            feats.append(x)
        return feats


class EfficientNetB5Backbone(nn.Module):
    """timm `tf_efficientnet_b5.ap_in1k`: blocks 0, 1, 2, 4 (24 ch at stride 2, 40 at 4, 64 at 8,
    176 at 16) and conv_head (2048 at 32, before its BN), the reference's gen-efficientnet
    levels. timm's features_only stops at block 6 (512 ch) and has no conv_head, so the full
    model is built and walked; its bn2 and classifier are never used (frozen).

    image: B x 3 x H x W in [-0.5, 0.5], normalised with the AP weights' Inception mean/std
    0.5 (the reference used ImageNet statistics: imagenet_stats=True reproduces that)."""

    TIMM_NAME = "tf_efficientnet_b5.ap_in1k"

    def __init__(self, pretrained=False, freeze=False, weights_file=None, imagenet_stats=False):
        super().__init__()
        self.model = create_timm_model(self.TIMM_NAME, pretrained, weights_file, what="--backbone effnet_b5")
        self.model.bn2.requires_grad_(False)
        self.model.get_classifier().requires_grad_(False)
        if freeze:
            self.model.requires_grad_(False)
        info = [f for f in self.model.feature_info if f["reduction"] < 32]
        self.block_ids = [int(f["module"].split(".")[1]) for f in info]
        self.num_ch_enc = [f["num_chs"] for f in info] + [self.model.conv_head.out_channels]
        cfg = self.model.pretrained_cfg
        mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if imagenet_stats else (cfg["mean"], cfg["std"])
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image, num_levels=5):
        m = self.model
        x = m.bn1(m.conv_stem((image + 0.5 - self.mean) / self.std))
        feats = []
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i in self.block_ids:
                feats.append(x)
                if len(feats) == num_levels:
                    return feats
        return feats + [m.conv_head(x)]


BACKBONES = {"resnet18": ResNet18Backbone, "effnet_b5": EfficientNetB5Backbone}


# ---- the model ----------------------------------------------------------------------------

def _flip_where(x, flip):
    """Mirror the samples of x (B x C x H x W) where flip (B, bool) is set."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


class DynamicMultiFrameDepth(nn.Module):
    """The full model (spec §3): cost volume -> (flip) -> backbone, mono branch, one-hot
    volume, CCF, depth module -> (flip back).

    forward(key, sources, poses, K, invK, flip=None): images in [0, 1], poses key -> source.
    In training each sample is mirrored with probability `flip_prob` (torch.rand), after the
    cost volume is built: the volume and the key image (backbone and mono input, hence the
    one-hot volume) are mirrored and every prediction mirrored back, so poses never are.
    `flip` (B bools) forces the draw in training; eval never flips.
    Returns {"result", "result_mono": B x 1 x H x W inverse depth, "multi", "mono": 4 scales
    (full first), "cost_volume": B x D x H x W (un-mirrored), "fused": B x 64 x H x W}."""

    def __init__(self, backbone="resnet18", pretrained=False, freeze_backbone=True, height=256, width=512,
                 num_bins=NUM_BINS, inv_range=INV_DEPTH_RANGE, fusion="ccf", align_corners=True,
                 weights_file=None, ccf_dim=32, flip_prob=0.5, imagenet_stats=False, cv_patch=3, cv_match="ssim",
                 reference_sampling=False):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"--backbone {backbone!r}: use one of {', '.join(BACKBONES)}")
        if height % 16 or width % 16:
            raise ValueError(f"--height {height} --width {width}: both must be multiples of 16")
        kwargs = {"imagenet_stats": imagenet_stats} if backbone == "effnet_b5" else {}
        self.backbone = BACKBONES[backbone](pretrained, freeze_backbone, weights_file, **kwargs)
        skips = self.backbone.num_ch_enc[:NUM_SKIPS]
        self.mono_module = MonoRecDepthModule(3, skips, inv_range)
        self.fusion = CCF(num_bins, ccf_dim, fusion, width)
        self.depth_module = MonoRecDepthModule(self.fusion.out_channels + 3, skips, inv_range)
        self.register_buffer("depth_bins", inverse_depth_bins(num_bins, *inv_range, reference=reference_sampling),
                             persistent=False)
        if cv_match not in CV_MATCHES:
            raise ValueError(f"--cv_match {cv_match!r}: use one of {', '.join(CV_MATCHES)}")
        self.align_corners, self.flip_prob, self.cv_patch, self.cv_match = align_corners, flip_prob, cv_patch, cv_match
        self.reference_sampling = reference_sampling

    def forward(self, key, sources, poses, K, invK, flip=None):
        cost_volume = ssim_cost_volume(key, sources, poses, K, invK, self.depth_bins,
                                       align_corners=self.align_corners, patch=self.cv_patch, match=self.cv_match,
                                       reference_sampling=self.reference_sampling)
        flip = self._draw_flip(key, flip)
        image, volume = key - 0.5, cost_volume
        if flip is not None:
            image, volume = _flip_where(image, flip), _flip_where(volume, flip)
        out = self.predict(image, volume)
        if flip is not None:
            out = {k: [_flip_where(x, flip) for x in v] if isinstance(v, list) else _flip_where(v, flip)
                   for k, v in out.items()}
        out.update(result=out["multi"][0], result_mono=out["mono"][0], cost_volume=cost_volume)
        return out

    def predict(self, image, cost_volume):
        """image: B x 3 x H x W in [-0.5, 0.5]; cost_volume: B x D x H x W ->
        {"multi", "mono": 4 inverse depths each, "fused": B x 64 x H x W}."""
        feats = self.backbone(image, num_levels=NUM_SKIPS)
        mono = self.mono_module(image, feats)
        onehot = mono_onehot_volume(1 / mono[0], self.depth_bins)
        fused = self.fusion(onehot, cost_volume)
        multi = self.depth_module(torch.cat([fused, image], 1), feats)
        return {"multi": multi, "mono": mono, "fused": fused}

    def _draw_flip(self, key, flip):
        if not self.training:
            if flip is not None and bool(torch.as_tensor(flip).any()):
                raise ValueError("DynamicMultiFrameDepth: flip is a training augmentation; eval never flips")
            return None
        if flip is None:
            flip = torch.rand(key.shape[0], device=key.device) < self.flip_prob
        return torch.as_tensor(flip, dtype=torch.bool, device=key.device)
