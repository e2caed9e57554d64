"""The seven standard depth metrics."""
import numpy as np
import torch

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def compute_depth_errors(gt, pred, log10=False):
    """abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3 between 1-D tensors (or arrays) gt and
    pred. log10: rmse_log in log10 units (the Make3D protocol)."""
    lib = torch if isinstance(gt, torch.Tensor) else np
    thresh = lib.maximum(gt / pred, pred / gt)
    a1 = (thresh < 1.25).float().mean() if lib is torch else (thresh < 1.25).mean()
    a2 = (thresh < 1.25 ** 2).float().mean() if lib is torch else (thresh < 1.25 ** 2).mean()
    a3 = (thresh < 1.25 ** 3).float().mean() if lib is torch else (thresh < 1.25 ** 3).mean()
    rmse = lib.sqrt(((gt - pred) ** 2).mean())
    log = lib.log10 if log10 else lib.log
    rmse_log = lib.sqrt(((log(gt) - log(pred)) ** 2).mean())
    abs_rel = (lib.abs(gt - pred) / gt).mean()
    sq_rel = (((gt - pred) ** 2) / gt).mean()
    return abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3
