"""A random batch in monodepth2's format, for method tests that need no data."""
import numpy as np
import torch

from datasets.kitti_dataset import KITTI_K


def fake_batch(opt, b=2):
    inputs = {}
    for f in opt.frame_ids:
        for s in range(4):
            x = torch.rand(b, 3, opt.height // 2 ** s, opt.width // 2 ** s)
            inputs[("color", f, s)] = x
            inputs[("color_aug", f, s)] = x
    for s in range(4):
        K = KITTI_K.copy()
        K[0] *= opt.width // 2 ** s
        K[1] *= opt.height // 2 ** s
        inputs[("K", s)] = torch.from_numpy(K)[None].repeat(b, 1, 1)
        inputs[("inv_K", s)] = torch.from_numpy(np.linalg.pinv(K))[None].repeat(b, 1, 1)
    T = torch.eye(4)[None].repeat(b, 1, 1)
    T[:, 0, 3] = -0.1
    inputs["stereo_T"] = T
    return inputs
