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
  branch (16 terms); under DDP with --pool_loss_across_processes one loss over the batch of
  all processes, as the released code's DataParallel scored its gathered batch;
- training-time flips happen inside the model after the cost volume, so poses are never
  mirrored;
- evaluation is metric (the odometry protocol: GT in (0, 80], no median scaling, no crop),
  the multi-frame branch and the mono branch side by side (`--eval_branch` picks the main
  one), and on the moving-object pixels with --eval_dynamic.

Differences from the released code, with switches where results change: align_corners=True
with the (W-1) normalisation (`--reference_align_corners`), frames cropped at the float
centred offset in one resize (`--reference_crop`: the released integer box, cut then
resized), the ground truth placed with pixel centres in the float box and the nearest point
winning collisions (`--reference_scatter`, also the evaluation's placement), VNL with
each sample's own intrinsics, EfficientNet-B5 with its own (Inception) statistics
(`--imagenet_stats`), validation on held-out keyframes of the training sequences (the
reference validated on the test sequences and kept the checkpoint of lowest training error).

The released checkpoints (ResNet-18, EfficientNet-B5 at 256x512) become weight folders with
import_reference_weights.py (reference_state_to_ours below: the same tensors, renamed).
"""
import collections
import os
import pickle
import re
import types

import torch

from losses import dynamic_mf_global_loss, dynamic_mf_total_loss
from methods import option_groups, register_method
from methods.base import Method
from networks import start_weights_file
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
        option_groups.dynamic_mf(parser)

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
            opt.reference_cv_sampling = opt.reference_crop = True
            opt.imagenet_stats = True
            opt.allow_tf32 = "off"  # the released train.py and evaluate.py turn TF32 off
            opt.pool_loss_across_processes = True
        if opt.cv_patch < 1 or opt.cv_patch % 2 == 0:
            raise SystemExit(f"--cv_patch {opt.cv_patch}: an odd window (1, 3, 5, ...)")

    @classmethod
    def dataset_options(cls, opt):
        return {"pose_source": opt.pose_source, "reference_scatter": opt.reference_scatter,
                "reference_crop": getattr(opt, "reference_crop", False), "allow_missing_masks": True}

    def __init__(self, opt):
        super().__init__(opt)
        pretrained = opt.weights_init == "pretrained"
        # default: a pretrained ResNet-18 stays frozen (the reference); from scratch it must learn
        freeze = opt.freeze_backbone if opt.freeze_backbone is not None else (opt.backbone == "resnet18" and pretrained)
        self.models["model"] = DynamicMultiFrameDepth(
            opt.backbone, pretrained=pretrained, freeze_backbone=freeze,
            height=opt.height, width=opt.width, num_bins=opt.cv_num_bins, inv_range=tuple(opt.cv_inv_depth_range),
            fusion=opt.fusion, align_corners=not opt.reference_align_corners,
            weights_file=start_weights_file(opt, {"resnet18": "resnet18", "effnet_b5": "tf_efficientnet_b5"}[opt.backbone]) if pretrained else None,
            ccf_dim=opt.ccf_dim,
            imagenet_stats=opt.imagenet_stats, cv_patch=opt.cv_patch, cv_match=getattr(opt, "cv_match", "ssim"),
            reference_sampling=getattr(opt, "reference_cv_sampling", False),
            flip_prob=0.5 if getattr(opt, "flip_after_cv", True) else 0.0)
        # a fine-tuned EfficientNet computes only the levels the modules use: its deepest
        # blocks get no gradient (DDP must know)
        self.find_unused_parameters = not freeze

    @property
    def inference_frames(self):
        return (0,) + SOURCE_FRAMES

    inference_intrinsics = (0,)  # the cost volume is built at the network size

    def export_inputs(self):
        """Frames 0, -1, +1, K and inv_K, then the poses ("T", f) B x 4 x 4 (frame 0 ->
        frame f, from files at evaluation)."""
        return super().export_inputs() + [(("T", f), ("B", 4, 4)) for f in SOURCE_FRAMES]

    def run(self, inputs, key="color_aug"):
        return self.models["model"](inputs[(key, 0, 0)], [inputs[(key, f, 0)] for f in SOURCE_FRAMES],
                                    [inputs[("T", f)] for f in SOURCE_FRAMES], inputs[("K", 0)], inputs[("inv_K", 0)])

    def forward(self, inputs):
        return self.run(inputs, "color_aug")

    def compute_losses(self, inputs, outputs):
        opt = self.opt
        multi, mono = [p.float() for p in outputs["multi"]], [p.float() for p in outputs["mono"]]  # AMP: losses in float32
        # training under DDP with --pool_loss_across_processes: one loss over every process's
        # samples (validation runs on rank 0 alone, in eval mode: its own batch)
        pooled = self.training and getattr(opt, "pool_loss_across_processes", False)
        loss = dynamic_mf_global_loss if pooled else dynamic_mf_total_loss
        _, terms = loss(multi, mono, inputs["inv_depth_gt"], inputs["depth_gt"], inputs[("K", 0)],
                        silog_weight=opt.silog_weight, vnl_weight=opt.vnl_weight, sample_ratio=opt.vnl_sample_ratio,
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

    def prediction_dataset(self, path):
        """test_simple.py on a KITTI odometry sequence (ODOM/sequences/NN or its image_2/):
        the keyframes 5 .. N-6 with frames -1, +1, the sequence's K (calib.txt) and poses
        (ODOM/poses_dvso/NN.txt, or poses/ with --pose_source kitti_gt), as evaluated."""
        from evaluation.kitti_odom import KittiOdomMultiFrame
        folder = os.path.normpath(os.path.abspath(path))
        if os.path.basename(folder) == "image_2":
            folder = os.path.dirname(folder)
        seq, sequences = os.path.basename(folder), os.path.dirname(folder)
        if not (os.path.isdir(folder) and os.path.basename(sequences) == "sequences" and seq.isdigit()):
            raise SystemExit(f"--image_path {path}: --method dynamic_mf predicts from a KITTI odometry sequence "
                             "(ODOM/sequences/NN with image_2/ and calib.txt, its poses in ODOM/poses_dvso/NN.txt), "
                             "since it needs frames -1 and +1 and their poses")
        test_set = KittiOdomMultiFrame(os.path.dirname(sequences), [seq], self.opt.pose_source)
        test_set.use_dataset_options(self.dataset_options(self.opt))  # the crop it was trained with
        if not test_set.filenames:
            raise SystemExit(f"--image_path {path}: no keyframes (a sequence needs more than 10 frames)")
        return PathItems(test_set.dataset(self.opt.height, self.opt.width, self.inference_frames))

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


class PathItems(torch.utils.data.Dataset):
    """A dataset's items with the keyframe's image path as "path" and the size (w, h) of the
    region the model sees, the centred crop, as "output_size" (outputs are written at it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        folder, frame = self.dataset.filenames[index].split()[:2]
        item["path"] = self.dataset.get_image_path(folder, int(frame), "l")
        crop = self.dataset.geometry(folder)
        left, _, right, _ = crop.box
        item["output_size"] = torch.tensor([round(right - left), crop.native_height])
        return item


def count_parameters(method):
    """(total, trainable) parameters of the model."""
    params = list(method.models["model"].parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# ---- the released checkpoints (the reference's DyMultiDepthModel) -------------------------
#
# The reference saves {"state_dict": its whole model's state dict, "arch": the class name
# ("DataParallel" when the keys start with "module."), plus its optimizer and config}. Its
# top-level modules are _feature_extractor (torchvision ResNet-18 under `encoder.`, or
# gen-efficientnet's tf_efficientnet_b5_ap under `original_model.` with its classifier
# replaced by an identity), cv_module (no parameters), fusion_module, depth_module and
# mono_module. The names below are the only differences from ours; every tensor keeps its
# shape (tests/data/dynamic_mf_reference_keys.json lists the reference's keys and shapes).

REFERENCE_BACKBONES = {  # backbone -> (reference prefix, our prefix)
    "resnet18": ("_feature_extractor.encoder.", "backbone.encoder."),
    "effnet_b5": ("_feature_extractor.original_model.", "backbone.model."),
}
REFERENCE_FUSIONS = {  # fusion -> the 1x1 projections its reference module has
    "ccf": ("lin_mono_q", "lin_mono_k", "lin_mono_v", "lin_multi_q", "lin_multi_k", "lin_multi_v"),
    "mono_guide_multi": ("lin_mono_q", "lin_mono_k", "lin_multi_v"),
    "multi_guide_mono": ("lin_multi_q", "lin_multi_k", "lin_mono_v"),
}
_FUSION_PROJECTIONS = {"lin_mono_q": "mono_query", "lin_mono_k": "mono_key", "lin_mono_v": "mono_value",
                       "lin_multi_q": "multi_query", "lin_multi_k": "multi_key", "lin_multi_v": "multi_value"}
_BN_OR_CONV = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_REFERENCE_RULES = [  # (reference name, our name) regexes after the top-level prefix
    (r"fusion_module\.gamma", r"fusion.gamma"),
    (rf"fusion_module\.((?:mono|multi)_(?:expand|reg)\.\d+)\.{_BN_OR_CONV}", r"fusion.\1.\2"),
    (r"fusion_module\.(lin_(?:mono|multi)_[qkv])\.(weight|bias)", None),  # renamed by _FUSION_PROJECTIONS
    # depth and mono modules: MonoRec's Refine wraps its transposed conv as `conv2d_t`, ours is
    # the first layer of a Sequential; the last decoder stage's 3x3 conv follows a padding
    # layer there (index 2), not here (1); the heads are Sequential(padding, conv) there
    (r"(depth|mono)_module\.((?:enc\.[0-4]\.[01]|dec\.[12]\.1|dec\.4\.0)\.conv_[xy])\.(weight|bias)",
     r"\1_module.\2.\3"),
    (r"(depth|mono)_module\.dec\.([03])\.conv2d_t\.(weight|bias)", r"\1_module.dec.\2.0.\3"),
    (r"(depth|mono)_module\.dec\.([12])\.0\.conv2d_t\.(weight|bias)", r"\1_module.dec.\2.0.0.\3"),
    (r"(depth|mono)_module\.dec\.4\.2\.(weight|bias)", r"\1_module.dec.4.1.\2"),
    (r"(depth|mono)_module\.predictors\.([0-3])\.1\.(weight|bias)", r"\1_module.heads.\2.\3"),
]
# ours, not the reference's: timm's ImageNet classifier of EfficientNet-B5 (never used by the
# model; the reference replaced it with an identity), written as zeros
OURS_ONLY = {"resnet18": (), "effnet_b5": ("backbone.model.classifier.weight", "backbone.model.classifier.bias")}


def reference_key_to_ours(key, backbone):
    """Our model.pth name of the reference's state-dict key `key` (without `module.`), or
    None where the key is none the reference's model has for that backbone."""
    ref_prefix, our_prefix = REFERENCE_BACKBONES[backbone]
    if key.startswith(ref_prefix):
        return our_prefix + key[len(ref_prefix):]
    for pattern, replacement in _REFERENCE_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            if replacement is None:
                return f"fusion.{_FUSION_PROJECTIONS[match.group(1)]}.{match.group(2)}"
            return match.expand(replacement)
    return None


def _model_shapes(backbone, fusion, height, width):
    """{our key: shape} of DynamicMultiFrameDepth (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        model = DynamicMultiFrameDepth(backbone, pretrained=False, height=height, width=width, fusion=fusion)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_reference_layout(state):
    """(backbone, fusion, expand_blocks) of a reference state dict (no `module.`): None for
    what its keys do not show. expand_blocks is 3 for a model built for inputs wider than 650."""
    backbone = next((name for name, (prefix, _) in REFERENCE_BACKBONES.items()
                     if any(k.startswith(prefix) for k in state)), None)
    projections = {k.split(".")[1] for k in state if k.startswith("fusion_module.lin_")}
    fusion = next((name for name, names in REFERENCE_FUSIONS.items() if projections == set(names)), None)
    blocks = {int(k.split(".")[2]) // 3 + 1 for k in state
              if k.startswith(("fusion_module.mono_expand.", "fusion_module.multi_expand."))}
    return backbone, fusion, max(blocks) if blocks else None


def reference_state_to_ours(state, backbone, fusion="ccf", height=256, width=512):
    """The reference's state dict (its DyMultiDepthModel's keys, a `module.` prefix on every
    key allowed) -> our DynamicMultiFrameDepth state dict (model.pth), renamed and nothing
    else: a reference key the map does not know, two keys onto one, a tensor whose shape
    differs from ours, or a key of ours that nothing fills is a ValueError naming the keys.
    OURS_ONLY (the unused EfficientNet classifier) is the one exception, written as zeros."""
    if backbone not in REFERENCE_BACKBONES:
        raise ValueError(f"backbone {backbone!r}: one of {', '.join(REFERENCE_BACKBONES)}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    shapes = _model_shapes(backbone, fusion, height, width)
    ours, source, problems = {}, {}, []
    for key, value in state.items():
        name = reference_key_to_ours(key, backbone)
        if name is None or name not in shapes:
            problems.append(f"reference key {key} has no counterpart in our {backbone} model"
                            + (f" ({name} does not exist)" if name else ""))
            continue
        if name in source:
            problems.append(f"reference keys {source[name]} and {key} both map to {name}")
            continue
        source[name] = key
        if not torch.is_tensor(value):
            problems.append(f"reference key {key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != shapes[name]:
            problems.append(f"reference key {key} has shape {list(value.shape)}, our {name} {list(shapes[name])}")
        else:
            ours[name] = value
    for name in OURS_ONLY[backbone]:
        if name in shapes and name not in source:
            source[name], ours[name] = None, torch.zeros(shapes[name])
    problems += [f"our key {k} (shape {list(shapes[k])}) has no reference key" for k in shapes if k not in source]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
        raise ValueError(f"{len(problems)} problem(s) mapping the reference's keys onto --backbone {backbone} "
                         f"--fusion {fusion} at {height}x{width}: {shown}")
    return {k: ours[k] for k in shapes}


class _StandIn:
    """An object of a class that is not needed here (the reference's config object, paths,
    numpy scalars in its training record): its pickled arguments and state, kept inert."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _tolerant_pickle_module():
    """A pickle module for torch.load that rebuilds tensors and dicts and turns every other
    class into an inert _StandIn (no code of the checkpoint's classes runs, none is needed)."""

    rebuild = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
               "_rebuild_parameter_with_state")

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module == "torch._utils" and name in rebuild) or \
                    (module == "torch" and (name.endswith("Storage") or name in ("Size", "device"))):
                return super().find_class(module, name)
            return _StandIn

    return types.SimpleNamespace(Unpickler=Unpickler, load=lambda f, **kw: Unpickler(f, **kw).load(),
                                 __name__="tolerant_pickle")


def load_reference_checkpoint(path):
    """(state_dict without `module.`, arch) of a reference checkpoint file. Tensors only
    through torch's weights-only loader; a released file also pickles the reference's config
    object, so on failure the file is read again with a loader that keeps only tensors and
    plain containers and stands in for every other class. Problems: SystemExit naming `path`."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False,
                                    pickle_module=_tolerant_pickle_module())
        except Exception as e:
            raise SystemExit(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:
        raise SystemExit(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise SystemExit(f"{path}: no \"state_dict\" entry (found {found}); the reference's checkpoints are "
                         "{\"state_dict\": ..., \"arch\": ...}")
    state, arch = checkpoint["state_dict"], checkpoint.get("arch")
    if not isinstance(state, dict) or not state:
        raise SystemExit(f"{path}: its \"state_dict\" is not a non-empty dict of tensors")
    prefixed = [k for k in state if str(k).startswith("module.")]
    if arch == "DataParallel" or prefixed:
        if len(prefixed) != len(state):
            bare = next(k for k in state if not str(k).startswith("module."))
            raise SystemExit(f"{path}: arch {arch!r} but key {bare} has no `module.` prefix")
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, arch


def reference_options(backbone, fusion="ccf", height=256, width=512):
    """The options of a folder holding a released checkpoint: our preset of that backbone
    (the defaults of train.py --method dynamic_mf with the paper's recipe), the fusion and
    size it was trained with, and the reference behaviours it was trained with (--ref_compat:
    align_corners=False cost-volume sampling, ImageNet statistics for EfficientNet-B5, the
    ground-truth placement and VNL intrinsics)."""
    from options import MonodepthOptions
    preset = {"resnet18": "dynamic_mf_resnet18_256x512", "effnet_b5": "dynamic_mf_effnetb5_256x512"}[backbone]
    return MonodepthOptions().parse(["--config", preset, "--backbone", backbone, "--fusion", fusion,
                                     "--height", str(height), "--width", str(width), "--ref_compat"])


def import_reference_checkpoint(checkpoint, out, backbone=None, height=256, width=512):
    """A released checkpoint -> the weight folder `out` ({model.pth, opt.json}) that
    evaluate_depth.py and test_simple.py load with --load_weights_folder. `backbone`
    (resnet18 / effnet_b5) must match the checkpoint's; None takes the checkpoint's.
    Returns (out, opt). Every problem is a SystemExit naming the checkpoint."""
    from training.checkpoints import options_json
    from utils import atomic_torch_save, atomic_write_bytes
    state, arch = load_reference_checkpoint(checkpoint)
    found, fusion, blocks = detect_reference_layout(state)
    if found is None:
        prefixes = " or ".join(p + "*" for p, _ in REFERENCE_BACKBONES.values())
        raise SystemExit(f"{checkpoint}: no backbone keys ({prefixes}); not a checkpoint of the reference's "
                         f"DyMultiDepthModel (first keys: {list(state)[:3]})")
    if backbone is not None and backbone != found:
        raise SystemExit(f"{checkpoint}: its backbone is {found} (keys {REFERENCE_BACKBONES[found][0]}*), "
                         f"not --backbone {backbone}")
    if fusion is None:
        projections = sorted({k.split(".")[1] for k in state if k.startswith("fusion_module.lin_")})
        raise SystemExit(f"{checkpoint}: its fusion module has projections {projections}, none of "
                         f"{', '.join(REFERENCE_FUSIONS)} (the reference's fusion types ccf_fusion, "
                         "mono_guide_multi, multi_guide_mono)")
    if blocks is not None and (blocks == 3) != (width > 650):
        raise SystemExit(f"{checkpoint}: its fusion downsamples {blocks} times, which the reference does for "
                         f"input widths {'above' if blocks == 3 else 'up to'} 650; give --width accordingly "
                         f"(got {width})")
    try:
        ours = reference_state_to_ours(state, found, fusion, height, width)
    except ValueError as e:
        raise SystemExit(f"{checkpoint}: {e}") from None
    opt = reference_options(found, fusion, height, width)
    opt.reference_checkpoint = os.path.basename(checkpoint)  # provenance; ignored when loading
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out}: exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    atomic_torch_save(ours, os.path.join(out, "model.pth"))
    atomic_write_bytes(os.path.join(out, "opt.json"), options_json(opt))
    print(f"-> {checkpoint} (arch {arch}, {len(state)} tensors: backbone {found}, fusion {fusion}) -> "
          f"{out}/model.pth, {out}/opt.json ({height}x{width}, --ref_compat)")
    return out, opt
