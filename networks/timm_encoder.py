"""Any timm backbone as a depth encoder, through timm's `features_only` API."""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

STRIDES = (2, 4, 8, 16, 32)  # the pyramid the depth decoders expect
STRIDE2_CHANNELS = 64  # channels of the level made when a backbone starts at stride 4


def timm_has_model(name):
    import timm
    return timm.is_model(name)


class TimmEncoder(nn.Module):
    """A timm backbone -> 5 features at strides 2, 4, 8, 16, 32 (channels `num_ch_enc`, read
    from the model's feature_info, never hard-coded).

    Input: B x 3 x H x W in [0, 1], normalised inside with the model's own mean and std.
    Backbones whose first feature is at stride 4 (Swin, ConvNeXt, ...) get a stride-2 level
    made from it: bilinear x2, 3x3 conv to 64 channels, BN, ELU (as SRD does for Swin).
    Channels-last (NHWC) feature maps (Swin) are returned as NCHW.
    """

    def __init__(self, name, pretrained=False, image_size=None, weights_file=None):
        super().__init__()
        import timm
        kwargs = {}
        if image_size is not None and _takes_image_size(name):
            kwargs["img_size"] = tuple(image_size)
        probe = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        strides = probe.feature_info.reduction()
        indices = [max(i for i, s in enumerate(strides) if s == want) for want in STRIDES if want in strides]
        if [strides[i] for i in indices][-4:] != list(STRIDES[1:]):
            raise SystemExit(f"--encoder {name}: its features are at strides {strides}; a depth decoder needs "
                             f"strides {list(STRIDES[1:])} (and optionally 2)")
        self.backbone = create_timm_model(name, pretrained, weights_file, features_only=True, out_indices=indices,
                                          **kwargs)
        channels = list(self.backbone.feature_info.channels())
        self.stride2 = None
        if len(indices) == 4:
            self.stride2 = nn.Sequential(nn.Conv2d(channels[0], STRIDE2_CHANNELS, 3, padding=1),
                                         nn.BatchNorm2d(STRIDE2_CHANNELS), nn.ELU(inplace=True))
            channels = [STRIDE2_CHANNELS] + channels
        self.num_ch_enc = channels
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1),
                             persistent=False)
        self.channels_last_output = str(getattr(self.backbone, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x):
        feats = self.backbone((x - self.mean) / self.std)
        if self.channels_last_output:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        if self.stride2 is not None:
            up = F.interpolate(feats[0], scale_factor=2, mode="bilinear", align_corners=False)
            feats = [self.stride2(up)] + list(feats)
        return list(feats)


def _takes_image_size(name):
    """Vision transformers with fixed position tables (Swin, ViT) are built at the input size."""
    import timm
    return any(key in name for key in ("swin", "vit", "deit", "beit", "eva")) and timm.is_model(name)


def create_timm_model(name, pretrained, weights_file=None, what=None, **kwargs):
    """timm's `name` (kwargs to timm.create_model, e.g. features_only) with ImageNet weights
    from `weights_file` (a local file, parameters matched by name), else from timm's hub
    cache / a download when `pretrained`. Offline without weights: a SystemExit saying what
    to do. `what` names the model in messages (default: --encoder NAME)."""
    import timm
    what = what or f"--encoder {name}"
    if weights_file:
        if not os.path.isfile(weights_file):
            raise SystemExit(f"--imagenet_weights {weights_file}: no such file")
        model = timm.create_model(name, pretrained=False, **kwargs)
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            print(f"-> {weights_file}: {len(missing)} backbone parameters not in the file (e.g. {missing[:3]})")
        return model
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:  # offline, no cached weights
        if not pretrained:
            raise
        raise SystemExit(f"{what} with --weights_init pretrained: timm could not load its "
                         f"ImageNet weights ({type(e).__name__}: {e}). Pass --imagenet_weights FILE, "
                         "put the weights in the Hugging Face cache, or use --weights_init scratch.") from None
