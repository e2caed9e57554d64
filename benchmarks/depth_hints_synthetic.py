"""Depth Hints on the synthetic world: stereo training with and without hints, same budget.

    python benchmarks/depth_hints_synthetic.py [--data_path synthetic_data] [--epochs 8]

Precomputes hints for the synthetic split (timed per image), trains the quickstart's stereo
recipe twice (without, then with --use_depth_hints), evaluates both with the stereo
protocol (x5.4, no median scaling) and prints a table. A measurement, not a test.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import precompute_depth_hints  # noqa: E402
from datasets import synthetic_world as sw  # noqa: E402
from evaluate_depth import predict_disparities  # noqa: E402
from evaluation.kitti import STEREO_SCALE_FACTOR, KittiSplit  # noqa: E402
from export_gt_depth import export_gt_depths  # noqa: E402
from options import PROJECT_DIR, MonodepthOptions  # noqa: E402
from trainer import Trainer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default="synthetic_data")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--hint_height", type=int, default=192)
    p.add_argument("--hint_width", type=int, default=640)
    args = p.parse_args()
    if not sw.world_exists(args.data_path):
        sw.generate(sw.Config(out=args.data_path))
    split = os.path.join(args.data_path, "splits", "synthetic")
    lines = []
    for name in ("train_files.txt", "val_files.txt"):
        with open(os.path.join(split, name)) as f:
            lines += f.read().splitlines()
    all_files = os.path.join(tempfile.mkdtemp(), "all_files.txt")
    with open(all_files, "w") as f:
        f.write("\n".join(lines) + "\n")
    hints = os.path.join(args.data_path, f"depth_hints_{args.hint_width}x{args.hint_height}")
    start = time.time()
    counts = precompute_depth_hints.main(["--data_path", args.data_path, "--filenames", all_files, "--save_path",
                                          hints, "--png", "--height", str(args.hint_height), "--width",
                                          str(args.hint_width)])
    per_image = (time.time() - start) / max(counts["done"], 1)
    _, gts = export_gt_depths(args.data_path, split, "velodyne", "exact", progress=False)
    test_set = KittiSplit(split, args.data_path, png=True)
    rows = []
    for label, extra in (("stereo", []), ("stereo + depth hints", ["--use_depth_hints", "--depth_hint_path", hints])):
        opt = MonodepthOptions().parse([
            "--config", os.path.join(PROJECT_DIR, "configs", "synthetic_quickstart.yaml"), "--data_path",
            args.data_path, "--split", split, "--num_epochs", str(args.epochs), "--log_dir", tempfile.mkdtemp(),
            "--no_progress"] + extra)
        opt.fast_loader = False  # the README's table was measured on the default input path
        trainer = Trainer(opt).train()
        trainer.method.eval()
        disps = predict_disparities(trainer.method, test_set.dataset(opt.height, opt.width, [0]), trainer.device,
                                    opt.batch_size, 0, progress=False)
        rows.append((label, test_set.protocol.evaluate(disps, gts, STEREO_SCALE_FACTOR, False)[0]))
    print(f"\nhints: {counts['done']} images at {args.hint_width}x{args.hint_height}, {per_image:.2f} s per image "
          f"(2 CPU cores, 12 SGBM candidates + fusion)")
    print("\n| training | abs_rel | sq_rel | rmse | a1 |")
    print("|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['abs_rel']:.3f} | {m['sq_rel']:.3f} | {m['rmse']:.3f} | {m['a1']:.3f} |")


if __name__ == "__main__":
    main()
