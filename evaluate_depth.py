"""Evaluate depth on a split's test files, monodepth2's protocol and flags.

    python evaluate_depth.py --load_weights_folder W --eval_mono --eval_split eigen --data_path D
    python evaluate_depth.py --load_weights_folder W --eval_stereo --eval_split eigen_benchmark ...
    python evaluate_depth.py --ext_disp_to_eval disps.npy --eval_mono ...

Masks: eigen (and user splits): 1e-3 < gt < 80 inside the Garg/Eigen crop; eigen_benchmark:
gt > 0. Mono: per-image median scaling; stereo: x5.4 (0.54 m / 0.1 training units).
"""
import json
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from layers import DEPTH_METRIC_NAMES, compute_depth_errors, disp_to_depth
from options import MonodepthOptions, read_split_file, resolve_split_dir

STEREO_SCALE_FACTOR = 5.4
MIN_DEPTH, MAX_DEPTH = 1e-3, 80
# Garg/Eigen crop as fractions of the ground-truth size (153:371, 44:1197 at 375 x 1242)
EIGEN_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
TRAIN_CROP = (153, 371, 44, 1197)  # the same crop at KITTI's 375 x 1242, for depth_gt


def eigen_crop_mask(height, width):
    top, bottom, left, right = EIGEN_CROP
    mask = np.zeros((height, width), bool)
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
    return mask


def post_process_disparity(l_disp, r_disp):
    """Blend a disparity and the un-mirrored disparity of the mirrored image (N x H x W):
    the left 5 % from the mirrored pass, the right 5 % from the normal pass, mean between."""
    _, h, w = l_disp.shape
    m_disp = 0.5 * (l_disp + r_disp)
    x = np.linspace(0, 1, w)
    l_mask = np.tile(1.0 - np.clip(20 * (x - 0.05), 0, 1), (h, 1))[None]
    r_mask = l_mask[:, :, ::-1]
    return r_mask * l_disp + l_mask * r_disp + (1.0 - l_mask - r_mask) * m_disp


def batch_depth_metrics(depth_pred, depth_gt):
    """Training-time metrics (monodepth2): prediction resized to the GT, crop, clamp,
    batch-level median scaling. depth_pred B x 1 x h x w, depth_gt B x 1 x 375 x 1242."""
    gh, gw = depth_gt.shape[-2:]
    pred = torch.clamp(F.interpolate(depth_pred, [gh, gw], mode="bilinear", align_corners=False),
                       MIN_DEPTH, MAX_DEPTH).detach()
    mask = depth_gt > 0
    crop = torch.zeros_like(mask)
    top, bottom, left, right = EIGEN_CROP
    crop[:, :, int(top * gh):int(bottom * gh), int(left * gw):int(right * gw)] = True
    mask = mask & crop
    gt, pred = depth_gt[mask], pred[mask]
    if gt.numel() == 0:
        return {}
    pred = torch.clamp(pred * torch.median(gt) / torch.median(pred), MIN_DEPTH, MAX_DEPTH)
    return {f"de/{n}" if i < 4 else f"da/{n}": v.item()
            for i, (n, v) in enumerate(zip(DEPTH_METRIC_NAMES, compute_depth_errors(gt, pred)))}


def evaluate_predictions(pred_disps, gt_depths, mask_type="eigen", median_scaling=True,
                         scale_factor=1.0):
    """Scaled disparities N x h x w and ground truths -> (mean metrics dict, ratios)."""
    errors, ratios = [], []
    for i, gt in enumerate(gt_depths):
        gh, gw = gt.shape[:2]
        disp = cv2.resize(pred_disps[i].astype(np.float32), (gw, gh))
        pred = 1 / np.maximum(disp, 1e-12)
        if mask_type == "eigen":
            mask = (gt > MIN_DEPTH) & (gt < MAX_DEPTH) & eigen_crop_mask(gh, gw)
        else:
            mask = gt > 0
        p, g = pred[mask] * scale_factor, gt[mask]
        if len(g) == 0:
            continue
        if median_scaling:
            ratio = np.median(g) / np.median(p)
            ratios.append(ratio)
            p = p * ratio
        p = np.clip(p, MIN_DEPTH, MAX_DEPTH)
        errors.append([float(e) for e in compute_depth_errors(g.astype(np.float64), p.astype(np.float64))])
    if not errors:
        raise SystemExit("no ground-truth pixel in any test image: check --eval_split and gt_depths.npz")
    mean = np.array(errors).mean(0)
    return dict(zip(DEPTH_METRIC_NAMES, mean.tolist())), np.array(ratios)


def load_model_for_eval(opt, device):
    """Depth encoder and decoder from a weights folder; returns (predict, height, width, info)."""
    import networks
    folder = os.path.expanduser(opt.load_weights_folder)
    enc_path = os.path.join(folder, "encoder.pth")
    dec_path = os.path.join(folder, "depth.pth")
    for path in (enc_path, dec_path):
        if not os.path.isfile(path):
            raise SystemExit(f"--load_weights_folder {folder}: missing {os.path.basename(path)}")
    enc_state = torch.load(enc_path, map_location="cpu", weights_only=True)
    info = {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
            for k, v in enc_state.items() if not isinstance(v, torch.Tensor) or k in ("height", "width", "use_stereo")}
    num_layers = opt.num_layers
    opt_json = os.path.join(os.path.dirname(os.path.normpath(folder)), "opt.json")
    if os.path.isfile(opt_json):
        with open(opt_json) as f:
            num_layers = json.load(f).get("num_layers", num_layers)
    encoder = networks.ResnetEncoder(num_layers, False)
    decoder = networks.DepthDecoder(encoder.num_ch_enc, range(4))
    encoder.load_state_dict({k: v for k, v in enc_state.items() if k in encoder.state_dict()})
    decoder.load_state_dict(torch.load(dec_path, map_location="cpu", weights_only=True))
    encoder.to(device).eval()
    decoder.to(device).eval()

    def predict(color):
        return decoder(encoder(color))[("disp", 0)]
    return predict, int(info.get("height", opt.height)), int(info.get("width", opt.width)), info


def check_scaling_flags(opt, info):
    if opt.eval_mono == opt.eval_stereo:
        raise SystemExit("choose exactly one of --eval_mono (median scaling) or --eval_stereo (x5.4)")
    use_stereo = info.get("use_stereo")
    if use_stereo is None:
        return
    if opt.eval_stereo and not use_stereo:
        raise SystemExit("this model was trained without stereo (encoder.pth: use_stereo=False), "
                         "so its depth has no metric scale: evaluate it with --eval_mono")
    if opt.eval_mono and use_stereo:
        print("-> note: this model was trained with stereo (metric scale); papers report it with "
              "--eval_stereo. Median scaling is applied as asked.")


def predict_disparities(opt, filenames, data_path, predict, height, width, device):
    from datasets import KITTIRAWDataset
    dataset = KITTIRAWDataset(data_path, filenames, height, width, [0], 4, is_train=False,
                              img_ext=".png" if opt.png else ".jpg", split_file="test_files.txt")
    dataset.load_depth = False
    loader = DataLoader(dataset, opt.batch_size, shuffle=False, num_workers=min(opt.num_workers, 4),
                        pin_memory=device.type == "cuda", drop_last=False)
    pred_disps = []
    with torch.no_grad():
        for data in loader:
            color = data[("color", 0, 0)].to(device)
            if opt.post_process:
                color = torch.cat([color, torch.flip(color, [3])], 0)
            disp, _ = disp_to_depth(predict(color), opt.min_depth, opt.max_depth)
            disp = disp.cpu()[:, 0].numpy()
            if opt.post_process:
                n = disp.shape[0] // 2
                disp = post_process_disparity(disp[:n], disp[n:, :, ::-1])
            pred_disps.append(disp)
    return np.concatenate(pred_disps)


def print_table(metrics):
    print("\n  " + ("{:>8} | " * 7).format(*DEPTH_METRIC_NAMES))
    print(("&{: 8.3f}  " * 7).format(*[metrics[n] for n in DEPTH_METRIC_NAMES]) + "\\\\")


def evaluate(opt):
    device = torch.device("cuda" if torch.cuda.is_available() and not opt.no_cuda else "cpu")
    split_dir = resolve_split_dir(opt.eval_split)
    split_name = os.path.basename(os.path.normpath(split_dir))
    filenames = read_split_file(os.path.join(split_dir, "test_files.txt"))
    info = {}
    if opt.ext_disp_to_eval is None:
        if not opt.load_weights_folder:
            raise SystemExit("give --load_weights_folder (or --ext_disp_to_eval)")
        predict, height, width, info = load_model_for_eval(opt, device)
        check_scaling_flags(opt, info)
        print(f"-> Computing predictions with size {width}x{height}")
        pred_disps = predict_disparities(opt, filenames, opt.data_path, predict, height, width, device)
    else:
        check_scaling_flags(opt, info)
        print(f"-> Loading predictions from {opt.ext_disp_to_eval}")
        pred_disps = np.load(opt.ext_disp_to_eval)
        if opt.eval_eigen_to_benchmark:
            ids = np.load(os.path.join(resolve_split_dir("benchmark"), "eigen_to_benchmark_ids.npy"))
            pred_disps = pred_disps[ids]
    if opt.save_pred_disps:
        out_dir = opt.eval_out_dir or opt.load_weights_folder or "."
        path = os.path.join(out_dir, f"disps_{split_name}_split.npy")
        np.save(path, pred_disps)
        print(f"-> Saved predicted disparities to {path}")
    if opt.no_eval:
        print("-> Evaluation disabled. Done.")
        return None
    if split_name == "benchmark":
        out_dir = os.path.join(opt.eval_out_dir or opt.load_weights_folder or ".", "benchmark_predictions")
        os.makedirs(out_dir, exist_ok=True)
        for i, disp in enumerate(pred_disps):
            depth = STEREO_SCALE_FACTOR / cv2.resize(disp, (1216, 352))
            depth = np.clip(depth, 0, 80)
            cv2.imwrite(os.path.join(out_dir, f"{i:010d}.png"), np.uint16(depth * 256))
        print(f"-> No ground truth for the benchmark split; predictions saved to {out_dir}")
        return None
    gt_path = os.path.join(split_dir, "gt_depths.npz")
    if not os.path.isfile(gt_path):
        raise SystemExit(f"{gt_path} not found: run python export_gt_depth.py --data_path "
                         f"{opt.data_path} --split {opt.eval_split}")
    gt_depths = np.load(gt_path, allow_pickle=True, encoding="latin1")["data"]
    if len(gt_depths) != len(pred_disps):
        raise SystemExit(f"{len(pred_disps)} predictions but {len(gt_depths)} ground-truth maps in "
                         f"{gt_path}: re-export it for this split")
    median_scaling = not opt.disable_median_scaling
    scale = opt.pred_depth_scale_factor
    if opt.eval_stereo:
        print(f"   Stereo evaluation - disabling median scaling, scaling by {STEREO_SCALE_FACTOR}")
        median_scaling, scale = False, STEREO_SCALE_FACTOR
    else:
        print("   Mono evaluation - using median scaling")
    mask_type = "gt" if split_name in ("eigen_benchmark",) else "eigen"
    metrics, ratios = evaluate_predictions(pred_disps, gt_depths, mask_type, median_scaling, scale)
    if median_scaling and len(ratios):
        med = np.median(ratios)
        print(f" Scaling ratios | med: {med:0.3f} | std: {np.std(ratios / med):0.3f}")
    print_table(metrics)
    if opt.output_json:
        with open(opt.output_json, "w") as f:
            json.dump({"split": split_name, "num_images": int(len(pred_disps)), **metrics}, f, indent=1)
    print("\n-> Done!")
    return metrics


if __name__ == "__main__":
    evaluate(MonodepthOptions().parse())
    sys.exit(0)
