"""BDEdepth (Liu et al., "Towards Better Data Exploitation in Self-Supervised Monocular Depth
Estimation", RA-L 2024): Monodepth2's losses on up to three views of each item, whose depth
is predicted separately by the same networks:
- the original view;
- resizing-cropping (`--use_local_crop`): every frame zoomed by r ~ U(1.2, 2.0) at one window;
  the crop is what a camera with the same K sees of a world shrunk by r, so its depth is
  Z / r, and its poses are Rc T Rc^-1 (layers.zoom_camera); plus an SI-log consistency
  between r x its depth and the original depth in the window;
- splitting-permuting (`--use_patch_reshuffle`): frame 0 rolled by a random split; its
  depth, un-permuted exactly, reconstructs the original target from the original sources
  with the original pose; plus an SI-log consistency with the original depth.

Loss = (L_orig + L_local + L_reshuffle) / (1 + views) + 0.07 (SI_local + SI_reshuffle).
The views are built by the datasets (datasets.augment.LocalCrop / PatchReshuffle) on both
input paths; validation and inference see the original view only.
"""
import torch
import torch.nn.functional as F

from datasets.augment import LocalCrop, PatchReshuffle, default_augmentations, local_grid, unpermute
from layers import zoom_camera
from losses import scale_invariant_log
from methods import register_method
from methods.monodepth2 import Monodepth2


@register_method("bdedepth")
class BDEdepth(Monodepth2):
    @classmethod
    def add_options(cls, parser):
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
        g.add_argument("--consistency_detach", action="store_true",
                       help="stop the consistency terms' gradient into the original view's depth (the reference "
                            "lets it flow both ways)")
        # the paper's networks (HRNet-18 and the grid decoder, full-resolution disparity only)
        # and optimiser
        parser.set_defaults(encoder="hrnet18", depth_decoder="grid", scales=[0], optimizer="adamw", weight_decay=0.01)

    @classmethod
    def check_options(cls, opt):
        if not (opt.use_local_crop or opt.use_patch_reshuffle):
            return
        for flag, bad in (("--v1_multiscale", opt.v1_multiscale), ("--predictive_mask", opt.predictive_mask),
                          ("--pose_model_type posecnn", opt.pose_model_type == "posecnn")):
            if bad:
                raise SystemExit(f"--use_local_crop / --use_patch_reshuffle do not support {flag}")
        if opt.use_local_crop and getattr(opt, "fast_loader", False):
            print("-> note: with --fast_loader the zoomed view is a bilinear zoom of the cached network-size "
                  "frame (the default input path cuts it from the native frame, as the paper): softer by ~r")
        lo, hi = opt.local_crop_ratio
        if not 1.0 <= lo <= hi:
            raise SystemExit(f"--local_crop_ratio {lo} {hi}: need 1 <= MIN <= MAX (a zoom)")

    @classmethod
    def item_augmentations(cls, opt):
        augmentations = default_augmentations()
        if opt.use_local_crop:
            augmentations.append(LocalCrop(opt.height, opt.width, opt.local_crop_ratio))
        if opt.use_patch_reshuffle:
            augmentations.append(PatchReshuffle(opt.height, opt.width))
        return augmentations

    # ------------------------------------------------------------------ forward
    def depth_of(self, image):
        return self.models["depth"](self.models["encoder"](image))

    def forward(self, inputs):
        outputs = super().forward(inputs)
        views = {}
        if ("color_local_aug", 0, 0) in inputs:
            views["local"] = self.local_view(inputs, outputs)
        if ("color_reshuffle_aug", 0, 0) in inputs:
            views["reshuffle"] = self.reshuffle_view(inputs, outputs)
        if views:
            outputs["views"] = views
        return outputs

    def local_view(self, inputs, outputs):
        """(inputs, outputs) of the zoomed view, shaped like the original's for the losses."""
        opt = self.opt
        view_outputs = dict(self.depth_of(inputs[("color_local_aug", 0, 0)]))
        K, crop = inputs[("K", 0)].float(), inputs["crop_local"].float()
        Rc = zoom_camera(K, crop)
        Rc_inv = torch.linalg.inv(Rc)
        view_inputs = {("K", 0): inputs[("K", 0)], ("inv_K", 0): inputs[("inv_K", 0)],
                       "crop_local": crop}
        for f in self.frame_ids:
            view_inputs[("color", f, 0)] = inputs[("color_local", f, 0)]
        target = inputs[("color_local", 0, 0)]
        for scale in opt.scales[1:]:  # the smoothness term's image at each scale
            view_inputs[("color", 0, scale)] = F.interpolate(
                target, [opt.height // 2 ** scale, opt.width // 2 ** scale], mode="bilinear",
                align_corners=False, antialias=True)
        if "stereo_T" in inputs:
            view_inputs["stereo_T"] = Rc @ inputs["stereo_T"].float() @ Rc_inv
        for f in self.frame_ids[1:]:
            if f != "s":
                view_outputs[("cam_T_cam", 0, f)] = Rc @ outputs[("cam_T_cam", 0, f)].float() @ Rc_inv
        self.generate_images_pred(view_inputs, view_outputs)
        return view_inputs, view_outputs

    def reshuffle_view(self, inputs, outputs):
        """The rolled frame 0's depth, un-permuted at the network size (exact at every scale:
        coarser scales are upsampled first, then rolled, then resized back for the
        smoothness term; the reference rolls each scale by a rounded split); the original
        frames, K and poses."""
        opt = self.opt
        predicted = self.depth_of(inputs[("color_reshuffle_aug", 0, 0)])
        split = inputs["split_xy"]
        view_outputs = {}
        for scale in opt.scales:
            disp = predicted[("disp", scale)]
            if scale:
                disp = F.interpolate(disp, [opt.height, opt.width], mode="bilinear", align_corners=False)
            disp = unpermute(disp, split)
            if scale:
                disp = F.interpolate(disp, [opt.height // 2 ** scale, opt.width // 2 ** scale], mode="bilinear",
                                     align_corners=False, antialias=True)
            view_outputs[("disp", scale)] = disp
        for f in self.frame_ids[1:]:
            if f != "s":
                view_outputs[("cam_T_cam", 0, f)] = outputs[("cam_T_cam", 0, f)]
        self.generate_images_pred(inputs, view_outputs)
        return inputs, view_outputs

    # ------------------------------------------------------------------ losses
    def consistency(self, name, view_inputs, view_outputs, outputs):
        """SI-log between a view's depth and the original depth at the same pixels, averaged
        over scales (full-resolution depths)."""
        opt = self.opt
        total = 0
        for scale in opt.scales:
            original = outputs[("depth", 0, scale)]
            if opt.consistency_detach:
                original = original.detach()
            depth = view_outputs[("depth", 0, scale)]
            if name == "local":
                crop = view_inputs["crop_local"]
                grid = local_grid(crop, opt.height, opt.width)
                original = F.grid_sample(original, grid.to(original.dtype), mode="bilinear",
                                         padding_mode="border", align_corners=False)
                depth = depth * crop[:, 0, None, None, None]  # the crop's depth is Z / r
            total = total + scale_invariant_log(depth, original)
        return total / len(opt.scales)

    def compute_losses(self, inputs, outputs):
        terms, logs = super().compute_losses(inputs, outputs)
        views = outputs.get("views")
        if not views:  # both flags off, or validation: exactly Monodepth2's loss
            return terms, logs
        n = 1 + len(views)
        consistency = 0
        for name, (view_inputs, view_outputs) in views.items():
            if name == "reshuffle" and ("identity_error", 0) in outputs:
                view_outputs[("identity_error", 0)] = outputs[("identity_error", 0)]  # same images
            view_terms, _ = super().compute_losses(view_inputs, view_outputs)
            for key in ("reprojection", "smoothness"):
                terms[key] = terms[key] + view_terms[key]
                logs[f"{name}/{key}"] = view_terms[key].detach()
            term = self.consistency(name, view_inputs, view_outputs, outputs)
            logs[f"{name}/consistency"] = term.detach()
            consistency = consistency + term
        terms["reprojection"] = terms["reprojection"] / n
        terms["smoothness"] = terms["smoothness"] / n
        terms["consistency"] = self.opt.consistency_weight * consistency
        return terms, logs

    def images_to_log(self, inputs, outputs, n):
        images = super().images_to_log(inputs, outputs, n)
        for name, (view_inputs, view_outputs) in outputs.get("views", {}).items():
            for j in range(min(n, inputs[("color", 0, 0)].shape[0])):
                disp = view_outputs[("disp", 0)][j]
                images[f"{name}_disp_0/{j}"] = (disp - disp.min()) / (disp.max() - disp.min() + 1e-8)
                if name == "local":
                    images[f"{name}_color_0/{j}"] = view_inputs[("color", 0, 0)][j]
                else:
                    images[f"{name}_color_0/{j}"] = inputs[("color_reshuffle", 0, 0)][j]
        return images
