"""ManyDepth's matching encoder (Watson et al., CVPR 2021): a ResNet whose layer-1 features
of the target frame are compared with those of the lookup frames in an L1 cost volume over
D fronto-parallel depth planes; the volume joins the features before layer 2.

Shapes (h x w = H/4 x W/4, the matching resolution; N lookup frames; D depth bins):
    current_image    B x 3 x H x W in [0, 1]
    lookup_images    B x N x 3 x H x W in [0, 1]
    poses            B x N x 4 x 4, T mapping target-camera points into lookup frame n;
                     an all-zero matrix marks a missing lookup, which is skipped
    K, invK          B x 4 x 4, in pixels of h x w
 -> features         [64 @ H/2, 64 @ H/4, 128 @ H/8, 256 @ H/16, 512 @ H/32]
                     (x4 after the first for ResNet-50 and deeper)
    lowest_cost      B x h x w, 1/d of the cheapest bin
    confidence_mask  B x h x w in {0, 1}
    last_cost_volume B x D x h x w (attribute), the volume given to `reduce_conv`

The state_dict uses the names of ManyDepth's encoder.pth: layer0.* (conv1, bn1, relu),
layer1.* (maxpool, layer1), layer2-4.*, prematching_conv.*, reduce_conv.*, and the depth
trackers min_depth_bin / max_depth_bin. (encoder.pth also stores height and width, which
are not part of this module: drop them before load_state_dict.)
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import PROJECTION_EPS, bins_per_chunk
from .resnet_encoder import IMAGENET_MEAN, IMAGENET_STD, RESNETS, load_imagenet_state_dict

BORDER = 2  # px of the feature map ignored at both ends (ResNet's zero padding)
EMPTY_COST = 100.0  # what an exactly-zero (missing) cost counts as in the reference's argmin
COUNT_EPS = 1e-7  # keeps the average over lookups finite where none was valid
TRACKER_START = (0.1, 10.0)  # (d_min, d_max) of the bins before the first update
TRACKER_MOMENTUM = 0.99  # d <- 0.99 d + 0.01 (batch estimate)
MIN_MARGIN, MAX_MARGIN = 0.9, 1.1  # the batch estimate widens the mono depth range by 10 %
MAX_CHUNK_ELEMENTS = 2 ** 26  # floats of warped features per chunk of bins (256 MB in fp32)


def depth_bins(min_depth, max_depth, num_bins, binning="linear"):
    """D depths, ascending: `linear` evenly spaced in d over [min, max] (both included),
    `inverse` evenly spaced in 1/d. Floats or 0-d tensors -> float32 tensor D (on the
    tensors' device)."""
    device = next((x.device for x in (min_depth, max_depth) if torch.is_tensor(x)), None)
    lo = torch.as_tensor(min_depth, dtype=torch.float64, device=device)
    hi = torch.as_tensor(max_depth, dtype=torch.float64, device=device)
    t = torch.linspace(0, 1, num_bins, dtype=torch.float64, device=device)
    if binning == "linear":
        bins = lo + (hi - lo) * t
    elif binning == "inverse":  # 1/d from 1/max up to 1/min, flipped to ascending depth
        bins = (1 / (1 / hi + (1 / lo - 1 / hi) * t)).flip(0)
    else:
        raise ValueError(f"--depth_binning {binning!r}: use 'linear' or 'inverse'")
    return bins.float()


def matching_mask(depth_cv, depth_mono):
    """Where the cost volume's depth is trusted: the two depths differ by less than a factor
    of 2 either way, (d_cv - d_mono)/d_mono < 1 and (d_mono - d_cv)/d_cv < 1.
    B x 1 x H x W each -> float mask of the same shape."""
    trusted = ((depth_cv - depth_mono) / depth_mono < 1) & ((depth_mono - depth_cv) / depth_cv < 1)
    return trusted.float()


def plane_pixels(K, invK, poses, bins, height, width):
    """Where each target pixel lands in each lookup frame for each fronto-parallel plane.
    A target pixel x at depth d is X = d invK x; in frame n it projects to K T_n X, which is
    affine in d: d (K T_n)[:3, :3] invK x + (K T_n)[:3, 3].
    K, invK B x 4 x 4; poses B x N x 4 x 4; bins Dc -> pixels B x N x Dc x h x w x 2 (u, v)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=K.dtype, device=K.device),
                          torch.arange(width, dtype=K.dtype, device=K.device), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)  # 3 x hw
    rays = invK[:, :3, :3] @ pix  # B x 3 x hw
    P = K[:, None] @ poses  # B x N x 4 x 4
    direction = P[..., :3, :3] @ rays[:, None]  # B x N x 3 x hw
    offset = P[..., :3, 3:]  # B x N x 3 x 1
    cam = bins.view(1, 1, -1, 1, 1) * direction[:, :, None] + offset[:, :, None]  # B x N x Dc x 3 x hw
    uv = cam[:, :, :, :2] / (cam[:, :, :, 2:3] + PROJECTION_EPS)
    return uv.transpose(-1, -2).reshape(*uv.shape[:3], height, width, 2)


class ResnetEncoderMatching(nn.Module):
    """ResNet with ManyDepth's cost volume after layer 1 (shapes in the module docstring).

    The bins are rebuilt at every forward from the buffers `min_depth_bin`/`max_depth_bin`
    (the trackers, moved by `update_bins`, saved in the state_dict).
    `count_valid_from_mask`: average each bin over the lookups whose projection was valid
    (True), or over those whose cost was > 0 as the reference does (False), which turns an
    exactly-zero (perfect) cost into a missing entry.

    Memory: the volume is built in chunks of bins, each warping every lookup frame for all
    its bins with one grid_sample (bins stacked along the grid's rows), so a chunk holds
    about B*N*C*Dc*h*w floats, Dc chosen to stay under `max_chunk_elements` (2**26: at
    640x192, B=12, N=1, 11 bins a chunk, 9 chunks); an exported (traced) graph builds all bins
    in one chunk (layers.bins_per_chunk), so its memory grows with the batch. The geometry and the volume are float32
    even under autocast. As in the reference, the volume is built without gradient: the
    target features get their gradient through the concatenation before `reduce_conv`.
    """

    def __init__(self, num_layers, pretrained, input_height, input_width, num_depth_bins=96,
                 depth_binning="linear", weights_file=None, count_valid_from_mask=True):
        super().__init__()
        if num_layers not in RESNETS:
            raise ValueError(f"--num_layers {num_layers} is not a ResNet depth: use one of {sorted(RESNETS)}")
        depth_bins(1.0, 2.0, 2, depth_binning)  # fails early on an unknown binning
        self.num_depth_bins, self.depth_binning = num_depth_bins, depth_binning
        self.count_valid_from_mask = count_valid_from_mask
        self.height, self.width = input_height, input_width
        self.matching_height, self.matching_width = input_height // 4, input_width // 4
        self.max_chunk_elements = MAX_CHUNK_ELEMENTS
        self.num_ch_enc = np.array([64, 64, 128, 256, 512])
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4

        resnet = RESNETS[num_layers](weights=None)
        if pretrained:
            resnet.load_state_dict(load_imagenet_state_dict(num_layers, weights_file))
        self.layer0 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)  # 64 @ H/2
        self.layer1 = nn.Sequential(resnet.maxpool, resnet.layer1)  # matching features @ H/4
        self.layer2, self.layer3, self.layer4 = resnet.layer2, resnet.layer3, resnet.layer4
        # unused by ManyDepth's forward, kept so that its encoder.pth loads strictly
        self.prematching_conv = nn.Sequential(nn.Conv2d(64, 16, kernel_size=1), nn.ReLU(inplace=True))
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(int(self.num_ch_enc[1]) + num_depth_bins, int(self.num_ch_enc[1]), 3, padding=1),
            nn.ReLU(inplace=True))
        self.register_buffer("min_depth_bin", torch.tensor(TRACKER_START[0]))
        self.register_buffer("max_depth_bin", torch.tensor(TRACKER_START[1]))
        self.last_cost_volume = None

    def bins(self):
        """The current D depth bins, from the trackers."""
        return depth_bins(self.min_depth_bin, self.max_depth_bin, self.num_depth_bins, self.depth_binning)

    @torch.no_grad()
    def update_bins(self, mono_depth, min_depth=0.1):
        """Move the trackers towards the batch's mono depth range (B x 1 x H x W):
        d_min <- 0.99 d_min + 0.01 max(min_depth, 0.9 m), d_max <- 0.99 d_max + 0.01 * 1.1 M,
        m and M the batch means of the per-image min and max."""
        depth = mono_depth.detach().float().flatten(1)
        m, M = depth.amin(1).mean(), depth.amax(1).mean()
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # the whole batch of all processes
            stats = torch.stack([m, M])
            torch.distributed.all_reduce(stats)
            m, M = stats / torch.distributed.get_world_size()
        low = torch.clamp(MIN_MARGIN * m, min=min_depth)
        self.min_depth_bin.mul_(TRACKER_MOMENTUM).add_((1 - TRACKER_MOMENTUM) * low)
        self.max_depth_bin.mul_(TRACKER_MOMENTUM).add_((1 - TRACKER_MOMENTUM) * MAX_MARGIN * M)

    def extract(self, image):
        """Images B x 3 x H x W in [0, 1] -> (64 @ H/2, matching features @ H/4)."""
        f0 = self.layer0((image - IMAGENET_MEAN) / IMAGENET_STD)
        return f0, self.layer1(f0)

    def match(self, target_feats, lookup_feats, poses, K, invK, bins):
        """L1 cost volume: for bin d, the channel mean of |lookup warped through the plane at
        depth d - target|, averaged over the lookups where it is valid (the projection lands in
        [2, w-2] x [2, h-2] and the target pixel is >= 2 px from the border; all-zero poses
        skipped). Entries without a valid lookup take the pixel's max over bins.

        target_feats B x C x h x w; lookup_feats B x N x C x h x w; poses B x N x 4 x 4;
        K, invK B x 4 x 4 at h x w; bins D ->
        volume B x D x h x w (filled, not yet multiplied by the confidence),
        confidence B x h x w (1 where every bin had a valid lookup),
        count B x D x h x w (lookups averaged in each entry)."""
        with torch.autocast(device_type=target_feats.device.type, enabled=False):
            target, lookup = target_feats.float(), lookup_feats.float()
            K, invK, poses, bins = K.float(), invK.float(), poses.float(), bins.float().to(target.device)
            b, n, c, h, w = lookup.shape
            present = poses.flatten(2).ne(0).any(2)  # B x N
            eye = torch.eye(4, device=poses.device).expand_as(poses)
            poses = torch.where(present[..., None, None], poses, eye)  # keeps the geometry finite
            interior = torch.zeros(h, w, dtype=torch.bool, device=target.device)
            interior[BORDER:h - BORDER, BORDER:w - BORDER] = True
            size = torch.tensor([w - 1, h - 1], dtype=torch.float32, device=target.device)
            lookup = lookup.reshape(b * n, c, h, w)

            def chunk_cost(z):  # summed cost and lookup count of the bins z: B x Dc x h x w each
                uv = plane_pixels(K, invK, poses, z, h, w)  # B x N x Dc x h x w x 2
                x, y = uv[..., 0], uv[..., 1]
                valid = ((x >= BORDER) & (x <= w - BORDER) & (y >= BORDER) & (y <= h - BORDER)
                         & interior & present[:, :, None, None, None])
                grid = (uv / size * 2 - 1).reshape(b * n, len(z) * h, w, 2)
                warped = F.grid_sample(lookup, grid, mode="bilinear", padding_mode="zeros",
                                       align_corners=True).view(b, n, c, len(z), h, w)
                diff = (warped - target[:, None, :, None]).abs().mean(2)  # B x N x Dc x h x w
                diff = torch.where(valid, diff, torch.zeros_like(diff))
                counted = valid if self.count_valid_from_mask else diff > 0
                return diff.sum(1), counted.float().sum(1)

            chunk = bins_per_chunk(len(bins), b * n * c * h * w, self.max_chunk_elements)
            if chunk == len(bins):  # one piece (always so in an exported graph)
                cost, count = chunk_cost(bins)
            else:
                cost = target.new_zeros(b, len(bins), h, w)
                count = target.new_zeros(b, len(bins), h, w)
                for start in range(0, len(bins), chunk):
                    cost[:, start:start + chunk], count[:, start:start + chunk] = chunk_cost(bins[start:start + chunk])
            volume = cost / (count + COUNT_EPS)
            missing = count == 0
            volume = torch.where(missing, volume.amax(1, keepdim=True), volume)
            confidence = (~missing).all(1).float()
        return volume, confidence, count

    def lowest_cost(self, volume, bins):
        """1/d of the per-pixel argmin of the filled volume B x D x h x w -> B x h x w. The
        reference counts exact zeros as EMPTY_COST (a zero was a missing entry there); with
        `count_valid_from_mask` a zero is a perfect match and stays the minimum (a pixel with
        no valid bin is all zeros, so both give bin 0 there)."""
        if not self.count_valid_from_mask:
            volume = volume.masked_fill(volume == 0, EMPTY_COST)
        return 1 / bins.to(volume.device)[volume.argmin(1)]

    def forward(self, current_image, lookup_images, poses, K, invK):
        f0, f1 = self.extract(current_image)
        b, n = lookup_images.shape[:2]
        with torch.no_grad():
            lookup_feats = self.extract(lookup_images.flatten(0, 1))[1]
            lookup_feats = lookup_feats.view(b, n, *lookup_feats.shape[1:])
            bins = self.bins()
            volume, confidence, _ = self.match(f1, lookup_feats, poses, K, invK, bins)
            lowest_cost = self.lowest_cost(volume, bins)
            volume = volume * confidence[:, None]
        self.last_cost_volume = volume
        f2 = self.layer2(self.reduce_conv(torch.cat([f1, volume.to(f1.dtype)], 1)))
        f3 = self.layer3(f2)
        # as ManyDepth: the H/4 skip is layer 1's output, the cost volume enters at layer 2
        return [f0, f1, f2, f3, self.layer4(f3)], lowest_cost, confidence
