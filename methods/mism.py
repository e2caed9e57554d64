"""MISM: a multi-frame teacher (MNet) and a single-frame student (SNet) that teach each other.

Stage 1 (`--method mism_teacher`): a single-frame network SNet (HRNet-18 on raw RGB with
RA-Depth's multi-scale-fusion decoder, or a ResNet-18 with Monodepth2's decoder) and the
pose network learn Monodepth2's way; MNet (networks/mism.py: FPN features, 16 depth
hypotheses around SNet's detached depth, group-wise correlation with frame -1 (or the
frame --matching_ids names), a 3D U-Net,
local soft-argmax, convex upsampling) learns from its own photometric loss and the
masked-image consistency. Poses and prior are detached, so the two never exchange
gradients; MNet has its own LR group. PADS widens MNet's range (F) where it disagrees
with SNet; F lives in reg3d.pth (`depth_bin_facs`).

Stage 2 (`--method mism_student --teacher_weights_folder T`): a new SNet and pose network
learn Monodepth2's way plus 0.1 x SILog towards the frozen stage-1 MNet's depth wherever the
teacher reprojects the images better than the student.

Stage 3 (no training): the student's SNet and pose network with the teacher's MNet. The
student's weight folders hold the frozen teacher's files too, so each is the whole bundle:
evaluate_depth.py prints the single-frame (SNet) and the multi-frame (MNet) tables.

The first frame of a drive has no frame -1: both stages duplicate the target (MISM's
choice), at training and at test time.

Departures from the released code, each with a switch where results change:
- the masked-image loss (reference: one hole per batch, the loss on the visible pixels,
  weight mask_lw applied twice, no stop-gradient) is by default one hole per image, the loss
  in the hole, weight mask_lw once, the target detached (`--masked_loss reference`);
- flags that could not be switched off (`adaptive_range`, `convex_up`,
  `use_many_frame_depth`, `msc_min_reproj_mask`) have --no_ forms;
- SILog is guarded against an empty mask and a negative variance; `--msc_loss_type ssim`
  keeps its L1 term inside the distillation mask (`--msc_ssim_l1_everywhere`: all pixels);
- PADS is updated after training steps only (not on validation batches).
"""
import copy
import os

import torch
import torch.nn.functional as F

import networks
from layers import SSIM, disp_to_depth, transformation_from_parameters, warp
from losses import ReprojectionLoss, automask_after_min, masked_silog, masked_ssim_l1, smoothness_loss
from methods import option_groups, register_method
from methods.option_groups import SNETS
from methods.base import folder_options, load_state_file
from methods.monodepth2 import Monodepth2
from networks.mism import MNet, keep_mask_at, random_hole_mask

SNET_MODELS = ("s_encoder", "s_depth", "pose_encoder", "pose")
MNET_MODELS = ("m_encoder", "reg3d", "up")
MNET_OPTIONS = ("num_depth_bins", "schedule_type", "reg3d_c", "norm_radius", "adaptive_range", "depth_bin_fac",
                "delta_fac", "convex_up", "matching_ids")


class MISMBase(Monodepth2):
    """What both stages share: SNet + pose + MNet, the multi-frame prediction."""
    weight_signature = ("m_encoder.pth", "reg3d.pth", "up.pth")
    inference_options = ("single_frame", "mnet_weights_folder")

    @classmethod
    def add_options(cls, parser):
        option_groups.mism(parser)

    @classmethod
    def check_options(cls, opt):
        opt.encoder, opt.depth_decoder = SNETS[opt.snet]
        if opt.snet == "resnet":
            opt.num_layers = 18
        if opt.prior_scale != 2:
            raise SystemExit(f"--prior_scale {opt.prior_scale}: MNet matches at 1/4 resolution only (2)")
        if opt.num_depth_bins % 8 or opt.num_depth_bins < 8:
            raise SystemExit(f"--num_depth_bins {opt.num_depth_bins}: MNet's 3D U-Net needs a multiple of 8")
        if opt.height % 32 or opt.width % 32:
            raise SystemExit(f"--height {opt.height} / --width {opt.width}: MNet needs multiples of 32")
        if opt.mnet_weights_folder and not getattr(opt, "for_inference", False):
            raise SystemExit("--mnet_weights_folder is an inference option (evaluate_depth.py, test_simple.py); "
                             "stage 2 takes its teacher with --teacher_weights_folder")
        if opt.norm_radius != 1:
            raise SystemExit("--norm_radius: only 1 (MISM's window k* +- 1) is implemented")
        target, source = opt.matching_ids
        if target != 0 or source == 0:
            raise SystemExit(f"--matching_ids {target} {source}: the first id is the target 0, the second a "
                             "source frame (e.g. 0 -1)")
        if opt.use_stereo or source not in opt.frame_ids:
            raise SystemExit(f"MISM is monocular and matches against frame {source} (--matching_ids): it must be "
                             f"in --frame_ids (now {' '.join(map(str, opt.frame_ids))}), no --use_stereo")
        if opt.pose_model_type != "separate_resnet" or opt.pose_model_input != "pairs":
            raise SystemExit("MISM needs --pose_model_type separate_resnet --pose_model_input pairs")

    @classmethod
    def missing_frames(cls, opt, training):
        return "duplicate"

    def __init__(self, opt):
        super().__init__(opt)  # encoder, depth (the SNet), pose networks, geometry, photometric loss
        self.models["s_encoder"] = self.models.pop("encoder")
        self.models["s_depth"] = self.models.pop("depth")
        self.drop_resnet_classifiers(SNET_MODELS)
        mnet = self.build_mnet(opt)
        for name in MNET_MODELS:
            self.models[name] = getattr(mnet, name)
        self.__dict__["mnet"] = mnet  # its submodules are registered under models (weight-file names)
        self.reprojection = ReprojectionLoss(opt.no_ssim, opt.ssim_lw)
        if getattr(opt, "mnet_weights_folder", None) and getattr(opt, "for_inference", False) and not opt.single_frame:
            self.load_weights(os.path.expanduser(opt.mnet_weights_folder), MNET_MODELS, strict=True)
            print(f"-> MNet from {opt.mnet_weights_folder}")

    def drop_resnet_classifiers(self, names):
        """MISM's ResNets (the pose encoder; SNet with --snet resnet) have no ImageNet
        classifier, as in the released code, so their weight files hold no `encoder.fc.*`."""
        for name in names:
            if isinstance(self.models[name], networks.ResnetEncoder):
                self.models[name].drop_classifier()

    def adapt_weight_file(self, name, state, path):
        """MISM's own s_encoder.pth holds the HRNet's parameters without this encoder's
        `encoder.` prefix (the official HRNet names): add it. Folders written while the
        ResNets kept their unused classifier hold `encoder.fc.*`: dropped."""
        if name.endswith("s_encoder") and state and self.opt.snet == "hrnet" and \
                not any(k.startswith(("encoder.", "context_")) for k in state):
            state = {"encoder." + k: v for k, v in state.items()}
        model = self.models[name] if name in self.models else None
        if isinstance(model, networks.ResnetEncoder) and not hasattr(model.encoder, "fc"):
            state = {k: v for k, v in state.items() if not k.startswith("encoder.fc.")}
        return state

    @staticmethod
    def build_mnet(opt):
        return MNet(opt.height, opt.width, num_depth_bins=opt.num_depth_bins, schedule=opt.schedule_type,
                    depth_bin_fac=opt.depth_bin_fac, delta_fac=opt.delta_fac, adaptive_range=opt.adaptive_range,
                    convex_up=opt.convex_up, reg3d_base=opt.reg3d_c, min_depth=opt.min_depth,
                    max_depth=opt.max_depth)

    # --------------------------------------------------------------------- shared pieces
    def snet_depth(self, image, encoder="s_encoder", decoder="s_depth"):
        """-> (sigmoid disparity, depth) B x 1 x H x W of an SNet."""
        sigmoid = self.models[decoder](self.models[encoder](image))[("disp", 0)]
        return sigmoid, disp_to_depth(sigmoid.float(), self.opt.min_depth, self.opt.max_depth)[1]

    def pose(self, inputs, f, key="color_aug", encoder="pose_encoder", decoder="pose"):
        """Target -> frame f, B x 4 x 4, from a pose network on (I_f, I_0) in time order."""
        pair = [f, 0] if f < 0 else [0, f]
        features = self.models[encoder](torch.cat([inputs[(key, i, 0)] for i in pair], 1))
        axisangle, translation = self.models[decoder]([features])
        return transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=f < 0)

    def run_mnet(self, inputs, prior, T, key="color_aug"):
        return self.mnet(inputs[(key, 0, 0)], inputs[(key, self.match_id, 0)], prior, T, inputs[("K", 2)],
                         inputs[("inv_K", 2)])

    @property
    def match_id(self):
        """MNet's source frame (--matching_ids' second id; -1 in folders saved without it)."""
        return getattr(self.opt, "matching_ids", [0, -1])[1]

    def warp_errors(self, inputs, depth, poses):
        """Photometric errors B x n x H x W of frames frame_ids[1:] warped with depth and poses."""
        errors = []
        for f in self.frame_ids[1:]:
            points = self.backproject["0"](depth, inputs[("inv_K", 0)])
            grid = self.project["0"](points, inputs[("K", 0)], poses[f])
            errors.append(self.reprojection(warp(inputs[("color", f, 0)], grid), inputs[("color", 0, 0)]))
        return torch.cat(errors, 1)

    def predict(self, inputs):
        """Frames 0 and -1 (--matching_ids), K at 1/4 -> MNet's depth with SNet(I0) as prior
        and the pose network on the pair in time order; SNet's depth as the "single_frame" variant. --single_frame:
        SNet's depth from frame 0 alone."""
        _, depth = self.snet_depth(inputs[("color", 0, 0)])
        if self.opt.single_frame:
            return {"depth": depth, "disp": 1 / depth}
        T = self.pose(inputs, self.match_id, key="color")
        multi = self.run_mnet(inputs, depth, T, key="color")["depth"].float()
        return {"depth": multi, "disp": 1 / multi, "variants": {"single_frame": depth}}

    @property
    def inference_frames(self):
        return (0,) if self.opt.single_frame else (0, self.match_id)

    @property
    def inference_intrinsics(self):
        return () if self.opt.single_frame else (2,)  # MNet matches at 1/4

    @property
    def inference_models(self):
        if self.opt.single_frame:
            return ("s_encoder", "s_depth")
        return SNET_MODELS if getattr(self.opt, "mnet_weights_folder", None) else SNET_MODELS + MNET_MODELS

    @property
    def output_name(self):
        return "single_frame" if self.opt.single_frame else "multi_frame"

    def train_depth(self, outputs):
        return outputs.get("mnet_depth")

    def images_to_log(self, inputs, outputs, n):
        images = {}
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            images[f"color_0/{j}"] = inputs[("color", 0, 0)][j]
            for name in ("mnet_depth", "teacher_depth"):
                if name in outputs:
                    disp = 1 / outputs[name][j]
                    images[f"{name}_as_disp/{j}"] = (disp - disp.min()) / (disp.max() - disp.min() + 1e-8)
            disp = outputs[("disp", 0)][j]
            images[f"disp_0/{j}"] = (disp - disp.min()) / (disp.max() - disp.min() + 1e-8)
            for name in (("automask", 0), "distill_mask"):
                if name in outputs:
                    images[f"{name if isinstance(name, str) else 'automask_0'}/{j}"] = outputs[name][j]
        return images


def masked_consistency(masked_low, depth_low, keep, mask_lw=10.0, mode="fixed"):
    """MNet's masked-image loss at 1/4 resolution: SmoothL1 between the depth of the masked
    I0 (masked_low, B x 1 x h x w) and the unmasked depth_low. keep: B x 1 x H x W, 1 outside
    the hole. fixed: the pixels the hole touches, weight mask_lw, depth_low detached;
    reference (MISM's code): the pixels outside it, weight mask_lw^2, no stop-gradient. An
    empty region gives 0."""
    h, w = depth_low.shape[-2:]
    if mode == "reference":
        region, weight, target = keep_mask_at(keep, h, w), mask_lw * mask_lw, depth_low
    else:
        region, weight, target = keep_mask_at(1 - keep, h, w), mask_lw, depth_low.detach()
    if not bool(region.any()):
        return masked_low.sum() * 0
    return weight * F.smooth_l1_loss(masked_low[region], target[region])


def distillation_mask(e_teacher, e_student):
    """Where the teacher's per-pixel photometric error is below the student's (B x 1 x H x W bool)."""
    return e_teacher < e_student.detach()


@register_method("mism_teacher")
class MISMTeacher(MISMBase):
    """Stage 1: SNet + pose (Monodepth2's loss) and MNet (its photometric loss, smoothness and
    the masked-image consistency), gradients kept apart."""

    @classmethod
    def add_options(cls, parser):
        option_groups.mism_teacher(parser)

    def __init__(self, opt):
        super().__init__(opt)
        self.find_unused_parameters = not opt.convex_up  # DDP: `up` is idle with bilinear upsampling

    def param_groups(self):
        snet = [p for n in SNET_MODELS for p in self.models[n].parameters() if p.requires_grad]
        mnet = [p for n in MNET_MODELS for p in self.models[n].parameters() if p.requires_grad]
        return [{"name": "snet_pose", "params": snet, "lr": self.opt.learning_rate},
                {"name": "mnet", "params": mnet, "lr": self.opt.learning_rate * self.opt.lr_fac}]

    def forward(self, inputs):
        sigmoid, depth = self.snet_depth(inputs[("color_aug", 0, 0)])
        outputs = {("disp", 0): sigmoid, ("depth", 0, 0): depth}
        poses = {f: self.pose(inputs, f) for f in self.frame_ids[1:]}
        outputs["snet_errors"] = self.warp_errors(inputs, depth, poses)
        poses = {f: T.detach() for f, T in poses.items()}
        prior = depth.detach()
        m = self.run_mnet(inputs, prior, poses[self.match_id])
        outputs.update(mnet_depth=m["depth"], mnet_depth_low=m["depth_low"], prior_depth=prior)
        outputs["mnet_errors"] = self.warp_errors(inputs, m["depth"], poses)
        if not self.training:  # validation batches: no masked pass (nor its random draw)
            return outputs
        # masked image: I0 with a hole, the same source features and hypotheses
        b, _, h, w = inputs[("color_aug", 0, 0)].shape
        device = inputs[("color_aug", 0, 0)].device
        if self.opt.masked_loss == "reference":
            keep = random_hole_mask(b, h, w, device=device)
        else:
            keep = torch.cat([random_hole_mask(1, h, w, device=device) for _ in range(b)])
        masked = self.mnet(inputs[("color_aug", 0, 0)] * keep, None, prior, poses[self.match_id], inputs[("K", 2)],
                           inputs[("inv_K", 2)], src_feats=m["src_feats"], hypotheses=m["hypotheses"])
        outputs["masked_depth_low"], outputs["keep_mask"] = masked["depth_low"], keep
        return outputs

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        # (a) SNet: min over sources, auto-mask, mean over the kept pixels
        reprojection = outputs["snet_errors"].min(1, keepdim=True)[0]
        identity = torch.cat([self.reprojection(inputs[("color", f, 0)], inputs[("color", 0, 0)])
                              for f in self.frame_ids[1:]], 1)
        kept = automask_after_min(reprojection, identity)  # noise after the min, ties kept (the released code)
        outputs[("automask", 0)] = kept
        snet = (reprojection * kept).sum() / (kept.sum() + 1e-7)
        snet_smooth = opt.disparity_smoothness * smoothness_loss(outputs[("disp", 0)], inputs[("color", 0, 0)])
        # (b) MNet: min over sources, plain mean; smoothness of the normalised disparity
        mnet = outputs["mnet_errors"].min(1)[0].mean()
        # normalised over the disparity range of --min_depth / --max_depth: the released code's [0.01, 10]
        # with the default 0.1 / 100 (it wrote those constants), and the same role for another range
        min_disp, max_disp = 1 / opt.max_depth, 1 / opt.min_depth
        norm_disp = (1 / outputs["mnet_depth"] - min_disp) / (max_disp - min_disp)
        mnet_smooth = opt.multi_frame_disparity_smoothness * smoothness_loss(norm_disp, inputs[("color", 0, 0)])
        terms = {"reprojection": snet, "smoothness": snet_smooth, "mnet_reprojection": mnet,
                 "mnet_smoothness": mnet_smooth}
        # (c) masked-image consistency at 1/4 resolution (training batches)
        if "masked_depth_low" in outputs:
            terms["masked_consistency"] = masked_consistency(outputs["masked_depth_low"], outputs["mnet_depth_low"],
                                                             outputs["keep_mask"], opt.mask_lw, opt.masked_loss)
        logs = {"pads_mean": self.mnet.pads.mean().detach().clone()}
        return terms, logs

    def on_train_step_end(self, step, inputs, outputs):
        self.mnet.update_pads(outputs["mnet_depth"].detach(), outputs["prior_depth"])


@register_method("mism_student")
class MISMStudent(MISMBase):
    """Stage 2: a new SNet + pose learn Monodepth2's way plus 0.1 x SILog towards the frozen
    teacher MNet's depth where the teacher's reprojection error is the lower."""

    find_unused_parameters = True  # the frozen teacher's networks get no gradients

    @classmethod
    def add_options(cls, parser):
        option_groups.mism_student(parser)

    @classmethod
    def check_options(cls, opt):
        if getattr(opt, "for_inference", False):
            return
        folder = opt.teacher_weights_folder
        if not folder:
            raise SystemExit("--method mism_student needs --teacher_weights_folder (stage 1's weights_N folder)")
        if not os.path.isdir(folder):
            raise SystemExit(f"--teacher_weights_folder {folder}: no such folder")
        missing = [n for n in SNET_MODELS + MNET_MODELS if not os.path.isfile(os.path.join(folder, f"{n}.pth"))]
        if missing:
            raise SystemExit(f"--teacher_weights_folder {folder}: missing {', '.join(m + '.pth' for m in missing)} "
                             "(a mism_teacher weights_N folder has all seven)")
        saved = folder_options(folder) or {}
        if saved.get("method") not in (None, "mism_teacher"):
            raise SystemExit(f"--teacher_weights_folder {folder} was trained with --method {saved['method']}, "
                             "not mism_teacher")
        asked = list(opt.matching_ids)
        for key in MNET_OPTIONS:  # the teacher's MNet is rebuilt exactly
            if key in saved:
                setattr(opt, key, saved[key])
        if asked != [0, -1] and asked != list(opt.matching_ids):
            raise SystemExit(f"--matching_ids {' '.join(map(str, asked))}: the student's MNet is its teacher's, "
                             f"which matches with {' '.join(map(str, opt.matching_ids))}; drop --matching_ids")
        if opt.matching_ids[1] not in opt.frame_ids:
            raise SystemExit(f"the teacher in {folder} matches against frame {opt.matching_ids[1]}: add it to "
                             f"--frame_ids (now {' '.join(map(str, opt.frame_ids))})")
        opt.teacher_snet = saved.get("snet", "hrnet")
        for key in ("height", "width"):
            if key in saved and saved[key] != getattr(opt, key):
                raise SystemExit(f"--{key} {getattr(opt, key)}: the teacher in {folder} was trained at "
                                 f"{saved['width']}x{saved['height']}")
        for key in ("min_depth", "max_depth"):  # the teacher's sigmoids become depths with the student's range
            if key in saved and saved[key] != getattr(opt, key):
                raise SystemExit(f"--{key} {getattr(opt, key)}: the teacher in {folder} was trained with "
                                 f"--{key} {saved[key]}; give the student the same")

    def __init__(self, opt):
        super().__init__(opt)
        teacher_opt = copy.copy(opt)
        teacher_opt.snet = getattr(opt, "teacher_snet", "hrnet")
        teacher_opt.encoder, teacher_opt.depth_decoder = SNETS[teacher_opt.snet]
        teacher_opt.weights_init = "scratch"
        self.models["teacher_s_encoder"] = networks.build_encoder(teacher_opt)
        self.models["teacher_s_depth"] = networks.build_depth_decoder(
            teacher_opt, self.models["teacher_s_encoder"].num_ch_enc)
        self.models.update({"teacher_" + k: v for k, v in networks.build_pose_networks(
            teacher_opt, self.models["teacher_s_encoder"].num_ch_enc, 2).items()})
        self.drop_resnet_classifiers(["teacher_" + n for n in SNET_MODELS])
        if not getattr(opt, "for_inference", False):
            self.load_teacher(opt.teacher_weights_folder)
        self.teacher_names = ["teacher_" + n for n in SNET_MODELS] + list(MNET_MODELS)
        self.depth_ssim = SSIM()  # --msc_loss_type ssim (no parameters)
        for name in self.teacher_names:
            for p in self.models[name].parameters():
                p.requires_grad_(False)

    def load_teacher(self, folder):
        for name in SNET_MODELS + MNET_MODELS:
            target = name if name in MNET_MODELS else "teacher_" + name
            path = os.path.join(folder, f"{name}.pth")
            state = self.adapt_weight_file(target, load_state_file(path), path)
            try:
                self.models[target].load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise SystemExit(f"--teacher_weights_folder {folder}: {name}.pth does not fit ({str(e)[:300]})") from None
        print(f"-> teacher (SNet, pose, MNet with F) loaded from {folder}")

    def train(self, mode=True):
        super().train(mode)
        for name in getattr(self, "teacher_names", ()):
            self.models[name].eval()
        return self

    def param_groups(self):
        params = [p for n in SNET_MODELS for p in self.models[n].parameters() if p.requires_grad]
        return [{"name": "student", "params": params, "lr": self.opt.learning_rate}]

    def on_epoch_start(self, epoch, start_batch):
        self.epoch = epoch

    def forward(self, inputs):
        sigmoid, depth = self.snet_depth(inputs[("color_aug", 0, 0)])
        outputs = {("disp", 0): sigmoid, ("depth", 0, 0): depth}
        poses = {f: self.pose(inputs, f) for f in self.frame_ids[1:]}
        outputs["student_errors"] = self.warp_errors(inputs, depth, poses)
        with torch.no_grad():
            _, prior = self.snet_depth(inputs[("color_aug", 0, 0)], "teacher_s_encoder", "teacher_s_depth")
            t_poses = {f: self.pose(inputs, f, encoder="teacher_pose_encoder", decoder="teacher_pose")
                       for f in self.frame_ids[1:]}
            if self.opt.use_many_frame_depth:
                teacher = self.run_mnet(inputs, prior, t_poses[self.match_id])["depth"]
            else:
                teacher = prior
            outputs["teacher_depth"] = teacher
            outputs["teacher_errors"] = self.warp_errors(inputs, teacher, t_poses)
        return outputs

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        identity = torch.cat([self.reprojection(inputs[("color", f, 0)], inputs[("color", 0, 0)])
                              for f in self.frame_ids[1:]], 1)
        identity = identity + torch.randn_like(identity) * 1e-5
        e_s = torch.cat([identity, outputs["student_errors"]], 1).min(1, keepdim=True)[0]
        terms = {}
        if not opt.disable_reprojection_loss:
            terms["reprojection"] = e_s.mean()
        terms["smoothness"] = opt.disparity_smoothness * smoothness_loss(outputs[("disp", 0)], inputs[("color", 0, 0)])
        e_t = outputs["teacher_errors"].min(1, keepdim=True)[0]
        mask = distillation_mask(e_t, e_s) if opt.msc_min_reproj_mask else torch.ones_like(e_t, dtype=torch.bool)
        outputs["distill_mask"] = mask.float()
        if getattr(self, "epoch", 0) >= opt.start_msc_epochs:
            student, teacher = outputs[("depth", 0, 0)], outputs["teacher_depth"]
            if opt.msc_loss_type == "silog":
                msc = masked_silog(student, teacher, mask, opt.variance_focus)
            elif opt.msc_loss_type == "ssim":
                msc = masked_ssim_l1(student, teacher, mask, self.depth_ssim,
                                     l1_everywhere=opt.msc_ssim_l1_everywhere)
            else:
                msc = (torch.abs(student - teacher) * mask).sum() / (mask.sum() + 1e-7)
            terms["distillation"] = opt.msc_loss_weight * msc
        return terms, {"distill_fraction": mask.float().mean().detach()}

    def train_depth(self, outputs):
        return outputs.get(("depth", 0, 0))
