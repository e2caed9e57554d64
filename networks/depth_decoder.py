"""Monodepth2's depth decoder: U-Net style upsampling with skips, sigmoid disparities."""
import torch
import torch.nn as nn

from layers import ConvBlock, Conv3x3, upsample

from .registry import register_depth_decoder


class DepthDecoder(nn.Module):
    """Encoder features -> {("disp", s): B x C x H/2^s x W/2^s in (0, 1)} for s in scales.

    Modules are stored in one ModuleList (`decoder`) in the order of monodepth2's weight
    files: upconv (4,0), (4,1), ..., (0,0), (0,1), then dispconv for each scale.
    """

    def __init__(self, num_ch_enc, scales=range(4), num_output_channels=1, use_skips=True):
        super().__init__()
        self.scales = list(scales)
        self.use_skips = use_skips
        self.num_ch_enc = num_ch_enc
        self.num_ch_dec = [16, 32, 64, 128, 256]
        layers = []
        for i in range(4, -1, -1):
            ch_in = num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            layers.append(ConvBlock(ch_in, self.num_ch_dec[i]))
            ch_in = self.num_ch_dec[i] + (num_ch_enc[i - 1] if use_skips and i > 0 else 0)
            layers.append(ConvBlock(ch_in, self.num_ch_dec[i]))
        for s in self.scales:
            layers.append(Conv3x3(self.num_ch_dec[s], num_output_channels))
        self.decoder = nn.ModuleList(layers)
        self.sigmoid = nn.Sigmoid()

    def init_disparity_bias(self, bias):
        """Start every output at sigmoid(bias) instead of about 0.5 (PyTorch's default
        init): with disp_to_depth(0.1, 100) a bias of -3 starts near depth 2 units
        (about 10 m for stereo scale) instead of 0.2."""
        for k in range(len(self.scales)):
            torch.nn.init.constant_(self.decoder[10 + k].conv.bias, bias)

    def forward(self, input_features):
        outputs = {}
        x = input_features[-1]
        for step, i in enumerate(range(4, -1, -1)):
            x = upsample(self.decoder[2 * step](x))
            if self.use_skips and i > 0:
                x = torch.cat([x, input_features[i - 1]], 1)
            x = self.decoder[2 * step + 1](x)
            if i in self.scales:
                outputs[("disp", i)] = self.sigmoid(self.decoder[10 + self.scales.index(i)](x))
        return outputs


@register_depth_decoder("monodepth2")
def monodepth2_decoder(opt, num_ch_enc, num_output_channels=1):
    if len(num_ch_enc) != 5:
        raise SystemExit(f"--depth_decoder monodepth2 takes an encoder with 5 features at strides 2..32; --encoder "
                         f"{getattr(opt, 'encoder', '?')} gives {len(num_ch_enc)} ({[int(c) for c in num_ch_enc]}): "
                         "use --depth_decoder grid for the 6-level encoders (hrnet18, resnet_context)")
    decoder = DepthDecoder(num_ch_enc, opt.scales, num_output_channels)
    bias = getattr(opt, "disp_bias_init", None)
    if bias is not None and num_output_channels == 1:
        decoder.init_disparity_bias(bias)
    return decoder
