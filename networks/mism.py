"""MISM's multi-frame network MNet (spec section 2): a pure function of (I0, I-1, d_p, T, K, F).

    matching, context = m_encoder(I)                  FPN4: 32@H/4 each, raw [0, 1] input
    d_k   = hypotheses(d_p, F)                        D depths per pixel in [d_p/(1+F), d_p(1+F)]
    V     = group_correlation(m_0, warp(m_-1, d_k))   B x D x G x H/4 x W/4
    p     = softmax_D(reg3d(V))                       3D U-Net logits -> probabilities
    d_low = local_soft_argmax(p, d_k)                 B x 1 x H/4 x W/4
    d_m   = up(d_low, context)                        convex x4 -> B x 1 x H x W

Hypotheses are ratios of the prior, so MNet is scale-equivariant: (s d_p, s t) -> s d_m.
PADS (pixel-wise adaptive depth sampling) widens F where d_m and d_p disagree
(`MNet.update_pads`); F lives in `reg3d` as the persistent buffer `depth_bin_facs`.

Parameter names follow MISM's weight files (m_encoder.pth, reg3d.pth, up.pth), including
their numbering (reg3d's conv7 / conv9 / conv11, up's upsample_mask.0 / .2).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import BackprojectDepth, Project3D

FEATURE_STRIDE = 4  # MNet works at 1/4 resolution (MISM's prior_scale 2)
VOLUME_STRIDE = 8  # reg3d halves D, h and w three times
MIN_PRIOR_DEPTH, MAX_PRIOR_DEPTH = 0.1, 100.0  # the SNet's disp_to_depth range
PADS_MOMENTUM = 0.99  # F <- 0.99 F + 0.01 delta_fac (r - 1)
HOLE_FRACTION = 3  # the masked-image hole is (H/3) x (W/3)
GRID_OUTSIDE = 2.0  # a normalised coordinate that samples only zero padding (for sizes >= 3)
SCHEDULES = ("inverse", "linear", "log")


# ----------------------------------------------------------------------------------- m_encoder
class ConvBnReLU(nn.Module):
    """k x k convolution (no bias) + BatchNorm + ReLU; `padding` keeps the size at stride 1."""

    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _down_stage(in_ch, out_ch):
    """One 5x5 stride-2 block, then two 3x3 blocks."""
    return nn.Sequential(ConvBnReLU(in_ch, out_ch, 5, 2), ConvBnReLU(out_ch, out_ch), ConvBnReLU(out_ch, out_ch))


class FPN4(nn.Module):
    """MISM's m_encoder: a small FPN on the RAW [0, 1] image (no normalisation).

    img: B x 3 x H x W -> (matching B x 4b x H/4 x W/4, context B x 4b x H/4 x W/4), with
    b = base (8: 32 channels). conv0 = 2 x (3x3, b); conv1/2/3 = 5x5/2 + 2 x 3x3 with
    2b / 4b / 8b channels. Top-down: up2(conv3) + inner1(conv2) (1x1, 4b -> 8b, bias), then
    `out` (3x3, 8b -> 4b, no bias) gives the matching feature; context = conv2.

    top_down: how conv3 is doubled. "bilinear" (align_corners=True) is what MISM's code does
    and its m_encoder.pth was trained with; "nearest" is the alternative reading of the spec.
    """

    def __init__(self, base=8, top_down="bilinear"):
        super().__init__()
        if top_down not in ("bilinear", "nearest"):
            raise ValueError(f"FPN4 top_down={top_down!r}: use 'bilinear' (MISM's) or 'nearest'")
        self.top_down = top_down
        self.conv0 = nn.Sequential(ConvBnReLU(3, base), ConvBnReLU(base, base))
        self.conv1 = _down_stage(base, 2 * base)
        self.conv2 = _down_stage(2 * base, 4 * base)
        self.conv3 = _down_stage(4 * base, 8 * base)
        self.inner1 = nn.Conv2d(4 * base, 8 * base, 1, bias=True)
        self.out = nn.Conv2d(8 * base, 4 * base, 3, padding=1, bias=False)
        self.num_ch_out = 4 * base

    def forward(self, img):
        conv2 = self.conv2(self.conv1(self.conv0(img)))
        conv3 = self.conv3(conv2)
        if self.top_down == "bilinear":
            up = F.interpolate(conv3, size=conv2.shape[-2:], mode="bilinear", align_corners=True)
        else:
            up = F.interpolate(conv3, size=conv2.shape[-2:], mode="nearest")
        return self.out(up + self.inner1(conv2)), conv2


# ------------------------------------------------------------------------------ cost volume
def depth_hypotheses(prior, fac, num, schedule="inverse"):
    """Per-pixel depth hypotheses around the prior.

    prior: B x 1 x h x w depths; fac: a scalar, an h x w map (PADS' F) or anything that
    broadcasts to the prior. Returns B x num x h x w depths from d_p/(1+f) to d_p(1+f):
      inverse: evenly spaced in 1/d, index 0 the FARTHEST (d_p(1+f)), the last d_p/(1+f);
      linear:  evenly spaced in d, index 0 the nearest;
      log:     evenly spaced in log d (geometric), index 0 the nearest.
    (MISM's `log` is d_min + (d_max - d_min) 0.1 * 10^(k/(D-1)), which does not start at
    d_min; this one does.)"""
    if schedule not in SCHEDULES:
        raise ValueError(f"hypotheses schedule={schedule!r}: use one of {SCHEDULES}")
    fac = torch.as_tensor(fac, dtype=prior.dtype, device=prior.device)
    if fac.dim() == 2:
        fac = fac[None, None]
    near, far = prior / (1 + fac), prior * (1 + fac)
    # k / (D - 1) from an arange, as the released code (linspace differs by an ulp at some k)
    t = (torch.arange(num, dtype=prior.dtype, device=prior.device) / (num - 1)).view(1, num, 1, 1)
    if schedule == "inverse":
        return 1 / (1 / far + (1 / near - 1 / far) * t)
    if schedule == "linear":
        return near + (far - near) * t
    return near * (far / near) ** t


hypotheses = depth_hypotheses  # the spec's name; MNet.forward's argument of that name shadows it there


def warp_to_target(src_feat, depths, T, K, inv_K):
    """Source features seen from the target camera, one copy per depth hypothesis.

    src_feat: B x C x h x w (the lookup frame's matching feature); depths: B x D x h x w
    per-pixel hypotheses of the target view; T: B x 4 x 4 target -> source; K, inv_K:
    B x 4 x 4 at h x w (1/4 resolution). Each target pixel is back-projected at depth d_k,
    moved by T, projected with K and the source sampled bilinearly with zero padding
    (u -> u/(w-1)*2-1, align_corners=True). Points behind the source camera sample zeros.

    The sampling coordinates carry no gradient (the features do) and are computed in at
    least float32 with autocast off. Returns B x C x D x h x w."""
    B, C, h, w = src_feat.shape
    D = depths.shape[1]
    geo = torch.promote_types(depths.dtype, torch.float32)
    with torch.no_grad(), torch.autocast(device_type=src_feat.device.type, enabled=False):
        d = depths.detach().to(geo).reshape(B * D, 1, h, w)
        T_, K_, inv_K_ = (m.detach().to(geo).repeat_interleave(D, 0) for m in (T, K, inv_K))
        points = BackprojectDepth(B * D, h, w).to(d.device)(d, inv_K_)  # BD x 4 x hw
        grid = Project3D(B * D, h, w)(points, K_, T_)  # BD x h x w x 2
        z = torch.matmul(T_[:, 2:3, :], points).view(B * D, h, w, 1)
        grid = torch.nan_to_num(grid, nan=GRID_OUTSIDE, posinf=GRID_OUTSIDE, neginf=-GRID_OUTSIDE)
        grid = torch.where(z > 0, grid.clamp(-GRID_OUTSIDE, GRID_OUTSIDE), torch.full_like(grid, GRID_OUTSIDE))
    src = src_feat.unsqueeze(1).expand(B, D, C, h, w).reshape(B * D, C, h, w)
    warped = F.grid_sample(src.to(geo), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped.to(src_feat.dtype).view(B, D, C, h, w).transpose(1, 2)


def group_correlation(ref, warped, groups=16):
    """Group-wise correlation with STRIDED groups.

    ref: B x C x h x w; warped: B x C x D x h x w (from `warp_to_target`). Group g is the
    mean over channels {g, g+G, g+2G, ...} of ref * warped. Returns B x D x G x h x w."""
    B, C, D, h, w = warped.shape
    if C % groups:
        raise ValueError(f"group_correlation: {C} channels do not split into {groups} groups")
    corr = (ref.unsqueeze(2) * warped).view(B, C // groups, groups, D, h, w).mean(1)  # B x G x D x h x w
    return corr.transpose(1, 2)


# ------------------------------------------------------------------------------------ reg3d
class ConvBnReLU3D(nn.Module):
    """3x3x3 Conv3d (no bias) + BatchNorm3d + ReLU."""

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _up3d(in_ch, out_ch):
    """Transposed 3x3x3 conv doubling D, h, w (stride 2, padding 1, output_padding 1) + BN + ReLU."""
    return nn.Sequential(nn.ConvTranspose3d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm3d(out_ch), nn.ReLU(inplace=True))


class Reg3D(nn.Module):
    """MISM's reg3d: a 3D U-Net over (G, D, h, w) -> logits over the hypotheses.

    volume: B x D x G x h x w -> logits B x D x h x w (NOT softmaxed: MNet.forward applies
    the softmax over D). D, h and w must be divisible by 8. conv0 (c = base), three stride-2
    stages conv1/conv3/conv5 (2c, 4c, 8c) each followed by conv2/conv4/conv6; transposed
    conv7/conv9/conv11 come back up, each added to the skip of its size; `prob` (3x3x3 -> 1).

    pads_shape (h, w): registers PADS' map F as the persistent buffer `depth_bin_facs`
    (filled with depth_bin_fac), so reg3d.pth carries it and a file without it fails
    strict loading."""

    def __init__(self, in_groups=16, base=16, pads_shape=None, depth_bin_fac=1.0):
        super().__init__()
        self.in_groups = in_groups
        c = base
        self.conv0 = ConvBnReLU3D(in_groups, c)
        self.conv1, self.conv2 = ConvBnReLU3D(c, 2 * c, 2), ConvBnReLU3D(2 * c, 2 * c)
        self.conv3, self.conv4 = ConvBnReLU3D(2 * c, 4 * c, 2), ConvBnReLU3D(4 * c, 4 * c)
        self.conv5, self.conv6 = ConvBnReLU3D(4 * c, 8 * c, 2), ConvBnReLU3D(8 * c, 8 * c)
        self.conv7, self.conv9, self.conv11 = _up3d(8 * c, 4 * c), _up3d(4 * c, 2 * c), _up3d(2 * c, c)
        self.prob = nn.Conv3d(c, 1, 3, padding=1, bias=False)
        if pads_shape is not None:
            self.register_buffer("depth_bin_facs", torch.full(tuple(pads_shape), float(depth_bin_fac)))

    def forward(self, volume):
        B, D, G, h, w = volume.shape
        if G != self.in_groups:
            raise ValueError(f"Reg3D: the volume has {G} groups, the network takes {self.in_groups}")
        if D % VOLUME_STRIDE or h % VOLUME_STRIDE or w % VOLUME_STRIDE:
            raise ValueError(f"Reg3D: D={D}, h={h}, w={w} must all be divisible by {VOLUME_STRIDE} "
                             "(num_depth_bins a multiple of 8, the input size a multiple of 32)")
        x = volume.transpose(1, 2)  # B x G x D x h x w
        conv0 = self.conv0(x)
        conv2 = self.conv2(self.conv1(conv0))
        conv4 = self.conv4(self.conv3(conv2))
        x = self.conv6(self.conv5(conv4))
        x = conv4 + self.conv7(x)
        x = conv2 + self.conv9(x)
        x = conv0 + self.conv11(x)
        return self.prob(x).squeeze(1)


def local_soft_argmax(prob, depths, radius=1):
    """MISM's local max: k* = argmax_k p_k; over the window k* - r .. k* + r with each index
    clamped to [0, D-1], d = sum p_k d_k / sum p_k.

    prob: B x D x h x w (softmaxed), depths: B x D x h x w -> B x 1 x h x w. As in MISM,
    the indices are clamped, not the window cut: at k* = 0 the window is (0, 0, 1), so the
    end bin counts twice. The result always lies between the window's depths."""
    D = prob.shape[1]
    k = prob.argmax(1, keepdim=True)
    offsets = torch.arange(-radius, radius + 1, device=prob.device).view(1, -1, 1, 1)
    idx = (k + offsets).clamp(0, D - 1)
    p, d = prob.gather(1, idx), depths.gather(1, idx)
    return (p * d).sum(1, keepdim=True) / p.sum(1, keepdim=True)


# --------------------------------------------------------------------------------------- up
class ConvexUpsample(nn.Module):
    """MISM's `up`: convex upsampling of DEPTH by `factor` (4), weights from the context.

    depth_low: B x 1 x h x w, context: B x C x h x w -> B x 1 x (factor h) x (factor w).
    upsample_mask = 3x3 C -> 64 (no bias), ReLU, 1x1 64 -> 9 factor^2 (no bias); the 9
    weights of each output pixel are softmaxed and mix the 3x3 low-res neighbourhood of its
    parent pixel (row-major offsets (-1,-1) .. (1,1); channel = 9-index * factor^2 +
    sub-row * factor + sub-col). padding "zeros" (MISM's; pulls border depths towards 0) or
    "replicate"."""

    def __init__(self, context_ch=32, factor=4, hidden=64, padding="zeros"):
        super().__init__()
        if padding not in ("zeros", "replicate"):
            raise ValueError(f"ConvexUpsample padding={padding!r}: use 'zeros' (MISM's) or 'replicate'")
        self.factor, self.padding = factor, padding
        self.upsample_mask = nn.Sequential(
            nn.Conv2d(context_ch, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 9 * factor ** 2, 1, bias=False))

    def forward(self, depth_low, context):
        B, _, h, w = depth_low.shape
        f = self.factor
        weights = self.upsample_mask(context).view(B, 9, f, f, h, w).softmax(1)
        if self.padding == "zeros":
            patches = F.unfold(depth_low, 3, padding=1)
        else:
            patches = F.unfold(F.pad(depth_low, (1, 1, 1, 1), mode="replicate"), 3)
        up = (weights * patches.view(B, 9, 1, 1, h, w)).sum(1)  # B x f x f x h x w
        return up.permute(0, 3, 1, 4, 2).reshape(B, 1, h * f, w * f)


# ------------------------------------------------------------------------- masked image
def random_hole_mask(B, H, W, generator=None, device=None):
    """The masked-image augmentation's keep-mask: ONE (H/3) x (W/3) rectangle at a random
    position, the same for the whole batch (MISM's reference). Returns B x 1 x H x W floats,
    0 in the hole and 1 elsewhere; multiply the reference image by it. Every position is
    possible (MISM's draw never lets the hole touch the right or bottom edge)."""
    hh, hw = H // HOLE_FRACTION, W // HOLE_FRACTION
    y = int(torch.randint(0, H - hh + 1, (1,), generator=generator))
    x = int(torch.randint(0, W - hw + 1, (1,), generator=generator))
    keep = torch.ones(B, 1, H, W, device=device)
    keep[:, :, y:y + hh, x:x + hw] = 0
    return keep


def keep_mask_at(keep, h, w):
    """The pixels of an h x w map outside the hole, as MISM's loss takes them: the keep-mask
    resized bilinearly (align_corners=True), non-zero. keep: B x 1 x H x W -> bool B x 1 x h x w."""
    return F.interpolate(keep.float(), size=(h, w), mode="bilinear", align_corners=True) > 0


# ------------------------------------------------------------------------------------- MNet
class MNet(nn.Module):
    """MISM's multi-frame network: m_encoder (FPN4), reg3d (Reg3D with PADS' F), up
    (ConvexUpsample), as in MISM's weight files.

    height, width: the network input size (multiples of 32); F is (height/4) x (width/4)
    and starts at depth_bin_fac. num_depth_bins: D (a multiple of 8). schedule: hypothesis
    spacing (`hypotheses`). adaptive_range: PADS on (F from reg3d.depth_bin_facs, updated
    by update_pads) or off (the constant depth_bin_fac). convex_up: convex x4 upsampling,
    else bilinear (align_corners=True).
    """

    def __init__(self, height=192, width=640, num_depth_bins=16, schedule="inverse", depth_bin_fac=1.0,
                 delta_fac=1.2, adaptive_range=True, convex_up=True, num_groups=16, fpn_base=8, reg3d_base=16,
                 min_depth=MIN_PRIOR_DEPTH, max_depth=MAX_PRIOR_DEPTH, top_down="bilinear", up_padding="zeros"):
        super().__init__()
        step = FEATURE_STRIDE * VOLUME_STRIDE
        if height % step or width % step or num_depth_bins % VOLUME_STRIDE:
            raise ValueError(f"MNet: height={height} and width={width} must be multiples of {step} and "
                             f"num_depth_bins={num_depth_bins} a multiple of {VOLUME_STRIDE} (reg3d halves "
                             "D, H/4 and W/4 three times)")
        if schedule not in SCHEDULES:
            raise ValueError(f"MNet schedule={schedule!r}: use one of {SCHEDULES}")
        self.height, self.width = height, width
        self.num_depth_bins, self.schedule = num_depth_bins, schedule
        self.depth_bin_fac, self.delta_fac = depth_bin_fac, delta_fac
        self.adaptive_range, self.convex_up = adaptive_range, convex_up
        self.num_groups, self.min_depth, self.max_depth = num_groups, min_depth, max_depth
        self.low_size = (height // FEATURE_STRIDE, width // FEATURE_STRIDE)
        self.m_encoder = FPN4(fpn_base, top_down=top_down)
        self.reg3d = Reg3D(num_groups, reg3d_base, pads_shape=self.low_size, depth_bin_fac=depth_bin_fac)
        self.up = ConvexUpsample(self.m_encoder.num_ch_out, FEATURE_STRIDE, padding=up_padding)

    @property
    def pads(self):
        """F: (height/4) x (width/4), PADS' per-pixel range factor."""
        return self.reg3d.depth_bin_facs

    def features(self, img):
        """img: B x 3 x H x W raw [0, 1] -> (matching, context), each B x 32 x H/4 x W/4."""
        return self.m_encoder(img)

    def prior_low(self, prior_depth):
        """Full-res prior B x 1 x H x W -> detached, clamped to [min, max] depth,
        nearest-resized to B x 1 x H/4 x W/4."""
        prior = prior_depth.detach().clamp(self.min_depth, self.max_depth)
        return F.interpolate(prior, size=self.low_size, mode="nearest")

    def forward(self, ref_img, src_img, prior_depth, T, K4, invK4, src_feats=None, ref_feats=None,
                hypotheses=None):
        """ref_img, src_img: B x 3 x H x W raw [0, 1] (I0 and I-1; either may be None when its
        features are given); prior_depth: B x 1 x H x W the SNet depth (detached here);
        T: B x 4 x 4 target -> source; K4, invK4: B x 4 x 4 at H/4 x W/4.
        src_feats: B x 32 x h x w matching feature of I-1 to reuse; ref_feats: (matching,
        context) of I0 to reuse; hypotheses: B x D x h x w to reuse (prior_depth then unused).

        Returns {"depth": B x 1 x H x W (d_m), "depth_low": B x 1 x h x w, "prob": B x D x h x w
        (softmax over D), "hypotheses": B x D x h x w, "src_feats", "ref_feats"}. For the
        masked-image pass, call again with the masked I0 and the returned src_feats and
        hypotheses."""
        if ref_feats is None:
            ref_feats = self.m_encoder(ref_img)
        if src_feats is None:
            src_feats = self.m_encoder(src_img)[0]
        matching, context = ref_feats
        h, w = matching.shape[-2:]
        if (h, w) != self.low_size:
            raise ValueError(f"MNet built for {self.height}x{self.width} (features {self.low_size}), "
                             f"got features of {h}x{w}")
        if hypotheses is None:
            fac = self.pads if self.adaptive_range else self.depth_bin_fac
            with torch.no_grad():
                hypotheses = depth_hypotheses(self.prior_low(prior_depth), fac, self.num_depth_bins, self.schedule)
        warped = warp_to_target(src_feats, hypotheses, T, K4, invK4)
        logits = self.reg3d(group_correlation(matching, warped, self.num_groups))
        prob = logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))
        depth_low = local_soft_argmax(prob, hypotheses.to(prob.dtype))
        if self.convex_up:
            depth = self.up(depth_low, context)
        else:
            depth = F.interpolate(depth_low, size=(FEATURE_STRIDE * h, FEATURE_STRIDE * w), mode="bilinear",
                                  align_corners=True)
        return {"depth": depth, "depth_low": depth_low, "prob": prob, "hypotheses": hypotheses,
                "src_feats": src_feats, "ref_feats": ref_feats}

    @torch.no_grad()
    def update_pads(self, depth, prior_depth):
        """PADS after a TRAINING batch: r = batch max of max(d_m/d_p, d_p/d_m) per pixel at
        h x w, with d_m (B x 1 x any size, detached) resized bilinearly (align_corners=True)
        and d_p the nearest-resized prior (B x 1 x H x W); F <- 0.99 F + 0.01 delta_fac (r - 1).
        No-op when adaptive_range is off. Returns F."""
        if not self.adaptive_range:
            return self.pads
        d_m = F.interpolate(depth.detach().to(self.pads.dtype), size=self.low_size, mode="bilinear",
                            align_corners=True)
        d_p = self.prior_low(prior_depth).to(self.pads.dtype)
        r = torch.maximum(d_m / d_p, d_p / d_m).amax(dim=(0, 1))
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # the max over all processes
            torch.distributed.all_reduce(r, op=torch.distributed.ReduceOp.MAX)
        self.pads.mul_(PADS_MOMENTUM).add_((1 - PADS_MOMENTUM) * self.delta_fac * (r - 1))
        return self.pads

    random_hole_mask = staticmethod(random_hole_mask)
    keep_mask_at = staticmethod(keep_mask_at)
