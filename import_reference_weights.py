"""Turn a released checkpoint of the dynamic-scene multi-frame method (Li et al., CVPR 2023;
its reference implementation's DyMultiDepthModel, ResNet-18 or EfficientNet-B5 at 256x512)
into a weight folder of `--method dynamic_mf`:

    python import_reference_weights.py CHECKPOINT --backbone resnet18 --out FOLDER
    python evaluate_depth.py --load_weights_folder FOLDER --odom_path ODOM --eval_dynamic

FOLDER gets model.pth (the reference's tensors under our names, nothing reshaped; see
methods/dynamic_mf.py, reference_state_to_ours) and opt.json (the dynamic_mf preset of that
backbone with the fusion and size of the checkpoint and --ref_compat, the reference
behaviours the checkpoint was trained with, among them its align_corners=False sampling).
"""
import argparse

from methods.dynamic_mf import REFERENCE_BACKBONES, import_reference_checkpoint


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the reference's .pth ({\"state_dict\": ..., \"arch\": ...})")
    p.add_argument("--backbone", choices=sorted(REFERENCE_BACKBONES),
                   help="the checkpoint's backbone (checked against its keys; default: read from them)")
    p.add_argument("--out", required=True, help="weight folder to write (model.pth, opt.json)")
    p.add_argument("--height", type=int, default=256, help="input height the checkpoint was trained at")
    p.add_argument("--width", type=int, default=512, help="input width the checkpoint was trained at")
    args = p.parse_args(argv)
    import_reference_checkpoint(args.checkpoint, args.out, args.backbone, args.height, args.width)


if __name__ == "__main__":
    main()
