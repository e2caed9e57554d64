"""benchmarks/inference_speed.py: the median of the timed calls after the warm-up ones; a
small end-to-end table (one method, every backend, two batch sizes) whose cells agree with
the JSON; a backend that fails is a "failed: <reason>" cell, not the end of the run. No
speed is asserted (speed is measured by running the script)."""
import json
import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import inference_speed  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timed_is_the_median_of_the_calls_after_the_warm_up(monkeypatch):
    """A fake clock that each call advances by the next duration: 2 warm-up calls of 100 s,
    then 5 timed calls of 3, 1, 7, 2, 50 s -> the median 3 s; the warm-up is not counted."""
    clock = [0.0]
    durations = iter([100.0, 100.0, 3.0, 1.0, 7.0, 2.0, 50.0])
    monkeypatch.setattr(inference_speed.time, "perf_counter", lambda: clock[0])

    def call():
        clock[0] += next(durations)

    assert inference_speed.timed(call, (), 2, 5, torch.device("cpu")) == 3.0
    assert next(durations, None) is None  # exactly 7 calls


def test_a_small_table_with_a_failing_backend(tmp_path, monkeypatch, capsys):
    """Monodepth2 at 96 x 64, batches 1 and 2, all four backends with torch.compile made to
    fail: three backends give "X ms (Y/s)" cells with Y = 1000 / X, the JSON holds the same
    numbers, torch.compile's cells say why it failed."""
    pytest.importorskip("onnxruntime")

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", no_compiler)
    out = tmp_path / "cells.json"
    inference_speed.main(["--methods", "monodepth2", "--sizes", "96x64", "--batches", "1", "2", "--repeats", "2",
                          "--warmup", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| Monodepth2")]
    assert len(rows) == 2 and "random-init weights" in printed and "### 96x64" in printed
    cells = json.loads(out.read_text())["cells"]
    by_key = {(c["batch"], c["backend"]): c for c in cells}
    assert len(by_key) == 8
    for row, batch in zip(rows, (1, 2)):
        parts = [p.strip() for p in row.strip("|").split("|")]
        assert parts[1] == str(batch) and len(parts) == 2 + 4 + 1
        for text, backend in zip(parts[2:6], inference_speed.BACKENDS):
            if backend == "compile":
                assert text == "failed: RuntimeError: no C++ compiler" == by_key[batch, backend]["failed"]
                continue
            ms, fps = map(float, re.fullmatch(r"([\d.]+) ms \(([\d.]+)/s\)", text).groups())
            cell = by_key[batch, backend]
            assert ms == pytest.approx(cell["ms_per_frame"], abs=0.05)
            assert cell["ms_per_frame"] * cell["frames_per_s"] == pytest.approx(1000)
            assert cell["seconds_per_call"] == pytest.approx(batch * cell["ms_per_frame"] / 1000)
        assert parts[6] == "-"  # no compile time where it failed


def test_bad_options_are_one_line_errors():
    for argv in (["--sizes", "100x64"], ["--sizes", "96x64", "--batches_at", "640x192=1"],
                 ["--batches_at", "640x192=x"], ["--repeats", "0"]):
        with pytest.raises(SystemExit) as e:
            inference_speed.parse_args(argv)
        assert e.value.code == 2, argv
    args = inference_speed.parse_args(["--batches_at", "640x192=1"])
    assert args.batches_at == {"640x192": [1]} and args.batches == [1, 16]
