"""The training geometry with the synthetic world's true depth and poses: warping
reproduces the target, and a static pair is fully auto-masked."""
import os

import cv2
import numpy as np
import torch

from datasets import KITTIRAWDataset
from datasets import kitti_utils
from datasets import synthetic_world as sw
from layers import BackprojectDepth, Project3D, warp
from losses import ReprojectionLoss, min_reprojection

H, W = 96, 320


def _true_pose(world, drive_dir, frame, source):
    """Target camera -> source camera, from the drive's oxts."""
    T_w_cam = kitti_utils.camera_poses_from_oxts(drive_dir, os.path.join(world.out, sw.DATE), [frame, source])
    return np.linalg.inv(T_w_cam[1]) @ T_w_cam[0]


def test_true_depth_and_pose_reproduce_the_target(world):
    folder, frame = f"{sw.DATE}/{sw.DATE}_drive_0001_sync", 5
    ds = KITTIRAWDataset(world.out, [f"{folder} {frame} l"], H, W, [0, -1, 1], 1, img_ext=".png")
    item = ds[0]
    dense = np.load(os.path.join(world.out, folder, "depth_dense", "image_02", "data", f"{frame:010d}.npy"))
    depth = cv2.resize(dense, (W, H), interpolation=cv2.INTER_NEAREST)
    sky = depth == 0
    depth = torch.from_numpy(np.where(sky, 1e4, depth)).float()[None, None]
    K, inv_K = item[("K", 0)][None], item[("inv_K", 0)][None]
    pe = ReprojectionLoss()
    target = item[("color", 0, 0)][None]
    errors, identities = [], []
    for f in (-1, 1):
        T = torch.from_numpy(_true_pose(world, os.path.join(world.out, folder), frame, frame + f)).float()[None]
        grid = Project3D(1, H, W)(BackprojectDepth(1, H, W)(depth, inv_K), K, T)
        errors.append(pe(warp(item[("color", f, 0)][None], grid), target))
        identities.append(pe(item[("color", f, 0)][None], target))
    reproj = torch.cat(errors, 1)
    identity = torch.cat(identities, 1)
    to_optimise, automask = min_reprojection(reproj, identity)
    inner = torch.zeros_like(to_optimise, dtype=torch.bool)
    inner[:, 4:-4, 8:-8] = True
    print(f"\nmin reprojection {to_optimise[inner].mean():.4f} vs identity {identity.min(1)[0][inner].mean():.4f}")
    assert to_optimise[inner].median() < 0.02
    assert reproj.min(1)[0][inner].mean() < 0.35 * identity.min(1)[0][inner].mean()
    assert automask[:, 0][inner].float().mean() > 0.6  # reprojection wins where the scene moved


def test_static_pair_is_fully_auto_masked(world):
    folder = f"{sw.DATE}/{sw.DATE}_drive_0001_sync"
    ds = KITTIRAWDataset(world.out, [f"{folder} 5 l"], H, W, [0], 1, img_ext=".png")
    target = ds[0][("color", 0, 0)][None]
    depth = torch.full((1, 1, H, W), 10.0)
    T = torch.eye(4)[None]
    T[0, 2, 3] = -1.0  # the network thinks the camera moved, but the source is the same image
    K, inv_K = ds[0][("K", 0)][None], ds[0][("inv_K", 0)][None]
    grid = Project3D(1, H, W)(BackprojectDepth(1, H, W)(depth, inv_K), K, T)
    pe = ReprojectionLoss()
    reproj = torch.cat([pe(warp(target, grid), target)] * 2, 1)
    identity = torch.cat([pe(target, target)] * 2, 1)
    _, automask = min_reprojection(reproj, identity)
    assert automask.mean() < 0.01
