"""The synthetic world, a tool of its own: a small, deterministic synthetic driving world written in KITTI's on-disk formats.

    python -m synthetic_world --out synthetic_data [--drives 2] [--frames 60]
        [--seed 0] [--height 375] [--width 1242] [--moving_objects] [--jpg] [--odometry]
        [--formats kitti,cityscapes,nyuv2,make3d]

The world is ray-cast from analytic primitives: a ground plane 1.65 m below the camera
and oriented boxes (building blocks, parked cars, poles, walls, far background blocks)
laid out along a gently turning road. Every surface carries a band-limited multi-scale
texture (a 1/f noise tile with a mip pyramid, sampled trilinearly so that distant
surfaces do not alias) and Lambertian shading from a per-drive sun, so left/right and
consecutive images are photometrically consistent given the true depth and poses.

Per drive it writes what the real KITTI raw release has (calibration, rectified stereo
images, velodyne scans from a simulated 64-beam scanner, oxts packets, timestamps) plus
depth-benchmark style improved ground truth (11 scans accumulated and kept where they
agree with the rendered depth), the exact dense depth of the left camera as .npy, and,
with --moving_objects, moving-object masks. Split files for the drives are written to
``<out>/splits/<split_name>/``; ``--odometry`` adds a KITTI odometry tree
``<out>/odometry/sequences/NN``.

``--formats cityscapes,nyuv2,make3d`` also writes ``<out>/cityscapes/``, ``<out>/nyuv2/`` and
``<out>/make3d/``, laid out like the real downloads at their real image sizes (a few test
images with their ground truth and camera files, a short Cityscapes training sequence for
prepare_cityscapes.py, a NYUv2 training list with lens-distorted raw frames), rendered by
the same ray caster from drives of their own, so the depth is exact (formats.py lists the
files). evaluate_depth.py reads them with --cityscapes_path, --nyuv2_path, --make3d_path.

Coordinates: the world frame is the rectified left grey camera (cam0) at frame 0:
x right, y down, z forward. Depth always means camera z.

Modules, one job each: constants (rig, scanner, materials), textures, scene (the road
and its boxes), raycast (camera and scanner), calibration, kitti_files (per-frame
writers), odometry, splits, formats (Cityscapes, NYUv2, Make3D layouts), generate (options,
passes, command line).
`python -m datasets.synthetic_world` is kept as an alias of `python -m synthetic_world`.
"""
from .calibration import T_cam0_velo, T_velo_imu, cam_offset, intrinsics, write_calibration  # noqa: F401
from .constants import *  # noqa: F401,F403
from .generate import Config, generate, main, parse_args, validate, world_exists  # noqa: F401
