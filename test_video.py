"""Depth video of a folder of frames: each frame above its disparity, as a GIF and an MP4.

    python test_video.py --image_path DIR --load_weights_folder W --ext png
    python test_video.py --image_path DIR --model_name mono+stereo_640x192 --output_dir OUT --fps 10

Frames are read in file-name order and resized (LANCZOS) to the network's input size W x H;
each output frame is that RGB frame stacked above its colourised disparity (magma, vmax =
95th percentile of the frame's disparity, as test_simple.py), so W x 2H. Writes
<output_dir>/<DIR's name>.gif (150 ms per frame, endless loop; Pillow merges identical
consecutive frames into one longer frame) and <output_dir>/<DIR's name>.mp4 (OpenCV, 'mp4v';
skipped with a message when OpenCV cannot write it). --output_dir defaults to the folder
that holds DIR, so the videos lie beside the frames. All frames are kept in memory.
"""
import argparse
import os
import sys

import numpy as np
import PIL.Image as pil
import torch
from tqdm import tqdm

import test_simple
from utils import colorize_disparity

GIF_FRAME_MS = 150


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="depth video of a folder of frames (GIF and MP4)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from model_zoo import RELEASED
    p.add_argument("--image_path", required=True, help="a folder of frames (sorted by file name)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--load_weights_folder", help="a weights_N folder of a trained model")
    model.add_argument("--model_name", help="a released model, downloaded on first use: "
                       + ", ".join(sorted(RELEASED)))
    p.add_argument("--ext", default="jpg", help="frame extension to search for")
    p.add_argument("--output_dir", help="where <folder name>.gif and .mp4 go (None: the folder holding "
                   "--image_path, so they lie beside it)")
    p.add_argument("--fps", type=float, default=1000 / GIF_FRAME_MS,
                   help=f"frames per second of the MP4 (the GIF always shows each frame {GIF_FRAME_MS} ms)")
    p.add_argument("--num_layers", type=int, help="ResNet depth of a monodepth2 folder without opt.json "
                   "(default: read from encoder.pth)")
    p.add_argument("--batch_size", type=int, default=8, help="frames per forward pass")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    return p.parse_args(argv)


def list_frames(path, ext):
    if not os.path.isdir(path):
        raise SystemExit(f"--image_path {path}: {'a file, not a folder' if os.path.isfile(path) else 'no such folder'}"
                         " (test_video.py takes a folder of frames; test_simple.py takes single images)")
    return test_simple.list_images(path, ext)


def stack_frame(rgb, disp):
    """rgb: 3 x h x w in [0, 1]; disp: h x w -> (2h) x w x 3 uint8 (RGB above the magma disparity)."""
    top = (rgb.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return np.concatenate([top, colorize_disparity(disp.cpu().numpy())], 0)


def write_mp4(path, frames, fps):
    """Returns the path, or None when OpenCV cannot open a writer (says so in one line)."""
    import cv2
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        print(f"-> could not open an 'mp4v' video writer for {path} (OpenCV without that codec); "
              "the GIF is written anyway")
        return None
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def main(argv=None):
    args = parse_args(argv)
    paths = list_frames(args.image_path, args.ext)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    method = test_simple.load_model(args, device, script="test_video.py")
    folder = os.path.abspath(args.image_path)
    name = os.path.basename(folder.rstrip(os.sep)) or "video"
    out_dir = args.output_dir or os.path.dirname(folder)
    os.makedirs(out_dir, exist_ok=True)
    frames = []
    with torch.no_grad(), tqdm(total=len(paths), desc="frames", unit="frame") as bar:
        for start in range(0, len(paths), args.batch_size):
            images = [pil.open(p).convert("RGB") for p in paths[start:start + args.batch_size]]
            batch = test_simple.network_input(method, images, device)
            disp, _ = test_simple.predict_disparity(method, batch)
            frames += [stack_frame(batch[k], disp[k, 0]) for k in range(len(images))]
            bar.update(len(images))
    gif = os.path.join(out_dir, f"{name}.gif")
    pictures = [pil.fromarray(f) for f in frames]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS, loop=0)
    mp4 = write_mp4(os.path.join(out_dir, f"{name}.mp4"), frames, args.fps)
    width, height = pictures[0].size
    print(f"-> {len(frames)} frames of {width}x{height}: {gif}" + (f", {mp4}" if mp4 else ""))
    return gif, mp4


if __name__ == "__main__":
    main()
    sys.exit(0)
