"""BDEdepth's grid decoder: a 6-level x 3-column grid of PReLU convolutions over a 6-level
encoder (stride 1 first: --encoder hrnet18 or resnet_context)."""
import torch.nn as nn

from layers import Conv3x3

from .registry import register_depth_decoder

NUM_LEVELS = 6  # strides 1, 2, 4, 8, 16, 32
COLUMNS = 3
FINEST_WIDTH = 16  # grid channels of the stride-1 level


def lateral_block(in_channels, out_channels):
    """PReLU, conv3x3, PReLU, conv3x3 (zero padding, biases, no skip connection)."""
    return nn.Sequential(nn.PReLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.PReLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))


def up_block(in_channels, out_channels):
    """Bilinear x2 (align_corners=False), PReLU, conv3x3: a level's output -> the next finer level."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.PReLU(),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1))


class GridDecoder(nn.Module):
    """Encoder features (6 levels, strides 1..32) -> {("disp", s): B x C x H/2^s x W/2^s in
    (0, 1)} for s in `scales`.

    Grid channels g = ch // 2 per level, with g[0] = 16 (HRNet-18: [16, 32, 9, 18, 36, 72];
    ResNet-18: [16, 32, 32, 64, 128, 256]). Node (level i, column j), levels from coarse
    (5) to fine (0), x[i, -1] being encoder feature i:

        x[i, j] = Lat[i, j](x[i, j-1]) + Up[i+1, j](x[i+1, j])    (no Up term at level 5)

    so each column is a coarse-to-fine pass, fed by the previous column at the same level
    (the first column by the encoder). disp_i = sigmoid(reflection-padded conv3x3 of the last
    column at level i). Where the spec is loose this follows BDEdepth's code: the lateral
    input at column j > 0 is the previous column's *sum* (after the Up term was added), and
    Up uses align_corners=False.

    Conv weights start trunc-normal(std 0.02) with zero biases; PReLU slopes at 0.25.

    Modules are stored in one ModuleList (`decoder`) in BDEdepth's order: for each level
    i = 0..5, for each column j: lateral (i, j), then upconv (i, j) (the Up from level i+1
    to i) for i < 5; then the disparity conv of level i if i is an output scale.
    """

    def __init__(self, num_ch_enc, scales=(0,), num_output_channels=1, columns=COLUMNS):
        super().__init__()
        ch = [int(c) for c in num_ch_enc]
        if len(ch) != NUM_LEVELS:
            raise ValueError(f"the grid decoder takes {NUM_LEVELS} encoder levels (strides 1..32), got {ch}")
        self.scales = list(scales)
        bad = [s for s in self.scales if not 0 <= s < NUM_LEVELS]
        if bad:
            raise ValueError(f"scales {bad}: the grid decoder has levels 0..{NUM_LEVELS - 1}")
        self.num_ch_enc = ch
        self.columns = columns
        self.grid_ch = [FINEST_WIDTH] + [c // 2 for c in ch[1:]]
        self.index = {}
        modules = []

        def add(key, module):
            self.index[key] = len(modules)
            modules.append(module)

        for i in range(NUM_LEVELS):
            for j in range(columns):
                add(("lateral", i, j), lateral_block(ch[i] if j == 0 else self.grid_ch[i], self.grid_ch[i]))
                if i < NUM_LEVELS - 1:
                    add(("upconv", i, j), up_block(self.grid_ch[i + 1], self.grid_ch[i]))
            if i in self.scales:
                add(("dispconv", i), Conv3x3(self.grid_ch[i], num_output_channels))
        self.decoder = nn.ModuleList(modules)
        self.sigmoid = nn.Sigmoid()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def block(self, *key):
        return self.decoder[self.index[key]]

    def init_disparity_bias(self, bias):
        for s in self.scales:
            nn.init.constant_(self.block("dispconv", s).conv.bias, bias)

    def forward(self, input_features):
        if len(input_features) != NUM_LEVELS:
            raise ValueError(f"the grid decoder takes {NUM_LEVELS} features, got {len(input_features)}")
        outputs = {}
        from_coarser = [None] * self.columns  # Up of the coarser level's node, per column
        for i in range(NUM_LEVELS - 1, -1, -1):
            x = input_features[i]
            for j in range(self.columns):
                x = self.block("lateral", i, j)(x)
                if from_coarser[j] is not None:
                    x = x + from_coarser[j]
                from_coarser[j] = self.block("upconv", i - 1, j)(x) if i > 0 else None
            if i in self.scales:
                outputs[("disp", i)] = self.sigmoid(self.block("dispconv", i)(x))
        return outputs


@register_depth_decoder("grid")
def grid_decoder(opt, num_ch_enc, num_output_channels=1):
    encoder = getattr(opt, "encoder", "?")
    if len(num_ch_enc) != NUM_LEVELS:
        raise SystemExit(f"--depth_decoder grid takes an encoder with {NUM_LEVELS} features at strides 1..32 "
                         f"(--encoder hrnet18 or resnet_context); --encoder {encoder} gives {len(num_ch_enc)} "
                         f"({[int(c) for c in num_ch_enc]})")
    bad = [s for s in opt.scales if not 0 <= s < NUM_LEVELS]
    if bad:
        raise SystemExit(f"--scales {' '.join(map(str, opt.scales))}: the grid decoder outputs scales "
                         f"0..{NUM_LEVELS - 1} (BDEdepth recommends --scales 0)")
    decoder = GridDecoder(num_ch_enc, opt.scales, num_output_channels)
    bias = getattr(opt, "disp_bias_init", None)
    if bias is not None and num_output_channels == 1:  # not for a predictive mask, as monodepth2
        decoder.init_disparity_bias(bias)
    return decoder
