"""The built-in methods' command-line options, in a module that imports nothing heavy.

Each function adds one method class's own option group (what its `add_options` adds: the
class in methods/<file>.py calls the function here), so that `python train.py --help` and
option parsing build the whole parser without importing PyTorch (about 2 s on a small CPU).
CHAINS lists, for every built-in method name, the classes whose groups its parser holds,
bases first, as the class hierarchy adds them (a test compares the two parsers).

A method outside this folder declares its options in its own `add_options`.
"""

# MISM's single-frame network by name: (encoder, depth decoder)
SNETS = {"hrnet": ("hrnet18_raw", "msf"), "resnet": ("resnet", "monodepth2")}


def add_switch(group, name, help):
    """--name (the default, on) and --no_name (off): MISM's store_true flags that defaulted
    to True and so could not be switched off."""
    group.add_argument(f"--{name}", dest=name, action="store_true", default=True, help=help + " (default: on)")
    group.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"switch --{name} off")


def monodepth2(parser):
    """Monodepth2 (methods/monodepth2.py)."""
    g = parser.add_argument_group("monodepth2")
    g.add_argument("--pose_model_type", type=str, default="separate_resnet",
                   help="pose network by registered name: separate_resnet (its own ResNet), shared (the "
                        "depth encoder's features), posecnn, or one registered in networks/")
    g.add_argument("--pose_model_input", type=str, default="pairs", choices=["pairs", "all"],
                   help="pose from frame pairs (target, source) or from all frames at once")
    g.add_argument("--disparity_smoothness", type=float, default=1e-3, help="edge-aware smoothness weight")
    g.add_argument("--v1_multiscale", action="store_true", help="Monodepth v1: losses at each scale's size")
    g.add_argument("--avg_reprojection", action="store_true", help="average over sources instead of the minimum")
    g.add_argument("--disable_automasking", action="store_true", help="no identity (auto-mask) candidates")
    g.add_argument("--predictive_mask", action="store_true",
                   help="Zhou et al.'s predictive explainability mask (needs --disable_automasking)")
    g.add_argument("--no_ssim", action="store_true", help="L1 photometric error only")


def depth_hints(parser):
    """DepthHints (methods/depth_hints.py)."""
    g = parser.add_argument_group("depth hints")
    g.add_argument("--use_depth_hints", action="store_true",
                   help="selects this method (monodepth2's flag): hints compete with the reprojection")
    g.add_argument("--depth_hint_path", type=str, help="precomputed hints (default: <data_path>/depth_hints)")


def srd(parser):
    """SRD (methods/srd.py)."""
    g = parser.add_argument_group("srd")
    g.add_argument("--distill_weight", type=float, default=0.1, help="weight of the self-distillation L1 term")
    g.add_argument("--distill_start_epoch", type=int, default=1,
                   help="first epoch with a teacher (the network at the end of the previous epoch)")
    g.add_argument("--distill_filter", type=str, default="multiview",
                   choices=["multiview", "multiview_reference", "none"],
                   help="keep teacher pixels that pass the geometric check with frame +1 and project inside "
                        "it (multiview); the released code's check, without the in-view test: a pixel "
                        "projecting outside frame +1 reads depth 0 there and is kept when its error is "
                        "still below the mean (multiview_reference); or all pixels (none)")
    g.add_argument("--distill_filter_factor", type=float, default=1.0,
                   help="keep pixels whose relative error is below this x the image's mean (a variant uses 6)")
    g.add_argument("--decoder_lr", type=float, default=1e-4,
                   help="LR of the depth decoder and pose networks (the encoder uses --learning_rate)")
    g.add_argument("--srd_decoder_init", type=str, default="default", choices=["default", "kaiming"],
                   help="init of the offset-refinement decoder: default = PyTorch's default init of every "
                        "layer, the channel-attention gates being nn.Linear layers (the released code's: its "
                        "Kaiming loop there touches nn.Conv2d layers only, i.e. none); kaiming = "
                        "Kaiming-normal nested-decoder convolutions (fan_in) and channel-attention gates "
                        "(fan_out), which a randomly initialised encoder needs to learn (see the README)")
    # the paper's optimiser: AdamW (weight decay 0.01), x0.9 per epoch; its decoder
    parser.set_defaults(depth_decoder="srd", optimizer="adamw", weight_decay=0.01,
                        lr_sche_type="exponential", decay_rate=0.9)


def bdedepth(parser):
    """BDEdepth (methods/bdedepth.py)."""
    g = parser.add_argument_group("bdedepth")
    g.add_argument("--use_local_crop", action="store_true",
                   help="resizing-cropping: a zoomed view of every frame, its own photometric loss and "
                        "an SI-log consistency with the original view")
    g.add_argument("--use_patch_reshuffle", action="store_true",
                   help="splitting-permuting: a rolled view of frame 0 whose un-permuted depth "
                        "reconstructs the original target, and an SI-log consistency")
    g.add_argument("--local_crop_ratio", type=float, nargs=2, default=[1.2, 2.0], metavar=("MIN", "MAX"),
                   help="zoom range of --use_local_crop")
    g.add_argument("--consistency_weight", type=float, default=0.07, help="weight of the SI-log consistency terms")
    g.add_argument("--reference_zoom_geometry", action="store_true",
                   help="the zoomed view's geometry as the released code computes it: the virtual camera "
                        "from the crop's sampling grid (depth scale (W-1)/(W r-1) instead of 1/r, centre "
                        "offsets that assume a centred principal point, the focal lengths of the batch's "
                        "first item), and the SI-log term on the zoomed disparity resized to the rounded "
                        "window (round(W/r) x round(H/r) at a rounded corner) against the original depth "
                        "cropped there, instead of the original depth sampled at the crop's pixel centres")
    g.add_argument("--consistency_detach", action="store_true",
                   help="stop the consistency terms' gradient into the original view's depth (the reference "
                        "lets it flow both ways)")
    # the paper's networks (HRNet-18 and the grid decoder, full-resolution disparity only)
    # and optimiser
    parser.set_defaults(encoder="hrnet18", depth_decoder="grid", scales=[0], optimizer="adamw", weight_decay=0.01)


def manydepth(parser):
    """ManyDepth (methods/manydepth.py)."""
    g = parser.add_argument_group("manydepth")
    g.add_argument("--num_depth_bins", type=int, default=96, help="cost-volume planes")
    g.add_argument("--depth_binning", choices=["linear", "inverse"], default="linear",
                   help="planes evenly spaced in depth or in inverse depth")
    g.add_argument("--freeze_teacher_and_pose", action="store_true",
                   help="teacher and pose network frozen from the start (e.g. with --mono_weights_folder)")
    g.add_argument("--freeze_teacher_epoch", type=int, default=15,
                   help="from this epoch the teacher, the pose network (and the depth trackers) stop "
                        "learning (Cityscapes: 5; -1: never)")
    g.add_argument("--freeze_teacher_step", type=int, default=-1,
                   help="freeze after this many training steps instead of at an epoch (-1: use the epoch)")
    g.add_argument("--freeze_resets_optimizer", action="store_true",
                   help="the reference's freeze: a new Adam (fresh moments) and a new step schedule from the "
                        "freeze epoch, so the epochs after it restart at the base LR (by default the optimiser "
                        "and its schedule carry on)")
    g.add_argument("--use_future_frame", action="store_true", help="also match against frame +1")
    g.add_argument("--num_matching_frames", type=int, default=1,
                   help="previous frames in the cost volume (each must be in --frame_ids)")
    g.add_argument("--disable_motion_masking", action="store_true",
                   help="do not drop pixels where the cost volume and the teacher disagree")
    g.add_argument("--no_matching_augmentation", action="store_true",
                   help="no static-camera / zero-pose samples")
    g.add_argument("--mono_weights_folder", type=str,
                   help="start the teacher and the pose network from this folder (a ManyDepth folder's "
                        "mono_encoder/mono_depth/pose_encoder/pose, or a monodepth2 folder's "
                        "encoder/depth/pose_encoder/pose)")
    g.add_argument("--cost_count_nonzero", action="store_true",
                   help="reference behaviour: count a lookup as valid where its cost is > 0, so an "
                        "exact match counts as missing (default: count the in-view mask)")
    g.add_argument("--zero_cost_volume", action="store_true", help="evaluation: zero poses (single-frame mode)")
    g.add_argument("--static_camera", action="store_true", help="evaluation: match the target against itself")
    g.add_argument("--eval_teacher", action="store_true", help="evaluation: the single-frame teacher's depth")
    g.add_argument("--keep_missing_pose", action="store_true",
                   help="evaluation: keep the predicted pose of a missing (black) previous frame, as the "
                        "reference evaluation did (default: zero it)")


def mism(parser):
    """MISMBase (methods/mism.py)."""
    g = parser.add_argument_group("mism (both stages)")
    g.add_argument("--snet", choices=sorted(SNETS), default="hrnet",
                   help="single-frame network: HRNet-18 (raw RGB) + MSF decoder, or ResNet-18 + "
                        "Monodepth2's decoder (sets --encoder / --depth_decoder)")
    g.add_argument("--num_depth_bins", type=int, default=16, help="MNet's hypotheses (a multiple of 8)")
    g.add_argument("--schedule_type", choices=["inverse", "linear", "log"], default="inverse",
                   help="spacing of the hypotheses between d_p/(1+F) and d_p(1+F)")
    g.add_argument("--matching_ids", type=int, nargs=2, default=[0, -1], metavar=("TARGET", "SOURCE"),
                   help="MNet matches frame 0 against SOURCE (-1: the previous frame; 1: the next one, "
                        "which makes the model use a future frame)")
    g.add_argument("--prior_scale", type=int, default=2, help="scale of the cost volume (only 2 is supported)")
    g.add_argument("--reg3d_c", type=int, default=16, help="base channels of the 3D U-Net")
    g.add_argument("--norm_radius", type=int, default=1, help="window of the local soft-argmax (k* +- r)")
    add_switch(g, "adaptive_range", "PADS: per-pixel hypothesis range F, updated after each training step")
    g.add_argument("--depth_bin_fac", type=float, default=1.0, help="initial F (range d_p/(1+F) .. d_p(1+F))")
    g.add_argument("--delta_fac", type=float, default=1.2, help="PADS update factor")
    add_switch(g, "convex_up", "convex x4 upsampling of MNet's depth (else bilinear)")
    g.add_argument("--ssim_lw", type=float, default=0.85,
                   help="SSIM's weight in the photometric error (the rest is L1), for SNet, MNet and the "
                        "distillation mask")
    g.add_argument("--mnet_weights_folder", type=str,
                   help="inference: MNet (m_encoder, reg3d with F, up) from this folder, the SNet and pose "
                        "network from --load_weights_folder (a bundle assembled from two runs)")
    g.add_argument("--single_frame", action="store_true",
                   help="inference (evaluate_depth.py, test_simple.py): SNet alone on one frame "
                        "(s_encoder.pth, s_depth.pth)")
    parser.set_defaults(encoder="hrnet18_raw", depth_decoder="msf", scales=[0], frame_ids=[0, -1, 1])


def mism_teacher(parser):
    """MISMTeacher (methods/mism.py)."""
    g = parser.add_argument_group("mism_teacher")
    g.add_argument("--mask_lw", type=float, default=10.0, help="weight of the masked-image consistency")
    g.add_argument("--masked_loss", choices=["fixed", "reference"], default="fixed",
                   help="fixed: one hole per image, the loss in the hole, weight mask_lw, target detached; "
                        "reference: MISM's code (one hole per batch, the visible pixels, weight mask_lw^2, "
                        "no stop-gradient)")
    g.add_argument("--multi_frame_disparity_smoothness", type=float, default=1e-3,
                   help="smoothness weight of MNet's normalised disparity")
    g.add_argument("--lr_fac", type=float, default=1.0, help="MNet's LR = --learning_rate x this")
    parser.set_defaults(learning_rate=2e-4)


def mism_student(parser):
    """MISMStudent (methods/mism.py)."""
    g = parser.add_argument_group("mism_student")
    g.add_argument("--teacher_weights_folder", type=str,
                   help="stage 1's weight folder (e.g. models/weights_19): its SNet, pose network and MNet "
                        "are the frozen teacher; its MNet is the student's multi-frame network at test time")
    add_switch(g, "use_many_frame_depth", "distil the teacher's MNet depth (else the teacher SNet's)")
    add_switch(g, "msc_min_reproj_mask", "distil only where the teacher's reprojection error is below the student's")
    g.add_argument("--msc_loss_type", choices=["silog", "l1", "ssim"], default="silog",
                   help="distillation loss: SILog (scale-invariant), L1, or 0.85 SSIM + 0.15 L1 of the depths, "
                        "each over the distillation mask")
    g.add_argument("--msc_ssim_l1_everywhere", action="store_true",
                   help="--msc_loss_type ssim: the L1 term over all pixels, not only the masked ones (MISM's code)")
    g.add_argument("--msc_loss_weight", type=float, default=0.1, help="distillation weight")
    g.add_argument("--variance_focus", type=float, default=1.0, help="SILog's lambda (1: scale-invariant)")
    g.add_argument("--start_msc_epochs", type=int, default=-1, help="distil from this epoch (-1: from the start)")
    g.add_argument("--disable_reprojection_loss", action="store_true",
                   help="no photometric loss for the student (distillation and smoothness only)")
    parser.set_defaults(learning_rate=1e-4)


def dynamic_mf(parser):
    """DynamicMultiFrame (methods/dynamic_mf.py)."""
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
    g.add_argument("--cv_match", choices=["ssim", "l1", "ssim_l1"], default="ssim",
                   help="the cost volume's per-pixel matching error: SSIM (the paper's), L1, or 0.85 SSIM + "
                        "0.15 L1 (MonoRec's choices)")
    g.add_argument("--no_flip_after_cv", dest="flip_after_cv", action="store_false",
                   help="no random horizontal flip in training (by default each sample is mirrored with "
                        "p = 0.5 inside the model, after its cost volume)")
    g.add_argument("--fusion", choices=["ccf", "mono_guide_multi", "multi_guide_mono", "none"], default="ccf",
                   help="cross-cue fusion, one of its one-way ablations, or none (the two volumes side by side)")
    g.add_argument("--ccf_dim", type=int, default=32, help="CCF's channels per cue")
    g.add_argument("--silog_weight", type=float, default=4.0, help="weight of each SILog term")
    g.add_argument("--vnl_weight", type=float, default=1.0, help="weight of each virtual-normal term")
    g.add_argument("--vnl_sample_ratio", type=float, default=0.15, help="VNL: triplets per pixel")
    g.add_argument("--pool_loss_across_processes", action="store_true",
                   help="under DDP (torchrun), one SILog + VNL loss over the batch of all processes (their "
                        "predictions and ground truth all-gathered, with gradients), as the released code's "
                        "DataParallel scored its gathered batch of 8; without it each process scores its own "
                        "samples and DDP averages the gradients. No effect in one process")
    g.add_argument("--pose_source", choices=["dvso", "kitti_gt"], default="dvso",
                   help="poses_dvso/NN.txt (MonoRec's DVSO poses) or poses/NN.txt (KITTI's)")
    g.add_argument("--reference_align_corners", action="store_true",
                   help="the released code's cost-volume sampling (align_corners=False with (W-1) "
                        "coordinates; for its checkpoints)")
    g.add_argument("--reference_cv_sampling", action="store_true",
                   help="the released code's cost-volume warp: samples outside a source are mid-grey (not "
                        "black), a lookup is valid wherever the warped border mask is non-zero (not >= 0.5), "
                        "and the depths (1 / linspace in float32) and the projection (d K^-1 p, then K T, "
                        "divided by z + 1e-7) are computed in its float32 steps")
    g.add_argument("--reference_scatter", action="store_true",
                   help="the released code's ground-truth placement (its integer crop box, no pixel centring, "
                        "last point wins); evaluate_depth.py scores such a folder on that placement too")
    g.add_argument("--reference_crop", action="store_true",
                   help="frames cut at the released code's integer box (floor of the centred offset, e.g. "
                        "244 .. 997 of a 1241-px frame, 753 px) and then resized, instead of the float box "
                        "(244.5, 752 px) resized in one step; K stays the float crop's, as in the released code")
    g.add_argument("--reference_vnl_intrinsics", action="store_true",
                   help="VNL with batch item 0's focal length and the image centre (the released code)")
    g.add_argument("--imagenet_stats", action="store_true",
                   help="EfficientNet-B5 with ImageNet mean/std (the released code) instead of its own")
    g.add_argument("--ref_compat", action="store_true",
                   help="all of the released code's behaviours at once: --reference_align_corners "
                        "--reference_cv_sampling --reference_scatter --reference_crop "
                        "--reference_vnl_intrinsics --imagenet_stats --pool_loss_across_processes, and "
                        "--allow_tf32 off")
    g.add_argument("--eval_branch", choices=["multi", "mono"], default="multi",
                   help="inference: the multi-frame output or the mono branch's as the main output")
    parser.set_defaults(dataset="kitti_odom_mf", height=256, width=512, frame_ids=[0, -1, 1], scales=[0],
                        max_depth=80.0, learning_rate=1e-4, amsgrad=True, scheduler_step_size=65,
                        num_epochs=80, batch_size=8, best_metric="abs_rel")


# method name -> the functions above that its class hierarchy calls, bases first
CHAINS = {
    "monodepth2": (monodepth2,),
    "depth_hints": (monodepth2, depth_hints),
    "srd": (monodepth2, srd),
    "bdedepth": (monodepth2, bdedepth),
    "manydepth": (monodepth2, manydepth),
    "mism_teacher": (monodepth2, mism, mism_teacher),
    "mism_student": (monodepth2, mism, mism_student),
    "dynamic_mf": (dynamic_mf,),
}


def add_method_options(parser, name):
    """The option groups of built-in method `name` (False if it is not one)."""
    if name not in CHAINS:
        return False
    for add in CHAINS[name]:
        add(parser)
    return True
