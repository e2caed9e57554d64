"""Evaluate depth on test sets: a weight folder, or saved predictions.

    python evaluate_depth.py --load_weights_folder W --eval_mono --eval_split SPLIT [SPLIT ...] --data_path D
    python evaluate_depth.py --ext_disp_to_eval disps.npy --eval_mono --eval_split SPLIT
    python evaluate_depth.py --load_weights_folder W --eval_mono --<test set>_path DIR ... --json out.json

The model is rebuilt from the weight folder alone (its opt.json names the method and its
options; a published folder without one loads as the baseline it came from) and predicts
at its training size on every test set. Each test set the command asks for (evaluation/
registers them, each with its own flags, e.g. a data path: a test set whose path is not
given is skipped) is scored with its own protocol: ground truth, crop, depth range and
scaling rule; one table per test set, all of them in one JSON file. --eval_mono:
per-image median scaling; --eval_stereo: a stereo-trained model's fixed scale (test sets
without one fall back to median scaling, said in the output). The flags are the
reference evaluation's; the README lists the test sets and their protocols.
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from evaluation import DEPTH_METRIC_NAMES, TEST_SETS
from evaluation.families import (DEFAULT_FAMILIES, FAMILY_METRIC_NAMES, METRICS_HELP, family_metrics,
                                 parse_metric_families)
from evaluation.protocols import LazyMaps, Unavailable
from evaluation.robustness import GROUP_TITLE as ROBUSTNESS_TITLE
from evaluation.robustness import (CorruptedDataset, dee, parse_corruptions, parse_severities, reference_from_json,
                                   reference_from_scores, summarise)
from utils import set_tf32


class CompactHelp(argparse.HelpFormatter):
    """One line per option where it fits; a default shown only where there is one."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=118)

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text \
                and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text

    def _format_usage(self, usage, actions, groups, prefix):
        return f"usage: {self._prog} --load_weights_folder W [options]   (or --ext_disp_to_eval PATH)\n\n"


def add_method_options_help(p):
    """The options a weight folder's method adds at inference (Method.inference_options), by
    method, so that --help lists them all; they apply when the folder is of that method."""
    from methods import METHODS, load_all_methods
    from options import build_parser
    load_all_methods()
    owners = {}  # the class that declares a set of inference options -> the methods that have them
    for name, cls in sorted(METHODS.items()):
        if cls.inference_options:
            owner = next(k for k in cls.__mro__ if "inference_options" in k.__dict__)
            owners.setdefault(owner, (cls, []))[1].append(name)
    for owner, (cls, names) in owners.items():
        g = p.add_argument_group(f"method {' / '.join(names)} (with one of its weight folders)")
        actions = {a.dest: a for a in build_parser(cls)._actions}
        for dest in owner.inference_options:
            a = actions[dest]
            flag = a.nargs == 0
            g.add_argument(*a.option_strings, dest=f"_help_{dest}", action="store_true" if flag else "store",
                           help=a.help, default=argparse.SUPPRESS,
                           **({} if flag else {"metavar": a.metavar or (a.choices and "{" + ",".join(map(str, a.choices)) + "}") or dest.upper()}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a depth model (or saved predictions) on test sets",
                                formatter_class=CompactHelp, add_help=False)
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    g = p.add_argument_group("model")
    g.add_argument("--load_weights_folder", type=str, help="a weights_N folder (its opt.json rebuilds the model)")
    g.add_argument("--ext_disp_to_eval", type=str, metavar="PATH", help="saved disparities instead of a model: "
                   "a .npy, or a folder of disps_<name>_split.npy")
    g.add_argument("--num_layers", type=int, help="ResNet depth of a published folder without opt.json "
                   "(default: read from encoder.pth)")
    g.add_argument("--min_depth", type=float, help="disparity -> depth range (default: the model's own)")
    g.add_argument("--max_depth", type=float, help="disparity -> depth range (default: the model's own)")
    g = p.add_argument_group("scaling")
    g.add_argument("--eval_mono", action="store_true", help="monocular model: per-image median scaling")
    g.add_argument("--eval_stereo", action="store_true", help="stereo-trained model: x5.4, no median scaling")
    g.add_argument("--disable_median_scaling", action="store_true", help="no per-image median scaling")
    g.add_argument("--pred_depth_scale_factor", type=float, default=1.0, help="multiply predicted depth by this")
    g = p.add_argument_group("outputs")
    g.add_argument("--post_process", action="store_true", help="blend with the prediction of the mirrored image")
    g.add_argument("--save_pred_disps", action="store_true", help="save the predicted disparities (.npy)")
    g.add_argument("--no_eval", action="store_true", help="predict (and save) only")
    g.add_argument("--eval_out_dir", type=str, help="where predictions are written (default: the weights folder)")
    g.add_argument("--output_json", "--json", type=str, metavar="FILE", help="also write the metrics to this JSON file")
    g.add_argument("--metrics", default=",".join(DEFAULT_FAMILIES), metavar="FAMILIES", help=METRICS_HELP)
    g = p.add_argument_group(ROBUSTNESS_TITLE)
    g.add_argument("--corruptions", metavar="all|NAME[,NAME]",
                   help="also score every test set with its input images corrupted: all (18) or names, e.g. "
                        "gaussian_noise,fog; a table per corruption (mean over the severities), the mean, mRR")
    g.add_argument("--severity", nargs="+", metavar="N",
                   help="severity levels 0-5 averaged per corruption (0: the clean image; default: 1 2 3 4 5)")
    g.add_argument("--reference_model", metavar="W|JSON",
                   help="also report mCE against this model: its weight folder (scored on the same corrupted "
                        "images) or the JSON an earlier --corruptions run wrote (--output_json)")
    g = p.add_argument_group("system")
    g.add_argument("--batch_size", type=int, default=16, help="images per forward pass")
    g.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader workers (default: 4, or fewer where there are fewer CPU cores)")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    for test_set in TEST_SETS.values():
        test_set.add_options(p)
    args, unknown = p.parse_known_args(argv)
    if args.help:
        add_method_options_help(p)
        p.print_help()
        raise SystemExit(0)
    args.metric_families = parse_metric_families(args.metrics)
    args.corruption_names = parse_corruptions(args.corruptions) if args.corruptions else []
    args.severities = parse_severities(args.severity)
    if args.severity and not args.corruptions:
        raise SystemExit("--severity: give --corruptions too (all or NAME[,NAME])")
    if args.reference_model and not args.corruptions:
        raise SystemExit("--reference_model: give --corruptions too (mCE compares corrupted scores)")
    args.method_overrides, unknown = method_inference_options(args.load_weights_folder, unknown)
    ignored = ignorable_training_flags(unknown)
    if ignored:
        print(f"-> ignored (the model's options come from its weight folder): {' '.join(ignored)}")
    return args


def method_inference_options(folder, unknown):
    """The options the folder's method accepts at inference (Method.inference_options, e.g.
    a multi-frame method's --eval_teacher) -> ({name: value}, the flags left over)."""
    if not folder or not unknown:
        return {}, unknown
    from methods import DEFAULT_METHOD, method_class
    from methods.base import folder_options
    from options import build_parser
    saved = folder_options(os.path.expanduser(folder)) if os.path.isdir(os.path.expanduser(folder)) else None
    cls = method_class((saved or {}).get("method") or DEFAULT_METHOD)
    if not cls.inference_options:
        return {}, unknown
    full = build_parser(cls)
    p = argparse.ArgumentParser(add_help=False)
    for action in full._actions:
        if action.dest in cls.inference_options:
            p._add_action(action)
    known, rest = p.parse_known_args(unknown)
    given = {k: v for k, v in vars(known).items() if v != full.get_default(k)}
    if given:
        print(f"-> {cls.__name__} inference options: " + ", ".join(f"{k}={v}" for k, v in given.items()))
    return given, rest


def ignorable_training_flags(unknown):
    """Training flags that the reference's commands pass to evaluation (it shared one parser):
    accepted and ignored; anything else is an error, as usual."""
    from options import build_parser
    training = {flag: action for action in build_parser()._actions for flag in action.option_strings}
    ignored, i = [], 0
    while i < len(unknown):
        flag = unknown[i].split("=")[0]
        if flag not in training:
            raise SystemExit(f"evaluate_depth.py: unknown option {unknown[i]} (see --help)")
        ignored.append(unknown[i])
        i += 1
        while i < len(unknown) and "=" not in flag and not unknown[i].startswith("--"):
            ignored.append(unknown[i])  # its values
            i += 1
    return ignored


def post_process_disparity(l_disp, r_disp):
    """Blend a disparity and the un-mirrored disparity of the mirrored image (N x H x W):
    the left 5 % from the mirrored pass, the right 5 % from the normal pass, mean between."""
    _, h, w = l_disp.shape
    m_disp = 0.5 * (l_disp + r_disp)
    x = np.linspace(0, 1, w)
    l_mask = np.tile(1.0 - np.clip(20 * (x - 0.05), 0, 1), (h, 1))[None]
    r_mask = l_mask[:, :, ::-1]
    return r_mask * l_disp + l_mask * r_disp + (1.0 - l_mask - r_mask) * m_disp


def predict_disparities(method, dataset, device, batch_size=16, num_workers=4, post_process=False, progress=True,
                        variants=None):
    """Inverse depth N x h x w of every item of `dataset` (method.predict on the frames it
    declares); post_process adds the mirrored pass (every frame mirrored). variants: a
    dict that receives the inverse depth of each of the method's other outputs
    (predict()'s "variants", e.g. a multi-frame method's single-frame network)."""
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    disps, extra = [], {}

    def blended(disp):
        if post_process:
            n = disp.shape[0] // 2
            disp = post_process_disparity(disp[:n], disp[n:, :, ::-1])
        return disp

    with torch.no_grad():
        for data in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
            inputs = {k: v.to(device) for k, v in data.items() if torch.is_tensor(v)}
            if post_process:  # one pass over the images and their mirrors
                mirrored = mirror_inputs(inputs)
                inputs = {k: torch.cat([v, mirrored[k]]) for k, v in inputs.items()}
            prediction = method.predict(inputs)
            disps.append(blended(inverse_depth(prediction)))
            for name, depth in prediction.get("variants", {}).items():
                extra.setdefault(name, []).append(blended(inverse_depth({"depth": depth})))
    if variants is not None:
        variants.update({name: np.concatenate(v) for name, v in extra.items()})
    return np.concatenate(disps)


def mirror_inputs(inputs):
    """The batch of the mirrored images: every ("color", f, s) flipped, and the principal
    point of every ("K", s) mirrored (cx -> W_s - cx, as the training flip does)."""
    out = {}
    width = inputs[("color", 0, 0)].shape[-1]
    for key, value in inputs.items():
        if isinstance(key, tuple) and key[0] == "color":
            value = torch.flip(value, [3])
        elif isinstance(key, tuple) and key[0] == "K":
            value = value.clone()
            value[:, 0, 2] = width // 2 ** key[1] - value[:, 0, 2]
        out[key] = value
    for key in [k for k in out if isinstance(k, tuple) and k[0] == "inv_K"]:
        out[key] = torch.linalg.inv(out[("K", key[1])]) if ("K", key[1]) in out else out[key]
    return out


def inverse_depth(prediction):
    """{"depth", optional "disp"} B x 1 x h x w -> B x h x w inverse depth (numpy)."""
    disp = prediction.get("disp")
    if disp is None:
        disp = 1 / prediction["depth"]
    return disp.float().cpu()[:, 0].numpy()


def check_scaling(args, use_stereo=None):
    """--eval_mono or --eval_stereo, exactly one, and consistent with the model's training."""
    if args.eval_mono == args.eval_stereo:
        raise SystemExit("choose exactly one of --eval_mono (median scaling) or --eval_stereo (x5.4)")
    if args.eval_stereo and use_stereo is False:
        raise SystemExit("this model was trained without stereo (use_stereo=False), so its depth has no "
                         "metric scale: evaluate it with --eval_mono")
    if args.eval_mono and use_stereo:
        print("-> note: this model was trained with stereo (metric scale); papers report it with "
              "--eval_stereo. Median scaling is applied as asked.")


def scaling(args, test_set, verbose=True):
    """(depth factor, per-image median scaling) for one test set."""
    say = print if verbose else (lambda *a, **k: None)
    if getattr(test_set.protocol, "median_scaling", True) is False:
        say("   Metric evaluation - no median scaling (this test set's protocol)")
        return 1.0, False
    if args.eval_stereo:
        if test_set.stereo_scale_factor is None:
            say(f"   Stereo evaluation - {test_set.name} defines no stereo scale: using median scaling")
            return 1.0, True
        say(f"   Stereo evaluation - disabling median scaling, scaling by {test_set.stereo_scale_factor}")
        return test_set.stereo_scale_factor, False
    say("   Mono evaluation - using median scaling")
    return args.pred_depth_scale_factor, not args.disable_median_scaling


def print_table(metrics, names=DEPTH_METRIC_NAMES):
    print("\n  " + ("{:>8} | " * len(names)).format(*names))
    print(("&{: 8.3f}  " * len(names)).format(*[metrics[n] for n in names]) + "\\\\")


def external_disparities(path, test_sets, args):
    """{test set index: path} of the saved predictions: the .npy itself (one test set), or
    a folder's disps_<name>_split.npy (the names --save_pred_disps writes)."""
    if os.path.isdir(path):
        names = [s.external_name(args) for s in test_sets]
        files = {i: os.path.join(path, f"disps_{name}_split.npy") for i, name in enumerate(names)}
        missing = [f for f in files.values() if not os.path.isfile(f)]
        if missing:
            raise SystemExit(f"--ext_disp_to_eval {path}: missing {', '.join(os.path.basename(f) for f in missing)}")
        return files
    if len(test_sets) > 1:
        raise SystemExit("--ext_disp_to_eval FILE holds the predictions of one test set: ask for one, or give a "
                         "folder of disps_<test set>_split.npy files")
    if not os.path.isfile(path):
        raise SystemExit(f"--ext_disp_to_eval {path}: no such file")
    return {0: path}


def check_frames(test_sets, frames):
    """Refuse, before any work, a method that reads other frames on single-image test sets."""
    single = [s.name for s in test_sets if s.single_image]
    if single and set(frames) != {0}:
        raise SystemExit(f"this model reads frames {list(frames)}; {', '.join(single)} has single images only: "
                         "leave its path out")


def score(args, test_set, disps, out_dir, output=None):
    """One table (and JSON record) for one output of the model on one test set."""
    gts = test_set.ground_truth()
    if gts is None:
        test_set.without_ground_truth(disps, out_dir)
        return None
    if len(gts) != len(disps):
        raise SystemExit(f"{len(disps)} predictions but {len(gts)} ground-truth maps for {test_set.name}")
    what = f", output: {output}" if output else ""
    print(f"\n-> {test_set.name} ({len(disps)} images, protocol {test_set.protocol.name}{what})")
    factor, median = scaling(args, test_set)
    image_ratios = []
    metrics, ratios = test_set.protocol.evaluate(disps, gts, factor, median, test_set.extra_masks(), image_ratios)
    result = {"split": test_set.name, "protocol": test_set.protocol.name, "num_images": int(len(disps))}
    if output:
        result["output"] = output
    if median and len(ratios):
        med = np.median(ratios)
        print(f" Scaling ratios | med: {med:0.3f} | std: {np.std(ratios / med):0.3f}")
        result.update(ratio_median=float(med), ratio_std=float(np.std(ratios / med)))
    print_table(metrics, test_set.protocol.metric_names)
    for family in getattr(args, "metric_families", DEFAULT_FAMILIES)[1:]:
        try:
            values, count = family_metrics(family, test_set, disps, gts, factor, median, image_ratios,
                                           test_set.extra_masks())
        except Unavailable as e:
            print(f"   {family} metrics skipped for {test_set.name}: {e}")
            continue
        print(f"   {family} metrics ({count} images)", end="")
        print_table(values, FAMILY_METRIC_NAMES[family])
        metrics = {**metrics, **values, f"{family}_images": count}
    records = [{**result, **metrics}]
    for region, masks in test_set.region_masks().items():
        extra = test_set.extra_masks()
        packed, counted = [], 0  # one pass over GT and masks; the masks kept as bits
        for i in range(len(gts)):
            gt = gts[i]
            m, shape = np.asarray(masks[i], bool), np.shape(gt)[:2]
            if m.shape != shape:
                m = cv2.resize(m.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
            if extra is not None:
                m = m & np.asarray(extra[i], bool)
            counted += bool((m & test_set.protocol.mask(gt)).any())
            packed.append((np.packbits(m, axis=None), m.shape))

        def region_mask(i, packed=packed):
            bits, shape = packed[i]
            return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)

        print(f"   region {region}: {counted} of {len(gts)} images have ground truth there (the others are "
              "skipped); each image keeps its whole-image scale")
        metrics, _ = test_set.protocol.evaluate(disps, gts, factor, median, LazyMaps(len(gts), region_mask),
                                                image_ratios)
        print_table(metrics, test_set.protocol.metric_names)
        records.append({**result, "region": region, "region_images": counted, **metrics})
    return records


def corrupted_scores(args, method, test_set, device, gts, on_corruption=None):
    """{corruption: {severity: metric table}} of `method` on `test_set` with its inputs
    corrupted (every name in args.corruption_names at every level in args.severities).
    on_corruption(name, levels): called as each corruption is done."""
    dataset = test_set.dataset(method.opt.height, method.opt.width, method.inference_frames)
    dataset.missing_frames = type(method).missing_frames(method.opt, training=False)
    factor, median = scaling(args, test_set, verbose=False)
    extra = test_set.extra_masks()

    bar = tqdm(total=len(args.corruption_names) * len(args.severities), desc=f"corrupted {test_set.name}",
               unit="pass", leave=False)

    def scored(name, severity):
        disps = predict_disparities(method, CorruptedDataset(dataset, name, severity), device, args.batch_size,
                                    args.num_workers, args.post_process, progress=False)
        bar.update(1)
        return test_set.protocol.evaluate(disps, gts, factor, median, extra)[0]

    out = {}
    for name in args.corruption_names:
        out[name] = {severity: scored(name, severity) for severity in args.severities}
        if on_corruption:
            on_corruption(name, out[name])
    bar.close()
    return out


def robustness_row(label, metrics, names, extra=""):
    tqdm.write(f"  {label:<18}" + "".join(f"{metrics[n]:9.3f}" for n in names) + extra)


def robustness(args, method, test_set, device, clean_record, reference):
    """Score `test_set` with its inputs corrupted: one row per corruption (its metrics averaged
    over the severities), the mean over corruptions, RoboDepth's mRR and, with a reference
    model, mCE. reference: None, a loaded Method, or {test set name: the reference's DEEs}
    (from the JSON file an earlier run wrote). -> the JSON record."""
    names = test_set.protocol.metric_names
    gts = test_set.ground_truth()
    clean = {n: clean_record[n] for n in names}
    ref, ref_label = None, args.reference_model
    if isinstance(reference, dict):  # read from an earlier run's JSON file
        ref = reference[test_set.name]
    elif reference is not None:
        print(f"\n-> robustness of the reference model {args.reference_model} on {test_set.name} "
              f"({len(args.corruption_names)} corruption(s) x severities {' '.join(map(str, args.severities))})")
        ref = reference_from_scores(corrupted_scores(args, reference, test_set, device, gts))
    has_dee = "abs_rel" in names and "a1" in names
    print(f"\n-> robustness on {test_set.name}: {len(args.corruption_names)} corruption(s) x severities "
          f"{' '.join(map(str, args.severities))} of the {method.opt.width}x{method.opt.height} input; each row the "
          "mean over the severities" + ("" if has_dee else f" ({test_set.name} has no a1: no DEE, mRR, mCE)"))
    header = "".join(f"{n:>9}" for n in names) + ("      DEE     RR %" if has_dee else "") + ("     CE %" if ref else "")
    print(f"  {'corruption':<18}{header}")
    robustness_row("clean", clean, names, f"{dee(clean):9.3f}" if has_dee else "")

    def show(name, levels):
        entry = summarise(clean, {name: levels}, ref)["corruptions"][name]
        extra = ""
        if has_dee:
            extra = f"{entry['dee']:9.3f}{100 * entry['rr']:9.2f}" + (f"{100 * entry['ce']:9.2f}" if ref else "")
        robustness_row(name, entry["mean"], names, extra)

    scores = corrupted_scores(args, method, test_set, device, gts, show)
    summary = summarise(clean, scores, ref)
    robustness_row("mean", summary["mean"], names)
    line = []
    if "mRR" in summary:
        line.append(f"mRR {summary['mRR']:.2f} %")
    if "mCE" in summary:
        line.append(f"mCE {summary['mCE']:.2f} % (reference: {ref_label})")
    if line:
        print("  " + ", ".join(line))
    summary["severities"] = list(args.severities)
    record = {"split": test_set.name, "protocol": test_set.protocol.name, "num_images": len(gts),
              "robustness": summary}
    if ref_label:
        record["reference_model"] = ref_label
    return record


def evaluate(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    test_sets = [s for cls in TEST_SETS.values() for s in cls.from_args(args)]
    if not test_sets:
        raise SystemExit("no test set asked for (see --eval_split and the other test-set options)")
    method, use_stereo, external, reference = None, None, None, None
    if args.corruption_names and (args.ext_disp_to_eval or args.no_eval):
        raise SystemExit("--corruptions scores the model on corrupted input images: it needs --load_weights_folder "
                         "and no --ext_disp_to_eval or --no_eval")
    if args.reference_model and not os.path.isdir(os.path.expanduser(args.reference_model)):
        reference = {t.name: reference_from_json(args.reference_model, t.name, args.corruption_names, args.severities)
                     for t in test_sets}  # read before any work
    if args.ext_disp_to_eval:
        external = external_disparities(args.ext_disp_to_eval, test_sets, args)
    else:
        if not args.load_weights_folder:
            raise SystemExit("give --load_weights_folder (or --ext_disp_to_eval)")
        from methods import load_for_inference
        overrides = {k: getattr(args, k) for k in ("num_layers", "min_depth", "max_depth") if getattr(args, k)}
        overrides.update(getattr(args, "method_overrides", {}))
        method = load_for_inference(args.load_weights_folder, device, **overrides)
        set_tf32(getattr(method.opt, "allow_tf32", "pytorch"))  # as the folder was trained
        use_stereo = method.trained_with_stereo
        check_frames(test_sets, method.inference_frames)
        if args.post_process and not method.post_process_supported:
            raise SystemExit(f"--post_process: {type(method).__name__} reads given poses, which a mirrored pass "
                             "would need mirrored too; evaluate without it")
        print(f"-> {type(method).__name__} from {args.load_weights_folder}, predicting at "
              f"{method.opt.width}x{method.opt.height}")
        for test_set in test_sets:  # e.g. the crop and ground-truth placement it was trained with
            test_set.use_dataset_options(type(method).dataset_options(method.opt))
        if args.reference_model and not isinstance(reference, dict):  # a weight folder
            reference = load_for_inference(args.reference_model, device)
            check_frames(test_sets, reference.inference_frames)
            print(f"-> reference model for mCE: {type(reference).__name__} from {args.reference_model}, "
                  f"predicting at {reference.opt.width}x{reference.opt.height}")
            for test_set in test_sets:
                test_set.use_dataset_options(type(reference).dataset_options(reference.opt))
    if all(getattr(t.protocol, "median_scaling", True) is False for t in test_sets) and \
            not (args.eval_mono or args.eval_stereo):
        pass  # metric test sets only: neither flag is needed
    else:
        check_scaling(args, use_stereo)
        if reference is not None and not isinstance(reference, dict):
            try:
                check_scaling(args, reference.trained_with_stereo)
            except SystemExit as e:
                raise SystemExit(f"--reference_model {args.reference_model}: {e}") from None
    if not args.no_eval:
        for test_set in test_sets:
            test_set.check_ready()
    out_dir = args.eval_out_dir or args.load_weights_folder or "."
    results = []
    for index, test_set in enumerate(test_sets):
        variants = {}
        if method is None:
            print(f"-> Loading predictions from {external[index]}")
            disps = test_set.external_predictions(np.load(external[index]), args)
        else:
            dataset = test_set.dataset(method.opt.height, method.opt.width, method.inference_frames)
            dataset.missing_frames = type(method).missing_frames(method.opt, training=False)
            disps = predict_disparities(method, dataset, device, args.batch_size, args.num_workers,
                                        args.post_process, variants=variants)
        outputs = [(getattr(method, "output_name", None), disps)] + list(variants.items())
        main_records = None
        for output, output_disps in outputs:
            suffix = f"_{output}" if output and output_disps is not disps else ""
            if args.save_pred_disps:
                os.makedirs(out_dir, exist_ok=True)
                path = os.path.join(out_dir, f"disps_{test_set.name}_split{suffix}.npy")
                np.save(path, output_disps)
                print(f"-> Saved predicted disparities to {path}")
            if args.no_eval:
                continue
            records = score(args, test_set, output_disps, out_dir, output) or []
            main_records = records if main_records is None else main_records
            results += records
        if args.corruption_names and main_records:
            if variants:
                print(f"-> robustness: the main output only ({outputs[0][0] or 'depth'})")
            results.append(robustness(args, method, test_set, device, main_records[0], reference))
    if args.output_json and results:
        with open(args.output_json, "w") as f:
            json.dump(results[0] if len(results) == 1 else {"results": results}, f, indent=1)
    print("\n-> Done!")
    return results[0] if len(results) == 1 else results


if __name__ == "__main__":
    evaluate(parse_args())
    sys.exit(0)
