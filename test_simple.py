"""Predict depth for an image or a folder of images.

    python test_simple.py --image_path assets/test_image.jpg --load_weights_folder W
    python test_simple.py --image_path DIR --ext png --load_weights_folder W --save_npy

Writes <name>_disp.jpeg (magma, 95th-percentile normalisation) beside each image, and with
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

from evaluate_depth import STEREO_SCALE_FACTOR, load_model_for_eval
from layers import disp_to_depth
from utils import colorize_disparity


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="single-image (or folder) depth prediction")
    p.add_argument("--image_path", required=True, help="an image or a folder of images")
    p.add_argument("--load_weights_folder", required=True, help="folder with encoder.pth and depth.pth")
    p.add_argument("--ext", default="jpg", help="image extension to search for in a folder")
    p.add_argument("--num_layers", type=int, default=18)
    p.add_argument("--save_npy", action="store_true", help="also write the disparity as .npy")
    p.add_argument("--pred_metric_depth", action="store_true",
                   help="write metric depth (x5.4, stereo-trained models) as <name>_depth.npy")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--min_depth", type=float, default=0.1)
    p.add_argument("--max_depth", type=float, default=100.0)
    p.add_argument("--no_cuda", action="store_true")
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


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    args.height, args.width = 192, 640
    predict, height, width, info = load_model_for_eval(args, device)
    if args.pred_metric_depth and not info.get("use_stereo", True):
        print("-> warning: this model was trained without stereo; its depth is not metric")
    paths = list_images(args.image_path, args.ext)
    resize = transforms.Resize((height, width), interpolation=transforms.InterpolationMode.LANCZOS)
    to_tensor = transforms.ToTensor()
    written = []
    with torch.no_grad():
        for start in tqdm(range(0, len(paths), args.batch_size), desc="predict", unit="batch",
                          disable=len(paths) <= args.batch_size):
            batch_paths = paths[start:start + args.batch_size]
            images = [pil.open(p).convert("RGB") for p in batch_paths]
            batch = torch.stack([to_tensor(resize(im)) for im in images]).to(device)
            disp = predict(batch)
            for k, (path, image) in enumerate(zip(batch_paths, images)):
                w0, h0 = image.size
                d = disp[k:k + 1]
                resized = F.interpolate(d, (h0, w0), mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
                name = os.path.splitext(path)[0]
                scaled_disp, depth = disp_to_depth(d, args.min_depth, args.max_depth)
                if args.save_npy or args.pred_metric_depth:
                    if args.pred_metric_depth:
                        np.save(f"{name}_depth.npy", (STEREO_SCALE_FACTOR * depth).cpu().numpy())
                    else:
                        np.save(f"{name}_disp.npy", scaled_disp.cpu().numpy())
                out = f"{name}_disp.jpeg"
                pil.fromarray(colorize_disparity(resized)).save(out)
                written.append(out)
    print(f"-> wrote {len(written)} depth image(s), e.g. {written[0]}")
    return written


if __name__ == "__main__":
    main()
    sys.exit(0)
