"""The whole pipeline on the built-in synthetic world, on a CPU, in a few minutes.

    python quickstart.py [--data_path synthetic_data] [--epochs 12]

1. writes the synthetic KITTI-format world to --data_path if it is not there yet;
2. trains a stereo ResNet-18 (configs/synthetic_quickstart.yaml) from scratch;
3. exports the test split's ground truth and evaluates the last weights: metric depth
   (stereo protocol, x5.4), and with per-image median scaling beside an untrained network
   and a constant-depth predictor for reference;
4. writes a picture to judge at a glance (example_panel.png: a test frame, the predicted
   depth and the world's true depth on one colour scale) and, with test_simple.py, the
   coloured depth image of that frame. The model is trained on synthetic data: it is not
   meant for real photos.
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", default="synthetic_data", help="the synthetic world (written if absent)")
    p.add_argument("--log_dir", default="runs", help="the run goes to <log_dir>/quickstart")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--num_workers", type=int, default=1, help="data loader workers")
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
    if os.path.isdir(os.path.join(args.log_dir, "quickstart")):
        print(f"-> {os.path.join(args.log_dir, 'quickstart')} holds an earlier quickstart: starting afresh there")
    print("-> training (about 3-5 minutes on 2 CPU cores)")
    opt = MonodepthOptions().parse([
        "--config", os.path.join(PROJECT_DIR, "configs", "synthetic_quickstart.yaml"),
        "--data_path", args.data_path, "--split", split, "--log_dir", args.log_dir,
        "--num_epochs", str(args.epochs), "--num_workers", str(args.num_workers),
        "--cache_dir", os.path.join(args.data_path, "cache"), "--overwrite"])
    trainer = Trainer(opt)
    _, gts = export_gt_depths(args.data_path, split, "velodyne", "exact")
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
    index = len(test_lines) // 2
    folder, frame, _ = test_lines[index].split()
    image = os.path.join(args.data_path, folder, "image_02", "data", f"{int(frame):010d}.png")
    truth = os.path.join(args.data_path, folder, "depth_dense", "image_02", "data", f"{int(frame):010d}.npy")
    run_dir = os.path.join(args.log_dir, opt.model_name)
    frame_abs_rel = test_set.protocol.score(disps[index], gts[index], STEREO_SCALE_FACTOR, False)[0][0]
    panel = write_panel(image, STEREO_SCALE_FACTOR / disps[index], np.load(truth),
                        os.path.join(run_dir, "example_panel.png"),
                        f"{test_lines[index]}: abs_rel {frame_abs_rel:.3f} on this frame, {metric['abs_rel']:.3f} "
                        "on the test drive (metric, stereo scale)")
    target = os.path.join(run_dir, "example.png")
    shutil.copy(image, target)
    test_simple.main(["--image_path", target, "--load_weights_folder", weights])
    print(f"-> done in {(time.time() - start) / 60:.1f} min; weights in {weights}; picture {panel}; depth image "
          f"{target[:-4]}_disp.jpeg; TensorBoard: tensorboard --logdir {run_dir}")
    return metric, trained, untrained, constant


def write_panel(image_path, pred_depth, true_depth, out, caption):
    """Input, prediction and truth, one above the other; both depths in metres on one
    colour scale (inverse depth, near = bright; the sky has no true depth and is black)."""
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = rgb.shape[:2]
    pred = cv2.resize(1 / pred_depth.astype(np.float32), (w, h))  # inverse depth, as evaluated
    truth = np.where(true_depth > 0, 1 / np.maximum(true_depth, 1e-3), np.nan)
    vmin, vmax = 1 / 80.0, np.nanpercentile(truth, 99)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9.6))
    panels = (("input (test drive)", rgb), ("predicted depth", pred), ("true depth (rendered)", truth))
    for ax, (title, data) in zip(axes, panels):
        shown = ax.imshow(data, cmap="magma", vmin=vmin, vmax=vmax) if data.ndim == 2 else ax.imshow(data)
        ax.set_title(title)
        ax.axis("off")
    bar = fig.colorbar(shown, ax=axes[1:], fraction=0.03, pad=0.01)
    ticks = [d for d in (2, 3, 5, 10, 20, 40, 80) if vmin <= 1 / d <= vmax]
    bar.set_ticks([1 / d for d in ticks])
    bar.set_ticklabels([f"{d} m" for d in ticks])
    fig.suptitle(caption, fontsize=10)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
