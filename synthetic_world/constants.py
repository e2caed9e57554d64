"""Constants of the synthetic world: camera rig, scanner, textures, materials, names."""
import numpy as np

DATE = "2000_01_01"  # a date no real KITTI drive has, so the two never mix
CAM_HEIGHT = 1.65  # metres above the road, as in KITTI
BASELINE = 0.54  # metres between image_02 and image_03
CAM2_X = -0.06  # image_02 sits 6 cm left of cam0 (KITTI: 5.96 cm)
CAM3_X = CAM2_X + BASELINE
FX_NORM, FY_NORM = 0.58, 1.92  # focal lengths / (width, height), KITTI's average camera
VELO_IN_CAM0 = np.array([0.0, -0.08, -0.27])  # scanner 8 cm above, 27 cm behind cam0
IMU_IN_VELO = np.array([-0.81, 0.32, -0.80])  # oxts unit relative to the scanner (KITTI)
CAMERA_X = (0.0, 0.532, CAM2_X, CAM3_X)  # cam0..cam3 right of cam0 (cam1: grey, not rendered)
R_VELO_TO_CAM = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR_BEAMS = 64
LIDAR_ELEVATION = (2.0, -24.8)  # degrees, HDL-64E field of view
LIDAR_COLUMNS = 1800  # 0.2 degree azimuth steps
LIDAR_RANGE = 120.0
MAX_RANGE = 250.0  # nothing is rendered beyond; the sky starts there
GT_SCANS = 5  # improved GT accumulates scans t-5 .. t+5 (11, as the depth benchmark)
TILE = 256
MIP_LEVELS = 9

# materials: (colour A, colour B, texels per metre coarse, fine, fine contrast, reflectance)
MATERIALS = {
    "road": ((0.33, 0.33, 0.35), (0.45, 0.44, 0.43), 6.0, 48.0, 0.55, 0.25),
    "facade0": ((0.62, 0.52, 0.42), (0.80, 0.74, 0.64), 5.0, 40.0, 0.45, 0.45),
    "facade1": ((0.55, 0.58, 0.62), (0.75, 0.77, 0.80), 5.0, 40.0, 0.45, 0.40),
    "facade2": ((0.66, 0.40, 0.32), (0.82, 0.58, 0.46), 5.0, 40.0, 0.45, 0.40),
    "car": ((0.15, 0.20, 0.45), (0.65, 0.12, 0.10), 2.0, 40.0, 0.35, 0.70),
    "pole": ((0.30, 0.24, 0.16), (0.45, 0.52, 0.25), 8.0, 64.0, 0.50, 0.30),
    "wall": ((0.50, 0.50, 0.46), (0.66, 0.64, 0.58), 6.0, 48.0, 0.50, 0.35),
    "hill": ((0.28, 0.40, 0.22), (0.45, 0.52, 0.30), 1.0, 8.0, 0.40, 0.20),
}
MATERIAL_NAMES = list(MATERIALS)
SKY_TILE = len(MATERIAL_NAMES)  # the sky uses one more tile of the atlas


def drive_name(index):
    return f"{DATE}_drive_{index + 1:04d}_sync"
