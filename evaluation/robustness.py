"""Robustness to corrupted inputs (KITTI-C / RoboDepth): any test set's images corrupted on the
fly (evaluation/corruptions.py), and RoboDepth's summary numbers.

RoboDepth's definitions (its KITTI-C tables; Kong et al. 2023):
- DEE, the depth estimation error of a metric table: (abs_rel - a1 + 1) / 2 (a1 a fraction).
- a corruption's metrics are the mean of its metrics over the severities (1-5), and its DEE
  is the DEE of that mean.
- CE_i = DEE_i(model) / DEE_i(reference model); mCE = mean over the corruptions of CE_i.
- RR_i = (1 - DEE_i) / (1 - DEE_clean), the model's own clean DEE; mRR = mean of RR_i.
mCE and mRR are reported in percent; the reference model scores mCE = 100 %.
"""
import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .corruptions import CORRUPTIONS, ROBODEPTH_ORDER, SEVERITIES, corrupt, corruption_rng

GROUP_TITLE = "robustness (the inputs corrupted as KITTI-C / RoboDepth do)"


def parse_corruptions(text):
    """"all" or "NAME[,NAME...]" -> names in RoboDepth's order ("all": all 18)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise SystemExit("--corruptions: give all or NAME[,NAME...]")
    if "all" in names:
        return list(ROBODEPTH_ORDER)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise SystemExit(f"--corruptions: unknown {', '.join(unknown)}; choose from all, {', '.join(ROBODEPTH_ORDER)}")
    return [n for n in ROBODEPTH_ORDER if n in names]


def parse_severities(values):
    """--severity values (ints 0-5; "1-5" and "1,2" accepted too) -> sorted unique list
    (default 1 2 3 4 5)."""
    if not values:
        return list(SEVERITIES)
    levels = set()
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                lo, hi = (int(v) for v in part.split("-")) if "-" in part[1:] else (int(part), int(part))
            except ValueError:
                raise SystemExit(f"--severity {value}: give levels 0-5 (0 is the clean image), e.g. 3 or 1 2 3") from None
            if not (0 <= lo <= hi <= 5):
                raise SystemExit(f"--severity {value}: levels are 0 (clean) to 5")
            levels.update(range(lo, hi + 1))
    return sorted(levels)


def corrupt_tensor(image, name, severity, rng):
    """3 x H x W float image in [0, 1] -> the corrupted image (same type), through 8 bits."""
    array = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = corrupt(array, name, severity, rng)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(image.dtype) / 255


class CorruptedDataset(Dataset):
    """A test dataset whose input frames ("color" / "color_aug", f, s) are corrupted: item
    `index`, frame f gets corruption_rng(name, index, f) (deterministic; severity 0 returns the
    items unchanged)."""

    def __init__(self, dataset, name, severity):
        self.dataset, self.name, self.severity = dataset, name, int(severity)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        if self.severity == 0:
            return item
        done = {}
        for key in sorted((k for k in item if isinstance(k, tuple) and len(k) == 3 and k[0] in ("color", "color_aug")
                           and torch.is_tensor(item[k])), key=lambda k: k[0] != "color"):
            frame, scale = key[1], key[2]
            if (frame, scale) not in done:  # color_aug is color at evaluation: the same corrupted image
                done[frame, scale] = corrupt_tensor(item[key], self.name, self.severity,
                                                    corruption_rng(self.name, index, frame))
            item[key] = done[frame, scale]
        return item


def dee(metrics):
    """RoboDepth's depth estimation error (abs_rel - a1 + 1) / 2, or None without abs_rel or a1."""
    if "abs_rel" not in metrics or "a1" not in metrics:
        return None
    return (metrics["abs_rel"] - metrics["a1"] + 1) / 2


def mean_metrics(tables):
    names = list(tables[0])
    return {n: float(np.mean([t[n] for t in tables])) for n in names}


def summarise(clean, corruptions, reference=None):
    """clean: the clean metric table; corruptions: {name: {severity: metric table}};
    reference: None, or {"corruptions": {name: DEE}} of the reference model.
    -> {"clean": {...metrics, dee}, "corruptions": {name: {"levels", "mean", "dee", "rr"[, "ce"]}},
        "mean": the mean table over corruptions, "mRR" [, "mCE"] in percent}."""
    clean_dee = dee(clean)
    out = {"clean": {**clean, "dee": clean_dee}, "corruptions": {}}
    rrs, ces = [], []
    for name, levels in corruptions.items():
        mean = mean_metrics([levels[s] for s in sorted(levels)])
        entry = {"family": CORRUPTIONS[name].family, "levels": {str(s): levels[s] for s in sorted(levels)},
                 "mean": mean, "dee": dee(mean)}
        if entry["dee"] is not None and clean_dee is not None:
            entry["rr"] = (1 - entry["dee"]) / (1 - clean_dee)
            rrs.append(entry["rr"])
            if reference is not None:
                entry["ce"] = entry["dee"] / reference["corruptions"][name]
                ces.append(entry["ce"])
        out["corruptions"][name] = entry
    out["mean"] = mean_metrics([e["mean"] for e in out["corruptions"].values()])
    if rrs:
        out["mRR"] = 100 * float(np.mean(rrs))
    if ces:
        out["mCE"] = 100 * float(np.mean(ces))
    return out


def reference_from_scores(corruptions):
    """The reference's {"corruptions": {name: DEE}} from its {name: {severity: metric table}}."""
    return {"corruptions": {name: dee(mean_metrics([levels[s] for s in sorted(levels)]))
                            for name, levels in corruptions.items()}}


def reference_from_json(path, split, corruptions, severities):
    """The reference DEEs of test set `split` from a JSON file that evaluate_depth.py wrote with
    --corruptions (--output_json); SystemExit naming what is missing."""
    if not os.path.isfile(path):
        raise SystemExit(f"--reference_model {path}: no such weight folder or JSON file")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--reference_model {path}: not a JSON file ({e})") from None
    records = data.get("results", [data]) if isinstance(data, dict) else []
    found = [r for r in records if isinstance(r, dict) and "robustness" in r and r.get("split") == split]
    if not found:
        raise SystemExit(f"--reference_model {path}: no robustness record of {split} (write one with "
                         f"evaluate_depth.py --corruptions ... --output_json {path})")
    record = found[0]["robustness"]
    if list(record.get("severities", [])) != list(severities):
        raise SystemExit(f"--reference_model {path}: scored at severities {record.get('severities')}, not "
                         f"{list(severities)}: use the same --severity")
    missing = [n for n in corruptions if n not in record["corruptions"] or record["corruptions"][n].get("dee") is None]
    if missing:
        raise SystemExit(f"--reference_model {path}: no {', '.join(missing)} for {split}")
    return {"corruptions": {n: record["corruptions"][n]["dee"] for n in corruptions}}
