"""ManyDepth (Watson et al., CVPR 2021): a cost volume over the previous frame's features,
built at 1/4 resolution from poses of the pose network and adaptive depth bins, guided by a
single-frame teacher where the cost volume cannot be trusted.

What it adds to Monodepth2 (networks/manydepth.py holds the matching encoder):
- `encoder` is the matching encoder (ResNet features, an L1 cost volume of --num_depth_bins
  planes between the depth trackers, its confidence); `depth` decodes it; `mono_encoder` /
  `mono_depth` are the single-frame teacher, trained jointly with the shared pose network
  until the freeze;
- the multi-frame photometric loss is applied only where the cost volume is confident and
  agrees with the teacher (no auto-mask), and the consistency loss pulls the multi-frame
  depth towards the (detached) teacher elsewhere;
- matching augmentation: a quarter of the samples match against their own target (static
  camera), a quarter get zero poses (no cost volume); both are single-frame samples;
- the depth trackers (buffers of `encoder`, so in encoder.pth and in the resume state) move
  towards the teacher's depth range after each training step (never on validation
  batches), until the freeze;
- the freeze: from --freeze_teacher_epoch (or --freeze_teacher_step; from the start with
  --freeze_teacher_and_pose) the teacher and the pose network stop learning (their BN
  statistics too) and the trackers stay fixed. The optimiser and its schedule continue (the
  reference re-created them, so its last epochs ran at the base LR again with fresh Adam
  moments: --freeze_resets_optimizer);
- a missing previous frame (the start of a drive) is a black image whose pose is zeroed, in
  training and at test time (the reference's evaluation kept the predicted pose:
  --keep_missing_pose), so the network runs in single-frame mode there.
"""
import os

import torch
import torch.nn.functional as F

import networks
from layers import disp_to_depth, transformation_from_parameters
from losses import automask_after_min, smoothness_loss
from methods import option_groups, register_method
from methods.base import load_state_file
from methods.monodepth2 import Monodepth2
from networks.manydepth import ResnetEncoderMatching, matching_mask

STATIC_FRACTION, ZERO_POSE_FRACTION = 0.25, 0.25  # matching augmentation (per sample)
TEACHER_MODELS = ("mono_encoder", "mono_depth", "pose_encoder", "pose")


@register_method("manydepth")
class ManyDepth(Monodepth2):
    find_unused_parameters = True  # the teacher and pose stop receiving gradients at the freeze
    weight_signature = ("mono_encoder.pth", "mono_depth.pth", "encoder.pth")
    inference_options = ("eval_teacher", "zero_cost_volume", "static_camera", "keep_missing_pose")

    @classmethod
    def add_options(cls, parser):
        option_groups.manydepth(parser)

    @classmethod
    def check_options(cls, opt):
        if opt.use_stereo:
            raise SystemExit("--method manydepth is monocular: drop --use_stereo")
        if opt.pose_model_type != "separate_resnet":
            raise SystemExit("--method manydepth needs --pose_model_type separate_resnet (its matching poses "
                             "come from the separate pose network)")
        if opt.pose_model_input != "pairs":
            raise SystemExit("--method manydepth needs --pose_model_input pairs")
        if opt.v1_multiscale or opt.predictive_mask:
            raise SystemExit("--method manydepth does not support --v1_multiscale or --predictive_mask")
        if opt.num_depth_bins < 2:
            raise SystemExit(f"--num_depth_bins {opt.num_depth_bins}: at least 2")
        missing = [f for f in cls._matching_frames(opt) if f not in opt.frame_ids]
        if missing:
            raise SystemExit(f"matching frames {missing} (--num_matching_frames {opt.num_matching_frames}"
                             f"{', --use_future_frame' if opt.use_future_frame else ''}) must be in --frame_ids "
                             f"{opt.frame_ids}")
        if opt.freeze_resets_optimizer and (opt.freeze_teacher_step >= 0 or opt.freeze_teacher_epoch < 0
                                            or opt.freeze_teacher_and_pose or opt.lr_sche_type == "cosine"):
            raise SystemExit("--freeze_resets_optimizer restarts the optimiser and the step schedule at "
                             "--freeze_teacher_epoch: it needs that epoch freeze (not --freeze_teacher_step or "
                             "--freeze_teacher_and_pose) and a step or exponential schedule (not cosine)")
        if opt.mono_weights_folder and not os.path.isdir(opt.mono_weights_folder):
            raise SystemExit(f"--mono_weights_folder {opt.mono_weights_folder}: no such folder")

    @staticmethod
    def _matching_frames(opt):
        return [-k for k in range(1, opt.num_matching_frames + 1)] + ([1] if opt.use_future_frame else [])

    @classmethod
    def missing_frames(cls, opt, training):
        return "black"

    def __init__(self, opt):
        super().__init__(opt)  # pose networks, geometry, photometric loss, and build_depth_networks
        self.matching_frames = self._matching_frames(opt)
        self.frozen = False
        if opt.mono_weights_folder:
            self.load_teacher(opt.mono_weights_folder)
        if opt.freeze_teacher_and_pose:
            self.freeze()
        self.inference_frames = (0,) if opt.eval_teacher else tuple([0] + self.matching_frames)
        self.inference_intrinsics = () if opt.eval_teacher else (2,)  # the cost volume's 1/4

    def build_depth_networks(self):
        """The matching encoder and its decoder, and the single-frame teacher."""
        opt = self.opt
        self.models["encoder"] = ResnetEncoderMatching(
            opt.num_layers, opt.weights_init == "pretrained", opt.height, opt.width,
            num_depth_bins=opt.num_depth_bins, depth_binning=opt.depth_binning,
            weights_file=networks.start_weights_file(opt, f"resnet{opt.num_layers}")
            if opt.weights_init == "pretrained" else None, count_valid_from_mask=not opt.cost_count_nonzero)
        self.models["depth"] = networks.build_depth_decoder(opt, self.models["encoder"].num_ch_enc)
        self.models["mono_encoder"] = networks.build_encoder(opt)
        self.models["mono_depth"] = networks.build_depth_decoder(opt, self.models["mono_encoder"].num_ch_enc)

    def load_teacher(self, folder):
        """The teacher and the pose network from a ManyDepth or a monodepth2 folder."""
        names = {"mono_encoder": "mono_encoder", "mono_depth": "mono_depth", "pose_encoder": "pose_encoder",
                 "pose": "pose"}
        if not os.path.isfile(os.path.join(folder, "mono_encoder.pth")):
            names.update(mono_encoder="encoder", mono_depth="depth")
        for model, file in names.items():
            path = os.path.join(folder, f"{file}.pth")
            if not os.path.isfile(path):
                raise SystemExit(f"--mono_weights_folder {folder}: missing {file}.pth")
            state = load_state_file(path)
            self.models[model].load_state_dict(state, strict=True)
        print(f"-> teacher and pose network loaded from {folder}")

    def adapt_weight_file(self, name, state, path):
        """The reference's encoder.pth holds the trackers as Python floats: as tensors here."""
        if name == "encoder" and "min_depth_bin" not in state:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("min_depth_bin", "max_depth_bin"):
                if key in raw:
                    state[key] = torch.as_tensor(float(raw[key]), dtype=torch.float32)
        return state

    # --------------------------------------------------------------------- freeze
    def freeze(self, reset_optimizer=False):
        """Teacher and pose networks: no gradients, BN statistics fixed; trackers fixed.
        reset_optimizer (the epoch freeze with --freeze_resets_optimizer): the Trainer drops
        Adam's state too. A state restored after the freeze already holds the fresh one."""
        if self.frozen:
            return
        self.frozen = True
        self.reset_optimizer_state = reset_optimizer
        for name in TEACHER_MODELS:
            for p in self.models[name].parameters():
                p.requires_grad_(False)
                p.grad = None
        self.train(self.training)
        if self.opt.freeze_teacher_and_pose or self.opt.freeze_teacher_epoch >= 0 or self.opt.freeze_teacher_step >= 0:
            print("-> ManyDepth: teacher and pose network frozen")

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            for name in TEACHER_MODELS:
                self.models[name].eval()
        return self

    def on_epoch_start(self, epoch, start_batch):
        opt = self.opt
        if opt.freeze_teacher_step < 0 and 0 <= opt.freeze_teacher_epoch <= epoch:
            self.freeze(reset_optimizer=opt.freeze_resets_optimizer)

    def on_train_step_end(self, step, inputs, outputs):
        if not self.frozen:
            self.models["encoder"].update_bins(outputs[("mono_depth", 0, 0)].detach(), self.opt.min_depth)
        opt = self.opt
        if 0 <= opt.freeze_teacher_step <= step + 1:
            self.freeze()

    def extra_state(self):
        return {"frozen": self.frozen}

    def load_extra_state(self, state):
        if state.get("frozen"):
            self.freeze()

    def schedule_epoch(self, epoch):
        """--freeze_resets_optimizer: the schedule restarts at the freeze epoch."""
        start = self.opt.freeze_teacher_epoch
        if getattr(self.opt, "freeze_resets_optimizer", False) and 0 <= start <= epoch:
            return epoch - start
        return epoch

    # --------------------------------------------------------------------- forward
    def matching_poses(self, inputs, outputs, key="color_aug", zero_missing=True):
        """Target -> each matching frame, B x N x 4 x 4, without gradients; chained through the
        frames in between; zero for a missing (black) frame."""
        poses = {}
        with torch.no_grad():
            for f in sorted(self.matching_frames, key=abs):
                if ("cam_T_cam", 0, f) in outputs and abs(f) == 1:
                    T = outputs[("cam_T_cam", 0, f)].detach()
                else:  # pose between f and its neighbour towards the target, chained
                    near = f + 1 if f < 0 else f - 1
                    pair = [f, near] if f < 0 else [near, f]
                    axisangle, translation = self._pose([inputs[(key, i, 0)] for i in pair])
                    T = transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=f < 0)
                    if near != 0:
                        T = T @ poses[near]
                if ("missing", f) in inputs and zero_missing:
                    T = T * (1 - inputs[("missing", f)].to(T.dtype)).view(-1, 1, 1)
                poses[f] = T
        return torch.stack([poses[f] for f in self.matching_frames], 1)

    def forward(self, inputs):
        opt = self.opt
        outputs = {}
        if self.frozen:
            with torch.no_grad():
                outputs.update(self.predict_poses(inputs, None))
                mono = self.models["mono_depth"](self.models["mono_encoder"](inputs[("color_aug", 0, 0)]))
        else:
            outputs.update(self.predict_poses(inputs, None))
            mono = self.models["mono_depth"](self.models["mono_encoder"](inputs[("color_aug", 0, 0)]))
        mono_outputs = dict(mono)
        mono_outputs.update({k: v for k, v in outputs.items() if k[0] == "cam_T_cam"})
        self.generate_images_pred(inputs, mono_outputs)
        for key, value in mono_outputs.items():
            if key[0] in ("disp", "depth", "color", "sample"):
                outputs[("mono_" + key[0],) + key[1:]] = value

        poses = self.matching_poses(inputs, outputs)
        lookups = torch.stack([inputs[("color_aug", f, 0)] for f in self.matching_frames], 1)
        batch = lookups.shape[0]
        augmentation = torch.zeros(batch, device=lookups.device)
        if self.training and not opt.no_matching_augmentation:
            u = torch.rand(batch)  # the global CPU generator: restored on resume
            static = (u < STATIC_FRACTION).to(lookups.device)
            zero = ((u >= STATIC_FRACTION) & (u < STATIC_FRACTION + ZERO_POSE_FRACTION)).to(lookups.device)
            target = inputs[("color", 0, 0)].unsqueeze(1).expand_as(lookups)  # the un-augmented target
            lookups = torch.where(static.view(-1, 1, 1, 1, 1), target, lookups)
            poses = poses * (~zero).to(poses.dtype).view(-1, 1, 1, 1)
            augmentation = (static | zero).float()
            outputs["matching_augmentation"] = static.long() + 2 * zero.long()  # 0 none, 1 static, 2 zero pose
        outputs["augmentation_mask"] = augmentation.view(-1, 1, 1, 1)
        features, lowest_cost, confidence = self.models["encoder"](
            inputs[("color_aug", 0, 0)], lookups, poses, inputs[("K", 2)], inputs[("inv_K", 2)])
        outputs.update(self.models["depth"](features))
        size = [opt.height, opt.width]
        outputs["lowest_cost"] = F.interpolate(lowest_cost.unsqueeze(1), size, mode="nearest")
        if opt.disable_motion_masking:  # the reference then trusts every pixel (no confidence term either)
            mask = torch.ones_like(outputs["lowest_cost"])
        else:
            mask = F.interpolate(confidence.unsqueeze(1).float(), size, mode="nearest")
            depth_cv = 1 / outputs["lowest_cost"].clamp(min=1e-7)
            mask = mask * matching_mask(depth_cv, outputs[("mono_depth", 0, 0)].detach())
        outputs["consistency_mask"] = mask
        for key in [k for k in outputs if k[0] == "cam_T_cam"]:  # the multi-frame loss does not train the poses
            outputs[key] = outputs[key].detach()
        self.generate_images_pred(inputs, outputs)
        return outputs

    # --------------------------------------------------------------------- losses
    def _scale_losses(self, inputs, outputs, scale, multi):
        """(photometric, consistency, smoothness) at one scale. Teacher: min over sources,
        auto-mask (the identity errors' minimum over sources plus fresh noise, ties kept:
        automask_after_min, as the released code), mean over the kept pixels. Multi-frame:
        mean of the min over the pixels R = confidence x matching x (1 - augmentation);
        consistency elsewhere."""
        prefix = "" if multi else "mono_"
        target = inputs[("color", 0, 0)]
        reprojection = torch.cat([self.reprojection(outputs[(prefix + "color", f, scale)], target)
                                  for f in self.frame_ids[1:]], 1)
        reprojection, _ = reprojection.min(1, keepdim=True)
        consistency = None
        if multi:
            mask = outputs["consistency_mask"] * (1 - outputs["augmentation_mask"])
            outputs["reprojection_mask"] = mask
            depth_multi = outputs[("depth", 0, scale)]
            depth_mono = outputs[("mono_depth", 0, scale)].detach()
            consistency = (torch.abs(depth_multi - depth_mono) * (1 - mask)).mean()
        else:
            mask = torch.ones_like(reprojection)
            if not self.opt.disable_automasking:
                if ("identity_error", 0) not in outputs:  # the same at every scale; noise drawn per scale
                    outputs[("identity_error", 0)] = torch.cat(
                        [self.reprojection(inputs[("color", f, 0)], target) for f in self.frame_ids[1:]], 1)
                mask = automask_after_min(reprojection, outputs[("identity_error", 0)])
                outputs[("automask", scale)] = mask
        photometric = (reprojection * mask).sum() / (mask.sum() + 1e-7)
        disp = outputs[(prefix + "disp", scale)]
        smooth = self.opt.disparity_smoothness * smoothness_loss(disp, inputs[("color", 0, scale)]) / 2 ** scale
        return photometric, consistency, smooth

    def compute_losses(self, inputs, outputs):
        n = len(self.opt.scales)
        terms = {"reprojection": 0, "consistency": 0, "smoothness": 0}
        if not self.frozen:
            terms.update(teacher_reprojection=0, teacher_smoothness=0)
        logs = {}
        for scale in self.opt.scales:
            photo, consistency, smooth = self._scale_losses(inputs, outputs, scale, multi=True)
            terms["reprojection"] += photo / n
            terms["consistency"] += consistency / n
            terms["smoothness"] += smooth / n
            if not self.frozen:
                t_photo, _, t_smooth = self._scale_losses(inputs, outputs, scale, multi=False)
                terms["teacher_reprojection"] += t_photo / n
                terms["teacher_smoothness"] += t_smooth / n
        encoder = self.models["encoder"]
        logs["min_depth_bin"] = encoder.min_depth_bin.detach().clone()
        logs["max_depth_bin"] = encoder.max_depth_bin.detach().clone()
        logs["reprojection_fraction"] = (outputs["consistency_mask"] * (1 - outputs["augmentation_mask"])).mean().detach()
        return terms, logs

    def train_depth(self, outputs):
        return outputs.get(("depth", 0, 0))

    # --------------------------------------------------------------------- inference
    def predict(self, inputs):
        """Frames 0 and -1 (and +1 with --use_future_frame), K at 1/4 resolution -> the
        multi-frame depth, with the teacher's as the "single_frame" variant."""
        opt = self.opt
        image = inputs[("color", 0, 0)]
        if opt.eval_teacher or self.predict_variants:
            teacher_disp = self.models["mono_depth"](self.models["mono_encoder"](image))[("disp", 0)].float()
            teacher_disp, teacher_depth = disp_to_depth(teacher_disp, opt.min_depth, opt.max_depth)
            if opt.eval_teacher:
                return {"depth": teacher_depth, "disp": teacher_disp}
        poses = self.matching_poses(inputs, {}, key="color", zero_missing=not opt.keep_missing_pose)
        lookups = torch.stack([inputs[("color", f, 0)] for f in self.matching_frames], 1)
        if opt.zero_cost_volume:
            poses = poses * 0
        if opt.static_camera:
            lookups = image.unsqueeze(1).expand_as(lookups)
        features, _, _ = self.models["encoder"](image, lookups, poses, inputs[("K", 2)], inputs[("inv_K", 2)])
        disp, depth = disp_to_depth(self.models["depth"](features)[("disp", 0)].float(), opt.min_depth, opt.max_depth)
        if not self.predict_variants:  # the Trainer's validation: no teacher pass
            return {"depth": depth, "disp": disp}
        return {"depth": depth, "disp": disp, "variants": {"single_frame": teacher_depth}}

    def export_inputs(self):
        """Frames, K and inv_K at 1/4, then a flag B per matching frame (1: the frame is
        missing, a black image: its pose is zeroed; not read with --keep_missing_pose)."""
        entries = super().export_inputs()
        if not (self.opt.eval_teacher or self.opt.keep_missing_pose):
            entries += [(("missing", f), ("B",)) for f in self.matching_frames]
        return entries

    @property
    def output_name(self):
        """The name of predict()'s main output in evaluation tables."""
        return "single_frame" if self.opt.eval_teacher else "multi_frame"

    @property
    def inference_models(self):
        return ("encoder", "depth", "mono_encoder", "mono_depth", "pose_encoder", "pose")

    def images_to_log(self, inputs, outputs, n):
        images = super().images_to_log(inputs, outputs, n)
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            images[f"consistency_mask/{j}"] = outputs["consistency_mask"][j]
            cost = outputs["lowest_cost"][j]
            images[f"lowest_cost/{j}"] = (cost - cost.min()) / (cost.max() - cost.min() + 1e-8)
        return images
