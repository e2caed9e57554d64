"""SRD (Lee et al., "Self-Supervised Monocular Depth Estimation with Self-Reference Distillation
and Disparity Offset Refinement", TCSVT 2023):
Monodepth2's losses, the offset-refinement decoder (networks/srd_decoder.py), and,
from the second epoch on, an L1 pull of every scale's depth towards a frozen copy of the
depth network taken at the end of the previous epoch, where that copy passes a geometric
check against its own depth of the next frame.

The teacher lives in memory (eval mode, no gradients), is never part of the weight folders,
and is saved in the resume state, so a resumed run distils from the same teacher.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import disp_to_depth, multiview_consistency
from methods import option_groups, register_method
from methods.monodepth2 import Monodepth2


def distillation_mask(depth_teacher, depth_teacher_next, T, K, inv_K, factor=1.0, in_view_test=True):
    """Pixels whose teacher depth agrees with the teacher's depth of the next frame: the
    relative back-projection error is below `factor` x its per-image mean (over all H x W
    pixels) and, with in_view_test, the pixel projects inside the next frame. All
    B x 1 x H x W; returns a float mask.

    in_view_test=False is the released code's rule: a pixel that projects outside the next
    frame samples depth 0 there, so its point comes back at the next camera's centre, and it
    is kept when that error is below the mean (e.g. near objects when the mean is large)."""
    rel, in_view = multiview_consistency(depth_teacher, depth_teacher_next, T, K, inv_K)
    mean = rel.mean((1, 2, 3), keepdim=True)
    keep = rel < factor * mean
    if in_view_test:
        keep = keep & in_view
    return keep.to(depth_teacher.dtype)


def distillation_loss(depth, depth_teacher, mask, weight):
    """weight x mean over all pixels of mask x |depth - teacher| (teacher without gradient)."""
    return weight * (mask * (depth - depth_teacher.detach()).abs()).mean()


@register_method("srd")
class SRD(Monodepth2):
    @classmethod
    def add_options(cls, parser):
        option_groups.srd(parser)

    @classmethod
    def check_options(cls, opt):
        if opt.v1_multiscale:
            raise SystemExit("--method srd distils full-resolution depth at every scale: drop --v1_multiscale")
        if opt.distill_filter != "none":
            if 1 not in opt.frame_ids:
                raise SystemExit(f"--distill_filter {opt.distill_filter} checks the teacher against frame +1: add 1 "
                                 "to --frame_ids or use --distill_filter none")
            if opt.pose_model_type == "posecnn":
                raise SystemExit(f"--distill_filter {opt.distill_filter} needs a metric pose: use --pose_model_type "
                                 "separate_resnet or shared, or --distill_filter none")
        if opt.srd_decoder_init != "default" and opt.depth_decoder != "srd":
            raise SystemExit(f"--srd_decoder_init {opt.srd_decoder_init} applies to --depth_decoder srd only "
                             f"(this run uses {opt.depth_decoder})")
        if opt.distill_start_epoch < 1:
            raise SystemExit("--distill_start_epoch must be >= 1 (the teacher is the network of the previous epoch)")

    def __init__(self, opt):
        super().__init__(opt)
        self.__dict__["teacher"] = None  # not a submodule: no weights file, no DDP, never in train mode
        self.teacher_epoch = None  # the epoch at whose end the teacher was taken

    # ------------------------------------------------------------------ teacher
    def take_snapshot(self):
        teacher = copy.deepcopy(nn.ModuleDict({"encoder": self.models["encoder"], "depth": self.models["depth"]}))
        teacher.eval()
        teacher.requires_grad_(False)
        for model in teacher.values():
            # a copied torch.compile wrapper would still call the student's forward: the
            # teacher (no gradients) runs eagerly
            if getattr(model, "_compiled_call_impl", None) is not None:
                model._compiled_call_impl = None
        return teacher

    def on_epoch_end(self, epoch):
        if epoch + 1 >= self.opt.distill_start_epoch:
            self.__dict__["teacher"] = self.take_snapshot()
            self.teacher_epoch = epoch

    def extra_state(self):
        if self.teacher is None:
            return {}
        return {"teacher": self.teacher.state_dict(), "teacher_epoch": self.teacher_epoch}

    def load_extra_state(self, state):
        if "teacher" in state:
            teacher = self.take_snapshot()
            teacher.load_state_dict(state["teacher"])
            self.__dict__["teacher"] = teacher
            self.teacher_epoch = state.get("teacher_epoch")

    def distilling(self):
        return self.training and self.teacher is not None

    # ------------------------------------------------------------------ training
    def param_groups(self):
        encoder = [p for p in self.models["encoder"].parameters() if p.requires_grad]
        ids = {id(p) for p in encoder}
        rest = [p for p in self.parameters_to_train() if id(p) not in ids]
        return [{"name": "encoder", "params": encoder, "lr": self.opt.learning_rate},
                {"name": "decoder_pose", "params": rest, "lr": self.opt.decoder_lr}]

    def teacher_depths(self, images):
        """Teacher depth of each image at every scale, upsampled to the input size."""
        opt = self.opt
        with torch.no_grad():
            out = self.teacher["depth"](self.teacher["encoder"](images))
            depths = {}
            for scale in opt.scales:
                disp = F.interpolate(out[("disp", scale)].float(), [opt.height, opt.width], mode="bilinear",
                                     align_corners=False)
                depths[scale] = disp_to_depth(disp, opt.min_depth, opt.max_depth)[1]
        return depths

    def forward(self, inputs):
        outputs = super().forward(inputs)
        if not self.distilling():
            return outputs
        opt = self.opt
        filtered = opt.distill_filter != "none"
        frames = [inputs[("color_aug", 0, 0)]] + ([inputs[("color_aug", 1, 0)]] if filtered else [])
        batch = frames[0].shape[0]
        depths = self.teacher_depths(torch.cat(frames))
        with torch.no_grad(), torch.autocast(frames[0].device.type, enabled=False):
            for scale in opt.scales:
                depth_t = depths[scale][:batch]
                outputs[("teacher_depth", scale)] = depth_t
                if filtered:
                    T = outputs[("cam_T_cam", 0, 1)].detach().float()
                    outputs[("distill_mask", scale)] = distillation_mask(
                        depth_t, depths[scale][batch:], T, inputs[("K", 0)], inputs[("inv_K", 0)],
                        opt.distill_filter_factor, in_view_test=opt.distill_filter == "multiview")
                else:
                    outputs[("distill_mask", scale)] = torch.ones_like(depth_t)
        return outputs

    def compute_losses(self, inputs, outputs):
        terms, logs = super().compute_losses(inputs, outputs)
        if ("distill_mask", self.opt.scales[0]) not in outputs:  # epoch 0, or not training
            return terms, logs
        total, kept = 0, 0
        for scale in self.opt.scales:
            mask = outputs[("distill_mask", scale)]
            total = total + distillation_loss(outputs[("depth", 0, scale)], outputs[("teacher_depth", scale)],
                                              mask, self.opt.distill_weight)
            kept = kept + mask.mean()
        n = len(self.opt.scales)
        terms["distillation"] = total / n
        logs["distill/mask_fraction"] = (kept / n).detach()
        return terms, logs

    def images_to_log(self, inputs, outputs, n):
        images = super().images_to_log(inputs, outputs, n)
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            for s in range(3):
                if ("delta", s) in outputs:
                    d = outputs[("delta", s)][j].abs().mean(0, keepdim=True)
                    images[f"delta_{s}/{j}"] = d / (d.max() + 1e-8)
            if ("distill_mask", 0) in outputs:
                images[f"distill_mask_0/{j}"] = outputs[("distill_mask", 0)][j]
        return images
