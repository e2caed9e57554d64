"""benchmarks/compare_methods.py --quick end to end (a small world, a short shared start, two
rows, one seed), the summary's numbers from its runs, and resuming a killed comparison."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

QUICK = ["--quick", "--quick_steps", "2", "--height", "64", "--width", "192"]


def _run(out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "benchmarks/compare_methods.py", *QUICK, "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    res = _run(out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    yield out, res
    shutil.rmtree(out, ignore_errors=True)  # worlds, runs and weights (the suite's disk peak)


def test_quick_comparison_writes_the_table_the_plot_and_the_diagnostics(quick):
    out, res = quick
    for name in ("table.md", "results.json", "results.csv", "compare.png"):
        assert (out / name).stat().st_size > 100, name
    records = json.loads((out / "results.json").read_text())
    assert sorted(r["row"] for r in records) == ["monodepth2_mono", "srd"]
    for r in records:
        assert 0 < r["abs_rel"] < 5 and 0 <= r["a1"] <= 1
        assert 0 <= r["moving/abs_rel"] < 5  # the world has moving objects: their region is scored
        diag = r["diagnostics"]
        assert 0 <= diag["abs_rel_static"] < 5 and 0 <= diag["abs_rel_zoom_1.6x"] < 5
        assert diag["scale_spread"] >= 0 and diag["pose_metres_per_frame"] > 0
    # the table's paired difference is srd - monodepth2_mono on the same seed
    by = {r["row"]: r for r in records}
    delta = by["srd"]["abs_rel"] - by["monodepth2_mono"]["abs_rel"]
    table = (out / "table.md").read_text()
    line = next(l for l in table.splitlines() if l.startswith("| srd |"))
    assert f"{delta:.3f} ± 0.000 (n=1)" in line
    # each run started from the shared start, recorded in its preset
    preset = (out / "presets" / "srd_s0.yaml").read_text()
    assert "pretrained_encoder:" in preset and "seed: 0" in preset


def test_a_second_call_reuses_finished_runs_and_resumes_a_killed_one(quick):
    out, _ = quick
    # a run killed before its evaluation: its evaluation and diagnostics are redone, nothing retrained
    (out / "runs" / "srd_s0" / "eval.json").unlink()
    before = (out / "runs" / "monodepth2_mono_s0" / "eval.json").stat().st_mtime_ns
    res = _run(out)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (out / "runs" / "srd_s0" / "eval.json").is_file()
    assert (out / "runs" / "monodepth2_mono_s0" / "eval.json").stat().st_mtime_ns == before
    log = (out / "logs" / "srd_s0.log").read_text()
    assert log.count("train.py") == 1  # trained once: the finished training was read back
