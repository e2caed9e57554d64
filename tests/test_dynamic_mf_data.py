"""Dynamic multi-frame depth: KITTI odometry data, GT transfer, losses and the metric
protocol (spec dynamic_multiframe.md, checks 7.1-7.5 and 7.16-7.21)."""
import math
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import prepare_kitti_odom_depth as transfer
from datasets import DATASETS
from datasets.fast_loader import collate_items
from datasets.kitti_odom_mf import CropGeometry, KITTIOdomMultiFrameDataset, odometry_split_lines
from datasets.kitti_utils import read_calib_file, read_poses_file
from evaluation import PROTOCOLS, TEST_SETS
from evaluation.kitti_odom import KITTI_ODOM, KittiOdomMultiFrame
from losses import dynamic_mf_total_loss, silog_loss_dmf, virtual_normal_loss

FRAMES = [0, -1, 1]


def odom_root(world):
    return os.path.join(world.out, "odometry")


def make_dataset(root, seqs=("00",), **kwargs):
    kwargs.setdefault("img_ext", ".png")
    return KITTIOdomMultiFrameDataset(root, odometry_split_lines(root, seqs), 256, 512, FRAMES, 1, **kwargs)


def copy_sequence(world, tmp_path):
    """A writable copy of sequence 00 (files linked, so that single ones can be replaced)."""
    src, dst = odom_root(world), str(tmp_path / "odom")
    seq_src, seq_dst = os.path.join(src, "sequences", "00"), os.path.join(dst, "sequences", "00")
    for sub in ("image_2", "image_depth_annotated", "mvobj_mask"):
        os.makedirs(os.path.join(seq_dst, sub))
        for name in os.listdir(os.path.join(seq_src, sub)):
            os.symlink(os.path.join(seq_src, sub, name), os.path.join(seq_dst, sub, name))
    for name in ("calib.txt", "times.txt"):
        shutil.copyfile(os.path.join(seq_src, name), os.path.join(seq_dst, name))
    for folder in ("poses", "poses_dvso"):
        os.makedirs(os.path.join(dst, folder))
        shutil.copyfile(os.path.join(src, folder, "00.txt"), os.path.join(dst, folder, "00.txt"))
    return dst


def replace_file(path, write):
    os.remove(path)
    write(path)


# --- 7.1-7.5: data
def test_n_frames_give_n_minus_10_keyframes_with_their_neighbours(world, tmp_path):
    root = odom_root(world)
    assert odometry_split_lines(root, ["00", "01"]) == ["00 5 l", "00 6 l", "01 5 l", "01 6 l"]  # 12 frames each
    os.makedirs(tmp_path / "sequences" / "07")
    np.savetxt(tmp_path / "sequences" / "07" / "times.txt", np.arange(30) * 0.1)
    lines = odometry_split_lines(str(tmp_path), ["7"])
    assert len(lines) == 20 and lines[0] == "07 5 l" and lines[-1] == "07 24 l"
    assert odometry_split_lines(str(tmp_path), ["07"], max_per_seq=3) == ["07 5 l", "07 6 l", "07 7 l"]
    dataset = make_dataset(root, seqs=("01",))
    for j in range(len(dataset)):
        item = dataset[j]
        assert int(item["seq"]) == 1 and int(item["frame"]) == j + 5
        for f, frame in ((0, j + 5), (-1, j + 4), (1, j + 6)):
            expected = dataset.to_tensor(dataset.load_image(dataset.get_image_path("01", frame, "l")))
            assert torch.equal(item[("color", f, 0)], expected)


def test_item_shapes_crop_and_intrinsics_follow_p2_and_the_crop_offset(world):
    dataset = make_dataset(odom_root(world))
    item = dataset[0]
    for f in FRAMES:
        assert item[("color", f, 0)].shape == (3, 256, 512) and item[("color_aug", f, 0)].shape == (3, 256, 512)
        assert item[("pose_c2w", f)].shape == (4, 4) and item[("pose_c2w", f)].dtype == torch.float32
        assert torch.equal(item[("pose_c2w", f)][3], torch.tensor([0.0, 0, 0, 1]))
    for key in ("depth_gt", "inv_depth_gt", "mvobj_mask"):
        assert item[key].shape == (1, 256, 512)
    P2 = read_calib_file(os.path.join(odom_root(world), "sequences", "00", "calib.txt"))["P2"].reshape(3, 4)
    s, o = 256 / 375, (1242 - 2 * 375) / 2  # 246 px each side
    K = item[("K", 0)].double().numpy()
    np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
                               [s * P2[0, 0], s * P2[1, 1], s * (P2[0, 2] - o), s * P2[1, 2]], rtol=1e-6)
    np.testing.assert_allclose(item[("inv_K", 0)].numpy() @ item[("K", 0)].numpy(), np.eye(4), atol=1e-5)
    # the frame is that very crop, bilinearly resized (the filter reads past the box, so only
    # the first and last columns differ from cropping first, by up to two grey levels)
    native = Image.open(dataset.get_image_path("00", 5, "l")).convert("RGB")
    color = item[("color", 0, 0)].permute(1, 2, 0).numpy()
    boxed = native.resize((512, 256), Image.BILINEAR, box=(246, 0, 996, 375))
    np.testing.assert_array_equal(color, np.asarray(boxed, np.float32) / 255)
    cropped = np.asarray(native.crop((246, 0, 996, 375)).resize((512, 256), Image.BILINEAR), np.float32) / 255
    np.testing.assert_array_equal(color[:, 1:-1], cropped[:, 1:-1])
    assert np.abs(color - cropped).max() <= 2.5 / 255
    # KITTI's odd 1241-px frames: one float offset (244.5) for the crop box and for K
    geometry = CropGeometry(376, 1241, 256, 512)
    assert geometry.offset == 244.5 and geometry.box == (244.5, 0.0, 996.5, 376.0)
    assert geometry.intrinsics(P2)[0, 2] == pytest.approx(256 / 376 * (P2[0, 2] - 244.5))
    # sequences 04-10 (1226 x 370, P2 of 2011_09_30): fx 489.2, cx 248.3, cy 126.7 (spec section 1)
    P2_0930 = np.array([[707.0912, 0, 601.8873, 46.88783], [0, 707.0912, 183.1104, 0.1178601], [0, 0, 1, 0.006203223]])
    K0930 = CropGeometry(370, 1226, 256, 512).intrinsics(P2_0930)
    np.testing.assert_allclose([K0930[0, 0], K0930[0, 2], K0930[1, 2]], [489.2, 248.3, 126.7], atol=0.05)


def test_relative_pose_maps_the_key_into_each_source(world):
    dataset = make_dataset(odom_root(world))
    poses = read_poses_file(os.path.join(odom_root(world), "poses_dvso", "00.txt"))
    for j in range(len(dataset)):
        item = dataset[j]
        k = int(item["frame"])
        for f in (-1, 1):
            np.testing.assert_allclose(item[("pose_c2w", f)].numpy(), poses[k + f], atol=1e-6)
            composed = item[("pose_c2w", f)].double() @ item[("T", f)].double()
            np.testing.assert_allclose(composed.numpy(), item[("pose_c2w", 0)].double().numpy(), atol=1e-5)
            assert torch.equal(item[("T", f)][3], torch.tensor([0.0, 0, 0, 1]))
    gt_poses = make_dataset(odom_root(world), pose_source="kitti_gt")
    assert gt_poses.pose_path("00").endswith(os.path.join("poses", "00.txt"))
    with pytest.raises(ValueError, match="pose_source"):
        make_dataset(odom_root(world), pose_source="orb")


def test_gt_value_v_gives_256_over_v_at_its_pixel_and_0_elsewhere(world, tmp_path):
    root = copy_sequence(world, tmp_path)
    png = np.zeros((375, 1242), np.uint16)
    png[100, 600] = 5120  # 20 m -> row floor(100.5 s) = 68, col floor((600.5 - 246) s) = 242
    png[10, 100] = 1000  # left of the crop (col < 246): dropped
    png[200, 401], png[200, 402] = 2560, 7680  # both -> one pixel: the nearest (10 m) wins
    replace_file(os.path.join(root, "sequences", "00", "image_depth_annotated", "000005.png"),
                 lambda p: cv2.imwrite(p, png))
    s = 256 / 375
    item = make_dataset(root)[0]
    inv, depth = item["inv_depth_gt"][0], item["depth_gt"][0]
    assert inv[68, 242] == np.float32(256 / 5120) and depth[68, 242] == 20
    r, c = math.floor(200.5 * s), math.floor((401.5 - 246) * s)
    assert (r, c) == (136, 106) == (math.floor(200.5 * s), math.floor((402.5 - 246) * s))
    assert inv[r, c] == np.float32(256 / 2560) and depth[r, c] == 10
    assert int((inv > 0).sum()) == 2 and torch.equal(inv > 0, depth > 0)
    # MonoRec's placement: no half-pixel centring, the last point (row-major) wins
    reference = make_dataset(root, reference_scatter=True)[0]["inv_depth_gt"][0]
    assert reference[round(100 * s), round((600 - 246) * s)] == np.float32(256 / 5120)
    assert round((401 - 246) * s) == round((402 - 246) * s) == 106
    assert reference[round(200 * s), 106] == np.float32(256 / 7680)
    assert int((reference > 0).sum()) == 2


def test_transfer_script_maps_drives_to_sequences_and_shifts_08(tmp_path):
    def raw(subset, drive, camera, index):
        path = tmp_path / "depth" / subset / f"{drive}_sync" / "proj_depth" / "groundtruth" / camera
        path.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path / f"{index:010d}.png"), np.full((4, 6), index + 1, np.uint16))
    for index in (1099, 1100, 1105):
        raw("train", "2011_09_30_drive_0028", "image_02", index)
    raw("train", "2011_09_30_drive_0028", "image_03", 1101)
    raw("val", "2011_09_30_drive_0016", "image_02", 7)
    raw("val", "2011_09_26_drive_0001", "image_02", 5)  # not an odometry drive
    out = tmp_path / "odom"
    counts = transfer.main(["--depth_path", str(tmp_path / "depth"), "--odom_path", str(out), "--no_progress"])
    assert counts == {"08": 2, "04": 1}
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["sequences/04/image_depth_annotated/000007.png",
                       "sequences/08/image_depth_annotated/000000.png",
                       "sequences/08/image_depth_annotated/000005.png"]
    first = cv2.imread(str(out / "sequences/08/image_depth_annotated/000000.png"), cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint16 and first[0, 0] == 1101  # raw 1100, unchanged
    with pytest.raises(SystemExit, match="no such folder"):
        transfer.main(["--depth_path", str(tmp_path / "none"), "--odom_path", str(out)])
    with pytest.raises(SystemExit, match="train/ or val/"):
        transfer.main(["--depth_path", str(out), "--odom_path", str(out)])


def test_colour_jitter_gives_identical_frames_identical_outputs_on_both_paths(world, tmp_path):
    root = copy_sequence(world, tmp_path)
    image_dir = os.path.join(root, "sequences", "00", "image_2")
    key = os.path.realpath(os.path.join(image_dir, "000005.png"))
    for frame in (4, 6):
        replace_file(os.path.join(image_dir, f"{frame:06d}.png"), lambda p: shutil.copyfile(key, p))
    default = make_dataset(root, is_train=True, seed=7)
    item = default[0]
    assert not torch.equal(item[("color_aug", 0, 0)], item[("color", 0, 0)])  # the jitter is on
    for f in (-1, 1):
        assert torch.equal(item[("color_aug", f, 0)], item[("color_aug", 0, 0)])
    fast = make_dataset(root, is_train=True, seed=7, input_path="fast")
    batch = fast.finish_batch(collate_items([fast[0]]), torch.device("cpu"))
    assert torch.equal(batch[("color", 0, 0)][0], item[("color", 0, 0)])  # same crop and resize
    for f in (-1, 1):
        assert torch.equal(batch[("color_aug", f, 0)], batch[("color_aug", 0, 0)])
    assert float((batch[("color_aug", 0, 0)][0] - item[("color_aug", 0, 0)]).abs().mean()) < 0.01
    with pytest.raises(ValueError, match="--decode_on_device"):
        make_dataset(root, input_path="encoded", img_ext=".jpg")
    from datasets.augment import HorizontalFlip
    with pytest.raises(ValueError, match="model flips"):
        make_dataset(root, is_train=True, augmentations=[HorizontalFlip(0.5)])


def test_moving_object_mask_is_cropped_like_the_frame(world, tmp_path):
    root = copy_sequence(world, tmp_path)
    native = np.load(os.path.join(root, "sequences", "00", "mvobj_mask", "000005.npy"))
    mask = make_dataset(root)[0]["mvobj_mask"][0].numpy()
    s = 256 / 375
    rows = np.floor((np.arange(256) + 0.5) / s).astype(int)
    cols = np.floor(246 + (np.arange(512) + 0.5) / s).astype(int)
    np.testing.assert_array_equal(mask, native[rows][:, cols])
    assert mask.sum() > 0
    small = np.zeros((256, 512), np.float32)
    small[10:20, 30:40] = 1
    replace_file(os.path.join(root, "sequences", "00", "mvobj_mask", "000005.npy"), lambda p: np.save(p, small))
    assert np.array_equal(make_dataset(root)[0]["mvobj_mask"][0].numpy(), small)  # MonoRec's size: as is
    os.remove(os.path.join(root, "sequences", "00", "mvobj_mask", "000006.npy"))
    with pytest.raises(FileNotFoundError, match="000006.npy"):
        make_dataset(root)[1]
    assert float(make_dataset(root, allow_missing_masks=True)[1]["mvobj_mask"].abs().sum()) == 0


# --- 7.16-7.18: losses
def sparse_inverse_depth(seed=0, shape=(2, 1, 32, 64), density=0.3):
    g = torch.Generator().manual_seed(seed)
    gt = 0.01 + 0.3 * torch.rand(shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < density, gt, torch.zeros_like(gt))


def test_silog_is_zero_at_gt_and_10_sqrt_015_ln_c_when_scaled():
    gt = sparse_inverse_depth()
    noise = 0.01 + torch.rand_like(gt)
    pred = torch.where(gt > 0, gt, noise).requires_grad_()
    loss = silog_loss_dmf(pred, gt)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(pred.grad).all()
    scaled = silog_loss_dmf(torch.where(gt > 0, 1.5 * gt, noise), gt)
    assert float(scaled) == pytest.approx(1.5704, abs=1e-3)
    assert float(scaled) == pytest.approx(10 * math.sqrt(0.15) * math.log(1.5), rel=1e-5)
    # GT = 0 pixels are ignored; GT inverse depth is clipped to 100
    assert float(silog_loss_dmf(torch.where(gt > 0, 1.5 * gt, 5 * noise), gt)) == float(scaled)
    near = torch.zeros_like(gt)
    near[0, 0, 0, 0], near[0, 0, 0, 1] = 400, 100
    assert float(silog_loss_dmf(torch.full_like(gt, 100.0), near)) == 0
    # guarded: no valid pixel -> 0 in the graph; one pixel -> variance 0
    empty = silog_loss_dmf(pred, torch.zeros_like(gt))
    assert empty.item() == 0 and empty.requires_grad
    one = torch.zeros_like(gt)
    one[1, 0, 3, 4] = 0.2
    assert float(silog_loss_dmf(torch.full_like(gt, 0.4), one)) == pytest.approx(10 * math.sqrt(0.15) * math.log(2))


def planar_depth(K, normal, distance, height=32, width=64):
    """Depth of the plane n . X = d seen through pixel intrinsics K: 1 x 1 x H x W."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)])
    return (distance / torch.einsum("c,chw->hw", torch.tensor(normal, dtype=torch.float64), rays))[None, None]


def test_vnl_is_zero_at_gt_scale_invariant_and_ignores_gt_below_1e4():
    K = torch.tensor([[60.0, 0, 30, 0], [0, 60, 15, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    gt = planar_depth(K, [0.1, -0.8, 0.6], 3.0) + 0.3 * torch.rand(1, 1, 32, 64, dtype=torch.float64)
    gt = gt.repeat(2, 1, 1, 1)
    Kb = K.expand(2, 4, 4)

    def vnl(pred, target, **kw):
        return float(virtual_normal_loss(pred, target, Kb, generator=torch.Generator().manual_seed(1), **kw))
    assert vnl(gt, gt) == 0
    assert vnl(2.5 * gt, gt) < 1e-6
    other = gt + torch.rand_like(gt)
    assert vnl(other, gt) > 0.05
    half = gt.clone()
    half[..., :, 32:] = 0  # triplets touching the right half are excluded
    changed = other.clone()
    changed[..., :, 32:] = 1000 * torch.rand_like(changed[..., :, 32:])
    assert vnl(other, half) == vnl(changed, half) > 0
    assert vnl(other, torch.zeros_like(gt)) == 0  # no usable triplet: 0, not NaN


def test_vnl_back_projects_each_item_with_its_own_intrinsics():
    K0 = torch.tensor([[30.0, 0, 10, 0], [0, 30, 5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    K1 = torch.tensor([[80.0, 0, 40, 0], [0, 80, 20, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    gt1, pred1 = planar_depth(K1, [0.0, -0.7, 0.7], 2.0), planar_depth(K1, [0.3, -0.6, 0.7], 2.0)
    gt = torch.cat([torch.zeros_like(gt1), gt1])  # item 0 has no GT: only item 1's triplets count
    pred = torch.cat([torch.ones_like(pred1), pred1])

    def vnl(p, g, K, **kw):
        return float(virtual_normal_loss(p, g, K, generator=torch.Generator().manual_seed(3), **kw))
    alone = vnl(pred1, gt1, K1[None])
    assert alone > 0.05 and vnl(pred, gt, torch.stack([K0, K1])) == pytest.approx(alone, rel=1e-9)
    reference = vnl(pred, gt, torch.stack([K0, K1]), reference_intrinsics=True)  # item 0's focal, image centre
    assert abs(reference - alone) > 1e-3


def test_total_loss_is_4_silog_plus_vnl_over_4_scales_and_2_branches():
    gt_inv = sparse_inverse_depth(seed=2, density=0.6)
    gt_depth = torch.where(gt_inv > 0, 1 / gt_inv.clamp(min=1e-6), torch.zeros_like(gt_inv))
    K = torch.tensor([[60.0, 0, 32, 0], [0, 60, 16, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).expand(2, 4, 4)
    g = torch.Generator().manual_seed(0)
    pyramid = [0.01 + 0.3 * torch.rand(2, 1, 32 // 2 ** s, 64 // 2 ** s, generator=g) for s in range(4)]
    multi = [p.clone().requires_grad_() for p in pyramid]
    mono = [(0.5 * p).requires_grad_() for p in pyramid]
    total, terms = dynamic_mf_total_loss(multi, mono, gt_inv, gt_depth, K, generator=torch.Generator().manual_seed(5))
    assert len(terms) == 16
    silog = sum(v for k, v in terms.items() if k.startswith("silog/"))
    vnl = sum(v for k, v in terms.items() if k.startswith("vnl/"))
    assert total.item() == pytest.approx((4 * silog + vnl).item(), rel=1e-6) and vnl.item() > 0
    up = torch.nn.functional.interpolate(mono[2], (32, 64), mode="nearest")
    assert terms["silog/mono/2"].item() == pytest.approx(silog_loss_dmf(up, gt_inv).item(), rel=1e-6)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in multi + mono)


# --- 7.19-7.21: the metric protocol and the test set
def test_protocol_ignores_gt_0_and_beyond_80_and_clamps_predictions_to_80():
    gt = np.array([[0.0, 10, 80, 90]], np.float32)
    disp = 1 / np.array([[5.0, 12, 200, 1]], np.float32)  # 200 m -> clamped to 80
    (abs_rel, *_), ratio = KITTI_ODOM.score(disp, gt)
    assert abs_rel == pytest.approx((2 / 10 + 0 / 80) / 2) and ratio is None
    assert KITTI_ODOM.mask(gt).tolist() == [[False, True, True, False]]
    assert PROTOCOLS["kitti_odom"] is KITTI_ODOM and KITTI_ODOM.median_scaling is False
    assert TEST_SETS["kitti_odom_mf"] is KittiOdomMultiFrame


def test_dynamic_metrics_skip_images_without_gt_in_their_mask():
    gts = [np.full((2, 3), 10.0), np.full((2, 3), 20.0)]
    disps = [np.full((2, 3), 1 / 12.0), np.full((2, 3), 1 / 30.0)]
    masks = [np.zeros((2, 3), bool), np.eye(2, 3, dtype=bool)]
    metrics, _ = KITTI_ODOM.evaluate(disps, gts, extra_masks=masks)
    assert metrics["abs_rel"] == pytest.approx(0.5)  # image 0 is skipped, not counted as 0
    gts[1][masks[1]] = 0
    with pytest.raises(SystemExit, match="no valid"):
        KITTI_ODOM.evaluate(disps, gts, extra_masks=masks)


def test_scores_are_image_means_without_median_scaling_and_skip_nan_images():
    gts = [np.full((4, 4), 10.0), np.full((4, 4), 40.0), np.full((4, 4), 5.0)]
    disps = [np.full((4, 4), 1 / 20.0), np.full((4, 4), 1 / 41.0), np.full((4, 4), 1 / 5.0)]
    disps[2][0, 0] = np.nan  # a NaN metric: the image is skipped
    ratios = []
    metrics, median_ratios = KITTI_ODOM.evaluate(disps, gts, 1.0, True, None, ratios)  # median asked: ignored
    assert metrics["abs_rel"] == pytest.approx((1.0 + 1 / 40) / 2)
    assert metrics["rmse"] == pytest.approx((10 + 1) / 2)  # per-image RMSE, then the mean (pooled: 7.1)
    assert ratios == [None, None, None] and len(median_ratios) == 0


def test_test_set_reads_the_keyframes_gt_and_dynamic_masks(world):
    test_set = KittiOdomMultiFrame(odom_root(world), ["00", "01"], dynamic=True)
    test_set.check_ready()
    assert len(test_set) == 4
    dataset = test_set.dataset(256, 512, FRAMES)
    item = dataset[3]
    assert int(item["seq"]) == 1 and int(item["frame"]) == 6 and "depth_gt" not in item
    gts, masks = test_set.ground_truth(), test_set.region_masks()["dynamic"]
    full = make_dataset(odom_root(world), seqs=("01",))[1]
    assert np.array_equal(gts[3], full["depth_gt"][0].numpy()) and gts[3].shape == (256, 512)
    assert masks[3].dtype == bool and np.array_equal(masks[3], full["mvobj_mask"][0].numpy() > 0.5)
    disps = [np.where(g > 0, 1 / np.maximum(g, 1e-6), 0.1) for g in gts]  # exact where GT <= 80
    metrics, _ = KITTI_ODOM.evaluate(disps, gts, 1.0, True)
    assert metrics["abs_rel"] < 1e-6 and metrics["a1"] == 1
    assert KittiOdomMultiFrame(odom_root(world), ["00"]).region_masks() == {}
    assert DATASETS["kitti_odom_mf"] is KITTIOdomMultiFrameDataset


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_vnl_gives_the_same_value_on_cuda():
    K = torch.tensor([[60.0, 0, 30, 0], [0, 60, 15, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).expand(2, 4, 4)
    gt = planar_depth(K[0].double(), [0.1, -0.8, 0.6], 3.0).float().repeat(2, 1, 1, 1)
    pred = gt + torch.rand_like(gt)
    cpu = virtual_normal_loss(pred, gt, K, generator=torch.Generator().manual_seed(0))
    cuda = virtual_normal_loss(pred.cuda(), gt.cuda(), K.cuda(), generator=torch.Generator().manual_seed(0))
    assert cuda.device.type == "cuda" and float(cuda) == pytest.approx(float(cpu), rel=1e-4)
