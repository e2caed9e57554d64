"""BDEdepth (Liu et al., "Towards Better Data Exploitation in Self-Supervised Monocular Depth
Estimation", RA-L 2024): Monodepth2's losses on up to three views of each item, whose depth
is predicted separately by the same networks:
- the original view;
- resizing-cropping (`--use_local_crop`): every frame zoomed by r ~ U(1.2, 2.0) at one window;
  the crop is what a camera with the same K sees of a world shrunk by r, so its depth is
  Z / r, and its poses are Rc T Rc^-1 (layers.zoom_camera); plus an SI-log consistency
  between r x its depth and the original depth in the window (`--reference_zoom_geometry`:
  the camera and the window as the released code computes them);
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
from layers import disp_to_depth, zoom_camera, zoom_camera_reference
from losses import scale_invariant_log
from methods import option_groups, register_method
from methods.monodepth2 import Monodepth2


def reference_window(ratio, ox, oy, height, width):
    """The zoom window in whole network pixels as the released code takes it for the SI-log
    term: (x0, y0, w, h) with x0 = round(W (G_x[0] + 1) / 2), y0 likewise from G_y[0] (the
    first entries of the crop's sampling grid, see layers.zoom_camera_reference),
    w = round(W / r), h = round(H / r); Python's rounding (half to even), as the released code.
    Its own integer windows always fit the image; one cut at the far edge of this code's exact
    windows can reach one pixel past it (about 0.2 % of the draws): it is moved back inside."""
    x0 = round(width * ratio * ox / (width * ratio - 1))
    y0 = round(height * ratio * oy / (height * ratio - 1))
    w, h = round(width / ratio), round(height / ratio)
    return min(x0, width - w), min(y0, height - h), w, h


@register_method("bdedepth")
class BDEdepth(Monodepth2):
    @classmethod
    def add_options(cls, parser):
        option_groups.bdedepth(parser)

    @classmethod
    def check_options(cls, opt):
        if opt.reference_zoom_geometry and not opt.use_local_crop:
            raise SystemExit("--reference_zoom_geometry changes the zoomed view of --use_local_crop: add it")
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
        Rc = zoom_camera_reference(K, crop, opt.height, opt.width) if opt.reference_zoom_geometry else \
            zoom_camera(K, crop)
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
            if name == "local" and opt.reference_zoom_geometry:
                total = total + self.reference_window_consistency(view_inputs["crop_local"],
                                                                  view_outputs[("disp", scale)], original)
                continue
            if name == "local":
                crop = view_inputs["crop_local"]
                grid = local_grid(crop, opt.height, opt.width)
                original = F.grid_sample(original, grid.to(original.dtype), mode="bilinear",
                                         padding_mode="border", align_corners=False)
                depth = depth * crop[:, 0, None, None, None]  # the crop's depth is Z / r
            total = total + scale_invariant_log(depth, original)
        return total / len(opt.scales)

    def reference_window_consistency(self, crop, disp_local, original):
        """The zoomed view's SI-log term as the released code computes it
        (--reference_zoom_geometry): per item, the zoomed disparity at its own scale (B x 1 x
        h_s x w_s) resized bilinearly to the window's rounded size, as depth, times r, against
        the original full-resolution depth (B x 1 x H x W) cropped at the window's rounded
        corner (reference_window); averaged over the batch."""
        opt = self.opt
        terms = []
        for b in range(crop.shape[0]):
            x0, y0, w, h = reference_window(*(float(v) for v in crop[b]), opt.height, opt.width)
            disp = F.interpolate(disp_local[b:b + 1].float(), [h, w], mode="bilinear", align_corners=False)
            depth = disp_to_depth(disp, opt.min_depth, opt.max_depth)[1] * crop[b, 0]
            terms.append(scale_invariant_log(depth, original[b:b + 1, :, y0:y0 + h, x0:x0 + w]))
        return torch.stack(terms).mean()

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
