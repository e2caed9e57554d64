"""Prepare Cityscapes sequences for training (--dataset cityscapes_preprocessed).

    python prepare_cityscapes.py --dataset_dir CITYSCAPES --dump_root cityscapes_preprocessed \
        --img_height 512 --img_width 1024 --seq_length 3 --num_threads 4

Reads <dataset_dir>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
and the intrinsics of <dataset_dir>/camera/<split>/<city>/*_camera.json (the frame's own
file, else the one of its sequence: Cityscapes ships one per sequence). For every frame
whose neighbours --frame_gap frames before and after exist (seq_length 3, gap 2: frames
-2, 0, +2), each of the three images is resized (LANCZOS) to img_width x img_height, its
bottom 25 % (the ego car) is cropped, and the three are stacked vertically, earliest on top:
<dump_root>/<city>/<city>_<seq>_<frame>.png (1024 x 1152 with the defaults), beside
<city>_<seq>_<frame>_cam.txt = `fx,0.,cx,0.,fy,cy,0.,0.,1.` in pixels at img_width x
img_height (the crop moves no pixel, so it is also the K of the cropped frame).

It also writes <dump_root>/splits/cityscapes_preprocessed/train_files.txt and
val_files.txt (lines `<city> <city>_<seq>_<frame>`; val: the last sequence of every 100,
at least one when there are several sequences, else the train list itself). The
reference's list (splits/cityscapes/train_files.txt, 69,731 frames) is a subset of what
this writes for the train split.
"""
import argparse
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

NAME = re.compile(r"^(?P<city>[^_]+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")
KEEP = 0.75  # rows kept from the top (the bottom 25 % shows the ego car)
SPLIT_NAME = "cityscapes_preprocessed"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Write Cityscapes training triplets (three frames stacked "
                                "vertically) and their intrinsics", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset_dir", required=True, help="Cityscapes root holding leftImg8bit_sequence/ and camera/")
    p.add_argument("--dump_root", required=True, help="output folder (the --data_path of training)")
    p.add_argument("--split", default="train", help="the leftImg8bit_sequence/<split> folder to read")
    p.add_argument("--img_height", type=int, default=512, help="height of the resized frame, before the crop")
    p.add_argument("--img_width", type=int, default=1024, help="width of the resized frame")
    p.add_argument("--seq_length", type=int, default=3, help="frames per item (odd)")
    p.add_argument("--frame_gap", type=int, default=2, help="sequence frames between consecutive frames of an item")
    p.add_argument("--num_threads", type=int, default=4, help="images processed in parallel")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def frame_name(city, seq, frame):
    return f"{city}_{seq}_{frame:06d}"


def collect(image_dir, seq_length, gap):
    """(city, seq, centre frame, [frame numbers of the item]) of every frame whose
    neighbours exist, sorted."""
    half = (seq_length - 1) // 2
    items = []
    for city in sorted(os.listdir(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_dir):
            continue
        frames = {}
        for name in os.listdir(city_dir):
            m = NAME.match(name)
            if m:
                frames.setdefault(m["seq"], set()).add(int(m["frame"]))
        for seq in sorted(frames):
            for centre in sorted(frames[seq]):
                wanted = [centre + gap * k for k in range(-half, half + 1)]
                if all(f in frames[seq] for f in wanted):
                    items.append((city, seq, centre, wanted))
    return items


def camera_file(camera_dir, city, seq, frame):
    """The frame's camera file, else the first one of its sequence."""
    own = os.path.join(camera_dir, city, frame_name(city, seq, frame) + "_camera.json")
    if os.path.isfile(own):
        return own
    city_dir = os.path.join(camera_dir, city)
    prefix = f"{city}_{seq}_"
    found = sorted(n for n in os.listdir(city_dir) if n.startswith(prefix) and n.endswith("_camera.json")) \
        if os.path.isdir(city_dir) else []
    if not found:
        raise FileNotFoundError(f"no camera file for {frame_name(city, seq, frame)} in {city_dir} "
                                f"(expected {os.path.basename(own)} or another {prefix}*_camera.json)")
    return os.path.join(city_dir, found[0])


def process(item, args, image_dir, camera_dir):
    city, seq, centre, frames = item
    parts, size = [], None
    keep = int(round(args.img_height * KEEP))
    for frame in frames:
        path = os.path.join(image_dir, city, frame_name(city, seq, frame) + "_leftImg8bit.png")
        with Image.open(path) as image:
            image = image.convert("RGB")
            size = size or image.size
            resized = image.resize((args.img_width, args.img_height), Image.LANCZOS)
        parts.append(np.asarray(resized)[:keep])
    out_dir = os.path.join(args.dump_root, city)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, frame_name(city, seq, centre))
    Image.fromarray(np.concatenate(parts, 0)).save(stem + ".png")
    with open(camera_file(camera_dir, city, seq, centre)) as f:
        intrinsic = json.load(f)["intrinsic"]
    sx, sy = args.img_width / size[0], args.img_height / size[1]
    fx, fy, cx, cy = intrinsic["fx"] * sx, intrinsic["fy"] * sy, intrinsic["u0"] * sx, intrinsic["v0"] * sy
    with open(stem + "_cam.txt", "w") as f:
        f.write(f"{fx!r},0.,{cx!r},0.,{fy!r},{cy!r},0.,0.,1.\n")
    return f"{city} {frame_name(city, seq, centre)}"


def write_splits(dump_root, lines):
    """train_files.txt and val_files.txt (see the module docstring)."""
    sequences = sorted({line.rsplit("_", 1)[0] for line in lines})
    held = set(sequences[99::100]) or ({sequences[-1]} if len(sequences) > 1 else set())
    val = [line for line in lines if line.rsplit("_", 1)[0] in held] or lines
    train = [line for line in lines if line.rsplit("_", 1)[0] not in held]
    split_dir = os.path.join(dump_root, "splits", SPLIT_NAME)
    os.makedirs(split_dir, exist_ok=True)
    for name, part in (("train_files.txt", train), ("val_files.txt", val)):
        with open(os.path.join(split_dir, name), "w") as f:
            f.writelines(line + "\n" for line in part)
    return split_dir, len(train), len(val)


def main(argv=None):
    args = parse_args(argv)
    image_dir = os.path.join(args.dataset_dir, "leftImg8bit_sequence", args.split)
    camera_dir = os.path.join(args.dataset_dir, "camera", args.split)
    for path, what in ((image_dir, "leftImg8bit_sequence_trainvaltest"), (camera_dir, "camera_trainvaltest")):
        if not os.path.isdir(path):
            print(f"error: {path} not found: --dataset_dir must hold Cityscapes' {what} (extracted)", file=sys.stderr)
            return 2
    if args.seq_length < 1 or args.seq_length % 2 == 0 or args.frame_gap < 1:
        print("error: --seq_length must be odd and --frame_gap at least 1", file=sys.stderr)
        return 2
    items = collect(image_dir, args.seq_length, args.frame_gap)
    if not items:
        print(f"error: no frame in {image_dir} has its neighbours {args.frame_gap} frames before and after",
              file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max(args.num_threads, 1)) as pool:
        try:
            lines = list(tqdm(pool.map(lambda item: process(item, args, image_dir, camera_dir), items),
                              total=len(items), desc="triplets", unit="item", disable=args.no_progress))
        except (OSError, KeyError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    split_dir, n_train, n_val = write_splits(args.dump_root, lines)
    print(f"wrote {len(lines)} items to {args.dump_root}; splits ({n_train} train, {n_val} val) in {split_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
