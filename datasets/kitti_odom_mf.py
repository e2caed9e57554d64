"""KITTI odometry for supervised multi-frame depth (MonoRec's protocol, as used by Li et al.,
CVPR 2023, "dynamic multi-frame depth with cross-cue fusion").

Layout under the root (data_path):
  sequences/NN/image_2/%06d.<ext>, calib.txt (P2), times.txt,
  sequences/NN/image_depth_annotated/%06d.png  (uint16, depth x 256, 0 = none; see
      prepare_kitti_odom_depth.py), sequences/NN/mvobj_mask/%06d.npy (moving objects),
  poses_dvso/NN.txt (default) or poses/NN.txt: 12 floats per frame, row-major 3 x 4 T_w_c.

Split lines are `SEQ FRAME l` (odometry_split_lines): keyframes k = 5 .. N-6, because the
depth benchmark has no ground truth for the first and last 5 frames of a drive.

Geometry: every frame is centre-cropped to the network's aspect ratio (1:2 for 256 x 512:
full height H0, width W0' = H0 width / height, offset o = (W0 - W0') / 2, a float) and
bilinearly resized by s = height / H0; the same o and s give K (fx = s P2[0,0], fy =
s P2[1,1], cx = s (P2[0,2] - o), cy = s P2[1,2]) and place the ground-truth points.
reference_crop: the released code's integer box instead (left floor(o), right W0 - floor(o);
on KITTI's 1241-px frames 244 .. 997, 753 px wide where W0' = 752), cropped and then
resized; its K stays the float one above, as in the released code.

An item (MonoDataset's keys, frames f in frame_ids, e.g. 0, -1, 1):
  ("color", f, s), ("color_aug", f, s): 3 x h x w in [0, 1] (the model shifts to [-0.5, 0.5]);
  ("K", s), ("inv_K", s): 4 x 4 at each scale (exact at s = 0);
  ("pose_c2w", f): 4 x 4 float32 T_w_cf from the pose file; ("T", f) for f != 0: 4 x 4
      key -> source f, inv(T_w_cf) @ T_w_key;
  "depth_gt": 1 x h x w metric sparse depth (0 = none); "inv_depth_gt": its inverse (0 = none);
  "mvobj_mask": 1 x h x w in {0, 1} (dynamic where > 0.5);
  "seq", "frame": int64 scalars.
Colour jitter (one draw per item, shared by all frames) is the only augmentation: the model
flips after building its cost volume, so the poses are never mirrored here.
"""
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import register_dataset
from .augment import ColorJitter
from .kitti_utils import read_calib_file, read_poses_file
from .mono_dataset import ItemTarget, MonoDataset

KEYFRAME_MARGIN = 5  # the depth benchmark has no GT for the first and last 5 frames of a drive
DEPTH_PNG_SCALE = 256.0  # improved GT: uint16 value / 256 = metres
POSE_FOLDERS = {"dvso": "poses_dvso", "kitti_gt": "poses"}
DEPTH_FOLDER = "image_depth_annotated"
MASK_FOLDER = "mvobj_mask"


def sequence_dir(root, seq):
    return os.path.join(root, "sequences", f"{int(seq):02d}")


def sequence_length(root, seq):
    """Frames of a sequence: the lines of times.txt, else the frame images (numbered names)
    in image_2/ (other files there, e.g. predictions written beside them, do not count)."""
    folder = sequence_dir(root, seq)
    times = os.path.join(folder, "times.txt")
    if os.path.isfile(times):
        with open(times) as f:
            return sum(1 for line in f if line.strip())
    images = os.path.join(folder, "image_2")
    if not os.path.isdir(images):
        raise FileNotFoundError(f"sequence {seq}: neither {times} nor {images} exists")
    return len({os.path.splitext(name)[0] for name in os.listdir(images) if os.path.splitext(name)[0].isdigit()})


def odometry_split_lines(root, seqs, max_per_seq=None, margin=KEYFRAME_MARGIN):
    """Split lines `SEQ FRAME l` for keyframes k = margin .. N-1-margin of every sequence
    (N - 10 samples for N frames); max_per_seq keeps the first ones (validation: 32)."""
    lines = []
    for seq in seqs:
        keyframes = list(range(margin, sequence_length(root, seq) - margin))
        if max_per_seq is not None:
            keyframes = keyframes[:max_per_seq]
        lines += [f"{int(seq):02d} {k} l" for k in keyframes]
    return lines


@dataclass(frozen=True)
class CropGeometry:
    """Native H0 x W0 frame -> centre crop (full height, width crop_width at offset `offset`,
    both floats) -> height x width, scale s on both axes (pixel-edge coordinates).

    reference_box: the frame is cut at the released code's integer box (reference_bounds)
    and that box is resized, instead of the float box; K (intrinsics) is the float one
    either way, as the released code computes it."""
    native_height: int
    native_width: int
    height: int
    width: int
    reference_box: bool = False

    @property
    def scale(self):
        return self.height / self.native_height

    @property
    def crop_width(self):
        return self.native_height * self.width / self.height

    @property
    def offset(self):
        return (self.native_width - self.crop_width) / 2

    @property
    def reference_bounds(self):
        """(left, right) of the released code's crop, whole pixels: left = floor((W0 - H0 /
        (height / width)) / 2), right = W0 - left (1241 px: 244, 997; 1242: 246, 996; 1226:
        243, 983)."""
        left = int((self.native_width - self.native_height / (self.height / self.width)) // 2)
        return left, self.native_width - left

    @property
    def box(self):
        """(left, top, right, bottom) of the crop: the float box (PIL's resize(box=...)), or
        with reference_box the integer one (PIL's crop, then resize)."""
        if self.reference_box:
            left, right = self.reference_bounds
            return (left, 0, right, self.native_height)
        return (self.offset, 0.0, self.offset + self.crop_width, float(self.native_height))

    def check(self, where):
        if self.offset < 0:
            raise ValueError(f"{where}: a {self.native_width} x {self.native_height} frame is too narrow for a "
                             f"{self.width} x {self.height} crop (aspect {self.width / self.height:.3f})")
        return self

    def crop_and_resize(self, image):
        """A native PIL image -> height x width: the float box bilinearly resized in one call
        (the filter also reads the pixels just outside the box), or with reference_box the
        integer box cut out first and then bilinearly resized (the released code)."""
        if self.reference_box:
            return image.crop(self.box).resize((self.width, self.height), Image.BILINEAR)
        return image.resize((self.width, self.height), Image.BILINEAR, box=self.box)

    def intrinsics(self, P):
        """4 x 4 pixel K at the network size from a 3 x 4 projection matrix P (the float
        crop's, also with reference_box)."""
        s, o = self.scale, self.offset
        K = np.eye(4)
        K[0, 0], K[1, 1] = s * P[0, 0], s * P[1, 1]
        K[0, 2], K[1, 2] = s * (P[0, 2] - o), s * P[1, 2]
        return K

    def target_pixels(self, rows, cols, reference=False):
        """Native pixel indices -> (rows, cols, inside) at the network size. Ours: the
        pixel-centre convention, t = round((c + 0.5 - o) s - 0.5); reference (MonoRec): the
        points inside its integer box [left, right) (reference_bounds, whatever reference_box
        says), t = round(clip((c - left) / (right - left) width, 0, width - 1)), rows likewise
        over the full height (numpy's round)."""
        if reference:
            left, right = self.reference_bounds
            inside = (cols >= left) & (cols < right) & (rows >= 0) & (rows < self.native_height)
            r = np.around(np.clip(rows / self.native_height * self.height, 0, self.height - 1)).astype(np.int64)
            c = np.around(np.clip((cols - left) / (right - left) * self.width, 0, self.width - 1)).astype(np.int64)
            return r, c, inside
        s, o = self.scale, self.offset
        r = np.floor((rows + 0.5) * s).astype(np.int64)
        c = np.floor((cols + 0.5 - o) * s).astype(np.int64)
        inside = (r >= 0) & (r < self.height) & (c >= 0) & (c < self.width)
        return r, c, inside


def scatter_sparse_depth(png, geometry, reference=False):
    """uint16 H0 x W0 ground truth (value / 256 = metres, 0 = none) -> height x width float32
    metric depth: every point placed by geometry.target_pixels; on collisions the nearest
    point wins (reference: the last one in row-major order)."""
    rows, cols = np.nonzero(png)
    values = png[rows, cols].astype(np.float64)
    r, c, inside = geometry.target_pixels(rows.astype(np.float64), cols.astype(np.float64), reference)
    r, c, values = r[inside], c[inside], values[inside]
    depth = np.zeros((geometry.height, geometry.width), np.float32)
    if reference:  # repeated indices: NumPy writes them in order, so the last one stays
        depth[r, c] = (values / DEPTH_PNG_SCALE).astype(np.float32)
        return depth
    nearest = np.full((geometry.height, geometry.width), np.inf)
    np.minimum.at(nearest, (r, c), values)  # the nearest point of each pixel, whatever the order
    hit = np.isfinite(nearest)
    depth[hit] = (nearest[hit] / DEPTH_PNG_SCALE).astype(np.float32)
    return depth


def sample_mask(mask, geometry):
    """A mask -> height x width float32: at the native size, cropped and nearest-sampled at the
    network's pixel centres; at the network size, as is; any other size, nearest-resized."""
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.shape == (geometry.height, geometry.width):
        return mask
    if mask.shape == (geometry.native_height, geometry.native_width):
        s, o = geometry.scale, geometry.offset
        rows = np.clip(np.floor((np.arange(geometry.height) + 0.5) / s), 0, geometry.native_height - 1).astype(int)
        if geometry.reference_box:  # the integer box the frame was cut at
            left, _, right, _ = geometry.box
            cols = left + (np.arange(geometry.width) + 0.5) * (right - left) / geometry.width
        else:
            cols = o + (np.arange(geometry.width) + 0.5) / s
        cols = np.clip(np.floor(cols), 0, geometry.native_width - 1).astype(int)
        return np.ascontiguousarray(mask[rows][:, cols])
    x = torch.from_numpy(np.ascontiguousarray(mask))[None, None]
    return F.interpolate(x, (geometry.height, geometry.width), mode="nearest")[0, 0].numpy()


class SparseDepthTarget(ItemTarget):
    """"depth_gt" 1 x h x w metric sparse depth at the network size; "inv_depth_gt" its inverse."""
    key = "depth_gt"
    derived_keys = ("inv_depth_gt",)

    def load(self, dataset, folder, frame_index, side):
        return dataset.sparse_depth(folder, frame_index)[None]

    def derived(self, value):
        valid = value > 0
        return {"inv_depth_gt": torch.where(valid, 1 / torch.where(valid, value, torch.ones_like(value)),
                                            torch.zeros_like(value))}


class MovingObjectTarget(ItemTarget):
    """"mvobj_mask" 1 x h x w (dynamic where > 0.5)."""
    key = "mvobj_mask"

    def load(self, dataset, folder, frame_index, side):
        return dataset.moving_object_mask(folder, frame_index)[None]


@register_dataset("kitti_odom_mf")
class KITTIOdomMultiFrameDataset(MonoDataset):
    """KITTI odometry keyframes with posed neighbours, sparse GT and moving-object masks.

    pose_source: "dvso" (poses_dvso/, default) or "kitti_gt" (poses/). load_gt / load_masks:
    add "depth_gt" + "inv_depth_gt" / "mvobj_mask" to items. allow_missing_masks: a missing
    mask file gives zeros instead of an error. reference_scatter: MonoRec's ground-truth
    placement (its integer box, no half-pixel centring, last write wins). reference_crop:
    frames cut at the released code's integer box and then resized (CropGeometry.box).
    Input paths: default and fast (the frames are cropped before the resize, so
    --decode_on_device cannot read them).
    """
    eval_protocol = "kitti_odom"

    @classmethod
    def split_from_options(cls, opt):
        """Training / validation lines from --odom_train_seqs / --odom_val_seqs, or None."""
        if not (getattr(opt, "odom_train_seqs", None) or getattr(opt, "odom_val_seqs", None)):
            return None
        return splits_from_options(opt.data_path, opt.odom_train_seqs, opt.odom_val_seqs, opt.val_max_per_seq)

    def __init__(self, data_path, filenames, height, width, frame_ids, num_scales, is_train=False,
                 img_ext=".png", split_file=None, *, input_path="default", cache_dir=None, targets=(),
                 seed=None, augmentations=None, pose_source="dvso", load_gt=True, load_masks=True,
                 allow_missing_masks=False, reference_scatter=False, reference_crop=False):
        if input_path == "encoded":
            raise ValueError("kitti_odom_mf: --decode_on_device is not supported (its frames are centre-cropped "
                             "before the resize, which on-device JPEG decoding skips); use the default path or "
                             "--fast_loader")
        if any(not isinstance(f, int) for f in frame_ids):
            raise ValueError(f"kitti_odom_mf: frame ids {list(frame_ids)} must be temporal offsets (ints, e.g. 0 -1 1)")
        if pose_source not in POSE_FOLDERS:
            raise ValueError(f"pose_source {pose_source!r}: use one of {sorted(POSE_FOLDERS)}")
        if augmentations is None:  # MonoRec jitters every training item (no flip: the model flips)
            augmentations = [ColorJitter(1.0)]
        moving = [a.name for a in augmentations if a.stage != "photometric"]
        if moving:
            raise ValueError(f"kitti_odom_mf: augmentations {moving} would move pixels but not the poses; only "
                             "photometric ones (colour jitter) apply (the model flips after its cost volume)")
        own = ([SparseDepthTarget()] if load_gt else []) + ([MovingObjectTarget()] if load_masks else [])
        self.pose_source = pose_source
        self.allow_missing_masks = allow_missing_masks
        self.reference_scatter = reference_scatter
        self.reference_crop = reference_crop
        self._geometry, self._K, self._poses = {}, {}, {}
        if cache_dir:  # cropped frames: never share cache entries with the uncropped datasets (nor the two crops)
            cache_dir = os.path.join(cache_dir, "kitti_odom_mf_crop" + ("_reference" if reference_crop else ""))
        super().__init__(data_path, filenames, height, width, frame_ids, num_scales, is_train, img_ext,
                         split_file, input_path=input_path, cache_dir=cache_dir, targets=own + list(targets),
                         seed=seed, augmentations=augmentations)
        self.load_depth = load_gt  # "depth_gt" is in the items (validation scores it)

    def image_targets(self, depth_gt=True):
        # depth_gt=False drops only the base class's DepthGT (metrics of log steps); the sparse
        # GT here is a training target of the dynamic-scene method and stays in every item
        return list(self.extra_targets)  # the sparse GT is one of them, not the base class's DepthGT

    # --- files
    def get_image_path(self, folder, frame_index, side):
        return os.path.join(sequence_dir(self.data_path, folder), "image_2", f"{int(frame_index):06d}{self.img_ext}")

    def depth_path(self, folder, frame_index):
        return os.path.join(sequence_dir(self.data_path, folder), DEPTH_FOLDER, f"{int(frame_index):06d}.png")

    def mask_path(self, folder, frame_index):
        return os.path.join(sequence_dir(self.data_path, folder), MASK_FOLDER, f"{int(frame_index):06d}.npy")

    def pose_path(self, folder):
        return os.path.join(self.data_path, POSE_FOLDERS[self.pose_source], f"{int(folder):02d}.txt")

    # --- per-sequence geometry, intrinsics and poses (cached)
    def geometry(self, folder):
        """CropGeometry of a sequence, from the size of its first keyframe image."""
        key = int(folder)
        if key not in self._geometry:
            frame = next((int(line.split()[1]) for line in self.filenames if int(line.split()[0]) == key), 0)
            path = self.get_image_path(folder, frame, "l")
            if not os.path.isfile(path):
                super().load_image(path)  # raises the dataset's "image not found" error
            with Image.open(path) as image:
                native_width, native_height = image.size
            self._geometry[key] = CropGeometry(native_height, native_width, self.height, self.width,
                                               self.reference_crop).check(path)
        return self._geometry[key]

    def intrinsics(self, folder):
        """4 x 4 pixel K of a sequence at the network size (from P2 of its calib.txt)."""
        key = int(folder)
        if key not in self._K:
            path = os.path.join(sequence_dir(self.data_path, folder), "calib.txt")
            calib = read_calib_file(path)
            if "P2" not in calib or calib["P2"].size != 12:
                raise ValueError(f"{path}: no 12-number P2 entry (the left colour camera's projection)")
            self._K[key] = self.geometry(folder).intrinsics(calib["P2"].reshape(3, 4))
        return self._K[key]

    def get_intrinsics(self, folder):
        """Normalised K (row 0 / width, row 1 / height), as MonoDataset expects."""
        K = self.intrinsics(folder).copy()
        K[0, :] /= self.width
        K[1, :] /= self.height
        return K.astype(np.float32)

    def poses(self, folder):
        """N x 4 x 4 float64 T_w_c of a sequence."""
        key = int(folder)
        if key not in self._poses:
            self._poses[key] = read_poses_file(self.pose_path(folder))
        return self._poses[key]

    def pose(self, folder, frame_index):
        poses = self.poses(folder)
        if not 0 <= frame_index < len(poses):
            raise ValueError(f"{self.pose_path(folder)}: no pose for frame {frame_index} ({len(poses)} lines)")
        return poses[frame_index]

    # --- frames and targets
    def load_image(self, path):
        """The frame at `path`, centre-cropped and bilinearly resized to height x width (both
        input paths read frames here; the fast path's resize then leaves it as it is)."""
        image = super().load_image(path)
        return CropGeometry(image.height, image.width, self.height, self.width,
                            self.reference_crop).check(path).crop_and_resize(image)

    def get_color(self, folder, frame_index, side, do_flip):
        if do_flip:
            raise ValueError("kitti_odom_mf frames are never flipped in the dataset (the model flips)")
        return self.load_image(self.get_image_path(folder, frame_index, side))

    def sparse_depth(self, folder, frame_index):
        """height x width float32 metric depth from the improved GT (0 = none)."""
        path = self.depth_path(folder, frame_index)
        png = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if png is None:
            raise FileNotFoundError(f"ground truth not found: {path} (python prepare_kitti_odom_depth.py copies "
                                    "the depth benchmark's annotated maps there)")
        geometry = self.geometry(folder)
        if png.shape != (geometry.native_height, geometry.native_width):
            raise ValueError(f"{path}: {png.shape[1]} x {png.shape[0]} ground truth for "
                             f"{geometry.native_width} x {geometry.native_height} images")
        return scatter_sparse_depth(png, geometry, self.reference_scatter)

    def moving_object_mask(self, folder, frame_index):
        """height x width float32 moving-object mask (zeros where the file is missing and
        allow_missing_masks is set)."""
        path = self.mask_path(folder, frame_index)
        geometry = self.geometry(folder)
        if not os.path.isfile(path):
            if self.allow_missing_masks:
                return np.zeros((self.height, self.width), np.float32)
            raise FileNotFoundError(f"moving-object mask not found: {path} (MonoRec's mvobj_mask; pass "
                                    "allow_missing_masks=True for zeros, or load_masks=False)")
        return sample_mask(np.load(path), geometry)

    # --- the item
    def _item(self, index, epoch, depth_gt=True):
        item = super()._item(index, epoch, depth_gt)
        folder, frame_index, _ = self.parse_line(index)
        key_pose = self.pose(folder, frame_index)
        for f in self.frame_ids:  # a frame replaced by the missing-frame policy keeps the key's pose
            missing = bool(item.get(("missing", f), 0))
            pose = key_pose if missing else self.pose(folder, frame_index + f)
            item[("pose_c2w", f)] = torch.from_numpy(pose.astype(np.float32))
            if f != 0:
                item[("T", f)] = torch.from_numpy((np.linalg.inv(pose) @ key_pose).astype(np.float32))
        item["seq"] = torch.tensor(int(folder))
        item["frame"] = torch.tensor(int(frame_index))
        return item


# frames per KITTI odometry sequence (sequences/NN/image_2)
KITTI_ODOMETRY_LENGTHS = {0: 4541, 1: 1101, 2: 4661, 3: 801, 4: 271, 5: 2761, 6: 1101, 7: 1101, 8: 4071, 9: 1591,
                          10: 1201}
TRAIN_SEQUENCES, TEST_SEQUENCES = (1, 2, 6, 8, 9, 10), (0, 4, 5, 7)


def odometry_splits(lengths, train_seqs, test_seqs, val_tail=50, gap=3, val_per_seq=32, margin=KEYFRAME_MARGIN):
    """{"train", "val", "test": split lines} for multi-frame training on odometry sequences.
    Validation is held out from the training sequences: the last `val_tail` keyframes of each
    (at most `val_per_seq` of them, evenly spaced), with `gap` keyframes dropped before them
    so that no frame is shared with a training item; the test sequences are never seen."""
    out = {"train": [], "val": [], "test": []}
    for seq in train_seqs:
        keyframes = list(range(margin, lengths[seq] - margin))
        tail = keyframes[-val_tail:] if val_tail else []
        train = [k for k in keyframes if not tail or k < tail[0] - gap]
        if len(tail) > val_per_seq:  # evenly spaced, first and last kept (one: the first)
            tail = [tail[round(i * (len(tail) - 1) / max(val_per_seq - 1, 1))] for i in range(val_per_seq)]
        out["train"] += [f"{seq:02d} {k} l" for k in train]
        out["val"] += [f"{seq:02d} {k} l" for k in tail]
    for seq in test_seqs:
        out["test"] += [f"{seq:02d} {k} l" for k in range(margin, lengths[seq] - margin)]
    return out


def splits_from_options(root, train_seqs=None, val_seqs=None, val_max_per_seq=32):
    """{"train", "val": split lines} for --odom_train_seqs / --odom_val_seqs (only the ones
    given). Training sequences alone: odometry_splits' held-out tails validate. With
    validation sequences: every keyframe of the training sequences trains and the first
    val_max_per_seq keyframes of each validation sequence validate."""
    def length(seq):
        try:
            return sequence_length(root, seq)
        except FileNotFoundError as e:
            raise SystemExit(f"--odom_train_seqs / --odom_val_seqs: {e} (is --data_path the folder holding "
                             "sequences/?)") from None

    for name, seqs in (("train", train_seqs), ("val", val_seqs)):
        bad = [s for s in seqs or () if not str(s).isdigit()]
        if bad:
            raise SystemExit(f"--odom_{name}_seqs {' '.join(map(str, bad))}: sequence numbers (e.g. 01 02 06)")
    train_seqs = [int(s) for s in train_seqs or ()]
    val_seqs = [int(s) for s in val_seqs or ()]
    shared = sorted(set(train_seqs) & set(val_seqs))
    if shared:
        raise SystemExit(f"--odom_val_seqs: sequence(s) {', '.join(f'{s:02d}' for s in shared)} are also in "
                         "--odom_train_seqs; validate on frames never trained on")
    if val_max_per_seq < 1:
        raise SystemExit(f"--val_max_per_seq {val_max_per_seq}: must be >= 1")
    lengths = {s: length(s) for s in train_seqs + val_seqs}  # each sequence read once
    out = {}
    if train_seqs:  # with validation sequences nothing is held out of the training ones
        held = odometry_splits(lengths, train_seqs, (), val_tail=0 if val_seqs else 50, val_per_seq=val_max_per_seq)
        out["train"] = held["train"]
        if not val_seqs:
            out["val"] = held["val"]
    if val_seqs:
        out["val"] = [line for s in val_seqs
                      for line in odometry_splits(lengths, (), (s,))["test"][:val_max_per_seq]]
    for name, lines in out.items():
        if not lines:
            raise SystemExit(f"--odom_{name}_seqs: no {name} keyframes (sequences of at most "
                             f"{2 * KEYFRAME_MARGIN} frames{', or all held out for validation' if name == 'train' else ''})")
    return out


def write_odometry_splits(folder, splits):
    """train_files.txt, val_files.txt, test_files.txt of odometry_splits() in `folder`."""
    os.makedirs(folder, exist_ok=True)
    for name, lines in splits.items():
        with open(os.path.join(folder, f"{name}_files.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
