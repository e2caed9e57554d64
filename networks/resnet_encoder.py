"""ResNet encoders on torchvision, parameter names as in monodepth2's weight files."""
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as models

from .registry import register_encoder, start_weights_file

RESNETS = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50,
           101: models.resnet101, 152: models.resnet152}
WEIGHTS = {18: models.ResNet18_Weights, 34: models.ResNet34_Weights, 50: models.ResNet50_Weights,
           101: models.ResNet101_Weights, 152: models.ResNet152_Weights}
IMAGENET_MEAN, IMAGENET_STD = 0.45, 0.225  # monodepth2's single-value input normalisation


def load_imagenet_state_dict(num_layers, weights_file=None):
    """ImageNet weights of a torchvision ResNet: from `weights_file`, else from torch hub's
    cache, else downloaded (when online). Raises a RuntimeError that says what to do."""
    if weights_file:
        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"--imagenet_weights {weights_file}: no such file")
        return torch.load(weights_file, map_location="cpu", weights_only=True)
    weights = WEIGHTS[num_layers].IMAGENET1K_V1
    filename = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if os.path.isfile(cached):
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # offline, proxy, ...
        raise RuntimeError(
            f"--weights_init pretrained needs ImageNet weights for ResNet-{num_layers}, which are "
            f"not in torch hub's cache ({cached}) and could not be downloaded ({e}). Download "
            f"{weights.url} on a machine with internet and copy it to {cached} (or pass "
            "--imagenet_weights FILE), or train with --weights_init scratch.") from None


class ResnetEncoder(nn.Module):
    """ResNet feature pyramid.

    Input: B x 3n x H x W images in [0, 1] (n stacked frames for pose).
    Output: list of 5 features at H/2, H/4, H/8, H/16, H/32 with `num_ch_enc` channels
    ([64, 64, 128, 256, 512]; x4 after the first for 50 layers and more).
    """

    def __init__(self, num_layers, pretrained, num_input_images=1, weights_file=None):
        super().__init__()
        if num_layers not in RESNETS:
            raise ValueError(f"--num_layers {num_layers} is not a ResNet depth: use one of {sorted(RESNETS)}")
        self.num_ch_enc = np.array([64, 64, 128, 256, 512])
        self.encoder = RESNETS[num_layers](weights=None)
        if num_input_images > 1:
            self.encoder.conv1 = nn.Conv2d(num_input_images * 3, 64, kernel_size=7, stride=2,
                                           padding=3, bias=False)
            for m in self.encoder.modules():  # same init as the reference multi-image ResNet
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
        if pretrained:
            state = load_imagenet_state_dict(num_layers, weights_file)
            if num_input_images > 1:
                # ImageNet conv1 tiled over the stacked frames and divided by their number
                state = dict(state)
                state["conv1.weight"] = torch.cat([state["conv1.weight"]] * num_input_images, 1) / num_input_images
            self.encoder.load_state_dict(state)
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4
        # the classifier is kept for weight-file compatibility but never used: freezing it
        # keeps it out of the optimiser and lets DDP reduce every gradient bucket
        self.encoder.fc.requires_grad_(False)

    def drop_classifier(self):
        """Delete the unused ImageNet classifier (fc, 513,000 parameters for ResNet-18) and its
        pooling, for methods whose reference weight files hold neither (MISM's code deletes
        them). Called after construction, so the random draws of the initialisation (and of
        every network built after it) stay those of an encoder with fc. Returns self."""
        del self.encoder.fc
        del self.encoder.avgpool
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # without the classifier, state dicts saved with it (encoder.fc.*) still load: ignored
        if not hasattr(self.encoder, "fc"):
            for key in ("encoder.fc.weight", "encoder.fc.bias"):
                state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input_image):
        x = (input_image - IMAGENET_MEAN) / IMAGENET_STD
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = e.layer4(f3)
        return [f0, f1, f2, f3, f4]


def _resnet_factory(num_layers=None):
    def build(opt, num_input_images=1):
        depth = num_layers or opt.num_layers
        pretrained = opt.weights_init == "pretrained"
        return ResnetEncoder(depth, pretrained, num_input_images,
                             weights_file=start_weights_file(opt, f"resnet{depth}") if pretrained else None)
    return build


register_encoder("resnet")(_resnet_factory())  # depth from --num_layers, as monodepth2
for _depth in RESNETS:
    register_encoder(f"resnet{_depth}")(_resnet_factory(_depth))
