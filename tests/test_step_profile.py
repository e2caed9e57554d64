"""benchmarks/step_profile.py on the CPU: the report's lines, and its count of a training
example's floating-point operations, which for convolutions scales with the pixels (x2 when
the width doubles). No speed is asserted (speed is measured by running the script)."""
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import step_profile  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _gflop(static_world, capsys, height, width):
    step_profile.main(["--data_path", static_world.out, "--device", "cpu", "--height", str(height),
                       "--width", str(width), "--batch_size", "2", "--steps", "1", "--warmup", "1", "--top", "3"])
    out = capsys.readouterr().out
    assert re.search(rf"monodepth2, {width}x{height}, batch 2, cpu, amp off: [\d.]+ ms per step", out)
    assert "| aten::" in out and "host (CPU) self time" in out
    return float(re.search(r"([\d.]+) GFLOP per training example", out).group(1))


def test_report_and_flops_scale_with_the_pixels(static_world, capsys):
    small = _gflop(static_world, capsys, 64, 192)
    large = _gflop(static_world, capsys, 64, 384)
    assert small > 1  # ResNet-18 depth + pose networks, forward and backward
    assert large / small == pytest.approx(2, rel=0.02)


def test_a_folder_without_the_split_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no splits/synthetic/train_files.txt"):
        step_profile.main(["--data_path", str(tmp_path), "--device", "cpu"])
