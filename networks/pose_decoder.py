"""Pose decoder and the PoseCNN of monodepth2."""
import argparse

import torch
import torch.nn as nn

from .registry import build_encoder, register_pose_network

POSE_SCALE = 0.01  # network outputs are scaled down so that initial poses are small


class PoseDecoder(nn.Module):
    """Encoder features (of 1 or more frames) -> axisangle, translation: B x n_pred x 1 x 3.

    num_input_features: how many feature lists are concatenated (1 for a pose encoder fed
    with stacked frames, the number of frames for the shared encoder)."""

    def __init__(self, num_ch_enc, num_input_features, num_frames_to_predict_for=None, stride=1):
        super().__init__()
        self.num_input_features = num_input_features
        self.num_frames_to_predict_for = num_frames_to_predict_for or num_input_features - 1
        self.net = nn.ModuleList([
            nn.Conv2d(int(num_ch_enc[-1]), 256, 1),  # squeeze
            nn.Conv2d(num_input_features * 256, 256, 3, stride, 1),
            nn.Conv2d(256, 256, 3, stride, 1),
            nn.Conv2d(256, 6 * self.num_frames_to_predict_for, 1),
        ])
        self.relu = nn.ReLU()

    def forward(self, input_features):
        last = [f[-1] for f in input_features]
        x = torch.cat([self.relu(self.net[0](f)) for f in last], 1)
        x = self.relu(self.net[1](x))
        x = self.relu(self.net[2](x))
        x = self.net[3](x).mean(3).mean(2)
        x = POSE_SCALE * x.view(-1, self.num_frames_to_predict_for, 1, 6)
        return x[..., :3], x[..., 3:]


class PoseCNN(nn.Module):
    """Stacked frames B x 3n x H x W -> axisangle, translation B x (n-1) x 1 x 3."""

    def __init__(self, num_input_frames):
        super().__init__()
        self.num_input_frames = num_input_frames
        channels = [3 * num_input_frames, 16, 32, 64, 128, 256, 256, 256]
        kernels = [7, 5, 3, 3, 3, 3, 3]
        self.net = nn.ModuleList([nn.Conv2d(channels[i], channels[i + 1], k, 2, k // 2)
                                  for i, k in enumerate(kernels)])
        self.pose_conv = nn.Conv2d(256, 6 * (num_input_frames - 1), 1)
        self.relu = nn.ReLU(True)

    def forward(self, x):
        for conv in self.net:
            x = self.relu(conv(x))
        x = self.pose_conv(x).mean(3).mean(2)
        x = POSE_SCALE * x.view(-1, self.num_input_frames - 1, 1, 6)
        return x[..., :3], x[..., 3:]


@register_pose_network("separate_resnet")
def separate_resnet(opt, depth_encoder_channels, num_pose_frames):
    """Its own ResNet-`num_layers` on the stacked frames, then the pose decoder. A
    --imagenet_weights file is a ResNet's only when the depth encoder is one of that depth;
    otherwise (HRNet, timm backbones) the pose ResNet takes torchvision's weights."""
    depth_encoder = getattr(opt, "encoder", "resnet")
    if depth_encoder not in ("resnet", "resnet_context", f"resnet{opt.num_layers}") and \
            not getattr(opt, "pretrained_encoder", None):  # a --pretrained_encoder folder has a file per family
        opt = argparse.Namespace(**dict(vars(opt), imagenet_weights=None))
    encoder = build_encoder(opt, "resnet", num_input_images=num_pose_frames)
    return {"pose_encoder": encoder, "pose": PoseDecoder(encoder.num_ch_enc, 1, 2)}


@register_pose_network("shared")
def shared(opt, depth_encoder_channels, num_pose_frames):
    """The depth encoder's features of each frame, then the pose decoder."""
    return {"pose": PoseDecoder(depth_encoder_channels, num_pose_frames)}


@register_pose_network("posecnn")
def posecnn(opt, depth_encoder_channels, num_pose_frames):
    return {"pose": PoseCNN(num_pose_frames)}
