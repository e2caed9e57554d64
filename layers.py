"""Geometry and small layers: depth <-> disparity, poses, back-projection and projection,
warping, SSIM and edge-aware smoothness (the depth metrics are in evaluation/).

Conventions: images are B x 3 x H x W in [0, 1]; K and inv_K are B x 4 x 4 in pixels;
T is B x 4 x 4 and maps points of the target camera into the source camera.
"""
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

ROTATION_EPS = 1e-7  # keeps the axis finite for a zero rotation
PROJECTION_EPS = 1e-7  # keeps the division by depth finite


def disp_to_depth(disp, min_depth, max_depth):
    """Sigmoid output -> (scaled disparity, depth): 1/depth = 1/max + (1/min - 1/max) disp."""
    min_disp, max_disp = 1 / max_depth, 1 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1 / scaled_disp


def rot_from_axisangle(vec):
    """Axis-angle B x 1 x 3 -> rotation B x 4 x 4 (Rodrigues)."""
    angle = torch.norm(vec, 2, 2, True)
    axis = vec / (angle + ROTATION_EPS)
    ca, sa = torch.cos(angle), torch.sin(angle)
    C = 1 - ca
    x, y, z = axis[..., 0:1], axis[..., 1:2], axis[..., 2:3]
    xs, ys, zs = x * sa, y * sa, z * sa
    xC, yC, zC = x * C, y * C, z * C
    xyC, yzC, zxC = x * yC, y * zC, z * xC
    rot = torch.zeros((vec.shape[0], 4, 4), device=vec.device, dtype=vec.dtype)
    rot[:, 0, 0] = (x * xC + ca)[:, 0, 0]
    rot[:, 0, 1] = (xyC - zs)[:, 0, 0]
    rot[:, 0, 2] = (zxC + ys)[:, 0, 0]
    rot[:, 1, 0] = (xyC + zs)[:, 0, 0]
    rot[:, 1, 1] = (y * yC + ca)[:, 0, 0]
    rot[:, 1, 2] = (yzC - xs)[:, 0, 0]
    rot[:, 2, 0] = (zxC - ys)[:, 0, 0]
    rot[:, 2, 1] = (yzC + xs)[:, 0, 0]
    rot[:, 2, 2] = (z * zC + ca)[:, 0, 0]
    rot[:, 3, 3] = 1
    return rot


def get_translation_matrix(translation):
    """Translation B x 1 x 3 (or B x 3) -> B x 4 x 4."""
    T = torch.eye(4, device=translation.device, dtype=translation.dtype).repeat(translation.shape[0], 1, 1)
    T[:, :3, 3] = translation.contiguous().view(-1, 3)
    return T


def transformation_from_parameters(axisangle, translation, invert=False):
    """Pose network output -> 4 x 4: M = T(t) R (x' = R x + t); inverted: R^T T(-t)."""
    R = rot_from_axisangle(axisangle)
    t = translation.clone()
    if invert:
        R = R.transpose(1, 2)
        t = t * -1
    T = get_translation_matrix(t)
    return torch.matmul(R, T) if invert else torch.matmul(T, R)


class BackprojectDepth(nn.Module):
    """Depth B x 1 x H x W and inv_K -> homogeneous camera points B x 4 x HW."""

    def __init__(self, batch_size, height, width):
        super().__init__()
        self.batch_size, self.height, self.width = batch_size, height, width
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                              torch.arange(width, dtype=torch.float32), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width)], 0)
        self.register_buffer("pix_coords", pix.unsqueeze(0), persistent=False)
        self.register_buffer("ones", torch.ones(1, 1, height * width), persistent=False)

    def forward(self, depth, inv_K):
        b = depth.shape[0]
        pix = self.pix_coords.to(inv_K.dtype).expand(b, -1, -1)
        cam = depth.view(b, 1, -1) * torch.matmul(inv_K[:, :3, :3], pix)
        return torch.cat([cam, self.ones.to(cam.dtype).expand(b, -1, -1)], 1)


class Project3D(nn.Module):
    """Points B x 4 x HW, K and T -> sampling grid B x H x W x 2 in [-1, 1]
    (pixel u maps to 2u/(W-1) - 1, i.e. grid_sample with align_corners=True)."""

    def __init__(self, batch_size, height, width, eps=PROJECTION_EPS):
        super().__init__()
        self.batch_size, self.height, self.width, self.eps = batch_size, height, width, eps

    def forward(self, points, K, T):
        P = torch.matmul(K, T)[:, :3, :]
        cam = torch.matmul(P, points)
        pix = cam[:, :2, :] / (cam[:, 2:3, :] + self.eps)
        pix = pix.view(-1, 2, self.height, self.width).permute(0, 2, 3, 1)
        scale = torch.tensor([self.width - 1, self.height - 1], device=pix.device, dtype=pix.dtype)
        return (pix / scale - 0.5) * 2


def bins_per_chunk(num_bins, per_bin, max_elements):
    """How many depth bins a cost volume builds at once: as many as keep a chunk under
    `max_elements` (per_bin: the elements one bin costs), at least 1, at most num_bins.
    A graph being traced (torch.jit.trace, ONNX export) gets all bins in one chunk: the
    trace would keep the loop's trace-time number of chunks while it records the chunk
    size as arithmetic on the input's batch size, so at another batch the slices and the
    loop disagree. Each bin is computed independently, so one chunk or several give the
    same numbers; only the memory differs."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _compiler_check("is_exporting"):
        return num_bins
    return min(num_bins, max(1, max_elements // per_bin))


def warp(source, grid):
    """Bilinear sampling of `source` at `grid` (from Project3D). align_corners=True matches
    the (W-1) normalisation of Project3D; the reference code left it False (half-pixel
    shift since PyTorch 1.3)."""
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


def upsample(x):
    """Nearest-neighbour x2."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Conv3x3(nn.Module):
    """Reflection- (or zero-) padded 3x3 convolution."""

    def __init__(self, in_channels, out_channels, use_refl=True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1) if use_refl else nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

    def forward(self, x):
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _compiler_check(name):
    """torch.compiler.<name>() where this PyTorch has it (is_compiling from 2.3, is_exporting
    from 2.6; requirements allow 2.1), else False."""
    check = getattr(getattr(torch, "compiler", None), name, None)
    return bool(check is not None and check())


def box_mean3(t):
    """3x3 window means of ... x H x W -> ... x (H - 2) x (W - 2), as avg_pool2d(t, 3, 1). On
    the CPU as two separable sums of shifted views: forward and backward together several
    times faster than avg_pool2d there (benchmarks/step_parts.py); the same values up to
    float rounding (~1e-7). Other devices keep avg_pool2d's single kernel."""
    if t.device.type != "cpu" or t.dim() not in (3, 4):
        return F.avg_pool2d(t, 3, 1)
    rows = t[..., :-2] + t[..., 1:-1] + t[..., 2:]
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9


class SSIM(nn.Module):
    """Per-pixel SSIM dissimilarity clamp((1 - SSIM) / 2, 0, 1) with 3x3 mean windows and
    reflection padding.

    keep_target=True: the second image's window statistics (mean, variance) are kept for the
    next call: a training step compares every warped source with the same target
    (monodepth2: 2 sources x 4 scales plus the identity errors), so they are computed once
    per step. They are reused only for the very same tensor object, unchanged since by any
    in-place operation (its version counter; a write through `.data` or a shared NumPy
    array is not seen, and no caller does that), that needs no gradient, outside inference
    mode (no version counter there), tracing, export and compilation. Callers whose second
    image changes at every call (a cost volume's chunks) pass keep_target=False, so that no
    statistics outlive the call."""

    def __init__(self, keep_target=True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.keep_target = keep_target
        self._kept = None  # (weak reference to y, y's version, (y padded, mu_y, sigma_y))

    def __getstate__(self):  # pickling and copying: the kept statistics stay behind
        state = self.__dict__.copy()
        state["_kept"] = None
        return state

    def _second_image_statistics(self, y):
        keep = self.keep_target and not (
            y.requires_grad or torch.is_inference(y) or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export() or _compiler_check("is_compiling"))
        if keep and self._kept is not None:
            ref, version, stats = self._kept
            if ref() is y and y._version == version:
                return stats
        padded = self.pad(y)
        mu_y = box_mean3(padded)
        stats = (padded, mu_y, box_mean3(padded * padded) - mu_y ** 2)
        self._kept = (weakref.ref(y), y._version, stats) if keep else None
        return stats

    def forward(self, x, y):
        y_padded, mu_y, sigma_y = self._second_image_statistics(y)
        x = self.pad(x)
        mu_x = box_mean3(x)
        sigma_x = box_mean3(x * x) - mu_x ** 2
        sigma_xy = box_mean3(x * y_padded) - mu_x * mu_y
        n = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
        d = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
        return torch.clamp((1 - n / d) / 2, 0, 1)


def get_smooth_loss(disp, img):
    """Edge-aware smoothness of a (mean-normalised) disparity B x 1 x H x W given the
    image B x 3 x H x W: mean |d_x d| e^{-|d_x I|} + mean |d_y d| e^{-|d_y I|}."""
    grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
    grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
    grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
    grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
    grad_disp_x = grad_disp_x * torch.exp(-grad_img_x)
    grad_disp_y = grad_disp_y * torch.exp(-grad_img_y)
    return grad_disp_x.mean() + grad_disp_y.mean()



def multiview_consistency(depth, depth_src, T, K, inv_K):
    """Geometric check of a depth map against the depth of another view (SRD's filter).

    depth: B x 1 x H x W of the target view; depth_src: B x 1 x H x W of the source view;
    T: B x 4 x 4 target -> source; K, inv_K: B x 4 x 4 at this size. Each target pixel p is
    back-projected with its depth, projected into the source (p'), the source depth is
    sampled there bilinearly (pixel centres at integers, 0 outside, as cv2.remap), and that
    point is brought back into the target camera.

    Returns (rel = |z_back - depth| / depth, in_view: p' inside the source image and in
    front of its camera), both B x 1 x H x W."""
    B, _, H, W = depth.shape
    dtype, device = depth.dtype, depth.device
    ys, xs = torch.meshgrid(torch.arange(H, device=device, dtype=dtype),
                            torch.arange(W, device=device, dtype=dtype), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(H * W, device=device, dtype=dtype)])  # 3 x N
    cam = depth.reshape(B, 1, -1) * (inv_K[:, :3, :3] @ pix)
    P = K @ T
    pts = P[:, :3, :3] @ cam + P[:, :3, 3:]
    z = pts[:, 2:3]
    z_safe = torch.where(z.abs() < PROJECTION_EPS, torch.full_like(z, PROJECTION_EPS), z)
    xy = pts[:, :2] / z_safe  # B x 2 x N, source pixels
    in_view = (z > PROJECTION_EPS) & (xy[:, 0:1] >= 0) & (xy[:, 0:1] <= W - 1) & \
        (xy[:, 1:2] >= 0) & (xy[:, 1:2] <= H - 1)
    grid = torch.stack([xy[:, 0] / (W - 1) * 2 - 1, xy[:, 1] / (H - 1) * 2 - 1], -1).reshape(B, H, W, 2)
    d_src = F.grid_sample(depth_src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    pix_src = torch.cat([xy, torch.ones_like(z)], 1)
    cam_src = d_src.reshape(B, 1, -1) * (inv_K[:, :3, :3] @ pix_src)
    R, t = T[:, :3, :3], T[:, :3, 3:]
    back = R.transpose(1, 2) @ (cam_src - t)  # T^-1 applied to the source point
    z_back = back[:, 2:3].reshape(B, 1, H, W)
    rel = (z_back - depth).abs() / depth
    return rel, in_view.reshape(B, 1, H, W)


def zoom_camera(K, crop):
    """The virtual camera of a zoomed crop (BDEdepth's resizing-cropping), exact for any
    principal point and per-sample K (ours; the reference assumes cx = W/2 and one focal
    length for the batch).

    K: B x 4 x 4 intrinsics in pixels of the network size; crop: B x 3 (r, ox, oy), the zoom
    and the window's top-left edge in those pixels (datasets.augment.LocalCrop). Returns Rc
    (B x 4 x 4) such that projecting Rc P with the same K gives P's pixel in the crop and
    Rc P's depth is Z / r: the crop is what a camera with intrinsics K sees of a world shrunk
    by r. Poses map as Rc T Rc^-1."""
    ratio, ox, oy = crop[:, 0], crop[:, 1], crop[:, 2]
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    Rc = torch.eye(4, dtype=K.dtype, device=K.device).repeat(K.shape[0], 1, 1)
    # a crop pixel u' (centre) sees original x = ox + (u' + 0.5) / r - 0.5
    Rc[:, 0, 2] = (cx - ox + 0.5 - (cx + 0.5) / ratio) / fx
    Rc[:, 1, 2] = (cy - oy + 0.5 - (cy + 0.5) / ratio) / fy
    Rc[:, 2, 2] = 1 / ratio
    return Rc


def zoom_camera_reference(K, crop, height, width):
    """The virtual camera of a zoomed crop as the released BDEdepth code builds it
    (--reference_zoom_geometry), from the crop's sampling grid: G = the align_corners=True
    coordinates of the crop's pixels in the zoomed (W r) x (H r) image, whose window starts at
    zoomed pixel (r ox, r oy). With its centre (gx, gy) (the mean of G's first and last
    entries), its half span s = (W - 1) / (W r - 1) along x (not 1 / r) and the focal lengths
    of the batch's first item in image widths/heights (fx / W, fy / H):
    Rc = [[1, 0, -gx / (2 fx)], [0, 1, -gy / (2 fy)], [0, 0, s]], which assumes a centred
    principal point and one focal length for the batch. K, crop as zoom_camera's; B x 4 x 4."""
    crop64 = crop.double()
    ratio, ox, oy = crop64[:, 0], crop64[:, 1], crop64[:, 2]

    def grid_ends(offset, size):  # G's first and last entry along one axis
        zoomed = size * ratio - 1
        return -1 + 2 * ratio * offset / zoomed, -1 + 2 * (ratio * offset + size - 1) / zoomed

    x_first, x_last = grid_ends(ox, width)
    y_first, y_last = grid_ends(oy, height)
    fx, fy = K[0, 0, 0].double() / width, K[0, 1, 1].double() / height
    Rc = torch.eye(4, dtype=K.dtype, device=K.device).repeat(K.shape[0], 1, 1)
    Rc[:, 0, 2] = (-(x_first + x_last) / 2 / (2 * fx)).to(K.dtype)
    Rc[:, 1, 2] = (-(y_first + y_last) / 2 / (2 * fy)).to(K.dtype)
    Rc[:, 2, 2] = ((x_last - x_first) / 2).to(K.dtype)
    return Rc
