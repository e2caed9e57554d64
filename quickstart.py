"""The whole pipeline on the built-in synthetic world, on a CPU, in a few minutes.

    python quickstart.py [--data_path synthetic_data] [--epochs 12]

1. writes the synthetic KITTI-format world to --data_path if it is not there yet;
2. trains a stereo ResNet-18 (configs/synthetic_quickstart.yaml) from scratch;
3. exports the test split's ground truth and evaluates the last weights: metric depth
   (stereo protocol, x5.4), and with per-image median scaling beside an untrained network
   and a constant-depth predictor for reference;
4. writes a coloured depth image of one test frame with test_simple.py.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default="synthetic_data")
    p.add_argument("--log_dir", default="runs")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=1)
    args = p.parse_args(argv)
    sys.path.insert(0, PROJECT_DIR)
    from datasets import synthetic_world as sw
    from evaluate_depth import predict_disparities, print_table
    from evaluation.kitti import STEREO_SCALE_FACTOR, KittiSplit
    from export_gt_depth import export_gt_depths
    from options import MonodepthOptions
    from trainer import Trainer
    import test_simple

    start = time.time()
    if not sw.world_exists(args.data_path):
        print(f"-> writing the synthetic world to {args.data_path}")
        sw.generate(sw.Config(out=args.data_path, overwrite=os.path.isdir(args.data_path)
                              and not os.listdir(args.data_path)))
    split = os.path.join(args.data_path, "splits", "synthetic")
    opt = MonodepthOptions().parse([
        "--config", os.path.join(PROJECT_DIR, "configs", "synthetic_quickstart.yaml"),
        "--data_path", args.data_path, "--split", split, "--log_dir", args.log_dir,
        "--num_epochs", str(args.epochs), "--num_workers", str(args.num_workers),
        "--cache_dir", os.path.join(args.data_path, "cache")])
    trainer = Trainer(opt)
    _, gts = export_gt_depths(args.data_path, split, "velodyne", "exact", progress=False)
    test_set = KittiSplit(split, args.data_path, png=True)
    test_lines = test_set.filenames
    score = test_set.protocol.evaluate

    def predict():
        trainer.method.eval()
        dataset = test_set.dataset(opt.height, opt.width, trainer.method.inference_frames)
        disps = predict_disparities(trainer.method, dataset, trainer.device, opt.batch_size,
                                    min(opt.num_workers, 4), progress=False)
        trainer.method.train()
        return disps

    untrained = score(predict(), gts, 1.0, True)[0]
    trainer.train()
    disps = predict()
    metric = score(disps, gts, STEREO_SCALE_FACTOR, False)[0]
    trained = score(disps, gts, 1.0, True)[0]
    constant = score(np.ones((len(gts), opt.height, opt.width)), gts, 1.0, True)[0]
    print("\n-> test drive of the synthetic world, metric depth (stereo protocol: x5.4, no scaling)")
    print_table(metric)
    print(f"\n   abs_rel with per-image median scaling: trained {trained['abs_rel']:.3f} | untrained "
          f"network {untrained['abs_rel']:.3f} | constant depth {constant['abs_rel']:.3f}")
    weights = os.path.join(args.log_dir, opt.model_name, "models", f"weights_{opt.num_epochs - 1}")
    with open(os.path.join(args.log_dir, opt.model_name, "quickstart_metrics.json"), "w") as f:
        json.dump({"trained_metric": metric, "trained": trained, "untrained": untrained, "constant": constant},
                  f, indent=1)
    folder, frame, _ = test_lines[len(test_lines) // 2].split()
    image = os.path.join(args.data_path, folder, "image_02", "data", f"{int(frame):010d}.png")
    target = os.path.join(args.log_dir, opt.model_name, "example.png")
    shutil.copy(image, target)
    test_simple.main(["--image_path", target, "--load_weights_folder", weights])
    print(f"-> done in {(time.time() - start) / 60:.1f} min; weights in {weights}, depth image "
          f"{target[:-4]}_disp.jpeg, TensorBoard logs in {os.path.join(args.log_dir, opt.model_name)}")
    return metric, trained, untrained, constant


if __name__ == "__main__":
    main()
