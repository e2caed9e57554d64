"""Methods whose depth is a known scene, for the prediction scripts' tests (no network,
no weight file: a folder holding opt.json with `method: tests.helpers.scene_method` loads).

SceneMethod: a flat road `scene_road_height` units below a camera with KITTI's normalised
K at the input size, seen up to `scene_far` units, a box (an outlier for the road fit) in
the lower left at half the road's depth there (`scene_box` 0: none), and `scene_far` above the road's horizon.
SceneMethod.road_depth gives the road's depth for any camera height.

OwnItemsScene (opt.json `method: tests.helpers.scene_method_items`): the same scene, read
through its own prediction dataset (Method.prediction_dataset): each image of a folder at
the input size with ITEM_K (not KITTI's), as a method with its own calibration does.

PreviousFrameScene (opt.json `method: tests.helpers.scene_method_previous`): the same scene, reading frames
0 and -1 (a black frame where -1 is missing); each predict() records, per item, the mean
brightness of both frames and the missing flag in PreviousFrameScene.seen.
"""
import torch

from methods.base import Method

KITTI_FX, KITTI_FY = 0.58, 1.92  # normalised focal lengths, principal point at the centre


class SceneMethod(Method):
    inference_models = ()

    @classmethod
    def add_options(cls, parser):
        g = parser.add_argument_group("scene")
        g.add_argument("--scene_road_height", type=float, default=0.1, help="the road's distance below the camera")
        g.add_argument("--scene_far", type=float, default=5.0, help="depth beyond the road")
        g.add_argument("--scene_box", type=int, default=1, help="1: the box in the lower left; 0: none")

    @staticmethod
    def road_depth(height, width, camera_height):
        """height x width depth of a road camera_height below a KITTI camera (inf above the
        horizon): z = camera_height * fy / (v - cy), v the row."""
        v = torch.arange(height, dtype=torch.float64).view(-1, 1).expand(height, width)
        below = v - 0.5 * height
        return torch.where(below > 1e-9, camera_height * KITTI_FY * height / below.clamp(min=1e-9),
                           torch.full_like(below, float("inf")))

    @staticmethod
    def box_mask(height, width):
        """The box: rows from 75 % down, columns 0 .. 20 %."""
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[int(0.75 * height):, :int(0.2 * width)] = True
        return mask

    def scene(self, batch, height, width):
        depth = self.road_depth(height, width, self.opt.scene_road_height).clamp(max=self.opt.scene_far)
        if self.opt.scene_box:
            depth = torch.where(self.box_mask(height, width), depth * 0.5, depth)
        return depth.float().expand(batch, 1, height, width).contiguous()

    def predict(self, inputs):
        image = inputs[("color", 0, 0)]
        depth = self.scene(image.shape[0], image.shape[2], image.shape[3]).to(image.device)
        return {"depth": depth, "disp": 1 / depth}


class PreviousFrameScene(SceneMethod):
    inference_frames = (0, -1)
    seen = []

    @classmethod
    def missing_frames(cls, opt, training):
        return "black"

    def predict(self, inputs):
        for k in range(inputs[("color", 0, 0)].shape[0]):
            PreviousFrameScene.seen.append((float(inputs[("color", 0, 0)][k].mean()),
                                            float(inputs[("color", -1, 0)][k].mean()),
                                            float(inputs[("missing", -1)][k])))
        assert ("K", 2) in inputs and ("inv_K", 0) in inputs
        return super().predict(inputs)


ITEM_K = ((0.7, 0.0, 0.45), (0.0, 2.1, 0.55))  # normalised rows 0 and 1 of the items' K


class OwnItemsScene(SceneMethod):
    def prediction_dataset(self, path):
        import glob
        import os

        import numpy as np
        import PIL.Image as pil
        h, w = self.opt.height, self.opt.width
        K = torch.eye(4)
        K[0, :3] = torch.tensor(ITEM_K[0]) * w
        K[1, :3] = torch.tensor(ITEM_K[1]) * h
        items = []
        for image in sorted(glob.glob(os.path.join(path, "*.png"))):
            rgb = np.asarray(pil.open(image).convert("RGB").resize((w, h)), dtype=np.float32) / 255
            items.append({("color", 0, 0): torch.from_numpy(rgb).permute(2, 0, 1), ("K", 0): K.clone(), "path": image})
        return items


METHOD = SceneMethod
