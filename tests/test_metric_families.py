"""Metric families beside the eigen table: point-cloud Chamfer / F-score / IoU and depth-edge
accuracy / completeness on hand-computed cases, and evaluate_depth.py --metrics on the
synthetic world."""
import json
import os

import numpy as np
import pytest

import evaluate_depth as ed
from evaluation.edges import EDGE_THRESHOLD, depth_edges, edge_distances, edge_metrics
from evaluation.families import family_metrics, parse_metric_families, scale_K
from evaluation.kitti import KITTI_EIGEN
from evaluation.cloud_metrics import backproject, cloud_metrics, pointcloud_metrics
from evaluation.protocols import TestSet
from export_gt_depth import export_gt_depths


def test_chamfer_fscore_iou_of_two_point_sets_by_hand():
    gt = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float)
    pred = np.array([[0, 0, 0.05], [1, 0, 0.15], [5, 0, 0]], float)
    m = cloud_metrics(pred, gt)
    # pred -> gt: 0.05, 0.15, 3; gt -> pred: 0.05, 0.15, |(2,0,0) - (1,0,0.15)|
    assert m["chamfer"] == pytest.approx((0.05 + 0.15 + 3) / 3 + (0.05 + 0.15 + np.sqrt(1 + 0.15 ** 2)) / 3)
    # at 0.1 m: precision 1/3, recall 1/3 -> F 1/3, IoU (1/9) / (2/3 - 1/9) = 1/5
    assert m["fscore"] == pytest.approx(100 / 3) and m["iou"] == pytest.approx(20)
    # at 0.2 m: 2/3 and 2/3 -> F 2/3, IoU (4/9) / (4/3 - 4/9) = 1/2
    assert m["fscore_20"] == pytest.approx(200 / 3) and m["iou_20"] == pytest.approx(50)
    far = cloud_metrics(pred + 10, gt)  # nothing within a threshold
    assert far["fscore"] == 0 and far["iou"] == 0 and far["fscore_20"] == 0


def test_backprojection_with_K_by_hand():
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    gt = np.full((100, 120), 10.0)
    mask = np.zeros(gt.shape, bool)
    mask[80, 80] = True  # ray (0.3, 0.4, 1)
    assert np.allclose(backproject(gt, K, mask), [[3.0, 4.0, 10.0]])
    ray = np.sqrt(0.3 ** 2 + 0.4 ** 2 + 1)
    m = pointcloud_metrics(gt + 0.2, gt, mask, K)  # 0.2 m deeper along the ray: 0.2236 m apart
    assert m["chamfer"] == pytest.approx(2 * 0.2 * ray) and m["fscore"] == 0 and m["fscore_20"] == 0
    m = pointcloud_metrics(gt + 0.1, gt, mask, K)  # 0.1118 m: above 0.1, below 0.2
    assert m["chamfer"] == pytest.approx(2 * 0.1 * ray) and m["fscore"] == 0 and m["fscore_20"] == 100
    same = pointcloud_metrics(gt, gt, mask | np.eye(100, 120, dtype=bool), np.eye(4) @ np.pad(K, ((0, 1), (0, 1))))
    assert same["chamfer"] == 0 and same["fscore"] == 100 and same["iou_20"] == 100
    assert pointcloud_metrics(gt, gt, np.zeros(gt.shape, bool), K) is None
    # K of a 375 x 1242 image for a 750 x 2484 map: focal lengths and principal point doubled
    assert np.allclose(scale_K(K, (375, 1242), (750, 2484)), [[200, 0, 100], [0, 200, 80], [0, 0, 1]])


def _step(column, height=40, width=60):
    """10 m left of `column`, 20 m right of it, and their geometric mean at it: the log depth
    is symmetric about `column`, so the edge is that single column."""
    depth = np.full((height, width), 10.0)
    depth[:, column] = np.sqrt(200.0)
    depth[:, column + 1:] = 20.0
    return depth


def test_step_edge_is_found_and_a_shifted_prediction_is_k_pixels_off():
    edges = depth_edges(_step(30))
    rows, cols = np.nonzero(edges)
    assert set(cols) == {30} and (rows.min(), rows.max(), len(rows)) == (1, 38, 38)  # border rows are never edges
    assert np.array_equal(depth_edges(3.7 * _step(30)), edges)  # log depth: the scale does not matter
    for k in (0, 1, 3, -4, 9):
        m = edge_metrics(_step(30 + k), edges)
        assert m == {"edge_acc": abs(k), "edge_comp": abs(k)}, k
    for k in (10, 15):  # no predicted edge within 10 px: both are the threshold
        assert edge_metrics(_step(30 + k), edges) == {"edge_acc": EDGE_THRESHOLD, "edge_comp": EDGE_THRESHOLD}
    flat = edge_metrics(np.full((40, 60), 7.0), edges)
    assert flat == {"edge_acc": EDGE_THRESHOLD, "edge_comp": EDGE_THRESHOLD}
    assert edge_metrics(_step(30), np.zeros((40, 60), bool)) is None


def test_edge_accuracy_and_completeness_of_given_maps_by_hand():
    gt = np.zeros((20, 30), bool)
    gt[0:10, 10] = True
    pred = np.zeros((20, 30), bool)
    pred[0:5, 13] = True  # 3 px from the GT edge
    pred[0, 25] = True  # 15 px away: not counted in the accuracy, but a predicted edge
    acc, comp = edge_distances(pred, gt)
    assert acc == pytest.approx(3.0)
    # rows 0-4 of the GT edge are 3 px from a predicted edge, rows 5-9 sqrt(9 + (r - 4)^2)
    expected = (5 * 3 + sum(np.sqrt(9 + (r - 4) ** 2) for r in range(5, 10))) / 10
    assert comp == pytest.approx(expected)


def test_metric_family_option():
    assert parse_metric_families("eigen") == ("eigen",)
    assert parse_metric_families("edges,pointcloud") == ("eigen", "pointcloud", "edges")
    assert parse_metric_families("all") == ("eigen", "pointcloud", "edges")
    with pytest.raises(SystemExit, match="unknown family"):
        parse_metric_families("eigen,chamfer")


def test_a_test_set_without_intrinsics_skips_the_family_with_a_message(capsys, tmp_path):
    class NoCamera(TestSet):
        name, protocol = "no_camera", KITTI_EIGEN

        def ground_truth(self):
            return [np.full((20, 30), 10.0)]

    args = ed.parse_args(["--metrics", "pointcloud,edges"])
    records = ed.score(args, NoCamera(), np.full((1, 20, 30), 0.1), str(tmp_path))
    out = capsys.readouterr().out
    assert "pointcloud metrics skipped for no_camera: no_camera gives no camera intrinsics" in out
    assert "edges metrics skipped for no_camera: no_camera has no dense ground truth" in out
    assert records[0]["abs_rel"] == pytest.approx(0) and "chamfer" not in records[0]


def test_evaluate_pointcloud_and_edges_on_the_synthetic_world(world, tmp_path, capsys):
    """Predictions equal to the lidar ground truth (/ 3) where it exists: the point clouds
    coincide (Chamfer 0, F-score and IoU 100). Predictions from the rendered depth (/ 3): the
    predicted edges are the ground truth's but for the sky (80 m in the prediction, no depth
    in the ground truth) and the far clamp at 80 m."""
    split = os.path.join(world.out, "splits", "synthetic")
    _, gts = export_gt_depths(world.out, split, "velodyne", "exact", progress=False)
    test_set = ed.TEST_SETS["kitti"](split, world.out)
    dense = [np.asarray(d) for d in test_set.dense_ground_truth()]
    from_dense = np.stack([3.0 / np.where(d > 0, d, 1000.0) for d in dense]).astype(np.float32)
    exact = np.stack([np.where(g > 0, 3.0 / np.maximum(g, 1e-3), p) for g, p in zip(gts, from_dense)])
    np.save(tmp_path / "disps.npy", exact)
    out_json = tmp_path / "m.json"
    ed.evaluate(ed.parse_args(["--ext_disp_to_eval", str(tmp_path / "disps.npy"), "--eval_mono", "--eval_split", split,
                               "--data_path", world.out, "--metrics", "pointcloud,edges", "--output_json",
                               str(out_json)]))
    m = json.loads(out_json.read_text())
    assert m["abs_rel"] < 1e-6 and m["pointcloud_images"] == m["edges_images"] == len(gts)
    assert m["chamfer"] < 1e-4 and m["fscore"] == 100 and m["iou"] == 100 and m["fscore_20"] == 100
    out = capsys.readouterr().out
    assert "pointcloud metrics (5 images)" in out and "edge_acc" in out
    ratios = []
    test_set.protocol.evaluate(from_dense, gts, 1.0, True, None, ratios)
    edges, count = family_metrics("edges", test_set, from_dense, gts, 1.0, True, ratios)
    # measured 0.38 and 0.43 px (the sky border, the clamp); the same maps shifted by 1 px give 1
    assert count == len(gts) and edges["edge_acc"] < 0.75 and edges["edge_comp"] < 0.75
    Ks = test_set.intrinsics()
    assert len(Ks) == len(gts) and Ks[0][1] == gts[0].shape and Ks[0][0][0, 0] == pytest.approx(0.58 * 1242, rel=1e-3)
