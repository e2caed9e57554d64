"""Photometric and regularisation losses (monodepth2), as small functions and modules."""
import torch
import torch.distributed as dist
import torch.nn as nn

from layers import SSIM, get_smooth_loss

SSIM_WEIGHT = 0.85  # pe = 0.85 SSIM + 0.15 L1
IDENTITY_NOISE = 1e-5  # breaks ties between identical identity and reprojection errors


class ReprojectionLoss(nn.Module):
    """pe(pred, target): B x 1 x H x W per-pixel photometric error."""

    def __init__(self, no_ssim=False, ssim_weight=SSIM_WEIGHT):
        super().__init__()
        self.ssim = None if no_ssim else SSIM()
        self.ssim_weight = ssim_weight

    def forward(self, pred, target):
        l1 = torch.abs(target - pred).mean(1, True)
        if self.ssim is None:
            return l1
        return self.ssim_weight * self.ssim(pred, target).mean(1, True) + (1 - self.ssim_weight) * l1


def min_reprojection(reprojection_losses, identity_losses=None, avg_reprojection=False):
    """Per-pixel minimum (or mean) over sources, with auto-masking when identity losses are
    given. reprojection_losses, identity_losses: B x n_sources x H x W.

    Returns (to_optimise B x H x W, automask B x 1 x H x W where a reprojection won, or None)."""
    if avg_reprojection:
        reprojection_losses = reprojection_losses.mean(1, keepdim=True)
    if identity_losses is None:
        return reprojection_losses.min(1)[0], None
    if avg_reprojection:
        identity_losses = identity_losses.mean(1, keepdim=True)
    identity_losses = identity_losses + torch.randn_like(identity_losses) * IDENTITY_NOISE
    to_optimise, idxs = torch.min(torch.cat([identity_losses, reprojection_losses], 1), dim=1)
    automask = (idxs >= identity_losses.shape[1]).float().unsqueeze(1)
    return to_optimise, automask


def automask_after_min(reprojection, identity_losses):
    """ManyDepth's and MISM's auto-mask (their released code; Monodepth2's is min_reprojection):
    reprojection: B x 1 x H x W, the minimum over sources; identity_losses: B x n x H x W.
    The identity errors are reduced to their minimum over sources first, then one noise draw
    per pixel (std IDENTITY_NOISE) is added, and a pixel is kept where reprojection <= that
    value (an exact tie keeps the pixel, as an argmin over [reprojection, identity] does).
    Returns the kept mask, B x 1 x H x W float."""
    identity = identity_losses.min(1, keepdim=True)[0]
    identity = identity + torch.randn_like(identity) * IDENTITY_NOISE
    return (reprojection <= identity).float()


def smoothness_loss(disp, color):
    """Edge-aware smoothness of the mean-normalised disparity."""
    mean_disp = disp.mean(2, True).mean(3, True)
    return get_smooth_loss(disp / (mean_disp + 1e-7), color)


def scale_invariant_log(a, b, variance_focus=0.5, eps=1e-8):
    """SI-log of two positive B x 1 x H x W maps: per image, d = log(a + eps) - log(b + eps),
    mean(d^2) - variance_focus * mean(d)^2; averaged over the batch. Symmetric in a and b."""
    d = (torch.log(a + eps) - torch.log(b + eps)).flatten(1)
    return ((d ** 2).mean(1) - variance_focus * d.mean(1) ** 2).mean()


def masked_silog(pred, target, mask, variance_focus=1.0, eps=1e-12):
    """SILog over the masked pixels of a batch, pooled: g = log pred - log target,
    sqrt(mean g^2 - variance_focus * (mean g)^2). With variance_focus 1 it is the standard
    deviation of the log-ratio, unchanged when pred is scaled. An empty mask gives 0 (still
    in the graph) and a variance rounded below 0 is clamped, so neither gives NaN."""
    mask = mask.bool()
    if not bool(mask.any()):
        return pred.sum() * 0
    g = torch.log(pred[mask]) - torch.log(target[mask])
    variance = (g ** 2).mean() - variance_focus * g.mean() ** 2
    return torch.sqrt(variance.clamp(min=eps))


def masked_ssim_l1(pred, target, mask, ssim, ssim_weight=SSIM_WEIGHT, l1_everywhere=False):
    """SSIM-plus-L1 distance of two depth maps (B x 1 x H x W) over the masked pixels:
    ssim_weight x mean SSIM dissimilarity + (1 - ssim_weight) x mean |pred - target|.
    l1_everywhere: the L1 term over all pixels (MISM's code), not only the masked ones.
    `ssim` is an SSIM module (layers.SSIM). An empty mask gives 0 for the masked terms."""
    mask = mask.bool()
    zero = pred.sum() * 0
    dissimilarity = ssim(pred, target)
    l1 = torch.abs(pred - target)
    masked = bool(mask.any())
    ssim_term = dissimilarity[mask].mean() if masked else zero
    if l1_everywhere:
        l1_term = l1.mean()
    else:
        l1_term = l1[mask].mean() if masked else zero
    return ssim_weight * ssim_term + (1 - ssim_weight) * l1_term


# --- supervised multi-frame depth (Li et al., CVPR 2023; MonoRec's abs_silog_loss_virtualnormal)
SILOG_VARIANCE_WEIGHT = 0.15  # L = 10 sqrt(Var(g) + 0.15 mean(g)^2)
MAX_GT_INV_DEPTH = 100.0  # GT inverse depth clipped to <= 100 (depth >= 1 cm)
VNL_MIN_Z = 1e-4  # a triplet needs GT z > this at its 3 points
VNL_MAX_COS = 0.867  # ... no two edges (nearly) parallel, |cos| <= this
VNL_MIN_DIFF = 0.005  # ... and not all close: dropped if on every axis some |delta| < this
VNL_ZERO_NORM = 0.01  # a degenerate normal's norm is replaced by this
VNL_DROP_LOWEST = 0.25  # the easiest 25 % of the triplets do not count


def _safe_sqrt(x):
    """sqrt(x) for x >= 0 that is exactly 0 at 0 with a zero (not infinite) gradient there."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def silog_loss_dmf(pred_inv, gt_inv, max_gt_inv=MAX_GT_INV_DEPTH, variance_weight=SILOG_VARIANCE_WEIGHT):
    """SILog of inverse depths over the valid pixels (gt_inv > 0) of the whole batch, pooled:
    g = log(1/p) - log(1/p_gt), L = 10 sqrt(Var(g) + 0.15 mean(g)^2), Var unbiased.

    pred_inv, gt_inv: B x 1 x H x W (gt 0 = none), GT clipped to <= max_gt_inv. No valid pixel:
    0 (in the graph, not NaN). One valid pixel: its variance is taken as 0 (the biased
    variance of one sample), so L = 10 sqrt(0.15) |g|. pred=c GT gives 10 sqrt(0.15) |ln c|."""
    valid = gt_inv > 0
    if not bool(valid.any()):
        return pred_inv.sum() * 0
    gt = gt_inv[valid].clamp(max=max_gt_inv)
    g = torch.log(gt) - torch.log(pred_inv[valid])  # log(1/p) - log(1/p_gt)
    variance = g.var() if g.numel() > 1 else torch.zeros_like(g.sum())
    return 10 * _safe_sqrt(variance + variance_weight * g.mean() ** 2)


def _backproject(depth, fx, fy, cx, cy):
    """depth B x H x W -> B x H x W x 3 camera points; fx ... cy: B (pixel units)."""
    _, height, width = depth.shape
    u = torch.arange(width, device=depth.device, dtype=depth.dtype)[None, None, :]
    v = torch.arange(height, device=depth.device, dtype=depth.dtype)[None, :, None]
    z = depth.abs()
    x = (u - cx[:, None, None]) * z / fx[:, None, None]
    y = (v - cy[:, None, None]) * z / fy[:, None, None]
    return torch.stack([x.expand_as(z), y.expand_as(z), depth], -1)


def _triplet_edges(points):
    """points ... x 3 (points) x 3 (xyz) -> ... x 3 (edges p12, p13, p23) x 3 (xyz)."""
    p1, p2, p3 = points.unbind(-2)
    return torch.stack([p2 - p1, p3 - p1, p3 - p2], -2)


def _vnl_triplet_mask(points):
    """The usable GT triplets (B x N): all z > 1e-4, no edge pair with |cos| > 0.867, and
    not all close (dropped if on every axis some edge has |delta| < 0.005)."""
    edges = _triplet_edges(points)
    depth_ok = (points[..., 2] > VNL_MIN_Z).all(-1)
    unit = edges / (edges.norm(dim=-1, keepdim=True) + 1e-8)
    cos = (unit[..., [0, 0, 1], :] * unit[..., [1, 2, 2], :]).sum(-1).abs()  # pairs (12,13) (12,23) (13,23)
    parallel = (cos > VNL_MAX_COS).any(-1)
    close = (edges.abs() < VNL_MIN_DIFF).any(-2).all(-1)  # some edge small on x, and on y, and on z
    return depth_ok & ~parallel & ~close


def _unit_normals(points):
    edges = _triplet_edges(points)
    normal = torch.cross(edges[..., 0, :], edges[..., 1, :], dim=-1)
    norm = normal.norm(dim=-1, keepdim=True)
    return normal / torch.where(norm == 0, torch.full_like(norm, VNL_ZERO_NORM), norm)


def virtual_normal_loss(pred_depth, gt_depth, K, sample_ratio=0.15, generator=None, reference_intrinsics=False):
    """Virtual normal loss (Yin et al.) between metric depths.

    pred_depth, gt_depth: B x 1 x H x W (gt 0 = none); K: B x 4 x 4 (or 3 x 3) pixel
    intrinsics at H x W. Three index sets of floor(ratio H W) pixels (with replacement,
    shared by the batch, drawn from `generator` on the CPU) make triplets; each is
    back-projected with its own item's fx, fy, cx, cy (reference_intrinsics: item 0's focal
    and the principal point (W // 2, H // 2), as the reference). Triplets are filtered on the
    GT (see _vnl_triplet_mask); the error of one is sum |n_gt - n_pred| of the unit normals;
    the lowest 25 % are dropped and the rest averaged. No usable triplet: 0 in the graph."""
    batch, _, height, width = gt_depth.shape
    K = K.to(gt_depth.device, gt_depth.dtype)
    if reference_intrinsics:
        fx, fy = K[:1, 0, 0].expand(batch), K[:1, 1, 1].expand(batch)
        cx = torch.full((batch,), float(width // 2), device=K.device, dtype=K.dtype)
        cy = torch.full((batch,), float(height // 2), device=K.device, dtype=K.dtype)
    else:
        fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    n = int(sample_ratio * height * width)
    index = torch.randint(0, height * width, (3, n), generator=generator).to(gt_depth.device)
    gt_points = _backproject(gt_depth[:, 0], fx, fy, cx, cy).flatten(1, 2)[:, index.T]  # B x n x 3 x 3
    pred_points = _backproject(pred_depth[:, 0], fx, fy, cx, cy).flatten(1, 2)[:, index.T]
    keep = _vnl_triplet_mask(gt_points)
    if not bool(keep.any()):
        return pred_depth.sum() * 0
    error = (_unit_normals(gt_points[keep]) - _unit_normals(pred_points[keep])).abs().sum(-1)
    error, _ = torch.sort(error)
    return error[int(error.numel() * VNL_DROP_LOWEST):].mean()


def dynamic_mf_total_loss(multi, mono, gt_inv, gt_depth, K, silog_weight=4.0, vnl_weight=1.0, sample_ratio=0.15,
                          generator=None, reference_intrinsics=False):
    """L = silog_weight sum_s [SILog(multi_s) + SILog(mono_s)] + vnl_weight sum_s [VNL(multi_s) +
    VNL(mono_s)]: 16 terms for 4 scales x 2 branches.

    multi, mono: lists of B x 1 x h_s x w_s inverse depths (scale 0 first), lower scales
    nearest-upsampled to the GT's H x W first; gt_inv, gt_depth: B x 1 x H x W sparse GT
    (0 = none); K: B x 4 x 4 at H x W. VNL compares 1 / p with gt_depth.
    -> (total, {"silog/<branch>/<s>": term, "vnl/<branch>/<s>": term})."""
    size = gt_inv.shape[-2:]
    terms = {}
    for branch, predictions in (("multi", multi), ("mono", mono)):
        for s, pred in enumerate(predictions):
            if pred.shape[-2:] != size:
                pred = torch.nn.functional.interpolate(pred, size, mode="nearest")
            terms[f"silog/{branch}/{s}"] = silog_loss_dmf(pred, gt_inv)
            terms[f"vnl/{branch}/{s}"] = virtual_normal_loss(1 / pred.clamp(min=1e-8), gt_depth, K, sample_ratio,
                                                             generator, reference_intrinsics)
    total = silog_weight * sum(v for k, v in terms.items() if k.startswith("silog/")) \
        + vnl_weight * sum(v for k, v in terms.items() if k.startswith("vnl/"))
    return total, terms


# --- one loss over the batch of every DDP process (the released code's DataParallel batch)
def processes_to_pool():
    """The number of DDP processes whose batches a pooled loss gathers (1: no DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """B_r x N rows of every process -> (sum_r B_r) x N in rank order. Backward: every process
    computed the same loss of the whole, so the gradient of its own rows is summed over the
    processes (all-reduce) and sliced: P times d loss / d rows, which DDP's mean over the P
    processes turns back into the gradient of the one loss."""

    @staticmethod
    def forward(ctx, rows, sizes):
        rank = dist.get_rank()
        padded = rows.new_zeros(max(sizes), rows.shape[1])
        padded[:rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.start, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.start + ctx.size], None


def gather_across_processes(tensors):
    """Tensors of one batch (B x ..., float32, B the same for all of them; B may differ between
    processes) -> the same tensors over the batch of all DDP processes (rank 0's samples
    first), differentiable: one all-gather forward, one all-reduce backward (see _GatherRows).
    Without DDP they come back as they are."""
    if processes_to_pool() == 1:
        return list(tensors)
    batch = tensors[0].shape[0]
    if any(t.shape[0] != batch for t in tensors):
        raise ValueError(f"gather_across_processes: batch sizes {[t.shape[0] for t in tensors]} differ")
    rows = torch.cat([t.reshape(batch, -1).float() for t in tensors], 1)
    sizes = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(processes_to_pool())]
    dist.all_gather(sizes, torch.tensor([batch], dtype=torch.int64, device=rows.device))
    gathered = _GatherRows.apply(rows, [int(n) for n in sizes])
    out, start = [], 0
    for t in tensors:
        n = t[0].numel()
        out.append(gathered[:, start:start + n].reshape(-1, *t.shape[1:]))
        start += n
    return out


def shared_generator(device="cpu"):
    """A CPU generator seeded alike in every DDP process (rank 0's draw from the global RNG,
    broadcast), so that random sampling inside a pooled loss is the same everywhere."""
    seed = torch.randint(0, 2 ** 62, (1,), dtype=torch.int64).to(device)
    if processes_to_pool() > 1:
        dist.broadcast(seed, 0)
    return torch.Generator().manual_seed(int(seed))


def dynamic_mf_global_loss(multi, mono, gt_inv, gt_depth, K, generator=None, **options):
    """dynamic_mf_total_loss over the batch of all DDP processes, as the released code's
    DataParallel scored its gathered batch of 8: SILog's mean and variance pooled over every
    valid pixel of the global batch, and VNL's triplets (one index draw shared by the whole
    batch, from `generator` or else shared_generator()) filtered, sorted and trimmed over the
    global batch. Every process gets the same loss; with DDP's gradient mean, the parameters'
    gradient is that of this one loss. Without DDP: dynamic_mf_total_loss itself."""
    if processes_to_pool() == 1:
        return dynamic_mf_total_loss(multi, mono, gt_inv, gt_depth, K, generator=generator, **options)
    n = len(multi)
    gathered = gather_across_processes(list(multi) + list(mono) + [gt_inv, gt_depth, K.float()])
    if generator is None:
        generator = shared_generator(gt_inv.device)
    return dynamic_mf_total_loss(gathered[:n], gathered[n:2 * n], *gathered[2 * n:], generator=generator, **options)
