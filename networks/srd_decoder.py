"""SRD's depth decoder (Lee et al., TCSVT 2023): HR-Depth's nested decoder (as adapted by
MonoViT, with channel attention on the encoder features) and disparity offset refinement,
where each finer disparity is predicted from the coarser one resampled along learned offsets.

Registered as `--depth_decoder srd`; it takes any encoder's channel list.
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import ConvBlock, Conv3x3, upsample

from .registry import register_depth_decoder

INNER_ENC = (64, 64, 128, 256, 512)  # encoder features are mapped to these channels
DEC = (16, 32, 64, 128, 256)  # decoder channels per level
ATTENTION_NODES = ("31", "22", "13", "04")
NODE_ORDER = ("01", "11", "21", "31", "02", "12", "22", "03", "13", "04")
SE_REDUCTION = 16


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate on a B x C x H x W feature: global average pool, FC C -> C/16,
    ReLU, FC C/16 -> C (no biases), sigmoid, times the feature. The FCs are nn.Linear layers
    with PyTorch's default init, as in the released decoder (whose Kaiming loop in this module
    only touches nn.Conv2d layers, so it leaves them alone); init_kaiming draws them
    Kaiming-normal (fan_out, ReLU gain)."""

    def __init__(self, channels, reduction=SE_REDUCTION):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False))

    def init_kaiming(self):
        for m in self.fc:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        w = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)))
        return x * w[:, :, None, None]


class FeatureAdapter(nn.Module):
    """Encoder feature -> channel attention -> 3x3 conv to the decoder's inner channels -> ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.attention = ChannelAttention(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(self.attention(x)))


class FeatureFusionSE(nn.Module):
    """HR-Depth's fSE node: upsampled high-level feature + same-level features, concatenated,
    re-weighted per channel (FC squeeze-excitation), 1x1 conv to the high feature's channels, ReLU."""

    def __init__(self, high_channels, low_channels):
        super().__init__()
        c = high_channels + low_channels
        self.fc = nn.Sequential(nn.Linear(c, c // SE_REDUCTION, bias=False), nn.ReLU(),
                                nn.Linear(c // SE_REDUCTION, c, bias=False))
        self.conv = nn.Conv2d(c, high_channels, 1)

    def forward(self, high, lows):
        x = torch.cat([upsample(high)] + lows, 1)
        w = torch.sigmoid(self.fc(x.mean((2, 3))))
        return F.relu(self.conv(x * w[:, :, None, None]))


class OffsetHead(nn.Module):
    """Concatenated (upsampled coarse, fine) disparity features -> 1x1 conv -> BN -> ELU ->
    3x3 conv -> 2-channel offset (x, y) in fine-resolution pixels. The last conv starts at
    zero, so the refinement starts as plain bilinear upsampling."""

    def __init__(self, in_channels, hidden):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.pad = nn.ReflectionPad2d(1)
        self.offset = nn.Conv2d(hidden, 2, 3, bias=False)
        nn.init.zeros_(self.offset.weight)

    def forward(self, x):
        return self.offset(self.pad(F.elu(self.bn(self.reduce(x)))))


def resample_with_offsets(disp, size, delta):
    """Sample `disp` (B x C x h x w) on the align_corners=True grid of `size` (H, W), moved by
    `delta` (B x 2 x H x W, pixels of the H x W grid; channel 0 = x). delta = 0 is bilinear
    upsampling with align_corners=True. Outside the image: 0 (grid_sample's default)."""
    h, w = size
    ys = torch.linspace(-1.0, 1.0, h, device=disp.device, dtype=delta.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=disp.device, dtype=delta.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).unsqueeze(0)  # 1 x H x W x 2 (x, y)
    scale = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=disp.device, dtype=delta.dtype)
    grid = grid + delta.permute(0, 2, 3, 1) / scale
    return F.grid_sample(disp, grid.to(disp.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


class SRDDecoder(nn.Module):
    """Encoder features (5 levels, strides 2..32, any channels `num_ch_enc`) ->
    {("disp", s): B x 1 x H/2^s x W/2^s in (0, 1) for s = 0..3,
     ("delta", s): B x 2 x H/2^s x W/2^s offsets (pixels) for s = 0..2}.

    The nested decoder yields disparity features F0 (16 ch, full size), F1 = X04 (32, /2),
    F2 = X13 (64, /4), F3 = X22 (128, /8). disp3 comes from F3; then, for i = 3, 2, 1, an
    offset head on [up(F_i), F_{i-1}] moves the bilinear upsampling of disp_i, and disp_{i-1}
    = sigmoid(conv3x3([resampled disp_i, F_{i-1}])).
    """

    def __init__(self, num_ch_enc, num_output_channels=1):
        super().__init__()
        if num_output_channels != 1:
            raise SystemExit("--depth_decoder srd predicts one disparity channel (not a predictive mask)")
        self.num_ch_enc = list(num_ch_enc)
        # feature 0 is used as it is when it has 64 channels (ResNets); others get a 1x1 conv
        self.adapt0 = None if self.num_ch_enc[0] == INNER_ENC[0] else nn.Conv2d(self.num_ch_enc[0], INNER_ENC[0], 1)
        self.adapters = nn.ModuleList([FeatureAdapter(self.num_ch_enc[i], INNER_ENC[i]) for i in range(1, 5)])
        self.up_convs = nn.ModuleDict()  # conv before upsampling a node, keyed by the node it reads
        self.nodes = nn.ModuleDict()  # the node that makes X_rc
        self.squeeze = nn.ModuleDict()  # 1x1 conv (no bias) of non-attention nodes with several inputs
        for node in NODE_ORDER:
            row, col = int(node[0]), int(node[1])
            src_row, src_col = row + 1, col - 1
            c_in = INNER_ENC[src_row] // 2 if (src_row == 0 and src_col != 0) else INNER_ENC[src_row]
            self.up_convs[f"{src_row}{src_col}"] = ConvBlock(c_in, c_in // 2)
            high = INNER_ENC[row + 1] // 2
            low = INNER_ENC[row] + DEC[row + 1] * (col - 1)
            if node in ATTENTION_NODES:
                self.nodes[node] = FeatureFusionSE(high, low)
            elif col == 1:
                self.nodes[node] = ConvBlock(high + low, DEC[row + 1])
            else:
                self.squeeze[node] = nn.Conv2d(high + low, DEC[row + 1] * 2, 1, bias=False)
                self.nodes[node] = ConvBlock(DEC[row + 1] * 2, DEC[row + 1])
        self.final_up_conv = ConvBlock(DEC[1], DEC[0])  # X04 (32) -> 16, then upsampled
        self.final_conv = ConvBlock(DEC[0], DEC[0])  # F0
        feat_ch = [DEC[0], DEC[1], DEC[2], DEC[3]]  # F0..F3: 16, 32, 64, 128
        self.offset_heads = nn.ModuleList([OffsetHead(feat_ch[i] + feat_ch[i - 1], (feat_ch[i] + feat_ch[i - 1]) // 2)
                                           for i in (1, 2, 3)])  # index i-1
        self.disp_convs = nn.ModuleList([Conv3x3(feat_ch[s] + 1, 1) for s in range(3)] + [Conv3x3(feat_ch[3], 1)])

    def init_kaiming(self):
        """Kaiming-normal (fan_in, ReLU gain) weights and zero biases for the nested decoder's
        convolutions, and Kaiming-normal (fan_out, ReLU gain) channel-attention gates (the
        earlier versions' gates); the fSE gates, offset heads and disparity convs keep theirs.
        PyTorch's default init (the released code's, `--srd_decoder_init default`) shrinks
        activations ~0.6x per conv, and this decoder stacks ~10 of them between a feature and
        the disparity: with a randomly initialised encoder the disparity barely moves
        (measured in the README)."""
        skip = {id(p) for m in self.modules() if isinstance(m, (ChannelAttention, OffsetHead)) for p in m.parameters()}
        skip.update(id(p) for p in self.disp_convs.parameters())
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and id(module.weight) not in skip:
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for adapter in self.adapters:
            adapter.attention.init_kaiming()

    @staticmethod
    def upgrade_state_dict(state):
        """A state dict of this decoder written by earlier versions, in today's layout (other
        state dicts pass unchanged):
        - the channel-attention gates were 1x1 convolutions: their (out, in, 1, 1) weights
          become the nn.Linear (out, in) weights (the same function);
        - the squeeze convolutions had a bias b: it is folded into the bias of the node's 3x3
          convolution that follows (b3 + sum over taps of W3 b: exact, as reflection padding
          keeps a constant map constant)."""
        state = dict(state)
        for key in list(state):
            if re.fullmatch(r"adapters\.\d+\.attention\.fc\.[02]\.weight", key) and state[key].dim() == 4:
                state[key] = state[key].flatten(1)
            match = re.fullmatch(r"squeeze\.(\d\d)\.bias", key)
            if match:
                bias = state.pop(key)
                conv = f"nodes.{match.group(1)}.conv.conv."
                w3, b3 = state[conv + "weight"], state[conv + "bias"]
                state[conv + "bias"] = b3 + (w3.double().sum((2, 3)) @ bias.double()).to(b3.dtype)
        return state

    def init_disparity_bias(self, bias):
        for conv in self.disp_convs:
            nn.init.constant_(conv.conv.bias, bias)

    def disparity_features(self, input_features):
        x = {}
        f0 = input_features[0]
        x["00"] = f0 if self.adapt0 is None else self.adapt0(f0)
        for i in range(1, 5):
            x[f"{i}0"] = self.adapters[i - 1](input_features[i])
        for node in NODE_ORDER:
            row, col = int(node[0]), int(node[1])
            src = f"{row + 1}{col - 1}"
            high = self.up_convs[src](x[src])
            lows = [x[f"{row}{k}"] for k in range(col)]
            if node in ATTENTION_NODES:
                x[node] = self.nodes[node](high, lows)
            else:
                y = torch.cat([upsample(high)] + lows, 1)
                if node in self.squeeze:
                    y = self.squeeze[node](y)
                x[node] = self.nodes[node](y)
        f0 = self.final_conv(upsample(self.final_up_conv(x["04"])))
        return [f0, x["04"], x["13"], x["22"]]

    def forward(self, input_features):
        feats = self.disparity_features(input_features)
        outputs = {("disp", 3): torch.sigmoid(self.disp_convs[3](feats[3]))}
        for i in (3, 2, 1):
            fine = feats[i - 1]
            size = fine.shape[2:]
            coarse = F.interpolate(feats[i], size=size, mode="bilinear", align_corners=True)
            delta = self.offset_heads[i - 1](torch.cat([coarse, fine], 1))
            moved = resample_with_offsets(outputs[("disp", i)], size, delta)
            outputs[("disp", i - 1)] = torch.sigmoid(self.disp_convs[i - 1](torch.cat([moved, fine], 1)))
            outputs[("delta", i - 1)] = delta
        return outputs


@register_depth_decoder("srd")
def srd_decoder(opt, num_ch_enc, num_output_channels=1):
    if len(num_ch_enc) != 5:
        raise SystemExit(f"--depth_decoder srd takes an encoder with 5 features at strides 2..32; --encoder "
                         f"{getattr(opt, 'encoder', '?')} gives {len(num_ch_enc)} ({[int(c) for c in num_ch_enc]}): "
                         "use --depth_decoder grid for the 6-level encoders (hrnet18, resnet_context)")
    decoder = SRDDecoder(num_ch_enc, num_output_channels)
    if getattr(opt, "srd_decoder_init", "default") == "kaiming":
        decoder.init_kaiming()
    bias = getattr(opt, "disp_bias_init", None)
    if bias is not None:
        decoder.init_disparity_bias(bias)
    return decoder
