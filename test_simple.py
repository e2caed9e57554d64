"""Predict depth for an image or a folder of images.

    python test_simple.py --image_path assets/test_image.jpg --model_name mono+stereo_640x192
    python test_simple.py --image_path assets/test_image.jpg --load_weights_folder W
    python test_simple.py --image_path DIR --ext png --load_weights_folder W --save_npy --output_dir OUT
    python test_simple.py --image_path FRAME --source_image_path PREVIOUS --load_weights_folder W
    python test_simple.py --image_path ODOM/sequences/07 --load_weights_folder W     (dynamic_mf)
    python test_simple.py --image_path DIR --ext png --load_weights_folder W --metric_from_camera_height 1.65
    python test_simple.py --image_path IMG --load_weights_folder W --save_pointcloud

A multi-frame model (ManyDepth, MISM) reads its other frames too: in a folder, the
neighbours in name order (the first image has no previous frame: the model's missing-frame
policy applies, ManyDepth runs single-frame there); for one image, --source_image_path
gives the previous frame. K: --intrinsics_json_path (normalised 3 x 3, as ManyDepth's), else
KITTI's average intrinsics. The dynamic-scene model (--method dynamic_mf) also needs the
poses of its frames: give it a KITTI odometry sequence (ODOM/sequences/NN, with calib.txt
and ODOM/poses_dvso/NN.txt); its keyframes 5 .. N-6 are predicted.

The model is rebuilt from the weight folder alone (opt.json, or a monodepth2 folder), or
is a released model fetched by name (model_zoo.py). Writes <name>_disp.jpeg (magma,
95th-percentile normalisation) beside each image (or in --output_dir), and with
--save_npy <name>_disp.npy (scaled disparity at network resolution, 1 x 1 x h x w) or, with
--pred_metric_depth, <name>_depth.npy (metres: 5.4 x depth for stereo-trained models, the
depth itself for metric ones such as dynamic_mf).

--metric_from_camera_height H scales any model's depth, a monocular one's included, so that
the road plane fitted in the lower image (metric_scale.py: RANSAC with K) lies H metres below
the camera; it prints each image's scale and the fit's confidence and writes
<name>_depth.npy in metres. --save_pointcloud writes <name>_pointcloud.ply (one coloured
point per pixel of the network's input, camera coordinates; metres where the scale is known,
else the model's units, said in the output and the file's header) and <name>_pointcloud.png
(bird's-eye and oblique views). K for both: --intrinsics_json_path, else KITTI's average.
"""
import argparse
import glob
import os
import sys

import numpy as np
import PIL.Image as pil
import torch
import torch.nn.functional as F
from torchvision import transforms
from tqdm import tqdm

from evaluation import STEREO_SCALE_FACTOR
from utils import colorize_disparity

OUTPUT_SUFFIXES = ("_disp.jpg", "_disp.jpeg", "_pointcloud.png")  # written here; never read back as inputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="single-image (or folder) depth prediction",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from model_zoo import RELEASED
    p.add_argument("--image_path", required=True, help="an image or a folder of images")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--load_weights_folder", help="a weights_N folder of a trained model")
    model.add_argument("--model_name", help="a released model, downloaded on first use: "
                       + ", ".join(sorted(RELEASED)))
    p.add_argument("--output_dir", help="write the outputs here (default: beside each image)")
    p.add_argument("--ext", default="jpg", help="image extension to search for in a folder")
    p.add_argument("--num_layers", type=int, help="ResNet depth of a monodepth2 folder without opt.json "
                   "(default: read from encoder.pth)")
    p.add_argument("--save_npy", action="store_true", help="also write the disparity as .npy")
    p.add_argument("--pred_metric_depth", action="store_true",
                   help="write metric depth (x5.4 for stereo-trained models; metric models as they are) as "
                        "<name>_depth.npy")
    p.add_argument("--source_image_path", help="multi-frame models: the other frame of --image_path (one image; the "
                   "previous one, or the next one for a MISM model matching with --matching_ids 0 1)")
    p.add_argument("--metric_from_camera_height", type=float, metavar="H",
                   help="metric depth for any model, a monocular one too: scale its depth so that the road plane "
                   "fitted (RANSAC, with K) in the lower 30%% of the image lies H metres below the camera (KITTI, "
                   "the synthetic world: 1.65); prints each image's scale and confidence, writes <name>_depth.npy")
    p.add_argument("--save_pointcloud", action="store_true",
                   help="write <name>_pointcloud.ply (a coloured point per pixel at the network size, camera "
                   "coordinates: metres where the scale is known, else the model's units) and <name>_pointcloud.png "
                   "(bird's-eye and oblique views)")
    p.add_argument("--ply_ascii", action="store_true", help="--save_pointcloud: ASCII .ply instead of binary")
    p.add_argument("--intrinsics_json_path", help="a JSON normalised 3 x 3 K (row 0 divided by the width, row 1 by "
                   "the height) for multi-frame models, --metric_from_camera_height and --save_pointcloud; default "
                   "KITTI's")
    p.add_argument("--batch_size", type=int, default=8, help="images per forward pass")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    args, unknown = p.parse_known_args(argv)
    from evaluate_depth import method_inference_options
    args.method_overrides, unknown = method_inference_options(args.load_weights_folder, unknown)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (a method's own inference options, e.g. "
                "--eval_teacher, --single_frame, are accepted for the methods that have them)")
    if args.metric_from_camera_height is not None and not args.metric_from_camera_height > 0:
        p.error(f"--metric_from_camera_height {args.metric_from_camera_height}: the camera's height above the road "
                "in metres, > 0 (KITTI: 1.65)")
    if args.ply_ascii and not args.save_pointcloud:
        p.error("--ply_ascii goes with --save_pointcloud")
    return args


def list_images(path, ext):
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, f"*.{ext}")))
        files = [f for f in files if not f.endswith(OUTPUT_SUFFIXES)]
        if not files:
            raise SystemExit(f"--image_path {path}: no *.{ext} images (set --ext)")
        return files
    raise SystemExit(f"--image_path {path}: no such file or folder")


def load_model(args, device, script="test_simple.py", multi_frame=False):
    """The method of --load_weights_folder or --model_name (--num_layers for a monodepth2
    folder without opt.json), in eval mode on `device`; it must predict from single frames
    unless the script feeds other frames (multi_frame)."""
    from methods import load_for_inference
    folder = args.load_weights_folder
    if args.model_name:
        from model_zoo import released_model
        folder = released_model(args.model_name)
    overrides = dict(getattr(args, "method_overrides", {}))
    if args.num_layers:
        overrides["num_layers"] = args.num_layers
    method = load_for_inference(folder, device, **overrides)
    if tuple(method.inference_frames) != (0,) and not multi_frame:
        raise SystemExit(f"{type(method).__name__} needs frames {list(method.inference_frames)} per prediction; "
                         f"{script} predicts from single images: use evaluate_depth.py")
    return method


def network_input(method, images, device):
    """PIL images -> B x 3 x h x w in [0, 1] at the network size (LANCZOS)."""
    resize = transforms.Resize((method.opt.height, method.opt.width),
                               interpolation=transforms.InterpolationMode.LANCZOS)
    to_tensor = transforms.ToTensor()
    return torch.stack([to_tensor(resize(im)) for im in images]).to(device)


def predict_disparity(method, batch, others=None):
    """B x 3 x h x w in [0, 1] -> (scaled disparity, depth), each B x 1 x h x w. others: the
    rest of a multi-frame model's inputs (see multi_frame_inputs)."""
    prediction = method.predict({("color", 0, 0): batch, **(others or {})})
    depth = prediction["depth"]
    return prediction.get("disp", 1 / depth), depth


def read_intrinsics(path):
    """Normalised 4 x 4 K from a JSON 3 x 3 (or KITTI's average when path is None)."""
    from datasets.kitti_dataset import KITTI_K
    if path is None:
        return KITTI_K.copy()
    import json
    try:
        with open(path) as f:
            K3 = np.array(json.load(f), dtype=np.float32)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--intrinsics_json_path {path}: cannot read a 3 x 3 JSON array ({e})") from None
    if K3.shape != (3, 3) or K3[0, 0] > 10:
        raise SystemExit(f"--intrinsics_json_path {path}: expected a normalised 3 x 3 K (fx/width ~ 0.6), "
                         f"got {K3.tolist()}")
    K = np.eye(4, dtype=np.float32)
    K[:3, :3] = K3
    return K


def pixel_K(method, K):
    """A normalised 4 x 4 K -> 3 x 3 in pixels of the network's input size."""
    Kp = np.array(K, dtype=np.float64)[:3, :3].copy()
    Kp[0] *= method.opt.width
    Kp[1] *= method.opt.height
    return Kp


def multi_frame_inputs(method, frames, missing, K, device):
    """frames: {f: B x 3 x h x w} for the model's other frames, missing: {f: B flags} ->
    the batch entries a multi-frame model reads: ("color", f, 0), ("missing", f) and K /
    inv_K at every scale up to the matching scale (1/4)."""
    from datasets.mono_dataset import MATCHING_SCALE
    out = {}
    for f, image in frames.items():
        out[("color", f, 0)] = image
        out[("missing", f)] = missing[f].to(device)
    b = next(iter(frames.values())).shape[0]
    for s in range(MATCHING_SCALE + 1):
        Ks = K.copy()
        Ks[0, :] *= method.opt.width // 2 ** s
        Ks[1, :] *= method.opt.height // 2 ** s
        out[("K", s)] = torch.from_numpy(Ks)[None].repeat(b, 1, 1).to(device)
        out[("inv_K", s)] = torch.from_numpy(np.linalg.pinv(Ks))[None].repeat(b, 1, 1).to(device)
    return out


def neighbour_frames(method, paths, start, count, sources, device):
    """The other frames of images paths[start:start+count] in name order (or the one
    --source_image_path), with the model's missing-frame policy at the ends."""
    from methods.base import missing_frame_batch
    policy = type(method).missing_frames(method.opt, training=False)

    def as_input(image):
        return network_input(method, [image], "cpu")[0]

    frames, missing = {}, {}
    for f in method.inference_frames:
        if f == 0:
            continue
        neighbours, targets = [], []
        for i in range(start, start + count):
            j = i + f
            path = sources.get(f) if sources else (paths[j] if 0 <= j < len(paths) else None)
            if path is None and policy == "error":
                raise SystemExit(f"{paths[i]} has no frame {f} (give a folder of consecutive frames or "
                                 "--source_image_path)")
            # an unreadable neighbour counts as missing (its target is reported)
            neighbour = open_rgb(path) if path else None
            neighbours.append(None if neighbour is None else as_input(neighbour))
            target = None
            if neighbour is None:  # the stand-in: the target, black where it is unreadable too
                target = open_rgb(paths[i])
                target = as_input(target if target is not None else pil.new("RGB", (method.opt.width,
                                                                                     method.opt.height)))
            targets.append(target)
        frames[f], missing[f] = missing_frame_batch(policy, neighbours, targets, device)
    return frames, missing


def open_rgb(path):
    """The image at `path` as RGB, or None where it cannot be read."""
    try:
        with pil.open(path) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError):
        return None


def prepare_outputs(args, method):
    """What write_outputs needs to know of the model: its metric factor (--pred_metric_depth:
    a metric method's own, 5.4 for the others) and whether that factor is a known metric
    scale (a metric method or a stereo-trained model); per-run lists of the road-plane
    scales found and of the images without one."""
    args.metric_factor = method.depth_scale if method.depth_scale is not None else STEREO_SCALE_FACTOR
    if method.depth_scale is not None:
        args.metric_units = f"metres (a metric model, depth x {args.metric_factor:g})"
    elif method.opt.use_stereo:
        args.metric_units = f"metres (stereo-trained: depth x {args.metric_factor:g})"
    else:
        args.metric_units = None
    args.plane_scales, args.no_plane = [], []
    if args.metric_from_camera_height:
        replaced = f"; it replaces the model's own scale ({args.metric_units})" if args.metric_units else ""
        print(f"-> metric depth from the road plane {args.metric_from_camera_height:g} m below the camera, K from "
              f"{args.intrinsics_json_path or 'KITTI (--intrinsics_json_path to change)'}{replaced}")
    elif args.pred_metric_depth and args.metric_units is None:
        print("-> warning: this model was trained without stereo; its depth is not metric "
              "(--metric_from_camera_height H recovers the scale from the road plane)")
    if args.save_pointcloud and not args.metric_from_camera_height and args.metric_units is None:
        print("-> point clouds in the model's units: a monocular model's depth is not metric "
              "(--metric_from_camera_height H makes them metric)")


def depth_scale_for(args, path, depth, K):
    """(factor to metres or None, units text) for one image's depth (H x W, numpy)."""
    if args.metric_from_camera_height:
        from metric_scale import scale_from_camera_height
        fit = scale_from_camera_height(depth, K, args.metric_from_camera_height)
        tqdm.write(f"-> {path}: {fit.describe()}")
        if fit.scale is None:
            args.no_plane.append(path)
            return None, "the model's units (no road plane found for --metric_from_camera_height)"
        args.plane_scales.append(fit.scale)
        return fit.scale, (f"metres (road plane {args.metric_from_camera_height:g} m below the camera: depth x "
                           f"{fit.scale:.6g}, inliers {100 * fit.plane.inlier_share:.0f}%, spread "
                           f"{100 * fit.spread:.1f}%)")
    if args.metric_units:
        return args.metric_factor, args.metric_units
    return None, "the model's units (a monocular model: not metric)"


def write_pointcloud(args, name, source, depth, rgb, K, units):
    """<name>_pointcloud.ply and <name>_pointcloud.png of one H x W depth (numpy) with the
    colours of rgb (3 x H x W in [0, 1])."""
    from pointcloud import backproject, render_preview, write_ply
    h, w = depth.shape
    points = backproject(depth, K)
    colors = (rgb.permute(1, 2, 0).clamp(0, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8).reshape(-1, 3)
    comments = [f"depth of {os.path.basename(source)} at {w}x{h}, one point per pixel, row by row",
                f"units: {units}",
                "frame: camera coordinates, x right, y down, z forward; X = depth * inverse(K) [u, v, 1]",
                "K (pixels): " + " ".join(f"{v:.6g}" for v in np.asarray(K, dtype=np.float64)[:3, :3].ravel())]
    ply = write_ply(f"{name}_pointcloud.ply", points, colors, comments, binary=not args.ply_ascii)
    render_preview(points, colors, f"{name}_pointcloud.png", units="m" if units.startswith("metres") else "units",
                   title=os.path.basename(source))
    return ply


def write_outputs(args, path, size, disp, depth, rgb=None, K=None):
    """<name>_disp.jpeg (and the .npy, depth and point cloud asked for) of one image of
    `size` (w, h); rgb: the network's 3 x h x w input, K: 3 x 3 in its pixels (both needed
    for --metric_from_camera_height and --save_pointcloud); returns the jpeg."""
    w0, h0 = size
    resized = F.interpolate(disp, (h0, w0), mode="bilinear", align_corners=False)[0, 0]
    name = os.path.splitext(path)[0]
    if args.output_dir:
        name = os.path.join(args.output_dir, os.path.basename(name))
    factor, units = None, None
    if args.metric_from_camera_height or args.save_pointcloud:
        factor, units = depth_scale_for(args, path, depth[0, 0].float().cpu().numpy(), K)
    if args.metric_from_camera_height:
        if factor is not None:
            np.save(f"{name}_depth.npy", (factor * depth).cpu().numpy())
    elif args.pred_metric_depth:
        np.save(f"{name}_depth.npy", (args.metric_factor * depth).cpu().numpy())
    elif args.save_npy:
        np.save(f"{name}_disp.npy", disp.cpu().numpy())
    if args.save_pointcloud:
        write_pointcloud(args, name, path, (depth[0, 0].float() * (factor or 1.0)).cpu().numpy(), rgb, K, units)
    out = f"{name}_disp.jpeg"
    pil.fromarray(colorize_disparity(resized.cpu().numpy())).save(out)
    return out


def report_outputs(args, written, total):
    """The closing lines: what was written, the road-plane scales, the images without one."""
    if written:
        print(f"-> wrote {len(written)} depth image(s), e.g. {written[0]}")
        if args.save_pointcloud:
            stem = written[0][:-len("_disp.jpeg")]
            print(f"-> point clouds: {stem}_pointcloud.ply (MeshLab, CloudCompare, Open3D) and its preview "
                  f"{stem}_pointcloud.png")
    if len(args.plane_scales) > 1:
        s = np.array(args.plane_scales)
        print(f"-> road-plane scale over {len(s)} images: median {np.median(s):.4g} (min {s.min():.4g}, "
              f"max {s.max():.4g})")
    if args.no_plane:
        return (f"{len(args.no_plane)} of {total} image(s) had no road plane in the lower image, so no "
                f"_depth.npy for --metric_from_camera_height: {', '.join(args.no_plane)}")
    return None


def predict_dataset(args, method, dataset, device):
    """Every item of a method's own dataset (prediction_dataset): outputs beside each item's
    "path" (or in --output_dir), at that image's size."""
    from torch.utils.data import DataLoader
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    print(f"-> {type(method).__name__}: {len(dataset)} frames of {args.image_path}")
    written = []
    loader = DataLoader(dataset, args.batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for data in tqdm(loader, desc="predict", unit="batch", disable=len(loader) <= 1):
            inputs = {k: v.to(device) for k, v in data.items() if torch.is_tensor(v)}
            prediction = method.predict(inputs)
            depth = prediction["depth"]
            disp = prediction.get("disp", 1 / depth)
            for k, path in enumerate(data["path"]):
                if "output_size" in data:  # the region the model sees (e.g. a centred crop)
                    size = tuple(int(v) for v in data["output_size"][k])
                else:
                    with pil.open(path) as image:
                        size = image.size
                # K of the item (its own calibration) where it has one
                K = inputs[("K", 0)][k, :3, :3].double().cpu().numpy() if ("K", 0) in inputs else \
                    pixel_K(method, read_intrinsics(None))
                written.append(write_outputs(args, path, size, disp[k:k + 1], depth[k:k + 1],
                                             inputs[("color", 0, 0)][k], K))
    problem = report_outputs(args, written, len(dataset))
    if problem:
        raise SystemExit(f"-> {problem}")
    return written


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    method = load_model(args, device, multi_frame=True)
    multi = tuple(method.inference_frames) != (0,)
    sources = {}
    if args.source_image_path:
        if not multi:
            raise SystemExit("--source_image_path is for multi-frame models; this model reads single images")
        if not os.path.isfile(args.source_image_path):
            raise SystemExit(f"--source_image_path {args.source_image_path}: no such file")
        others = [f for f in method.inference_frames if f != 0]
        if len(others) != 1:
            raise SystemExit(f"--source_image_path gives one other frame; this model reads frames {others}: "
                             "give a folder of consecutive frames")
        sources = {others[0]: args.source_image_path}
    K = read_intrinsics(args.intrinsics_json_path)
    prepare_outputs(args, method)
    dataset = method.prediction_dataset(args.image_path)
    if dataset is not None:  # the method reads its own inputs (e.g. poses from files)
        if sources or args.intrinsics_json_path:
            raise SystemExit(f"{type(method).__name__} reads its frames, K and poses from the sequence folder: "
                             "drop --source_image_path / --intrinsics_json_path")
        return predict_dataset(args, method, dataset, device)
    paths = list_images(args.image_path, args.ext)
    if sources and len(paths) != 1:
        raise SystemExit("--source_image_path goes with one --image_path image")
    if multi:
        print(f"-> {type(method).__name__} reads frames {list(method.inference_frames)}"
              + ("" if sources else " (neighbours in name order)"))
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    written, failed = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(paths), args.batch_size), desc="predict", unit="batch",
                          disable=len(paths) <= args.batch_size):
            batch_paths = paths[start:start + args.batch_size]
            images = [read_image(p, failed) for p in batch_paths]
            others = None
            if multi:
                frames, missing = neighbour_frames(method, paths, start, len(batch_paths), sources, device)
                others = multi_frame_inputs(method, frames, missing, K, device)
                for f, flags in missing.items():
                    for path, flag in zip(batch_paths, flags.tolist()):
                        if flag:
                            print(f"-> {path}: no frame {f} (a single image, or the first of the folder): predicted "
                                  f"with the model's rule for a missing frame "
                                  f"({type(method).missing_frames(method.opt, training=False)}); give "
                                  "--source_image_path or a folder of consecutive frames")
            keep = [k for k, image in enumerate(images) if image is not None]
            if not keep:
                continue
            batch = network_input(method, [images[k] for k in keep], device)
            if others:
                others = {key: v[keep] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == len(images) else v
                          for key, v in others.items()}
            disp, depth = predict_disparity(method, batch, others)
            for j, k in enumerate(keep):
                written.append(write_outputs(args, batch_paths[k], images[k].size, disp[j:j + 1], depth[j:j + 1],
                                             batch[j], pixel_K(method, K)))
    problems = [report_outputs(args, written, len(paths))]
    if failed:
        problems.insert(0, f"{len(failed)} of {len(paths)} image(s) could not be read: {', '.join(failed)}")
    if any(problems):
        raise SystemExit("-> " + "; ".join(p for p in problems if p))
    return written


def read_image(path, failed):
    """The image as RGB, or None (one line naming the file, added to `failed`)."""
    try:
        with pil.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        print(f"-> {path}: not a readable image ({type(e).__name__}: {e}); skipped")
        failed.append(path)
        return None


if __name__ == "__main__":
    main()
    sys.exit(0)
