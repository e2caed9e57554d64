"""Depth video of a folder of frames or of a video file: each frame above its disparity.

    python test_video.py --image_path DIR --load_weights_folder W --ext png
    python test_video.py --image_path DIR --model_name mono+stereo_640x192 --output_dir OUT --fps 10
    python test_video.py --video_path drive.mp4 --load_weights_folder W

Frames are read in order (a folder: by file name; a video: as OpenCV's VideoCapture decodes
them) and resized (LANCZOS) to the network's input size W x H; each output frame is that RGB
frame stacked above its colourised disparity (magma, vmax = 95th percentile of the frame's
disparity, as test_simple.py), so W x 2H. A multi-frame model (ManyDepth, MISM) gets its
other frames from the same stream (the previous frame; before the first, its rule for a
missing frame) and K from --intrinsics_json_path (default KITTI's).

A folder writes <output_dir>/<DIR's name>.gif (150 ms per frame, endless loop; Pillow merges
identical consecutive frames into one longer frame; all frames kept in memory) and
<output_dir>/<DIR's name>.mp4 (OpenCV, 'mp4v'; skipped with a message when OpenCV cannot
write it); --output_dir defaults to the folder that holds DIR. A video (--video_path F, or
--image_path F with a video extension) writes <output_dir>/<F's stem>_depth.mp4 at the
input's frame rate (--fps to change), one frame at a time; --output_dir defaults to F's
folder. Both show a progress bar and end with the measured frames per second.
"""
import argparse
import os
import sys
import time

import numpy as np
import PIL.Image as pil
import torch
from tqdm import tqdm

import test_simple
from utils import colorize_disparity

GIF_FRAME_MS = 150
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="depth video of a folder of frames (GIF and MP4) or of a video file (MP4)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from model_zoo import RELEASED
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image_path", help="a folder of frames (sorted by file name), or a video file ("
                        + ", ".join(VIDEO_EXTENSIONS) + ")")
    source.add_argument("--video_path", help="a video file OpenCV can decode (any extension)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--load_weights_folder", help="a weights_N folder of a trained model")
    model.add_argument("--model_name", help="a released model, downloaded on first use: "
                       + ", ".join(sorted(RELEASED)))
    p.add_argument("--ext", default="jpg", help="frame extension to search for in a folder")
    p.add_argument("--output_dir", help="where the videos go (None: the folder holding --image_path / --video_path)")
    p.add_argument("--fps", type=float, help=f"frames per second of the MP4 (None: a video's own rate; "
                   f"{1000 / GIF_FRAME_MS:.2f} for a folder, whose GIF always shows each frame {GIF_FRAME_MS} ms)")
    p.add_argument("--max_frames", type=int, help="stop after this many frames (None: all)")
    p.add_argument("--intrinsics_json_path", help="multi-frame models: a JSON normalised 3 x 3 K "
                   "(row 0 divided by the width, row 1 by the height); default KITTI's")
    p.add_argument("--num_layers", type=int, help="ResNet depth of a monodepth2 folder without opt.json "
                   "(default: read from encoder.pth)")
    p.add_argument("--batch_size", type=int, default=8, help="frames per forward pass")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    args, unknown = p.parse_known_args(argv)
    from evaluate_depth import method_inference_options
    args.method_overrides, unknown = method_inference_options(args.load_weights_folder, unknown)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (a method's own inference options, e.g. "
                "--eval_teacher, --single_frame, are accepted for the methods that have them)")
    if args.max_frames is not None and args.max_frames < 1:
        p.error(f"--max_frames {args.max_frames}: at least 1")
    if args.batch_size < 1:
        p.error(f"--batch_size {args.batch_size}: at least 1")
    return args


def list_frames(path, ext):
    if not os.path.isdir(path):
        raise SystemExit(f"--image_path {path}: {'a file, not a folder' if os.path.isfile(path) else 'no such folder'}"
                         f" nor a video ({', '.join(VIDEO_EXTENSIONS)}; --video_path takes any) "
                         "(test_video.py takes a folder of frames or a video; test_simple.py takes single images)")
    return test_simple.list_images(path, ext)


def open_video(path, option):
    """An opened cv2.VideoCapture of a file, or one clear line (SystemExit)."""
    import cv2
    if not os.path.isfile(path):
        raise SystemExit(f"{option} {path}: no such file")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"{option} {path}: OpenCV cannot open it as a video (a format its build decodes: "
                         "mp4, avi, ...)")
    return capture


def video_frames(capture, limit=None):
    """PIL RGB frames of an opened capture, in order (at most `limit`); releases it at the end."""
    import cv2
    count = 0
    try:
        while limit is None or count < limit:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield pil.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()


def folder_frames(paths):
    for path in paths:
        with pil.open(path) as image:
            yield image.convert("RGB")


def stack_frame(rgb, disp):
    """rgb: 3 x h x w in [0, 1]; disp: h x w -> (2h) x w x 3 uint8 (RGB above the magma disparity)."""
    top = (rgb.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return np.concatenate([top, colorize_disparity(disp.cpu().numpy())], 0)


class Mp4Writer:
    """Writes RGB frames one at a time to an OpenCV 'mp4v' MP4; `opened` is False (and one
    line said so) where OpenCV cannot write it."""

    def __init__(self, path, fps, size):
        import cv2
        self.path, self.frames = path, 0
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        self.opened = self.writer.isOpened()
        if not self.opened:
            print(f"-> could not open an 'mp4v' video writer for {path} (OpenCV without that codec)")

    def write(self, frame):
        import cv2
        if self.opened:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            self.frames += 1

    def close(self):
        if self.opened:
            self.writer.release()
        return self.path if self.opened else None


def write_mp4(path, frames, fps):
    """All frames at once; returns the path, or None when OpenCV cannot open a writer."""
    height, width = frames[0].shape[:2]
    writer = Mp4Writer(path, fps, (width, height))
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        path = writer.close()
    return path


def other_frames(method, stream, targets, device):
    """The other frames of a multi-frame model for the frames `targets` of `stream` (index ->
    3 x h x w network input, the frames kept so far): {f: B x 3 x h x w}, {f: B missing
    flags}; a frame before the first or after the last gets the model's rule for a missing
    frame (the target itself, or black)."""
    from methods.base import missing_frame_batch
    policy = type(method).missing_frames(method.opt, training=False)
    frames, missing = {}, {}
    for f in method.inference_frames:
        if f == 0:
            continue
        for i in targets:
            if i + f not in stream and policy == "error":
                raise SystemExit(f"frame {i} has no frame {f} and {type(method).__name__} cannot predict without it")
        frames[f], missing[f] = missing_frame_batch(policy, [stream.get(i + f) for i in targets],
                                                    [stream[i] for i in targets], device)
    return frames, missing


def predict_stream(method, images, device, batch_size, K=None, total=None, on_frame=None):
    """Each frame of the iterable `images` (PIL RGB) -> on_frame(index, stacked frame), in
    order, `batch_size` frames per forward pass; a multi-frame model reads its other frames
    from the stream (frames ahead are read before their target is predicted). Returns
    (frames, seconds in the network, seconds in all)."""
    offsets = [f for f in method.inference_frames if f != 0]
    behind = max([-f for f in offsets if f < 0], default=0)
    ahead = max([f for f in offsets if f > 0], default=0)
    multi = bool(offsets)
    stream, read, done, exhausted = {}, 0, 0, False
    source = iter(images)
    network_s, start = 0.0, time.perf_counter()
    with torch.no_grad(), tqdm(total=total, desc="frames", unit="frame") as bar:
        while True:
            while not exhausted and read < done + batch_size + ahead:
                try:
                    image = next(source)
                except StopIteration:
                    exhausted = True
                    break
                stream[read] = test_simple.network_input(method, [image], "cpu")[0]
                read += 1
            last = read if exhausted else read - ahead
            targets = list(range(done, min(done + batch_size, last)))
            if not targets:
                break
            batch = torch.stack([stream[i] for i in targets]).to(device)
            others = None
            if multi:
                frames, missing = other_frames(method, stream, targets, device)
                others = test_simple.multi_frame_inputs(method, frames, missing, K, device)
            tick = time.perf_counter()
            disp, _ = test_simple.predict_disparity(method, batch, others)
            if device.type == "cuda":
                torch.cuda.synchronize()
            network_s += time.perf_counter() - tick
            for k, i in enumerate(targets):
                on_frame(i, stack_frame(batch[k], disp[k, 0]))
            bar.update(len(targets))
            done = targets[-1] + 1
            for i in [i for i in stream if i < done - behind]:
                del stream[i]
    return done, network_s, time.perf_counter() - start


def video_source(args):
    """(video path or None, folder path or None) of the command."""
    if args.video_path:
        return args.video_path, None
    if os.path.isfile(args.image_path) and args.image_path.lower().endswith(VIDEO_EXTENSIONS):
        return args.image_path, None
    return None, args.image_path


def main(argv=None):
    args = parse_args(argv)
    video, folder = video_source(args)
    if video:
        capture = open_video(video, "--video_path" if args.video_path else "--image_path")
    else:
        paths = list_frames(folder, args.ext)[:args.max_frames]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    method = test_simple.load_model(args, device, script="test_video.py", multi_frame=True)
    if reads_own_inputs(method):
        raise SystemExit(f"{type(method).__name__} reads more than frames (e.g. poses from files): test_video.py "
                         "cannot feed it; predict its sequence with test_simple.py --image_path SEQUENCE")
    multi = tuple(method.inference_frames) != (0,)
    K = test_simple.read_intrinsics(args.intrinsics_json_path)
    if multi:
        print(f"-> {type(method).__name__} reads frames {list(method.inference_frames)} of the stream; before the "
              f"first, its rule for a missing frame ({type(method).missing_frames(method.opt, training=False)})")
    size = (method.opt.width, 2 * method.opt.height)
    if video:
        import cv2
        out_dir = args.output_dir or os.path.dirname(os.path.abspath(video))
        os.makedirs(out_dir, exist_ok=True)
        input_fps = capture.get(cv2.CAP_PROP_FPS)
        fps = args.fps or (input_fps if input_fps and input_fps > 0 else 1000 / GIF_FRAME_MS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        total = min(count, args.max_frames or count) if count > 0 else args.max_frames
        mp4 = os.path.join(out_dir, f"{os.path.splitext(os.path.basename(video))[0]}_depth.mp4")
        writer = Mp4Writer(mp4, fps, size)
        if not writer.opened:
            capture.release()
            raise SystemExit(f"-> {mp4}: OpenCV cannot write 'mp4v' MP4 files here (no output for a video input)")
        try:
            frames, network_s, total_s = predict_stream(method, video_frames(capture, args.max_frames), device,
                                                        args.batch_size, K, total, lambda i, f: writer.write(f))
        except KeyboardInterrupt:
            print("-> interrupted: the frames so far are kept")
            frames, network_s, total_s = writer.frames, float("nan"), float("nan")
        finally:
            writer.close()
        if not frames:
            raise SystemExit(f"--video_path {video}: no frame could be decoded")
        print(f"-> {frames} frames of {size[0]}x{size[1]} at {fps:g} fps: {mp4}")
        report_speed(frames, network_s, total_s)
        return mp4
    absolute = os.path.abspath(folder)
    name = os.path.basename(absolute.rstrip(os.sep)) or "video"
    out_dir = args.output_dir or os.path.dirname(absolute)
    os.makedirs(out_dir, exist_ok=True)
    kept = []
    writer = Mp4Writer(os.path.join(out_dir, f"{name}.mp4"), args.fps or 1000 / GIF_FRAME_MS, size)
    try:
        frames, network_s, total_s = predict_stream(
            method, folder_frames(paths), device, args.batch_size, K, len(paths),
            lambda i, f: (kept.append(f), writer.write(f)))
    finally:
        mp4 = writer.close()
    if not writer.opened:
        print("-> the GIF is written anyway")
    gif = os.path.join(out_dir, f"{name}.gif")
    pictures = [pil.fromarray(f) for f in kept]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS, loop=0)
    width, height = pictures[0].size
    print(f"-> {len(kept)} frames of {width}x{height}: {gif}" + (f", {mp4}" if mp4 else ""))
    report_speed(frames, network_s, total_s)
    return gif, mp4


def reads_own_inputs(method):
    """True for a method that predicts from its own dataset (Method.prediction_dataset
    overridden, e.g. frames with their poses), which a stream of frames cannot feed."""
    from methods.base import Method
    return type(method).prediction_dataset is not Method.prediction_dataset


def report_speed(frames, network_s, total_s):
    if frames and total_s == total_s and total_s > 0:
        print(f"-> {frames / total_s:.1f} frames/s in all (reading, resizing, predicting, colouring, writing; "
              f"{total_s:.2f} s), {frames / max(network_s, 1e-9):.1f} frames/s in the network alone")


if __name__ == "__main__":
    main()
    sys.exit(0)
