"""Monodepth2 (Godard et al., ICCV 2019): per-pixel minimum reprojection, auto-masking,
full-resolution multi-scale sampling; mono, stereo and mono+stereo training."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import networks
from layers import (BackprojectDepth, Project3D, disp_to_depth, transformation_from_parameters,
                    warp)
from losses import ReprojectionLoss, min_reprojection, smoothness_loss
from methods import option_groups, register_method
from methods.base import Method

PREDICTIVE_MASK_WEIGHT = 0.2


@register_method("monodepth2")
class Monodepth2(Method):
    @classmethod
    def add_options(cls, parser):
        option_groups.monodepth2(parser)

    @classmethod
    def check_options(cls, opt):
        if opt.predictive_mask and not opt.disable_automasking:
            raise SystemExit("--predictive_mask replaces auto-masking: add --disable_automasking")
        if opt.frame_ids == [0] and not opt.use_stereo:
            raise SystemExit("--frame_ids 0 alone needs --use_stereo (nothing to reconstruct from)")
        networks.load_network_modules()
        if opt.pose_model_type not in networks.POSE_NETWORKS:
            raise SystemExit(f"--pose_model_type {opt.pose_model_type!r}: registered pose networks are "
                             f"{', '.join(sorted(networks.POSE_NETWORKS))}")

    def __init__(self, opt):
        super().__init__(opt)
        self.frame_ids = list(opt.frame_ids)
        self.num_scales = len(opt.scales)
        self.num_pose_frames = 2 if opt.pose_model_input == "pairs" else len(
            [f for f in self.frame_ids if f != "s"])
        self.use_pose_net = not (opt.use_stereo and self.frame_ids == [0, "s"])
        self.build_depth_networks()
        if self.use_pose_net:
            self.models.update(networks.build_pose_networks(opt, self.models["encoder"].num_ch_enc,
                                                            self.num_pose_frames))
        if opt.predictive_mask:
            self.models["predictive_mask"] = networks.build_depth_decoder(
                opt, self.models["encoder"].num_ch_enc, num_output_channels=len(self.frame_ids) - 1)
        self.backproject = nn.ModuleDict()
        self.project = nn.ModuleDict()
        for scale in opt.scales:
            h, w = opt.height // 2 ** scale, opt.width // 2 ** scale
            self.backproject[str(scale)] = BackprojectDepth(opt.batch_size, h, w)
            self.project[str(scale)] = Project3D(opt.batch_size, h, w)
        self.reprojection = ReprojectionLoss(opt.no_ssim)

    def build_depth_networks(self):
        """models["encoder"] and models["depth"] (a subclass with other depth networks builds
        them here, so that nothing is built twice)."""
        self.models["encoder"] = networks.build_encoder(self.opt)
        self.models["depth"] = networks.build_depth_decoder(self.opt, self.models["encoder"].num_ch_enc)

    # --------------------------------------------------------------------- forward
    def forward(self, inputs):
        opt = self.opt
        if opt.pose_model_type == "shared":
            all_color = torch.cat([inputs[("color_aug", i, 0)] for i in self.frame_ids])
            all_features = self.models["encoder"](all_color)
            all_features = [torch.split(f, inputs[("color_aug", 0, 0)].shape[0]) for f in all_features]
            features = {i: [f[k] for f in all_features] for k, i in enumerate(self.frame_ids)}
            outputs = self.models["depth"](features[0])
        else:
            features = {0: self.models["encoder"](inputs[("color_aug", 0, 0)])}
            outputs = self.models["depth"](features[0])
        if opt.predictive_mask:
            outputs["predictive_mask"] = self.models["predictive_mask"](features[0])
        if self.use_pose_net:
            outputs.update(self.predict_poses(inputs, features))
        self.generate_images_pred(inputs, outputs)
        return outputs

    def _pose(self, frames, features=None):
        """Pose network on a list of frames: its own encoder on the stacked frames, the depth
        encoder's features of each frame (shared), or a network on the stacked frames."""
        if "pose_encoder" in self.models:
            return self.models["pose"]([self.models["pose_encoder"](torch.cat(frames, 1))])
        if self.opt.pose_model_type == "shared":
            return self.models["pose"](features)
        return self.models["pose"](torch.cat(frames, 1))

    def predict_poses(self, inputs, features):
        """Relative poses target -> each source: ("cam_T_cam", 0, f) B x 4 x 4."""
        outputs = {}
        sources = [f for f in self.frame_ids[1:] if f != "s"]
        if self.opt.pose_model_input == "pairs":
            for f in sources:
                # frames in temporal order; f < 0 predicts f -> 0, so it is inverted
                pair = [f, 0] if f < 0 else [0, f]
                images = [inputs[("color_aug", i, 0)] for i in pair]
                feats = [features[i] for i in pair] if self.opt.pose_model_type == "shared" else None
                axisangle, translation = self._pose(images, feats)
                outputs[("axisangle", 0, f)] = axisangle
                outputs[("translation", 0, f)] = translation
                outputs[("cam_T_cam", 0, f)] = transformation_from_parameters(
                    axisangle[:, 0], translation[:, 0], invert=(f < 0))
        else:
            order = [f for f in self.frame_ids if f != "s"]
            images = [inputs[("color_aug", i, 0)] for i in order]
            feats = [features[i] for i in order] if self.opt.pose_model_type == "shared" else None
            axisangle, translation = self._pose(images, feats)
            for k, f in enumerate(sources):
                outputs[("axisangle", 0, f)] = axisangle
                outputs[("translation", 0, f)] = translation
                outputs[("cam_T_cam", 0, f)] = transformation_from_parameters(
                    axisangle[:, k], translation[:, k])
        return outputs

    def generate_images_pred(self, inputs, outputs):
        """Warp every source into the target with the depth of every scale. Geometry runs
        in float32 even under AMP: in bfloat16 a pixel coordinate near 600 is only known to
        within 4 pixels."""
        device_type = outputs[("disp", 0)].device.type
        with torch.autocast(device_type, enabled=False):
            self._generate_images_pred(inputs, outputs)

    def _generate_images_pred(self, inputs, outputs):
        opt = self.opt
        for scale in opt.scales:
            disp = outputs[("disp", scale)].float()
            if opt.v1_multiscale:
                source_scale = scale
            else:
                disp = F.interpolate(disp, [opt.height, opt.width], mode="bilinear", align_corners=False)
                source_scale = 0
            _, depth = disp_to_depth(disp, opt.min_depth, opt.max_depth)
            outputs[("depth", 0, scale)] = depth
            for f in self.frame_ids[1:]:
                if f == "s":
                    T = inputs["stereo_T"]
                else:
                    T = outputs[("cam_T_cam", 0, f)].float()
                if opt.pose_model_type == "posecnn" and f != "s":
                    # PoseCNN translation is relative to the mean inverse depth
                    mean_inv_depth = (1 / depth).mean(3, True).mean(2, True)
                    T = transformation_from_parameters(
                        outputs[("axisangle", 0, f)][:, 0],
                        outputs[("translation", 0, f)][:, 0] * mean_inv_depth[:, 0], f < 0)
                cam_points = self.backproject[str(source_scale)](depth, inputs[("inv_K", source_scale)])
                pix_coords = self.project[str(source_scale)](cam_points, inputs[("K", source_scale)], T)
                outputs[("sample", f, scale)] = pix_coords
                outputs[("color", f, scale)] = warp(inputs[("color", f, source_scale)], pix_coords)

    # --------------------------------------------------------------------- losses
    def photometric_errors(self, inputs, outputs, scale):
        """(reprojection errors B x n x H x W, identity errors or None) at one scale. The
        identity errors depend only on the source scale (always 0 unless --v1_multiscale),
        so they are computed once per step and kept in outputs."""
        source_scale = scale if self.opt.v1_multiscale else 0
        target = inputs[("color", 0, source_scale)]
        reprojection = torch.cat([self.reprojection(outputs[("color", f, scale)], target)
                                  for f in self.frame_ids[1:]], 1)
        identity = None
        if not self.opt.disable_automasking:
            key = ("identity_error", source_scale)
            if key not in outputs:
                outputs[key] = torch.cat([self.reprojection(inputs[("color", f, source_scale)], target)
                                          for f in self.frame_ids[1:]], 1)
            identity = outputs[key]
        return reprojection, identity

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        photometric, smoothness = 0, 0
        logs = {}
        for scale in opt.scales:
            reprojection, identity = self.photometric_errors(inputs, outputs, scale)
            mask_loss = 0
            if opt.predictive_mask:
                mask = outputs["predictive_mask"][("disp", scale)].float()
                if not opt.v1_multiscale:
                    mask = F.interpolate(mask, [opt.height, opt.width], mode="bilinear", align_corners=False)
                reprojection = reprojection * mask
                mask_loss = PREDICTIVE_MASK_WEIGHT * F.binary_cross_entropy(mask, torch.ones_like(mask))
            to_optimise, automask = min_reprojection(reprojection, identity, opt.avg_reprojection)
            if automask is not None:
                outputs[("automask", scale)] = automask
            photo_s = to_optimise.mean() + mask_loss
            disp = outputs[("disp", scale)]
            smooth_s = opt.disparity_smoothness * smoothness_loss(disp, inputs[("color", 0, scale)]) / (2 ** scale)
            photometric = photometric + photo_s
            smoothness = smoothness + smooth_s
            logs[f"loss/{scale}"] = (photo_s + smooth_s).detach()
        n = len(opt.scales)
        return {"reprojection": photometric / n, "smoothness": smoothness / n}, logs

    # --------------------------------------------------------------------- inference and logs
    def predict(self, inputs):
        sigmoid = self.models["depth"](self.models["encoder"](inputs[("color", 0, 0)]))[("disp", 0)]
        disp, depth = disp_to_depth(sigmoid.float(), self.opt.min_depth, self.opt.max_depth)
        return {"depth": depth, "disp": disp}

    def pose_between(self, image_a, image_b):
        """Pose of b relative to a, for pose evaluation: (axisangle, translation) B x 1 x 1 x 3."""
        features = None
        if self.opt.pose_model_type == "shared":
            features = [self.models["encoder"](image_a), self.models["encoder"](image_b)]
        return self._pose([image_a, image_b], features)

    def images_to_log(self, inputs, outputs, n):
        images = {}
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            for s in self.opt.scales:
                for f in self.frame_ids:
                    images[f"color_{f}_{s}/{j}"] = inputs[("color", f, s)][j]
                    if s == 0 and f != 0:
                        images[f"color_pred_{f}_{s}/{j}"] = outputs[("color", f, s)][j]
                disp = outputs[("disp", s)][j]
                images[f"disp_{s}/{j}"] = (disp - disp.min()) / (disp.max() - disp.min() + 1e-8)
                if ("automask", s) in outputs:
                    images[f"automask_{s}/{j}"] = outputs[("automask", s)][j]
        return images

