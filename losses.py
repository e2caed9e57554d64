"""Photometric and regularisation losses (monodepth2), as small functions and modules."""
import torch
import torch.nn as nn

from layers import SSIM, get_smooth_loss

SSIM_WEIGHT = 0.85  # pe = 0.85 SSIM + 0.15 L1
IDENTITY_NOISE = 1e-5  # breaks ties between identical identity and reprojection errors


class ReprojectionLoss(nn.Module):
    """pe(pred, target): B x 1 x H x W per-pixel photometric error."""

    def __init__(self, no_ssim=False):
        super().__init__()
        self.ssim = None if no_ssim else SSIM()

    def forward(self, pred, target):
        l1 = torch.abs(target - pred).mean(1, True)
        if self.ssim is None:
            return l1
        return SSIM_WEIGHT * self.ssim(pred, target).mean(1, True) + (1 - SSIM_WEIGHT) * l1


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
