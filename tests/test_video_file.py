"""test_video.py on a video file: frame count, size and rate of the MP4 it writes, the
pictures in it, a multi-frame model fed the previous frame of the stream, the errors."""
import json
import os

import cv2
import numpy as np
import pytest

import test_video

H, W = 32, 96  # the scene models' input size: outputs are W x 2H
LEVELS = [0.15, 0.3, 0.45, 0.6, 0.75]  # each frame's brightness


def make_video(path, fps=5.0, size=(120, 40)):
    """A short MP4 of flat grey frames (with a little texture) of brightness LEVELS."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for level in LEVELS:
        frame = np.clip(level + rng.uniform(-0.03, 0.03, (size[1], size[0], 3)), 0, 1)
        writer.write((frame * 255).astype(np.uint8))
    writer.release()
    return str(path)


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def folder(path, method):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "opt.json"), "w") as f:
        json.dump({"method": method, "height": H, "width": W, "scene_road_height": 0.1}, f)
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def test_video_file_gives_an_mp4_of_every_frame(clip, tmp_path, capsys):
    from tests.helpers.scene_method import SceneMethod
    from utils import colorize_disparity
    model = folder(tmp_path / "scene", "tests.helpers.scene_method")
    out = test_video.main(["--video_path", clip, "--load_weights_folder", model, "--output_dir", str(tmp_path / "out"),
                           "--batch_size", "2", "--no_cuda"])
    assert out == str(tmp_path / "out" / "clip_depth.mp4")
    frames, fps = read_video(out)
    assert len(frames) == 5 and frames[0].shape == (2 * H, W, 3) and fps == pytest.approx(5.0)
    printed = capsys.readouterr().out
    assert "-> 5 frames of 96x64 at 5 fps" in printed and "frames/s in all" in printed
    # top: the frame at the network size; bottom: the scene's colourised disparity
    assert np.allclose([f[:H].mean() / 255 for f in frames], LEVELS, atol=0.03)
    scene = SceneMethod.road_depth(H, W, 0.1).clamp(max=5.0)
    scene[SceneMethod.box_mask(H, W)] *= 0.5
    expected = colorize_disparity((1 / scene).float().numpy()).astype(np.float64)
    for frame in frames:
        assert np.abs(frame[H:].astype(np.float64) - expected).mean() < 6  # of 255: the codec's loss
    # --image_path takes a video too; --max_frames stops early; the default output is beside the input
    out = test_video.main(["--image_path", clip, "--load_weights_folder", model, "--max_frames", "3", "--fps", "10",
                           "--no_cuda"])
    assert out == os.path.join(os.path.dirname(clip), "clip_depth.mp4")
    frames, fps = read_video(out)
    assert len(frames) == 3 and fps == pytest.approx(10.0)


def test_multi_frame_model_reads_the_previous_frame_of_the_video(clip, tmp_path):
    from tests.helpers.scene_method import PreviousFrameScene
    model = folder(tmp_path / "scene", "tests.helpers.scene_method_previous")
    PreviousFrameScene.seen.clear()
    out = test_video.main(["--video_path", clip, "--load_weights_folder", model, "--output_dir", str(tmp_path),
                           "--batch_size", "2", "--no_cuda"])
    assert len(read_video(out)[0]) == 5
    seen = np.array(PreviousFrameScene.seen)  # per frame: (its brightness, frame -1's, frame -1 missing)
    assert seen.shape == (5, 3)
    assert np.allclose(seen[:, 0], LEVELS, atol=0.03)
    # the first frame has none before it: the model's rule, a black frame flagged missing
    assert seen[0, 1] == 0 and seen[0, 2] == 1
    assert np.allclose(seen[1:, 1], seen[:-1, 0], atol=1e-6) and np.all(seen[1:, 2] == 0)


def test_video_errors_name_the_problem(clip, tmp_path):
    model = folder(tmp_path / "scene", "tests.helpers.scene_method")
    with pytest.raises(SystemExit, match="--video_path .*nope.mp4: no such file"):
        test_video.main(["--video_path", str(tmp_path / "nope.mp4"), "--load_weights_folder", model])
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(SystemExit, match="--image_path .*text.mp4: OpenCV cannot open it as a video"):
        test_video.main(["--image_path", str(tmp_path / "text.mp4"), "--load_weights_folder", model])
