"""BDEdepth's encoders: six features from stride 1 to 32, the first from a full-resolution
"context" convolution initialised as a copy of the backbone's first convolution.

    --encoder hrnet18         HRNet-W18 (timm's hrnet_w18): [64, 64, 18, 36, 72, 144]
    --encoder resnet_context  ResNet---num_layers: [64, 64, 64, 128, 256, 512] for 18 layers
    --encoder hrnet18_raw     RA-Depth's / MISM's HRNet-W18: no context branch, raw [0, 1]
                              input: five features [64, 18, 36, 72, 144] at strides 2..32

Only the grid decoder (--depth_decoder grid) takes six levels; hrnet18_raw feeds the MSF
decoder (--depth_decoder msf). Parameter names follow BDEdepth's checkpoints: the HRNet under
`encoder.` (timm's names are those of the official HRNet-Image-Classification files) with
`context_conv` / `context_bn`; the ResNet under `encoder.` (torchvision) with `conv1` / `bn1`
for the context branch (each starts from the stem's conv weight and BN weight and bias; its BN
running statistics start fresh, as the released code's). MISM's `s_encoder.pth` holds the
official names without a prefix.
"""
import os

import numpy as np
import torch
import torch.nn as nn

from .registry import register_encoder, start_weights_file
from .resnet_encoder import IMAGENET_MEAN, IMAGENET_STD, ResnetEncoder

HRNET_FILE = "HRNet_W18_C_cosinelr_cutmix_300epoch.pth.tar"  # HRNet-Image-Classification's W18-C release
HRNET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def _copy_stem(conv, bn, src_conv, src_bn):
    """conv/bn <- copies of src_conv's weight and src_bn's affine weight and bias, as the
    released code does; bn keeps its fresh running statistics (mean 0, variance 1), which
    training then updates (momentum 0.1)."""
    with torch.no_grad():
        conv.weight.copy_(src_conv.weight)
        bn.weight.copy_(src_bn.weight)
        bn.bias.copy_(src_bn.bias)


def _missing_hrnet_weights(reason):
    return SystemExit(
        f"--encoder hrnet18 with --weights_init pretrained: {reason}. Download HRNet-W18-C's ImageNet "
        f"weights ({HRNET_FILE}, from HRNet-Image-Classification) and pass --imagenet_weights "
        f"PATH/{HRNET_FILE}, or train from random weights with --weights_init scratch.")


def official_to_timm_names(state):
    """An HRNet-Image-Classification state dict with timm's parameter names. The official
    layout (conv1, bn1, conv2, bn2, layer1, transition1-3, stage2-4 with branches and
    fuse_layers, then the classification head) is timm's hrnet_w18 layout key for key, so
    only wrappers are removed: a {"state_dict": ...} container and DataParallel's
    `module.` prefix. Non-tensor entries are dropped."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SystemExit(f"not a state dict but a {type(state).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_hrnet_imagenet(model, path):
    """Load an HRNet-W18 ImageNet file (official layout) into timm's feature model `model`,
    non-strict: the classification head's tensors are unexpected, absent tensors keep their
    initial values. A tensor of another shape (e.g. a W32 file) stops with the keys named.
    Prints one line and returns the counts {"loaded", "missing", "unexpected"}."""
    if not os.path.isfile(path):
        raise _missing_hrnet_weights(f"--imagenet_weights {path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"--imagenet_weights {path}: not a readable PyTorch weight file ({e})") from None
    try:
        state = official_to_timm_names(raw)
    except SystemExit as e:
        raise SystemExit(f"--imagenet_weights {path}: {e}") from None
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise SystemExit(f"--imagenet_weights {path}: {len(wrong)} tensors do not fit HRNet-W18 (e.g. {wrong[0]}: "
                         f"{tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} here); "
                         f"is it {HRNET_FILE}?")
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        raise SystemExit(f"--imagenet_weights {path}: none of its {len(state)} tensors is an HRNet-W18 parameter "
                         f"(e.g. {next(iter(state), None)}); is it {HRNET_FILE}?")
    absent = [k for k in own if k not in state]
    counters = [k for k in absent if k.endswith("num_batches_tracked")]  # BN step counters: unused, not weights
    missing = [k for k in absent if k not in counters]
    unexpected = [k for k in state if k not in own]
    model.load_state_dict(matched, strict=False)
    head = sum(k.startswith(HRNET_HEAD_PREFIXES) for k in unexpected)
    print(f"-> hrnet18 ImageNet weights {path}: loaded {len(matched)} tensors, {len(missing)} missing"
          + (f" (+{len(counters)} BN step counters)" if counters else "")
          + f", {len(unexpected)} unexpected ({head} of them the classification head)"
          + (f"; missing e.g. {missing[:2]}" if missing else ""))
    return {"loaded": len(matched), "missing": len(missing), "unexpected": len(unexpected)}


class HRNet18Encoder(nn.Module):
    """HRNet-W18 with a full-resolution context branch.

    Input: B x 3 x H x W in [0, 1] (H, W multiples of 32), normalised (x - 0.45) / 0.225.
    Output: 6 features [context (64, /1), stem (64, /2), branches (18, /4), (36, /8),
    (72, /16), (144, /32)]: the stem is relu(bn1(conv1(x))); the branches are the raw
    outputs of the last stage (no classification-head "incre" modules).

    context_branch=False drops the context convolution (5 features from the stem on, no
    `context_conv` / `context_bn` parameters); normalize=False feeds the raw [0, 1] image
    (RA-Depth's and MISM's SNet encoder, --encoder hrnet18_raw).

    The high-resolution modules sum their branches after bilinear (align_corners=True)
    upsampling, as BDEdepth's HRNet does (timm and the official classifier use nearest).
    """

    def __init__(self, weights_file=None, hub_pretrained=False, context_branch=True, normalize=True):
        super().__init__()
        self.context_branch, self.normalize = context_branch, normalize
        import timm
        try:
            self.encoder = timm.create_model("hrnet_w18", pretrained=hub_pretrained, features_only=True,
                                             feature_location="")
        except Exception as e:  # offline, no cached hub weights
            if not hub_pretrained:
                raise
            raise _missing_hrnet_weights(f"no --imagenet_weights file given and timm could not fetch hrnet_w18's "
                                         f"weights ({type(e).__name__}: {e})") from None
        for module in self.encoder.modules():
            if isinstance(module, nn.Upsample):  # fuse layers: parameter-free, the weights are unaffected
                module.mode, module.align_corners = "bilinear", True
        self.load_report = None
        if weights_file:
            self.load_report = load_hrnet_imagenet(self.encoder, weights_file)
        stem = self.encoder.feature_info.channels()
        self.num_ch_enc = np.array(list(stem))
        self.strides = list(self.encoder.feature_info.reduction())
        if context_branch:
            self.context_conv = nn.Conv2d(3, stem[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.context_bn = nn.BatchNorm2d(stem[0])
            _copy_stem(self.context_conv, self.context_bn, self.encoder.conv1, self.encoder.bn1)
            self.relu = nn.ReLU(inplace=True)
            self.num_ch_enc = np.array([stem[0]] + list(stem))
            self.strides = [1] + self.strides

    def forward(self, input_image):
        x = (input_image - IMAGENET_MEAN) / IMAGENET_STD if self.normalize else input_image
        features = list(self.encoder(x))
        if not self.context_branch:
            return features
        context = self.relu(self.context_bn(self.context_conv(x)))
        return [context] + features


class ResnetContextEncoder(ResnetEncoder):
    """ResNet (monodepth2's encoder, same `encoder.` parameters and ImageNet loading) with a
    7x7 stride-1 context convolution (3 -> 64, padding 3) + BN from conv1/bn1 (weights), ReLU.

    Input: B x 3 x H x W in [0, 1]. Output: 6 features [context (/1), relu(bn1(conv1)) (/2),
    layer1 (/4), layer2 (/8), layer3 (/16), layer4 (/32)]; channels
    [64, 64, 64, 128, 256, 512] for 18 and 34 layers, [64, 64, 256, 512, 1024, 2048] above.
    """

    def __init__(self, num_layers, pretrained, weights_file=None):
        super().__init__(num_layers, pretrained, 1, weights_file=weights_file)
        stem = self.encoder.conv1.out_channels
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=1, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        _copy_stem(self.conv1, self.bn1, self.encoder.conv1, self.encoder.bn1)
        self.num_ch_enc = np.concatenate([[stem], self.num_ch_enc])
        self.strides = [1, 2, 4, 8, 16, 32]

    def forward(self, input_image):
        x = (input_image - IMAGENET_MEAN) / IMAGENET_STD
        context = self.encoder.relu(self.bn1(self.conv1(x)))
        return [context] + super().forward(input_image)


def _single_image(name, num_input_images):
    if num_input_images != 1:
        raise SystemExit(f"--encoder {name} encodes one image; pose networks on stacked frames use their own "
                         "ResNet (--pose_model_type separate_resnet)")


def _hrnet18(opt, name, **variant):
    """ImageNet weights (--weights_init pretrained) from --imagenet_weights (the official
    file), else timm's hub weights for hrnet_w18 when they can be fetched."""
    if opt.weights_init != "pretrained":
        return HRNet18Encoder(**variant)
    weights_file = start_weights_file(opt, "hrnet_w18")
    if weights_file:
        return HRNet18Encoder(weights_file=weights_file, **variant)
    print(f"-> {name}: no --imagenet_weights file, trying timm's hub weights for hrnet_w18")
    return HRNet18Encoder(hub_pretrained=True, **variant)


@register_encoder("hrnet18")
def hrnet18(opt, num_input_images=1):
    """BDEdepth's: context branch, normalised input; 6 features."""
    _single_image("hrnet18", num_input_images)
    return _hrnet18(opt, "hrnet18")


@register_encoder("hrnet18_raw")
def hrnet18_raw(opt, num_input_images=1):
    """RA-Depth's / MISM's: raw [0, 1] input, no context branch; 5 features
    [64@/2, 18@/4, 36@/8, 72@/16, 144@/32]. Same weight options as hrnet18."""
    _single_image("hrnet18_raw", num_input_images)
    return _hrnet18(opt, "hrnet18_raw", context_branch=False, normalize=False)


@register_encoder("resnet_context")
def resnet_context(opt, num_input_images=1):
    _single_image("resnet_context", num_input_images)
    pretrained = opt.weights_init == "pretrained"
    return ResnetContextEncoder(opt.num_layers, pretrained,
                                weights_file=start_weights_file(opt, f"resnet{opt.num_layers}") if pretrained else None)
