"""Each paper's mechanism measured where it acts, against the synthetic world's true depth.

    python benchmarks/diagnostics.py --run RUN_DIR --data_path WORLD [--json out.json]

RUN_DIR is a training run (its models/weights_best is read; SRD also reads the weights of
the epoch before, its teacher). The test items are built as the run's training items
(frames, targets) without augmentation, the method runs its training forward pass in eval
mode, and the numbers below are computed on its outputs against the world's exact rendered
depth (depth_dense/) and moving-object masks (mvobj_mask/). Every depth is compared after
its own per-image median scaling, as the evaluation does.

- every method: abs_rel on static and on moving-object pixels; the spread of the per-image
  scale (std / mean of the median ratios: a scale-consistent model has a small one) and,
  where there is a pose network, its translation per frame in metres after that scale (the
  world moves the camera 0.7-1.3 m per frame);
- SRD: precision of the distillation mask (share of kept pixels where the teacher's depth
  error is below the student's) against a random mask of the same size, for the best epoch
  and its teacher (the epoch before), or, when the best epoch is 0 (no teacher yet), for the
  last epoch and its teacher;
- BDEdepth (and every single-frame model, for comparison): abs_rel on a 1.6x centre zoom of
  each test frame and on the outer 10 % of columns;
- ManyDepth / MISM: the multi-frame output and its own single-frame network on static and
  on moving pixels, and the accuracy of the cost volume's best depth;
- Depth Hints: share of pixels where the hint wins and the hint's accuracy there;
- every method with a pose network and Monodepth2's photometric loss (Monodepth2 mono, SRD,
  BDEdepth; ManyDepth's multi-frame output, and its single-frame network as single_*; not
  MISM, whose networks the diagnostics run one by one), where the world has its camera poses
  (odometry/poses/): that loss (SSIM + L1, minimum over frames -1 and +1, auto-
  masked, scale 0) at the network's depth and pose, at the world's true depth and pose, at the
  true depth with the network's pose, at the network's depth with the true pose (each truth
  brought to the network's scale by the image's median ratio), and for the unwarped frames.
  A network whose loss is far above the truth's has not reached the objective's minimum (an
  optimisation or budget problem); one below it would mean the objective prefers a wrong
  geometry on this world.
"""
import argparse
import functools
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIN_GT, MAX_GT = 0.1, 80.0
VERSION = 3  # of what diagnose() measures (2: the photometric loss at the true geometry; 3: for ManyDepth's
# two outputs too); older files are measured again
ZOOM = 1.6
BORDER = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a training run folder (models/weights_best inside)")
    p.add_argument("--data_path", required=True, help="the world the run was trained on")
    p.add_argument("--weights", help="a weight folder other than RUN/models/weights_best")
    p.add_argument("--split", default="synthetic", help="split under <data_path>/splits/ (test_files.txt)")
    p.add_argument("--odom_test_seqs", nargs="+", help="odometry rows: the test sequences")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--no_cuda", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------- helpers
def median_scaled(depth, gt, valid):
    """depth scaled by median(gt) / median(depth) over `valid` (per image, N x H x W arrays)."""
    out = np.zeros_like(depth)
    ratios = []
    for i in range(len(depth)):
        m = valid[i]
        r = np.median(gt[i][m]) / np.median(depth[i][m]) if m.any() else np.nan
        ratios.append(r)
        out[i] = depth[i] * r
    return out, np.array(ratios)


def abs_rel(pred, gt, mask):
    if not mask.any():
        return None
    return float(np.mean(np.abs(np.clip(pred[mask], 1e-3, MAX_GT) - gt[mask]) / gt[mask]))


class TestItems:
    """The run's test items (training-style, not augmented) with the world's exact depth and
    moving-object masks at the network size."""

    def __init__(self, method, data_path, split, device):
        from options import read_split_file, resolve_split_dir
        from trainer import build_dataset
        opt = method.opt
        opt.fast_loader, opt.cache_dir, opt.decode_on_device, opt.data_path = False, None, False, data_path
        split_dir = resolve_split_dir(split, data_path)
        self.lines = read_split_file(os.path.join(split_dir, "test_files.txt"))
        self.dataset = build_dataset(opt, self.lines, False, os.path.join(split_dir, "test_files.txt"))
        self.data_path, self.opt, self.device = data_path, opt, device

    def exact(self, line):
        folder, frame, side = line.split()
        camera = {"l": 2, "r": 3}[side]
        gt = np.load(os.path.join(self.data_path, folder, "depth_dense", f"image_0{camera}", "data",
                                  f"{int(frame):010d}.npy")).astype(np.float32)
        gt = cv2_resize(gt, self.opt.width, self.opt.height)
        mask_path = os.path.join(self.data_path, folder, "mvobj_mask", f"image_0{camera}", "data",
                                 f"{int(frame):010d}.png")
        moving = np.zeros_like(gt, bool)
        if os.path.isfile(mask_path):
            import cv2
            moving = cv2_resize(cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE), self.opt.width, self.opt.height) > 127
        return gt, moving

    def batches(self, batch_size=4):
        from torch.utils.data import DataLoader
        from datasets.fast_loader import collate_items
        loader = DataLoader(self.dataset, batch_size, shuffle=False, num_workers=0, collate_fn=collate_items)
        start = 0
        for inputs in loader:
            n = inputs[("color", 0, 0)].shape[0]
            lines = self.lines[start:start + n]
            start += n
            gts, moving = zip(*(self.exact(line) for line in lines))
            inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
            yield inputs, np.stack(gts), np.stack(moving), lines


def cv2_resize(image, width, height):
    import cv2
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)


def to_np(depth):
    return depth.detach().float().cpu()[:, 0].numpy()


# ---------------------------------------------------------------------------------- per method
def region_errors(name, depth, gt, moving, acc):
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    scaled, ratios = median_scaled(depth, gt, valid)
    for region, mask in (("static", valid & ~moving), ("moving", valid & moving)):
        for i in range(len(depth)):
            value = abs_rel(scaled[i], gt[i], mask[i])
            if value is not None:
                acc.setdefault(f"{name}abs_rel_{region}", []).append(value)
    acc.setdefault(f"{name}ratios", []).extend(ratios.tolist())
    return scaled, ratios


def zoom_and_border(method, inputs, gt, acc):
    """abs_rel on a centre zoom of each frame (re-predicted) and on the outer columns."""
    image = inputs[("color", 0, 0)]
    H, W = image.shape[2:]
    h, w = round(H / ZOOM), round(W / ZOOM)
    top, left = (H - h) // 2, (W - w) // 2
    zoomed = F.interpolate(image[:, :, top:top + h, left:left + w], (H, W), mode="bilinear", align_corners=False)
    batch = dict(inputs)
    batch[("color", 0, 0)] = zoomed
    depth = to_np(method.predict(batch)["depth"])
    gt_zoom = np.stack([cv2_resize(g[top:top + h, left:left + w], W, H) for g in gt])
    valid = (gt_zoom > MIN_GT) & (gt_zoom < MAX_GT)
    scaled, _ = median_scaled(depth, gt_zoom, valid)
    for i in range(len(depth)):
        value = abs_rel(scaled[i], gt_zoom[i], valid[i])
        if value is not None:
            acc.setdefault("abs_rel_zoom_1.6x", []).append(value)
    depth = to_np(method.predict(inputs)["depth"])
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    scaled, _ = median_scaled(depth, gt, valid)
    border = np.zeros_like(valid)
    k = max(int(BORDER * W), 1)
    border[:, :, :k] = border[:, :, -k:] = True
    for i in range(len(depth)):
        for name, mask in (("abs_rel_border", valid[i] & border[i]), ("abs_rel_centre", valid[i] & ~border[i])):
            value = abs_rel(scaled[i], gt[i], mask)
            if value is not None:
                acc.setdefault(name, []).append(value)


def pose_metres(method, inputs, ratios, acc):
    """The pose network's translation between frames 0 and +1, in metres after the image's scale."""
    if not hasattr(method, "pose_between") or ("color", 1, 0) not in inputs:
        return
    try:
        _, t = method.pose_between(inputs[("color", 0, 0)], inputs[("color", 1, 0)])
    except (KeyError, AttributeError, TypeError):
        return
    norms = t.reshape(t.shape[0], -1)[:, :3].norm(dim=1).cpu().numpy()
    acc.setdefault("pose_metres_per_frame", []).extend((norms * ratios).tolist())


def srd_precision(method, teacher, inputs, outputs, gt, acc, generator):
    """Precision of SRD's distillation mask against the world's depth: among kept pixels, the
    share where the teacher's (median-scaled) depth error is below the student's; a random
    mask of the same size keeps the share over all pixels."""
    from methods.srd import distillation_mask
    opt = method.opt
    frames = torch.cat([inputs[("color", 0, 0)], inputs[("color", 1, 0)]])
    with torch.no_grad():
        disp = teacher["depth"](teacher["encoder"](frames))[("disp", 0)].float()
        from layers import disp_to_depth
        depth_t = disp_to_depth(F.interpolate(disp, [opt.height, opt.width], mode="bilinear", align_corners=False),
                                opt.min_depth, opt.max_depth)[1]
    B = inputs[("color", 0, 0)].shape[0]
    T = outputs[("cam_T_cam", 0, 1)].float()
    mask = distillation_mask(depth_t[:B], depth_t[B:], T, inputs[("K", 0)], inputs[("inv_K", 0)],
                             opt.distill_filter_factor)
    mask = mask.cpu()[:, 0].numpy() > 0.5
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    student, _ = median_scaled(to_np(outputs[("depth", 0, 0)]), gt, valid)
    teacher_d, _ = median_scaled(to_np(depth_t[:B]), gt, valid)
    better = np.abs(teacher_d - gt) < np.abs(student - gt)
    kept = mask & valid
    random = (torch.rand(mask.shape, generator=generator).numpy() < kept.sum() / max(valid.sum(), 1)) & valid
    acc.setdefault("srd_kept", []).append(int(kept.sum()))
    acc.setdefault("srd_valid", []).append(int(valid.sum()))
    acc.setdefault("srd_teacher_better_kept", []).append(int((better & kept).sum()))
    acc.setdefault("srd_teacher_better_all", []).append(int((better & valid).sum()))
    acc.setdefault("srd_teacher_better_random", []).append(int((better & random).sum()))
    acc.setdefault("srd_random_kept", []).append(int(random.sum()))


def multi_frame(method, inputs, outputs, gt, moving, acc):
    """A multi-frame method's two outputs on static and moving pixels, and its cost volume."""
    prediction = method.predict(inputs)
    _, ratios = region_errors("multi_", to_np(prediction["depth"]), gt, moving, acc)
    single = (prediction.get("variants") or {}).get("single_frame")
    if single is not None:
        region_errors("single_", to_np(single), gt, moving, acc)
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    confident = None
    if "lowest_cost" in outputs:  # ManyDepth: the cost volume's best plane (inverse depth, 1/4 size)
        best = 1 / outputs["lowest_cost"].float().clamp(min=1e-7)
        confident = outputs.get("consistency_mask")
    elif hasattr(method, "run_mnet"):  # MISM: MNet's most likely hypothesis around SNet's prior
        T = method.pose(inputs, method.match_id, key="color")
        _, prior = method.snet_depth(inputs[("color", 0, 0)])
        m = method.run_mnet(inputs, prior, T, key="color")
        hypotheses = m["hypotheses"].expand_as(m["prob"])
        best = torch.gather(hypotheses, 1, m["prob"].argmax(1, keepdim=True))
    else:
        return ratios
    best = F.interpolate(best.float(), gt.shape[1:], mode="nearest")
    scaled, _ = median_scaled(to_np(best), gt, valid)
    conf = None if confident is None else F.interpolate(confident.float(), gt.shape[1:], mode="nearest").cpu()[:, 0].numpy() > 0.5
    for i in range(len(gt)):
        for region, mask in (("static", valid[i] & ~moving[i]), ("moving", valid[i] & moving[i])):
            value = abs_rel(scaled[i], gt[i], mask)
            if value is not None:
                acc.setdefault(f"cost_volume_argmin_abs_rel_{region}", []).append(value)
            if conf is not None:
                acc.setdefault(f"cost_volume_confident_share_{region}", []).append(
                    float(conf[i][mask].mean()) if mask.any() else None)
    return ratios


def depth_hints(method, inputs, outputs, gt, acc):
    """Share of pixels where the hint wins, and the hint's accuracy there against the world."""
    method.compute_losses(inputs, outputs)
    won = outputs[("depth_hint_mask", 0)].cpu()[:, 0].numpy() > 0.5
    hint = inputs["depth_hint"].float().cpu()[:, 0].numpy()
    has_hint = inputs["depth_hint_mask"].cpu()[:, 0].numpy() > 0.5
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    from evaluation.kitti import STEREO_SCALE_FACTOR
    pred = to_np(outputs[("depth", 0, 0)]) * STEREO_SCALE_FACTOR
    hint_m = hint * STEREO_SCALE_FACTOR
    acc.setdefault("hint_won_share", []).append(float(won[valid].mean()))
    acc.setdefault("hint_available_share", []).append(float(has_hint[valid].mean()))
    for name, mask in (("hint_abs_rel_where_won", won & valid & has_hint),
                       ("prediction_abs_rel_where_hint_won", won & valid),
                       ("hint_abs_rel_where_available", has_hint & valid)):
        source = pred if name.startswith("prediction") else hint_m
        value = abs_rel(source, gt, mask)
        if value is not None:
            acc.setdefault(name, []).append(value)


@functools.lru_cache(maxsize=None)
def drive_poses(path):
    """A drive's odometry poses (N x 3 x 4), read once per file for all its test lines."""
    return np.loadtxt(path).reshape(-1, 3, 4)


def true_poses(data_path, line, frames):
    """cam_T_cam (frame 0 -> f) of a test line's camera from the world's odometry poses, for
    each f in frames, or None where the world has no poses for its drive."""
    from synthetic_world.constants import CAM2_X, CAM3_X
    folder, frame, side = line.split()
    try:
        seq = int(folder.rsplit("_drive_", 1)[1][:4]) - 1
    except (IndexError, ValueError):
        return None
    path = os.path.join(data_path, "odometry", "poses", f"{seq:02d}.txt")
    if not os.path.isfile(path):
        return None
    rows = drive_poses(path)
    offset = np.eye(4)
    offset[0, 3] = CAM2_X if side == "l" else CAM3_X
    def camera_to_world(i):
        T = np.eye(4)
        T[:3] = rows[i]
        return T @ offset
    i = int(frame)
    if min(i + f for f in frames) < 0 or max(i + f for f in frames) >= len(rows):
        return None
    return {f: np.linalg.inv(camera_to_world(i + f)) @ camera_to_world(i) for f in frames}


def min_photometric(method, inputs, depth, poses):
    """Monodepth2's per-pixel loss at scale 0 (minimum over the sources and the unwarped
    frames, without the auto-mask's noise) for `depth` B x 1 x H x W and `poses` {f: B x 4 x 4}."""
    from layers import BackprojectDepth, Project3D, warp
    B, _, H, W = depth.shape
    points = BackprojectDepth(B, H, W).to(depth.device)(depth, inputs[("inv_K", 0)])
    project = Project3D(B, H, W)
    target = inputs[("color", 0, 0)]
    errors = [method.reprojection(warp(inputs[("color", f, 0)], project(points, inputs[("K", 0)], T)), target)
              for f, T in poses.items()]
    identity = [method.reprojection(inputs[("color", f, 0)], target) for f in poses]
    return torch.cat(errors + identity, 1).min(1)[0], torch.cat(identity, 1).min(1)[0]


def photometric_at_truth(method, inputs, outputs, gt, lines, data_path, acc, key=("depth", 0, 0), prefix=""):
    """The photometric loss at the network's geometry (its depth outputs[key]) against the
    world's true geometry."""
    frames = [f for f in (-1, 1) if ("cam_T_cam", 0, f) in outputs and ("color", f, 0) in inputs]
    if len(frames) < 2 or not hasattr(method, "reprojection") or key not in outputs:
        return
    truths = [true_poses(data_path, line, frames) for line in lines]
    if any(t is None for t in truths):
        return
    device = inputs[("color", 0, 0)].device
    depth = outputs[key].float()
    true_depth = torch.from_numpy(np.where(gt > 0, gt, 1000.0)).float()[:, None].to(device)  # sky: far
    valid = (gt > MIN_GT) & (gt < MAX_GT)
    _, ratios = median_scaled(to_np(depth), gt, valid)
    ratio = torch.from_numpy(ratios).float().to(device).view(-1, 1, 1, 1)
    true_pose = {f: torch.from_numpy(np.stack([t[f] for t in truths])).float().to(device) for f in frames}
    pose = {f: outputs[("cam_T_cam", 0, f)].float() for f in frames}
    pose_in_network_units = {}
    for f, T in true_pose.items():
        T = T.clone()
        T[:, :3, 3] /= ratio.view(-1, 1)
        pose_in_network_units[f] = T
    cases = {"prediction": (depth, pose), "truth": (true_depth, true_pose),
             "true_depth": (true_depth / ratio, pose), "true_pose": (depth, pose_in_network_units)}
    for name, (d, T) in cases.items():
        loss, identity = min_photometric(method, inputs, d, T)
        acc.setdefault(f"{prefix}photometric_{name}", []).extend(loss.mean((1, 2)).tolist())
    acc.setdefault(f"{prefix}photometric_identity", []).extend(identity.mean((1, 2)).tolist())


# ---------------------------------------------------------------------------------- main
def srd_pair(run_dir, best_epoch, device):
    """(student epoch, its method or None for the weights already loaded, its teacher's networks)
    for the mask-precision diagnostic: the best epoch and the one before it; where the best
    epoch had no teacher (epoch 0), the last epoch whose predecessor's weights are kept (its
    distillation ran with that teacher). (None, None, None) where there is no such pair."""
    from methods import load_for_inference
    models = os.path.join(run_dir, "models")
    epochs = sorted(int(d[len("weights_"):]) for d in os.listdir(models)
                    if d.startswith("weights_") and d[len("weights_"):].isdigit())
    epoch = srd_student_epoch(epochs, best_epoch)
    if epoch is None:
        return None, None, None
    student = None if epoch == best_epoch else \
        load_for_inference(os.path.join(models, f"weights_{epoch}"), device, networks="all")
    return epoch, student, load_teacher(run_dir, epoch, device)


def srd_student_epoch(epochs, best_epoch):
    """The student epoch of srd_pair among the kept weight folders' `epochs`."""
    if best_epoch is not None and best_epoch >= 1 and best_epoch - 1 in epochs:
        return best_epoch
    distilled = [e for e in epochs if e >= 1 and e - 1 in epochs]
    return distilled[-1] if distilled else None


def load_teacher(run_dir, best_epoch, device):
    from methods import load_for_inference
    folder = os.path.join(run_dir, "models", f"weights_{best_epoch - 1}")
    if best_epoch < 1 or not os.path.isdir(folder):
        return None
    teacher = load_for_inference(folder, device)
    return teacher.models


def summarise(acc):
    out = {}
    for k, v in acc.items():
        v = [x for x in v if x is not None]
        if not v or k.startswith("srd_"):
            continue
        if k.endswith("ratios"):
            arr = np.array(v)
            out[f"{k[:-len('ratios')]}scale_spread"] = float(arr.std() / arr.mean())
            continue
        out[k] = float(np.mean(v))
    if "srd_kept" in acc:
        kept, valid = sum(acc["srd_kept"]), sum(acc["srd_valid"])
        out["srd_mask_kept_share"] = kept / max(valid, 1)
        out["srd_mask_precision"] = sum(acc["srd_teacher_better_kept"]) / max(kept, 1)
        out["srd_random_mask_precision"] = sum(acc["srd_teacher_better_random"]) / max(sum(acc["srd_random_kept"]), 1)
        out["srd_teacher_better_share"] = sum(acc["srd_teacher_better_all"]) / max(valid, 1)
    return out


def diagnose(args):
    from methods import load_for_inference
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    weights = args.weights or os.path.join(args.run, "models", "weights_best")
    if not args.weights and not os.path.isdir(weights):  # a run that never validated
        weights = os.path.realpath(os.path.join(args.run, "models", "last"))
    from methods.base import folder_options
    name = (folder_options(weights) or {}).get("method")
    # MISM's student holds its frozen teacher, which only training rebuilds: its inference networks
    # (SNet, pose, MNet) are all the diagnostics read
    method = load_for_inference(weights, device, networks=None if name == "mism_student" else "all")
    name = method.opt.method
    out = {"method": name, "weights": weights, "diagnostics_version": VERSION}
    if name == "dynamic_mf":  # supervised, metric: its evaluation has the region tables; here its fusion gain
        model = method.models["model"]
        gamma = [float(p.detach()) for n, p in model.named_parameters() if n.endswith("gamma")]
        out.update({"ccf_gamma": gamma[0]} if gamma else {})
        return out
    items = TestItems(method, args.data_path, args.split, device)
    best_epoch = None
    best = os.path.join(args.run, "models", "best.json")
    if os.path.isfile(best):
        with open(best) as f:
            best_epoch = json.load(f).get("epoch")
    student_epoch, student, teacher = srd_pair(args.run, best_epoch, device) if name == "srd" else (None, None, None)
    generator = torch.Generator().manual_seed(0)
    acc = {}
    multi = name in ("manydepth", "mism_teacher", "mism_student")
    with torch.no_grad():
        for inputs, gt, moving, lines in items.batches():
            outputs = {} if name.startswith("mism") else method(inputs)  # MISM: its networks are run below
            if multi:
                ratios = multi_frame(method, inputs, outputs, gt, moving, acc)
                # ManyDepth: its multi-frame output and its single-frame network under the same loss
                photometric_at_truth(method, inputs, outputs, gt, lines, args.data_path, acc)
                photometric_at_truth(method, inputs, outputs, gt, lines, args.data_path, acc,
                                     key=("mono_depth", 0, 0), prefix="single_")
            else:
                _, ratios = region_errors("", to_np(outputs[("depth", 0, 0)]), gt, moving, acc)
                zoom_and_border(method, inputs, gt, acc)
                photometric_at_truth(method, inputs, outputs, gt, lines, args.data_path, acc)
            pose_metres(method, inputs, ratios, acc)
            if teacher is not None and student is None:
                srd_precision(method, teacher, inputs, outputs, gt, acc, generator)
            elif teacher is not None:  # the best epoch had no teacher: a distilled epoch's pair
                srd_precision(student, teacher, inputs, student(inputs), gt, acc, generator)
            if name == "depth_hints":
                depth_hints(method, inputs, outputs, gt, acc)
    out.update(summarise(acc))
    if name == "srd":
        out["srd_student_epoch"] = student_epoch
        out["srd_teacher_epoch"] = None if teacher is None else student_epoch - 1
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    out = diagnose(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:  # written whole or not at all: a comparison treats the file as a finished step
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
