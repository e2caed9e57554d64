"""Predict depth for an image or a folder of images.

    python test_simple.py --image_path assets/test_image.jpg --model_name mono+stereo_640x192
    python test_simple.py --image_path assets/test_image.jpg --load_weights_folder W
    python test_simple.py --image_path DIR --ext png --load_weights_folder W --save_npy --output_dir OUT

The model is rebuilt from the weight folder alone (opt.json, or a monodepth2 folder), or
is a released model fetched by name (model_zoo.py). Writes <name>_disp.jpeg (magma,
95th-percentile normalisation) beside each image (or in --output_dir), and with
--save_npy <name>_disp.npy (scaled disparity at network resolution, 1 x 1 x h x w) or, with
--pred_metric_depth, <name>_depth.npy (metres, for stereo-trained models: 5.4 x depth).
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
                   help="write metric depth (x5.4, stereo-trained models) as <name>_depth.npy")
    p.add_argument("--batch_size", type=int, default=8, help="images per forward pass")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    return p.parse_args(argv)


def list_images(path, ext):
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, f"*.{ext}")))
        files = [f for f in files if not f.endswith(("_disp.jpg", "_disp.jpeg"))]
        if not files:
            raise SystemExit(f"--image_path {path}: no *.{ext} images (set --ext)")
        return files
    raise SystemExit(f"--image_path {path}: no such file or folder")


def load_model(args, device, script="test_simple.py"):
    """The method of --load_weights_folder or --model_name (--num_layers for a monodepth2
    folder without opt.json), in eval mode on `device`; it must predict from single frames."""
    from methods import load_for_inference
    folder = args.load_weights_folder
    if args.model_name:
        from model_zoo import released_model
        folder = released_model(args.model_name)
    method = load_for_inference(folder, device,
                                **({"num_layers": args.num_layers} if args.num_layers else {}))
    if tuple(method.inference_frames) != (0,):
        raise SystemExit(f"{type(method).__name__} needs frames {list(method.inference_frames)} per prediction; "
                         f"{script} predicts from single images: use evaluate_depth.py")
    return method


def network_input(method, images, device):
    """PIL images -> B x 3 x h x w in [0, 1] at the network size (LANCZOS)."""
    resize = transforms.Resize((method.opt.height, method.opt.width),
                               interpolation=transforms.InterpolationMode.LANCZOS)
    to_tensor = transforms.ToTensor()
    return torch.stack([to_tensor(resize(im)) for im in images]).to(device)


def predict_disparity(method, batch):
    """B x 3 x h x w in [0, 1] -> (scaled disparity, depth), each B x 1 x h x w."""
    prediction = method.predict({("color", 0, 0): batch})
    depth = prediction["depth"]
    return prediction.get("disp", 1 / depth), depth


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    method = load_model(args, device)
    if args.pred_metric_depth and not method.opt.use_stereo:
        print("-> warning: this model was trained without stereo; its depth is not metric")
    paths = list_images(args.image_path, args.ext)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    written = []
    with torch.no_grad():
        for start in tqdm(range(0, len(paths), args.batch_size), desc="predict", unit="batch",
                          disable=len(paths) <= args.batch_size):
            batch_paths = paths[start:start + args.batch_size]
            images = [pil.open(p).convert("RGB") for p in batch_paths]
            disp, depth = predict_disparity(method, network_input(method, images, device))
            for k, (path, image) in enumerate(zip(batch_paths, images)):
                w0, h0 = image.size
                resized = F.interpolate(disp[k:k + 1], (h0, w0), mode="bilinear", align_corners=False)[0, 0]
                name = os.path.splitext(path)[0]
                if args.output_dir:
                    name = os.path.join(args.output_dir, os.path.basename(name))
                if args.pred_metric_depth:
                    np.save(f"{name}_depth.npy", (STEREO_SCALE_FACTOR * depth[k:k + 1]).cpu().numpy())
                elif args.save_npy:
                    np.save(f"{name}_disp.npy", disp[k:k + 1].cpu().numpy())
                out = f"{name}_disp.jpeg"
                pil.fromarray(colorize_disparity(resized.cpu().numpy())).save(out)
                written.append(out)
    print(f"-> wrote {len(written)} depth image(s), e.g. {written[0]}")
    return written


if __name__ == "__main__":
    main()
    sys.exit(0)
