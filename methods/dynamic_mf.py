"""Multi-frame depth in dynamic scenes with cross-cue fusion (Li et al., CVPR 2023:
"Learning to Fuse Monocular and Multi-view Cues for Multi-frame Depth Estimation in
Dynamic Scenes").

Unlike the self-supervised methods it learns from the ground truth (the depth benchmark's
annotated maps transferred to KITTI odometry, prepare_kitti_odom_depth.py) and takes its
poses from files (DVSO's, or KITTI's), so it has no pose network:
- an SSIM cost volume of the keyframe against frames -1 and +1 over 32 depths uniform in
  inverse depth (built without gradients), a one-hot volume from a monocular branch's
  depth, Cross-Cue Fusion (attention of each cue routed to the other) and MonoRec-style
  depth and mono modules on a ResNet-18 (frozen by default) or EfficientNet-B5 backbone
  (networks/dynamic_mf.py; datasets/kitti_odom_mf.py for the data);
- loss: 4 x SILog + 1 x virtual normal, at 4 scales, for the multi-frame and the mono
  branch (16 terms);
- training-time flips happen inside the model after the cost volume, so poses are never
  mirrored;
- evaluation is metric (the odometry protocol: GT in (0, 80], no median scaling, no crop),
  the multi-frame branch and the mono branch side by side (`--eval_branch` picks the main
  one), and on the moving-object pixels with --eval_dynamic.

Differences from the released code, with switches where results change: align_corners=True
with the (W-1) normalisation (`--reference_align_corners`), the ground truth placed with
pixel centres and the nearest point winning collisions (`--reference_scatter`), VNL with
each sample's own intrinsics, EfficientNet-B5 with its own (Inception) statistics
(`--imagenet_stats`), validation on held-out keyframes of the training sequences (the
reference validated on the test sequences and kept the checkpoint of lowest training error).
"""
from losses import dynamic_mf_total_loss
from methods import register_method
from methods.base import Method
from networks.dynamic_mf import DynamicMultiFrameDepth

SOURCE_FRAMES = (-1, 1)


@register_method("dynamic_mf")
class DynamicMultiFrame(Method):
    depth_scale = 1.0  # metric depth: validation without median scaling
    inference_models = ("model",)
    inference_options = ("eval_branch",)
    post_process_supported = False  # the poses come from files: a mirrored batch would need mirrored poses

    @classmethod
    def add_options(cls, parser):
        g = parser.add_argument_group("dynamic_mf")
        g.add_argument("--backbone", choices=["resnet18", "effnet_b5"], default="resnet18",
                       help="backbone of both modules (EfficientNet-B5: timm's tf_efficientnet_b5.ap_in1k)")
        g.add_argument("--freeze_backbone", dest="freeze_backbone", action="store_true", default=None,
                       help="keep the backbone's ImageNet weights (default for a pretrained resnet18)")
        g.add_argument("--no_freeze_backbone", dest="freeze_backbone", action="store_false",
                       help="train the backbone (default for effnet_b5 and from scratch)")
        g.add_argument("--cv_num_bins", type=int, default=32, help="cost-volume depths")
        g.add_argument("--cv_inv_depth_range", type=float, nargs=2, default=[0.0025, 0.33],
                       metavar=("MIN", "MAX"), help="inverse-depth range of the cost volume and of the outputs")
        g.add_argument("--cv_patch", type=int, default=3, help="window of the mean over the SSIM errors (odd)")
        g.add_argument("--no_flip_after_cv", dest="flip_after_cv", action="store_false",
                       help="no random horizontal flip in training (by default each sample is mirrored with "
                            "p = 0.5 inside the model, after its cost volume)")
        g.add_argument("--fusion", choices=["ccf", "mono_guide_multi", "multi_guide_mono", "none"], default="ccf",
                       help="cross-cue fusion, one of its one-way ablations, or none (the two volumes side by side)")
        g.add_argument("--ccf_dim", type=int, default=32, help="CCF's channels per cue")
        g.add_argument("--silog_weight", type=float, default=4.0, help="weight of each SILog term")
        g.add_argument("--vnl_weight", type=float, default=1.0, help="weight of each virtual-normal term")
        g.add_argument("--vnl_sample_ratio", type=float, default=0.15, help="VNL: triplets per pixel")
        g.add_argument("--pose_source", choices=["dvso", "kitti_gt"], default="dvso",
                       help="poses_dvso/NN.txt (MonoRec's DVSO poses) or poses/NN.txt (KITTI's)")
        g.add_argument("--reference_align_corners", action="store_true",
                       help="the released code's cost-volume sampling (align_corners=False with (W-1) "
                            "coordinates; for its checkpoints)")
        g.add_argument("--reference_scatter", action="store_true",
                       help="the released code's ground-truth placement (no pixel centring, last point wins)")
        g.add_argument("--reference_vnl_intrinsics", action="store_true",
                       help="VNL with batch item 0's focal length and the image centre (the released code)")
        g.add_argument("--imagenet_stats", action="store_true",
                       help="EfficientNet-B5 with ImageNet mean/std (the released code) instead of its own")
        g.add_argument("--ref_compat", action="store_true",
                       help="all of the released code's behaviours at once: --reference_align_corners "
                            "--reference_scatter --reference_vnl_intrinsics --imagenet_stats")
        g.add_argument("--eval_branch", choices=["multi", "mono"], default="multi",
                       help="inference: the multi-frame output or the mono branch's as the main output")
        parser.set_defaults(dataset="kitti_odom_mf", height=256, width=512, frame_ids=[0, -1, 1], scales=[0],
                            max_depth=80.0, learning_rate=1e-4, amsgrad=True, scheduler_step_size=65,
                            num_epochs=80, batch_size=8, best_metric="abs_rel")

    @classmethod
    def check_options(cls, opt):
        if sorted(f for f in opt.frame_ids if f != 0) != sorted(SOURCE_FRAMES) or opt.frame_ids[0] != 0:
            raise SystemExit(f"--method dynamic_mf uses the keyframe and frames -1, +1: --frame_ids 0 -1 1 "
                             f"(got {opt.frame_ids})")
        if opt.use_stereo:
            raise SystemExit("--method dynamic_mf does not use the stereo pair: drop --use_stereo")
        if opt.dataset != "kitti_odom_mf":
            raise SystemExit(f"--method dynamic_mf learns from kitti_odom_mf items (poses and sparse ground truth); "
                             f"--dataset {opt.dataset} has neither")
        if opt.height % 16 or opt.width % 16:
            raise SystemExit(f"--height {opt.height} --width {opt.width}: multiples of 16")
        if opt.ref_compat:
            opt.reference_align_corners = opt.reference_scatter = opt.reference_vnl_intrinsics = True
            opt.imagenet_stats = True
        if opt.cv_patch < 1 or opt.cv_patch % 2 == 0:
            raise SystemExit(f"--cv_patch {opt.cv_patch}: an odd window (1, 3, 5, ...)")

    @classmethod
    def dataset_options(cls, opt):
        return {"pose_source": opt.pose_source, "reference_scatter": opt.reference_scatter,
                "allow_missing_masks": True}

    def __init__(self, opt):
        super().__init__(opt)
        pretrained = opt.weights_init == "pretrained"
        # default: a pretrained ResNet-18 stays frozen (the reference); from scratch it must learn
        freeze = opt.freeze_backbone if opt.freeze_backbone is not None else (opt.backbone == "resnet18" and pretrained)
        self.models["model"] = DynamicMultiFrameDepth(
            opt.backbone, pretrained=pretrained, freeze_backbone=freeze,
            height=opt.height, width=opt.width, num_bins=opt.cv_num_bins, inv_range=tuple(opt.cv_inv_depth_range),
            fusion=opt.fusion, align_corners=not opt.reference_align_corners,
            weights_file=getattr(opt, "imagenet_weights", None), ccf_dim=opt.ccf_dim,
            imagenet_stats=opt.imagenet_stats, cv_patch=opt.cv_patch,
            flip_prob=0.5 if getattr(opt, "flip_after_cv", True) else 0.0)
        # a fine-tuned EfficientNet computes only the levels the modules use: its deepest
        # blocks get no gradient (DDP must know)
        self.find_unused_parameters = not freeze

    @property
    def inference_frames(self):
        return (0,) + SOURCE_FRAMES

    def run(self, inputs, key="color_aug"):
        return self.models["model"](inputs[(key, 0, 0)], [inputs[(key, f, 0)] for f in SOURCE_FRAMES],
                                    [inputs[("T", f)] for f in SOURCE_FRAMES], inputs[("K", 0)], inputs[("inv_K", 0)])

    def forward(self, inputs):
        return self.run(inputs, "color_aug")

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        multi, mono = [p.float() for p in outputs["multi"]], [p.float() for p in outputs["mono"]]  # AMP: losses in float32
        _, terms = dynamic_mf_total_loss(multi, mono, inputs["inv_depth_gt"],
                                         inputs["depth_gt"], inputs[("K", 0)], silog_weight=opt.silog_weight,
                                         vnl_weight=opt.vnl_weight, sample_ratio=opt.vnl_sample_ratio,
                                         reference_intrinsics=opt.reference_vnl_intrinsics)
        grouped = {}
        for name, value in terms.items():  # "silog/multi/0" ... -> silog_multi (weighted, over scales)
            kind, branch, _ = name.split("/")
            weight = opt.silog_weight if kind == "silog" else opt.vnl_weight
            grouped[f"{kind}_{branch}"] = grouped.get(f"{kind}_{branch}", 0) + weight * value
        logs = {f"terms16/{k}": v.detach() for k, v in terms.items()}
        return grouped, logs

    def train_depth(self, outputs):
        return 1 / outputs["result"].clamp(min=1e-6)

    def predict(self, inputs):
        """The keyframe, frames -1 and +1, their poses ("T", f) and K -> metric depth of the
        branch --eval_branch names, the other branch as a variant."""
        out = self.run(inputs, "color")
        multi, mono = 1 / out["result"].float(), 1 / out["result_mono"].float()
        if self.opt.eval_branch == "mono":
            return {"depth": mono, "variants": {"multi": multi}}
        return {"depth": multi, "variants": {"mono": mono}}

    @property
    def output_name(self):
        return self.opt.eval_branch

    def images_to_log(self, inputs, outputs, n):
        images = {}
        for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
            images[f"color_0/{j}"] = inputs[("color", 0, 0)][j]
            for name in ("result", "result_mono"):
                x = outputs[name][j]
                images[f"{name}/{j}"] = (x - x.min()) / (x.max() - x.min() + 1e-8)
            best = outputs["cost_volume"][j].argmax(0, keepdim=True).float()
            images[f"cost_volume_argmax/{j}"] = best / max(self.opt.cv_num_bins - 1, 1)
        return images


def count_parameters(method):
    """(total, trainable) parameters of the model."""
    params = list(method.models["model"].parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
