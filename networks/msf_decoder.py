"""RA-Depth's multi-scale-fusion (MSF) depth decoder, MISM's SNet decoder (spec section 3).

Five encoder features e0..e4 (HRNet-18 without context branch: 64@/2, 18@/4, 36@/8, 72@/16,
144@/32). Three fusion rounds shrink the branches e1..e4 to one at /4 (4 -> 3 -> 2 -> 1):

    a_i = ELU(conv3x3(x_i))                                 each remaining branch i
    x_i = a_i + sum_{j > i} up_{2^(j-i)}(ELU(conv1x1_{j->i}(a_j)))   for all but the coarsest

(the 1x1 conv + ELU commutes with nearest upsampling, so it runs at the coarse size). Then
the /4 branch is fused the same way into ELU(conv3x3(e0)) at /2, followed by 3x3 64 -> 32,
x2 nearest, 3x3 32 -> 16, 3x3 -> 1, sigmoid: only ("disp", 0) at full resolution.

Parameters sit in one ModuleList `decoder` in the order of MISM's s_depth.pth: per round the
3x3 blocks finest first, then the 1x1 blocks for (j -> i) = (2->1), (3->2), (3->1), (4->3),
(4->2), (4->1); then the e0 round, the 64 -> 32 and 32 -> 16 blocks and `dispconv`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import ConvBlock, Conv3x3, upsample

from .registry import register_depth_decoder

NUM_LEVELS = 5


class Conv1x1(nn.Module):
    """1x1 convolution with bias, wrapped as layers.Conv3x3 is (parameters `conv.*`)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 1)

    def forward(self, x):
        return self.conv(x)


class ConvBlock1x1(nn.Module):
    """Conv1x1 + ELU; parameters `conv.conv.*` as in MISM's files."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = Conv1x1(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


def _fusion_pairs(levels):
    """(j, i) pairs, coarser j into finer i, in the weight files' order: j ascending, i
    descending. levels: the branch indices of one round, finest first."""
    return [(j, i) for j in levels[1:] for i in range(j - 1, levels[0] - 1, -1)]


class MSFDecoder(nn.Module):
    """features [e0 .. e4] (channels num_ch_enc, strides 2..32) -> {("disp", 0): B x C x H x W
    in (0, 1)} with C = num_output_channels and H, W twice e0's size."""

    def __init__(self, num_ch_enc, num_output_channels=1):
        super().__init__()
        ch = [int(c) for c in num_ch_enc]
        if len(ch) != NUM_LEVELS:
            raise ValueError(f"MSFDecoder takes {NUM_LEVELS} features (strides 2..32), got {len(ch)}: {ch}")
        self.num_ch_enc = ch
        self.rounds = [list(range(1, NUM_LEVELS - r)) for r in range(3)] + [[0, 1]]  # branches per round
        blocks, self.index = [], {}
        for r, levels in enumerate(self.rounds):
            for i in levels:
                self.index[("parallel_conv", r, i)] = len(blocks)
                blocks.append(ConvBlock(ch[i], ch[i]))
            for j, i in _fusion_pairs(levels):
                self.index[("conv1x1", r, j, i)] = len(blocks)
                blocks.append(ConvBlock1x1(ch[j], ch[i]))
        self.index["head"] = len(blocks)
        blocks += [ConvBlock(ch[0], 32), ConvBlock(32, 16), Conv3x3(16, num_output_channels)]
        self.decoder = nn.ModuleList(blocks)
        self.sigmoid = nn.Sigmoid()

    def init_disparity_bias(self, bias):
        """Start the output at sigmoid(bias) (see DepthDecoder.init_disparity_bias)."""
        torch.nn.init.constant_(self.decoder[-1].conv.bias, bias)

    def _round(self, r, x):
        """One fusion round over the branches x (dict level -> tensor); returns the fused
        branches of the next round (all but the coarsest)."""
        levels = self.rounds[r]
        a = {i: self.decoder[self.index[("parallel_conv", r, i)]](x[i]) for i in levels}
        fused = {i: a[i] for i in levels[:-1]}
        for j, i in _fusion_pairs(levels):
            y = self.decoder[self.index[("conv1x1", r, j, i)]](a[j])
            fused[i] = fused[i] + F.interpolate(y, size=a[i].shape[-2:], mode="nearest")
        return fused

    def forward(self, input_features):
        x = dict(enumerate(input_features))
        for r in range(3):
            x = self._round(r, x)
        x = self._round(3, {0: input_features[0], 1: x[1]})[0]
        head = self.index["head"]
        x = upsample(self.decoder[head](x))
        x = self.decoder[head + 1](x)
        return {("disp", 0): self.sigmoid(self.decoder[head + 2](x))}


@register_depth_decoder("msf")
def msf_decoder(opt, num_ch_enc, num_output_channels=1):
    encoder = getattr(opt, "encoder", "?")
    if len(num_ch_enc) != NUM_LEVELS:
        hint = " (use --encoder hrnet18_raw: the same HRNet without the context branch)" \
            if len(num_ch_enc) == 6 else ""
        raise SystemExit(f"--depth_decoder msf takes an encoder with {NUM_LEVELS} features at strides 2..32; "
                         f"--encoder {encoder} gives {len(num_ch_enc)} ({[int(c) for c in num_ch_enc]}){hint}")
    scales = list(getattr(opt, "scales", [0]))
    if scales != [0]:
        raise SystemExit(f"--depth_decoder msf outputs only ('disp', 0) at full resolution; --scales is {scales}: "
                         "pass --scales 0")
    decoder = MSFDecoder(num_ch_enc, num_output_channels)
    bias = getattr(opt, "disp_bias_init", None)
    if bias is not None and num_output_channels == 1:
        decoder.init_disparity_bias(bias)
    return decoder
