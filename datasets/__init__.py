"""Datasets: KITTI raw / odometry / improved depth, and the synthetic world generator."""
from .kitti_dataset import KITTIDepthDataset, KITTIOdomDataset, KITTIRAWDataset

DATASETS = {"kitti": KITTIRAWDataset, "kitti_odom": KITTIOdomDataset, "kitti_depth": KITTIDepthDataset}
