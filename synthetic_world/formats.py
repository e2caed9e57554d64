"""The world in other datasets' on-disk formats (--formats cityscapes,nyuv2,make3d), at their
real image sizes, rendered with the KITTI world's renderer so that the depth is exact.

<out>/cityscapes/ (Cityscapes' layout; evaluate with --cityscapes_path, prepare_cityscapes.py
  runs on it):
    leftImg8bit_sequence/train/synthcity/synthcity_000000_0000{17..21}_leftImg8bit.png
        one sequence of 5 frames (2048 x 1024), 0.5 m apart; camera/train/synthcity/
        synthcity_000000_000019_camera.json (one camera file per sequence, as Cityscapes)
    leftImg8bit_sequence/test/synthcity/synthcity_00000N_000019_leftImg8bit.png and
        camera/test/.../synthcity_00000N_000019_camera.json (N < CITYSCAPES_TEST)
    splits/cityscapes/test_files.txt, splits/cityscapes/gt_depths/{i:03d}_depth.npy
        (1024 x 2048 camera z in metres, 0 where the sky is: no disparity there)
<out>/nyuv2/ (evaluate with --nyuv2_path; train with --dataset nyuv2 --split synthetic):
    nyu_test/0000N.h5: rgb 3 x 480 x 640 uint8, depth 480 x 640 (camera z, metres), a
        pinhole view with NYUv2's colour K; splits/nyuv2/test_files.txt
    nyu_depth_v2/synthroom_0001/r-*.ppm: 11 raw frames (640 x 480) with the Kinect colour
        camera's lens distortion applied, so that the loader's cv2.undistort gives the
        pinhole view back; splits/synthetic/{train,val}_files.txt in StructDepth's layout
<out>/make3d/ (evaluate with --make3d_path):
    Test134/img-<id>.jpg (1704 x 2272, portrait) and Gridlaserdata/depth_sph_corr-<id>.mat:
        Position3DGrid 55 x 305 x 4 sampled at the grid's cell centres over the whole image
        (x, y, z of the camera frame, then camera z; the sky is MAKE3D_FAR);
        splits/make3d/test_files.txt
"""
import json
import os

import cv2
import numpy as np

from .raycast import cast_camera, shade
from .scene import build_drive, rot_y
from .textures import make_texture_atlas

FORMATS = ("kitti", "cityscapes", "nyuv2", "make3d")

CITY = "synthcity"
CITYSCAPES_SIZE = (2048, 1024)
# a Cityscapes camera's intrinsics (pixels of the 2048 x 1024 image), principal point off-centre
CITYSCAPES_K = dict(fx=2262.52, fy=2265.3017905988554, u0=1096.98, v0=513.137)
CITYSCAPES_TEST = 2
CITYSCAPES_TRAIN_FRAMES = range(17, 22)  # one sequence: centre 19 has its frames 17 and 21
CITYSCAPES_STEP = 0.5  # metres between consecutive sequence frames

NYU_SIZE = (640, 480)
NYU_TEST = 2
NYU_TRAIN_FRAMES = 11  # lines for the centres 4, 5, 6 (each needs -4 .. +4)
NYU_STEP = 0.1  # metres between frames
NYU_PITCH = 0.45  # radians looking down: the floor at 2-10 m fills most of the view

MAKE3D_SIZE = (1704, 2272)
MAKE3D_GRID = (55, 305)  # rows (image height), columns (image width)
MAKE3D_F = 1480.0  # focal length in pixels (Make3D publishes none)
MAKE3D_TEST = 2
MAKE3D_FAR = 81.0  # the laser's far value, where the synthetic sky is


def pose(drive, s, pitch=0.0, yaw=0.0):
    """Camera-to-world 4 x 4 on the road's centre line at arc length s, turned by yaw
    (right positive) and pitched down by pitch."""
    x, z, h = drive.path.at(s)
    c, sn = np.cos(pitch), np.sin(pitch)
    R_pitch = np.array([[1, 0, 0], [0, c, sn], [0, -sn, c]])  # z (forward) -> (0, sin, cos): down
    T = np.eye(4)
    T[:3, :3] = rot_y(h + yaw) @ R_pitch
    T[:3, 3] = [x, 0.0, z]
    return T


def render(drive, T, K, width, height):
    """(rgb H x W x 3 uint8, camera z H x W float32, 0 = sky) of a pinhole camera."""
    boxes = drive.static
    depth, obj, face, dirs, ray_len = cast_camera(drive, boxes, T, K, width, height)
    rgb = shade(drive, boxes, depth, obj, face, dirs, ray_len, T[:3, 3], K[0, 0])
    return np.round(rgb * 255).astype(np.uint8), depth.astype(np.float32)


def _drive(cfg, k):
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1000 + k]))
    drive = build_drive(k, 40, rng, False)
    drive.atlas = make_texture_atlas(rng)
    return drive


def _imwrite(path, rgb, params=(cv2.IMWRITE_PNG_COMPRESSION, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]), list(params)):
        raise OSError(f"could not write {path}")


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


def _camera_json(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"extrinsic": {"baseline": 0.209313, "pitch": 0.0, "roll": 0.0, "x": 1.7, "y": 0.0,
                                 "yaw": 0.0, "z": 1.65}, "intrinsic": CITYSCAPES_K}, f, indent=2)


def _cityscapes_K():
    return np.array([[CITYSCAPES_K["fx"], 0, CITYSCAPES_K["u0"]], [0, CITYSCAPES_K["fy"], CITYSCAPES_K["v0"]],
                     [0, 0, 1]])


def _cityscapes_test(drive, root, n):
    name = f"{CITY}_{n:06d}_000019"
    rgb, depth = render(drive, pose(drive, 8.0 + 14.0 * n), _cityscapes_K(), *CITYSCAPES_SIZE)
    _imwrite(os.path.join(root, "leftImg8bit_sequence", "test", CITY, name + "_leftImg8bit.png"), rgb)
    gt_dir = os.path.join(root, "splits", "cityscapes", "gt_depths")
    os.makedirs(gt_dir, exist_ok=True)
    np.save(os.path.join(gt_dir, f"{n:03d}_depth.npy"), depth)


def _cityscapes_train(drive, root, seq, frame):
    name = f"{CITY}_{seq:06d}_{frame:06d}"
    rgb, _ = render(drive, pose(drive, 40.0 + CITYSCAPES_STEP * frame), _cityscapes_K(), *CITYSCAPES_SIZE)
    _imwrite(os.path.join(root, "leftImg8bit_sequence", "train", CITY, name + "_leftImg8bit.png"), rgb)


def cityscapes_jobs(root):
    lines, jobs = [], []
    for n in range(CITYSCAPES_TEST):
        name = f"{CITY}_{n:06d}_000019"
        _camera_json(os.path.join(root, "camera", "test", CITY, name + "_camera.json"))
        lines.append(f"{CITY} {name}")
        jobs.append((_cityscapes_test, (root, n)))
    _write_lines(os.path.join(root, "splits", "cityscapes", "test_files.txt"), lines)
    seq = CITYSCAPES_TEST  # a sequence of its own
    _camera_json(os.path.join(root, "camera", "train", CITY, f"{CITY}_{seq:06d}_000019_camera.json"))
    jobs += [(_cityscapes_train, (root, seq, frame)) for frame in CITYSCAPES_TRAIN_FRAMES]
    return jobs


def distort(image):
    """The raw Kinect frame whose cv2.undistort (NYUv2's calibration) is the pinhole `image`."""
    from datasets.nyu_dataset import CAMERA, DISTORTION
    height, width = image.shape[:2]
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    points = np.stack([u.ravel(), v.ravel()], 1)[:, None]
    undistorted = cv2.undistortPoints(points, CAMERA, DISTORTION, P=CAMERA)[:, 0].astype(np.float32)
    map_x = undistorted[:, 0].reshape(height, width)
    map_y = undistorted[:, 1].reshape(height, width)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _nyu_test(drive, root, n, rel):
    import h5py
    from datasets.nyu_dataset import CAMERA
    rgb, depth = render(drive, pose(drive, 5.0 + 9.0 * n, NYU_PITCH, 0.3 * (-1) ** n), CAMERA, *NYU_SIZE)
    with h5py.File(os.path.join(root, rel), "w") as f:
        f.create_dataset("rgb", data=np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        f.create_dataset("depth", data=depth)


def nyu_train_pose(drive, i):
    return pose(drive, 25.0 + NYU_STEP * i, NYU_PITCH, 0.2)


def _nyu_train(drive, root, i, rel):
    from datasets.nyu_dataset import CAMERA
    rgb, _ = render(drive, nyu_train_pose(drive, i), CAMERA, *NYU_SIZE)
    path = os.path.join(root, rel)
    if not cv2.imwrite(path, np.ascontiguousarray(distort(rgb)[..., ::-1])):
        raise OSError(f"could not write {path}")


def nyuv2_jobs(root):
    from datasets.nyu_dataset import LINE_ORDER
    jobs, lines, frames = [], [], []
    os.makedirs(os.path.join(root, "nyu_test"), exist_ok=True)
    for n in range(NYU_TEST):
        rel = os.path.join("nyu_test", f"{n + 1:05d}.h5")
        lines.append(rel)
        jobs.append((_nyu_test, (root, n, rel)))
    _write_lines(os.path.join(root, "splits", "nyuv2", "test_files.txt"), lines)
    os.makedirs(os.path.join(root, "nyu_depth_v2", "synthroom_0001"), exist_ok=True)
    for i in range(NYU_TRAIN_FRAMES):
        rel = os.path.join("nyu_depth_v2", "synthroom_0001", f"r-{1300000000 + 0.1 * i:.6f}-{i:010d}.ppm")
        frames.append(rel)
        jobs.append((_nyu_train, (root, i, rel)))
    train = [" ".join(frames[c + f] for f in LINE_ORDER) for c in range(4, NYU_TRAIN_FRAMES - 4)]
    _write_lines(os.path.join(root, "splits", "synthetic", "train_files.txt"), train)
    _write_lines(os.path.join(root, "splits", "synthetic", "val_files.txt"), train[len(train) // 2:][:1])
    return jobs


def make3d_grid_K():
    """K of the laser grid seen as a 305 x 55 image whose pixels are the grid cells' centres."""
    width, height = MAKE3D_SIZE
    rows, cols = MAKE3D_GRID
    sx, sy = cols / width, rows / height
    return np.array([[MAKE3D_F * sx, 0, (width / 2) * sx - 0.5], [0, MAKE3D_F * sy, (height / 2) * sy - 0.5],
                     [0, 0, 1]])


def _make3d_test(drive, root, n, image_id):
    import scipy.io
    width, height = MAKE3D_SIZE
    rows, cols = MAKE3D_GRID
    K = np.array([[MAKE3D_F, 0, width / 2 - 0.5], [0, MAKE3D_F, height / 2 - 0.5], [0, 0, 1]])
    Kg = make3d_grid_K()
    T = pose(drive, 12.0 + 17.0 * n, 0.0, 0.25 * (-1) ** n)
    rgb, _ = render(drive, T, K, width, height)
    _imwrite(os.path.join(root, "Test134", f"img-{image_id}.jpg"), rgb, (cv2.IMWRITE_JPEG_QUALITY, 92))
    _, z = render(drive, T, Kg, cols, rows)
    z = np.where(z > 0, z, MAKE3D_FAR)
    u, v = np.meshgrid(np.arange(cols), np.arange(rows))
    grid = np.stack([(u - Kg[0, 2]) / Kg[0, 0] * z, (v - Kg[1, 2]) / Kg[1, 1] * z, z, z], -1)
    scipy.io.savemat(os.path.join(root, "Gridlaserdata", f"depth_sph_corr-{image_id}.mat"),
                     {"Position3DGrid": grid.astype(np.float64)})


def make3d_jobs(root):
    ids = [f"000000-00.00.0{n}-p-{n + 1:03d}t000" for n in range(MAKE3D_TEST)]
    for sub in ("Test134", "Gridlaserdata"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    _write_lines(os.path.join(root, "splits", "make3d", "test_files.txt"), ids)
    return [(_make3d_test, (root, n, image_id)) for n, image_id in enumerate(ids)]


JOBS = {"cityscapes": cityscapes_jobs, "nyuv2": nyuv2_jobs, "make3d": make3d_jobs}


def parse_formats(text):
    """'cityscapes,nyuv2' -> ("kitti", "cityscapes", "nyuv2"): KITTI is always written."""
    names = [n.strip() for n in text.split(",") if n.strip()] if isinstance(text, str) else list(text)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"--formats: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return tuple(["kitti"] + [n for n in FORMATS[1:] if n in names])


_DRIVES = {}


def _init_worker(drives):
    import torch
    torch.set_num_threads(1)
    _DRIVES.update(drives)


def _run_job(job):
    name, fn, args = job
    fn(_DRIVES[name], *args)
    return name


def write_formats(cfg, progress=True):
    """Write every format of cfg.formats but KITTI under <out>/<format> (one drive of its own
    each); the images are rendered over cfg.workers processes. Returns {format: images}."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm
    extra = [n for n in parse_formats(cfg.formats) if n != "kitti"]
    if not extra:
        return {}
    drives = {name: _drive(cfg, FORMATS.index(name)) for name in extra}
    jobs = [(name, fn, args) for name in extra for fn, args in JOBS[name](os.path.join(cfg.out, name))]
    jobs.sort(key=lambda job: JOB_COST[job[1].__name__], reverse=True)  # the big images first
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
    counts = {}
    with tqdm(total=len(jobs), desc="other formats", unit="image", disable=not progress) as bar:
        if workers <= 1:
            import torch
            threads = torch.get_num_threads()
            _init_worker(drives)
            done = map(_run_job, jobs)
        else:
            pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(drives,))
            done = pool.map(_run_job, jobs)
        try:
            for name in done:
                counts[name] = counts.get(name, 0) + 1
                bar.update()
        finally:
            if workers <= 1:
                torch.set_num_threads(threads)
            else:
                pool.shutdown()
    return counts


JOB_COST = {"_make3d_test": 3, "_cityscapes_test": 2, "_cityscapes_train": 2, "_nyu_test": 1, "_nyu_train": 1}
