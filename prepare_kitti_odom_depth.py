"""Copy the KITTI depth benchmark's improved ground truth into the KITTI odometry tree.

    python prepare_kitti_odom_depth.py --depth_path data_depth_annotated --odom_path kitti_odometry

--depth_path is the extracted data_depth_annotated zip: train/ and val/ hold drive folders
<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/%010d.png. Every drive of an odometry
sequence (table below) is copied to <odom_path>/sequences/NN/image_depth_annotated/%06d.png,
left camera (image_02) only. Frame indices are kept, except for sequence 08, which starts at
raw frame 1100 of 2011_09_30_drive_0028: raw i >= 1100 becomes i - 1100, earlier ones are
dropped. Sequence 03 (2011_09_26_drive_0067) has no annotated drive in the benchmark.
"""
import argparse
import os
import re
import shutil
import sys

from tqdm import tqdm

# raw drive -> (odometry sequence, first raw frame of the sequence)
DRIVE_TO_SEQUENCE = {
    "2011_10_03_drive_0027": ("00", 0),
    "2011_10_03_drive_0042": ("01", 0),
    "2011_10_03_drive_0034": ("02", 0),
    "2011_09_26_drive_0067": ("03", 0),
    "2011_09_30_drive_0016": ("04", 0),
    "2011_09_30_drive_0018": ("05", 0),
    "2011_09_30_drive_0020": ("06", 0),
    "2011_09_30_drive_0027": ("07", 0),
    "2011_09_30_drive_0028": ("08", 1100),
    "2011_09_30_drive_0033": ("09", 0),
    "2011_09_30_drive_0034": ("10", 0),
}
SUBSETS = ("train", "val")
CAMERA = "image_02"
DRIVE_FOLDER = re.compile(r"^(\d{4}_\d{2}_\d{2}_drive_\d{4})_sync$")
RAW_NAME = re.compile(r"^(\d{10})\.png$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--depth_path", required=True, metavar="DIR",
                   help="the extracted data_depth_annotated folder (with train/ and val/)")
    p.add_argument("--odom_path", required=True, metavar="DIR",
                   help="the KITTI odometry root (sequences/NN/ is written there)")
    p.add_argument("--sequences", nargs="+", metavar="NN",
                   help="copy only these sequences (unset: every sequence of the table)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def planned_copies(depth_path, sequences=None):
    """[(source png, destination png relative to the odometry root)] for every annotated
    image_02 map of a drive in DRIVE_TO_SEQUENCE."""
    subsets = [os.path.join(depth_path, s) for s in SUBSETS if os.path.isdir(os.path.join(depth_path, s))]
    if not subsets:
        raise SystemExit(f"--depth_path {depth_path}: no train/ or val/ folder (extract data_depth_annotated.zip "
                         "there)")
    copies = []
    for subset in subsets:
        for name in sorted(os.listdir(subset)):
            match = DRIVE_FOLDER.match(name)
            if not match or match.group(1) not in DRIVE_TO_SEQUENCE:
                continue
            seq, first = DRIVE_TO_SEQUENCE[match.group(1)]
            if sequences is not None and seq not in sequences:
                continue
            folder = os.path.join(subset, name, "proj_depth", "groundtruth", CAMERA)
            if not os.path.isdir(folder):
                continue
            for png in sorted(os.listdir(folder)):
                raw = RAW_NAME.match(png)
                if not raw or int(raw.group(1)) < first:
                    continue
                frame = int(raw.group(1)) - first
                copies.append((os.path.join(folder, png),
                               os.path.join("sequences", seq, "image_depth_annotated", f"{frame:06d}.png")))
    return copies


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.depth_path):
        raise SystemExit(f"--depth_path {args.depth_path}: no such folder (the extracted data_depth_annotated)")
    sequences = None if args.sequences is None else {f"{int(s):02d}" for s in args.sequences}
    copies = planned_copies(args.depth_path, sequences)
    if not copies:
        raise SystemExit(f"--depth_path {args.depth_path}: no {CAMERA} ground truth of an odometry drive "
                         f"({', '.join(sorted(DRIVE_TO_SEQUENCE))}) under train/ or val/")
    counts = {}
    for source, relative in tqdm(copies, desc="copying ground truth", unit="map", disable=args.no_progress):
        destination = os.path.join(args.odom_path, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(source, destination + ".part")  # a killed copy never leaves a truncated map
        os.replace(destination + ".part", destination)
        seq = relative.split(os.sep)[1]
        counts[seq] = counts.get(seq, 0) + 1
    for seq in sorted(counts):
        print(f"-> sequence {seq}: {counts[seq]} maps in "
              f"{os.path.join(args.odom_path, 'sequences', seq, 'image_depth_annotated')}")
    return counts


if __name__ == "__main__":
    main()
    sys.exit(0)
